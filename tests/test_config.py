"""Configuration: DiffWave defaults, YAML round trips, type checks, overrides, mel presets."""

from __future__ import annotations

import math

import pytest
import torch

from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.presets import PRESET_NAMES, MelConfig, get_preset
from wavediff.config import (
    DIFFWAVE_FAST_SCHEDULE,
    Config,
    DiffusionConfig,
    ModelConfig,
    TrainConfig,
    base_config,
    large_config,
)
from wavediff.errors import ConfigError


# ---------------------------------------------------------------------- defaults
def test_defaults_are_diffwave_base():
    cfg = Config()
    m, d, t = cfg.model, cfg.diffusion, cfg.train
    assert (m.residual_layers, m.residual_channels, m.dilation_cycle, m.kernel_size) == (
        30, 64, 10, 3)
    assert (m.step_embedding_dim, m.step_hidden_dim) == (128, 512)
    assert m.upsample_factors is None
    assert d.num_steps == 50
    # Python float64 scalar arithmetic (no kernels): approx's rel=1e-6 is ample slack
    assert d.beta_start == pytest.approx(1e-4)
    assert d.beta_end == pytest.approx(0.05)
    betas = d.training_betas()
    assert len(betas) == 50
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.05)
    assert betas[1] - betas[0] == pytest.approx((0.05 - 1e-4) / 49)
    assert d.fast_schedule == [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5]  # stored literals: exact
    assert len(d.fast_schedule) == 6
    assert t.batch_size == 16 and t.learning_rate == pytest.approx(2e-4)
    assert cfg.audio.preset == "hifigan" and cfg.audio.hop_length == 256
    assert base_config().to_dict() == cfg.to_dict()


def test_large_config():
    cfg = large_config()
    assert cfg.model.residual_channels == 128
    assert cfg.model.residual_layers == 30
    assert cfg.diffusion.num_steps == 200
    betas = cfg.diffusion.training_betas()
    assert len(betas) == 200
    # float64 scalars: approx's rel=1e-6 is ample slack
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)


def test_explicit_betas_override_linear_schedule():
    d = DiffusionConfig(betas=[0.1, 0.2, 0.3])
    assert d.training_betas() == [0.1, 0.2, 0.3]
    assert DiffusionConfig(num_steps=1).training_betas() == [1e-4]


# ---------------------------------------------------------------------- YAML round trip
def test_yaml_round_trip(tmp_path):
    cfg = Config(
        audio=get_preset("matcha"),
        model=ModelConfig(residual_layers=4, residual_channels=8, upsample_factors=[8, 32]),
        diffusion=DiffusionConfig(num_steps=20, beta_end=0.03, sampler="ddim"),
        train=TrainConfig(batch_size=3, loss="l2", ema_decay=None, adam_betas=[0.8, 0.99]),
    )
    path = tmp_path / "config.yaml"
    cfg.save(path)
    loaded = Config.load(path)
    assert loaded.to_dict() == cfg.to_dict()
    assert loaded.audio.preset == "matcha"
    assert loaded.model.upsample_factors == [8, 32]
    assert loaded.train.ema_decay is None


def test_round_trip_of_clipped_and_custom_audio(tmp_path):
    audio = get_preset("diffwave-lmnt").replace(n_mels=64)
    assert audio.preset == "custom"
    cfg = Config(audio=audio)
    path = tmp_path / "c.yaml"
    cfg.save(path)
    loaded = Config.load(path)
    assert loaded.audio == audio
    assert loaded.audio.clip == (0.0, 1.0)
    assert loaded.to_dict() == cfg.to_dict()


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert Config.load(path).to_dict() == Config().to_dict()


# ---------------------------------------------------------------------- refusals
def test_unknown_section_is_refused():
    with pytest.raises(ConfigError, match="trainer"):
        Config.from_dict({"trainer": {"batch_size": 4}})


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="batchsize"):
        Config.from_dict({"train": {"batchsize": 4}})
    with pytest.raises(ConfigError, match="nmels"):
        Config.from_dict({"audio": {"nmels": 80}})


@pytest.mark.parametrize(
    "section, key, value, word",
    [
        ("train", "batch_size", "16", "integer"),
        ("train", "batch_size", True, "integer"),
        ("model", "residual_layers", 3.0, "integer"),
        ("train", "adam_betas", 0.9, "list"),
        ("model", "upsample_factors", 256, "list"),
        ("diffusion", "fast_schedule", "0.1 0.2", "list"),
        ("diffusion", "beta_end", "0.05", "number"),
        ("train", "loss", 1, "string"),
        ("audio", "n_mels", "80", "integer"),
        ("audio", "stft_normalized", 1, "true or false"),
    ],
)
def test_wrong_types_are_refused_naming_the_key(section, key, value, word):
    with pytest.raises(ConfigError, match=f"{section}.{key}") as info:
        Config.from_dict({section: {key: value}})
    assert word in str(info.value)


