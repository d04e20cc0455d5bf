"""Checkpoints: round trips through the Vocoder, safe loading, atomic writes, pruning."""

from __future__ import annotations

import errno
import os
import pickle
import shlex

import numpy as np
import pytest
import torch

from wavediff.audio.presets import MelConfig
from wavediff.config import Config, DiffusionConfig, ModelConfig
from wavediff.errors import CheckpointError
from wavediff.model import DiffWave
from wavediff import checkpoint as ckpt
from wavediff.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from wavediff.vocoder import Vocoder


def tiny_config() -> Config:
    """A config far from the defaults: 8 mels, hop 16, 4 layers, T=20."""
    return Config(
        audio=MelConfig(preset="custom", sample_rate=8000, n_fft=64, win_length=64,
                        hop_length=16, n_mels=8, fmax=4000.0),
        model=ModelConfig(residual_layers=4, residual_channels=8, dilation_cycle=2,
                          step_embedding_dim=16, step_hidden_dim=32),
        diffusion=DiffusionConfig(num_steps=20, beta_end=0.1),
    )


def random_model(config: Config, seed: int = 0) -> DiffWave:
    torch.manual_seed(seed)
    model = DiffWave.from_config(config)
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.5)
        model.output_projection.bias.fill_(0.05)
    return model


def perturbed_state(model: DiffWave, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in
            model.state_dict().items()}


def state_of(model: DiffWave, config: Config, step: int = 7, ema=None) -> dict:
    return {"model": model.state_dict(), "ema": ema, "optimizer": {}, "step": step,
            "config": config.to_dict()}


def mel_input(config: Config, frames: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, config.audio.n_mels, frames, generator=g) - 4.0


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # weights saved and read back: bit-identical


# ---------------------------------------------------------------------- round trip
def test_round_trip_state_and_audio(tmp_path):
    config = tiny_config()
    model = random_model(config)
    path = save_checkpoint(tmp_path / checkpoint_name(7), state_of(model, config))
    assert path.exists()

    state = load_checkpoint(path)
    assert state["format"] == FORMAT and state["version"] == FORMAT_VERSION
    assert state["step"] == 7
    assert state["path"] == path
    assert isinstance(state["config"], Config)
    assert state["config"].to_dict() == config.to_dict()
    assert_same_state(state["model"], model.state_dict())

    mel = mel_input(config)
    reference = Vocoder(model, config).decode(mel, seed=11)
    assert reference.shape == (2, 6 * 16)
    assert reference.abs().max() > 0
    loaded = Vocoder.from_pretrained(path)
    assert loaded.step == 7
    # the same weights (bit for bit), decode and seed in one process: bit-identical audio
    assert torch.equal(loaded.decode(mel, seed=11), reference)
    from_dir = Vocoder.from_pretrained(tmp_path)
    assert torch.equal(from_dir.decode(mel, seed=11), reference)


def test_experiment_dir_resolves_to_newest(tmp_path):
    config = tiny_config()
    old, new = random_model(config, seed=1), random_model(config, seed=2)
    save_checkpoint(tmp_path / checkpoint_name(100), state_of(new, config, step=100))
    save_checkpoint(tmp_path / checkpoint_name(20), state_of(old, config, step=20))
    assert resolve_checkpoint(tmp_path) == tmp_path / checkpoint_name(100)
    voc = Vocoder.from_pretrained(tmp_path)
    assert voc.step == 100
    assert_same_state(voc.model.state_dict(), new.state_dict())


def test_ema_preferred_and_raw_on_request(tmp_path):
    config = tiny_config()
    model = random_model(config)
    ema = perturbed_state(model, seed=5)
    path = save_checkpoint(tmp_path / "c.pt", state_of(model, config, ema=ema))
    assert_same_state(Vocoder.from_pretrained(path).model.state_dict(), ema)
    assert_same_state(Vocoder.from_pretrained(path, use_ema=False).model.state_dict(),
                      model.state_dict())
    mel = mel_input(config)
    a = Vocoder.from_pretrained(path).decode(mel, seed=0)
    b = Vocoder.from_pretrained(path, use_ema=False).decode(mel, seed=0)
    assert not torch.equal(a, b)


def test_without_ema_raw_weights_are_used(tmp_path):
    config = tiny_config()
    model = random_model(config)
    path = save_checkpoint(tmp_path / "c.pt", state_of(model, config, ema=None))
    assert_same_state(Vocoder.from_pretrained(path).model.state_dict(), model.state_dict())


def test_model_is_rebuilt_from_the_stored_config(tmp_path):
    config = tiny_config()
    model = random_model(config)
    path = save_checkpoint(tmp_path / "c.pt", state_of(model, config))
    voc = Vocoder.from_pretrained(path)
    assert voc.config.to_dict() == config.to_dict()
    assert len(voc.model.residual_layers) == 4
    assert voc.model.n_mels == 8 and voc.model.hop_length == 16
    assert voc.diffusion.num_steps == 20
    assert voc.sample_rate == 8000 and voc.hop_length == 16 and voc.n_mels == 8
    assert voc.decode(torch.zeros(8, 3), seed=0, input_preset=None).shape == (48,)


def test_vocoder_parameters_are_frozen(tmp_path):
    config = tiny_config()
    path = save_checkpoint(tmp_path / "c.pt", state_of(random_model(config), config))
    voc = Vocoder.from_pretrained(path)
    assert not voc.model.training
    assert not any(p.requires_grad for p in voc.model.parameters())