def test_wrong_type_inside_a_list_names_the_index():
    with pytest.raises(ConfigError, match=r"model\.upsample_factors\[1\]"):
        Config.from_dict({"model": {"upsample_factors": [16, "16"]}})


def test_int_is_accepted_for_float_and_converted():
    cfg = Config.from_dict({"train": {"learning_rate": 1}})
    # float(1) is exactly 1.0
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)


def test_section_must_be_mapping():
    with pytest.raises(ConfigError, match="train"):
        Config.from_dict({"train": [1, 2]})
    with pytest.raises(ConfigError, match="audio"):
        Config.from_dict({"audio": "hifigan"})


def test_load_invalid_yaml_names_the_path(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: {batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml") as info:
        Config.load(path)
    assert "YAML" in str(info.value)


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        Config.load(path)


def test_load_non_mapping_and_bad_key_name_the_path(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml"):
        Config.load(path)
    path = tmp_path / "badkey.yaml"
    path.write_text("model:\n  layers: 3\n")
    with pytest.raises(ConfigError, match="badkey.yaml") as info:
        Config.load(path)
    assert "layers" in str(info.value)


# ---------------------------------------------------------------------- overrides
def test_override_changes_values_and_marks_audio_custom():
    cfg = Config()
    new = cfg.override(["train.batch_size=4", "audio.n_mels=64"])
    assert new.train.batch_size == 4
    assert new.audio.n_mels == 64
    assert new.audio.preset == "custom"
    # the original is untouched
    assert cfg.train.batch_size == 16 and cfg.audio.n_mels == 80
    assert cfg.audio.preset == "hifigan"


def test_override_equal_to_preset_keeps_its_name():
    new = Config().override(["audio.n_mels=80", "audio.hop_length=256"])
    assert new.audio.preset == "hifigan"
    assert new.audio == get_preset("hifigan")


def test_override_parses_yaml_values():
    new = Config().override(["model.upsample_factors=[8, 32]", "train.ema_decay=null",
                             "diffusion.sampler=ddim"])
    assert new.model.upsample_factors == [8, 32]
    assert new.train.ema_decay is None
    assert new.diffusion.sampler == "ddim"


@pytest.mark.parametrize("item", ["train.batch_size", "batch_size=4", "nosuch.key=1"])
def test_malformed_override_is_refused(item):
    with pytest.raises(ConfigError, match="section.key=value"):
        Config().override([item])


def test_override_of_unknown_key_or_bad_type_is_refused():
    with pytest.raises(ConfigError, match="batchsize"):
        Config().override(["train.batchsize=4"])
    with pytest.raises(ConfigError, match="train.batch_size"):
        Config().override(["train.batch_size=four"])


# ---------------------------------------------------------------------- presets in a config
def test_audio_preset_expands_fully():
    cfg = Config.from_dict({"audio": {"preset": "vocos"}})
    a = cfg.audio
    assert a.preset == "vocos"
    assert (a.sample_rate, a.n_fft, a.hop_length, a.n_mels) == (24000, 1024, 256, 100)
    assert a.fmax == 12000.0 and a.mel_scale == "htk" and a.mel_norm is None  # a stored literal
    assert a.padding == "center" and a.clamp_min == pytest.approx(1e-7)
    d = cfg.to_dict()["audio"]
    assert set(d) == {f for f in MelConfig.__dataclass_fields__}
    assert d["sample_rate"] == 24000 and d["n_mels"] == 100


def test_audio_preset_with_field_override_becomes_custom():
    a = Config.from_dict({"audio": {"preset": "espnet", "n_mels": 64}}).audio
    assert a.preset == "custom"
    assert a.n_mels == 64 and a.fmin == 80.0 and a.compression == "log10"  # literals: exact


def test_unknown_preset_lists_the_names():
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"audio": {"preset": "melgan"}})
    msg = str(info.value)
    assert "melgan" in msg
    for name in PRESET_NAMES:
        assert name in msg


# ---------------------------------------------------------------------- invalid values
@pytest.mark.parametrize(
    "data, word",
    [
        ({"train": {"loss": "l3"}}, "train.loss"),
        ({"train": {"optimizer": "sgd"}}, "train.optimizer"),
        ({"train": {"amp": "fp8"}}, "train.amp"),
        ({"train": {"ema_decay": 1.5}}, "train.ema_decay"),
        ({"train": {"ema_decay": 0.0}}, "train.ema_decay"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"crop_samples": 100}}, "train.crop_samples"),
        ({"model": {"kernel_size": 4}}, "model.kernel_size"),
        ({"model": {"residual_channels": 0}}, "model.residual_channels"),
        ({"diffusion": {"sampler": "euler"}}, "diffusion.sampler"),
        ({"diffusion": {"beta_end": 1.5}}, "betas"),
        ({"diffusion": {"betas": [0.1, 0.0]}}, "betas"),
    ],
)
def test_invalid_values_are_refused(data, word):
    with pytest.raises(ConfigError, match=word.replace(".", r"\.")):
        Config.from_dict(data)