# ---------------------------------------------------------------------- safe loading
class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "marker"
    config = tiny_config()
    state = {"format": FORMAT, "version": FORMAT_VERSION, "step": 1,
             "model": random_model(config).state_dict(), "config": config.to_dict(),
             "extra": _Payload(str(marker))}
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    assert not marker.exists()
    # the payload is live: an unsafe load would run it
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        Vocoder.from_pretrained(path)
    assert not marker.exists()


def test_plain_pickle_of_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps({"model": _Payload(str(marker))}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_file_is_refused(tmp_path):
    config = tiny_config()
    path = save_checkpoint(tmp_path / "c.pt", state_of(random_model(config), config))
    data = path.read_bytes()
    for n in (0, 1, 10, len(data) // 3, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="c.pt"):
            load_checkpoint(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.pt"
    for seed in range(100):  # some of these make the unpickler fail with IndexError
        rng = np.random.default_rng(seed)
        path.write_bytes(rng.bytes(int(rng.integers(1, 2048))))
        with pytest.raises(CheckpointError, match="noise.pt"):
            load_checkpoint(path)


def test_file_without_marker_is_refused(tmp_path):
    config = tiny_config()
    path = tmp_path / "foreign.pt"
    torch.save({"model": random_model(config).state_dict(), "step": 3,
                "config": config.to_dict()}, path)
    with pytest.raises(CheckpointError, match=FORMAT):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=FORMAT):
        load_checkpoint(path)


def test_newer_version_is_refused(tmp_path):
    config = tiny_config()
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "version": FORMAT_VERSION + 1, "step": 3,
                "model": random_model(config).state_dict(), "config": config.to_dict()}, path)
    with pytest.raises(CheckpointError, match="version") as info:
        load_checkpoint(path)
    assert str(FORMAT_VERSION + 1) in str(info.value)


def test_missing_entry_and_bad_config_are_refused(tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "step": 3, "model": {}}, path)
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(path)
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "step": 3, "model": {},
                "config": {"train": {"loss": "l3"}}}, path)
    with pytest.raises(CheckpointError, match="train.loss"):
        load_checkpoint(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


# ---------------------------------------------------------------------- atomic writes
def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    config = tiny_config()
    path = tmp_path / checkpoint_name(10)
    save_checkpoint(path, state_of(random_model(config, seed=1), config, step=10))
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(path, state_of(random_model(config, seed=2), config, step=10))
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(10)]
    assert load_checkpoint(path)["step"] == 10


def test_failed_write_of_new_file_leaves_nothing(tmp_path, monkeypatch):
    config = tiny_config()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "new.pt", state_of(random_model(config), config))
    assert list(tmp_path.iterdir()) == []


def test_save_overwrites_atomically(tmp_path):
    config = tiny_config()
    path = tmp_path / "c.pt"
    save_checkpoint(path, state_of(random_model(config, seed=1), config, step=1))
    second = random_model(config, seed=2)
    save_checkpoint(path, state_of(second, config, step=2))
    state = load_checkpoint(path)
    assert state["step"] == 2
    assert_same_state(state["model"], second.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# ---------------------------------------------------------------------- listing, pruning
def _touch_checkpoints(directory, steps):
    for s in steps:
        (directory / checkpoint_name(s)).write_bytes(b"x")


def test_list_and_latest_sort_numerically(tmp_path):
    _touch_checkpoints(tmp_path, [9, 100, 10, 1000, 20])
    (tmp_path / "checkpoint-latest.pt").write_bytes(b"x")
    (tmp_path / "checkpoint-5steps.pt.bak").write_bytes(b"x")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [9, 10, 20, 100, 1000]
    assert latest_checkpoint(tmp_path) == tmp_path / checkpoint_name(1000)


def test_prune_keeps_newest_by_step_number(tmp_path):
    _touch_checkpoints(tmp_path, [9, 100, 10, 1000, 20])
    deleted = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in deleted) == sorted(
        checkpoint_name(s) for s in (9, 10, 20))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [checkpoint_name(100), checkpoint_name(1000)])
    assert prune_checkpoints(tmp_path, keep=5) == []
    assert len(list(tmp_path.iterdir())) == 2


def test_resolve_checkpoint_of_empty_dir_raises(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(CheckpointError):
        Vocoder.from_pretrained(tmp_path)
    assert latest_checkpoint(tmp_path) is None


def test_resolve_checkpoint_of_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    assert resolve_checkpoint(path) == path
    assert ckpt.checkpoint_name(42) == "checkpoint-42steps.pt"


def test_weights_fit_a_run_that_differs_only_in_inference_settings():
    from wavediff.checkpoint import incompatible_section

    base = Config.from_dict({"diffusion": {"prior": "priorgrad", "prior_energy": [-9.0, 1.0]}})
    same = Config.from_dict({"diffusion": {"prior": "priorgrad", "prior_energy": [-9.0, 1.0],
                                           "sampler": "ddim", "consistency_iters": 2,
                                           "fast_schedule": [1e-4, 0.5]},
                             "train": {"learning_rate": 1.0}})
    assert incompatible_section(base, same) is None
    unmeasured = Config.from_dict({"diffusion": {"prior": "priorgrad"}})
    assert incompatible_section(base, unmeasured) is None
    for other, section in (({"diffusion": {"prior": "priorgrad", "prior_energy": [-8.0, 1.0]}},
                            "diffusion"),
                           ({"diffusion": {"num_steps": 20}}, "diffusion"),
                           ({"model": {"residual_channels": 8}}, "model"),
                           ({"audio": {"preset": "vocos"}}, "audio")):
        assert incompatible_section(base, Config.from_dict(other)) == section