def test_crop_must_cover_a_hop():
    audio = get_preset("hifigan")
    Config(audio=audio, train=TrainConfig(crop_samples=256))
    with pytest.raises(ConfigError, match="hop"):
        Config(audio=audio, train=TrainConfig(crop_samples=255))


# ---------------------------------------------------------------------- MelConfig
def test_mel_fmax_above_nyquist_is_refused():
    with pytest.raises(ConfigError, match="Nyquist"):
        MelConfig(sample_rate=16000, fmax=9000.0)
    # a given literal, and 16000 / 2: exact
    assert MelConfig(sample_rate=16000, fmax=8000.0).max_frequency == 8000.0
    assert MelConfig(sample_rate=16000, fmax=None).max_frequency == 8000.0


@pytest.mark.parametrize(
    "changes, word",
    [
        (dict(fmin=9000.0), "fmin"),
        (dict(win_length=2048), "win_length"),
        (dict(hop_length=0), "hop_length"),
        (dict(hop_length=2048), "hop_length"),
        (dict(padding="valid"), "padding"),
        (dict(hop_length=255), "n_fft - hop_length"),
        (dict(mel_scale="bark"), "mel_scale"),
        (dict(mel_norm="area"), "mel_norm"),
        (dict(compression="log2"), "compression"),
        (dict(clamp_min=0.0), "clamp_min"),
        (dict(norm_std=0.0), "norm_std"),
        (dict(clip=(1.0, -1.0)), "clip"),
    ],
)
def test_mel_config_validation(changes, word):
    with pytest.raises(ConfigError, match=word):
        MelConfig(**changes)


def test_get_preset_unknown_lists_names():
    with pytest.raises(ConfigError) as info:
        get_preset("nope")
    for name in PRESET_NAMES:
        assert name in str(info.value)


def test_mel_replace_unknown_field_refused():
    with pytest.raises(ConfigError, match="bins"):
        get_preset("hifigan").replace(bins=3)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("hifigan", math.log(1e-5)),
        ("tacotron2", math.log(1e-5)),
        ("matcha", (math.log(1e-5) + 5.536622) / 2.116101),
        ("espnet", -10.0),
        ("vocos", math.log(1e-7)),
        ("diffwave-lmnt", 0.0),  # (-120 + 100) / 100 = -0.2, clipped to 0
        ("coqui", -4.0),  # (-180 + 50) / 12.5 = -10.4, clipped to -4
    ],
)
def test_mel_floor(name, expected):
    # float64 scalar formulas; 1e-9 absorbs their rounding and the printed matcha constants
    # are used in both; a wrong floor is off by 0.1 or more
    assert get_preset(name).floor == pytest.approx(expected, abs=1e-9)


def test_mel_floor_unclipped_db():
    cfg = get_preset("diffwave-lmnt").replace(clip=None)
    assert cfg.floor == pytest.approx(-0.2)  # (-120 + 100) / 100 in float64: rounding only


@pytest.mark.parametrize("name", ["hifigan", "tacotron2"])
@pytest.mark.parametrize("length", [1024, 2047, 2048, 3000])
def test_num_frames_matches_the_transform(name, length):
    cfg = get_preset(name)
    expected = length // 256 + (1 if cfg.padding == "center" else 0)
    assert cfg.num_frames(length) == expected
    wav = torch.zeros(length)
    assert MelSpectrogram(cfg)(wav).shape == (80, expected)


def test_num_frames_by_padding():
    center = MelConfig(padding="center")
    same = MelConfig(padding="same")
    assert center.num_frames(256 * 10) == 11 and same.num_frames(256 * 10) == 10
    assert center.num_frames(256 * 10 + 255) == 11 and same.num_frames(256 * 10 + 255) == 10


def test_fast_schedule_constant():
    assert DIFFWAVE_FAST_SCHEDULE == (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)


def test_learning_rate_decay_schedule():
    from types import SimpleNamespace

    from wavediff.train.trainer import Trainer

    cfg = Config.from_dict({"train": {"learning_rate": 1e-3, "lr_decay": 0.5,
                                      "lr_decay_steps": 1000, "lr_min": 2e-4}})

    def lr(step):
        return Trainer._lr(SimpleNamespace(config=cfg, step=step))

    # Python float64 scalar arithmetic (no kernels): approx's rel=1e-6 is ample slack
    assert lr(0) == pytest.approx(1e-3)
    assert lr(1000) == pytest.approx(5e-4)
    assert lr(1500) == pytest.approx(1e-3 * 0.5 ** 1.5)
    assert lr(5000) == pytest.approx(2e-4)  # floored
    constant = Config.from_dict({"train": {"learning_rate": 1e-3}})
    assert Trainer._lr(SimpleNamespace(config=constant, step=10**6)) == pytest.approx(1e-3)
    for bad in ({"lr_decay": 0.0}, {"lr_decay": 1.5}, {"lr_decay_steps": 0},
                {"lr_min": 1.0}, {"lr_min": -1e-5}):
        with pytest.raises(ConfigError, match="lr_"):
            Config.from_dict({"train": {"learning_rate": 1e-3, **bad}})
