"""The Vocoder facade on a tiny random model: decoding, schedules, batches, input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wavediff.audio.presets import MelConfig
from wavediff.config import Config, DiffusionConfig, ModelConfig
from wavediff.diffusion import align_fast_schedule, alpha_bar, get_sampler, plan
from wavediff.diffusion.noise import PositionalNoise
from wavediff.errors import ConfigError, MelError, WavediffError
from wavediff.diffusion.schedule import subsampled_betas as _subsampled_betas
from wavediff.model import DiffWave
from wavediff.inference.decode import ConditionedDenoiser
from wavediff.vocoder import Vocoder

HOP = 16
N_MELS = 8


def tiny_config(padding: str = "same", **diffusion) -> Config:
    return Config(
        audio=MelConfig(preset="custom", sample_rate=8000, n_fft=64, win_length=64,
                        hop_length=HOP, n_mels=N_MELS, fmax=4000.0, padding=padding),
        model=ModelConfig(residual_layers=4, residual_channels=8, dilation_cycle=2,
                          step_embedding_dim=16, step_hidden_dim=32),
        diffusion=DiffusionConfig(**diffusion),
    )


def tiny_vocoder(padding: str = "same", seed: int = 0, **diffusion) -> Vocoder:
    config = tiny_config(padding, **diffusion)
    torch.manual_seed(seed)
    model = DiffWave.from_config(config)
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.5)
        model.output_projection.bias.fill_(0.05)
    return Vocoder(model, config)


def random_mel(batch: int = 2, frames: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, N_MELS, frames, generator=g) - 5.0


@pytest.fixture(scope="module")
def vocoder() -> Vocoder:
    return tiny_vocoder()


# ---------------------------------------------------------------------- decode
def test_decode_shape_range_and_dtype(vocoder):
    wav = vocoder.decode(random_mel(3, 7), seed=0)
    assert wav.shape == (3, 7 * HOP)
    assert wav.dtype == torch.float32
    assert torch.isfinite(wav).all()
    assert wav.abs().max() <= 1.0
    assert wav.std() > 1e-3
    single = vocoder.decode(random_mel(1, 7)[0], seed=0)
    assert single.shape == (7 * HOP,)


def test_decode_accepts_numpy(vocoder):
    mel = random_mel(1, 4)
    a = vocoder.decode(mel.numpy(), seed=3)
    b = vocoder.decode(mel, seed=3)
    assert torch.equal(a, b)  # the same values and decode in one process: bit-identical


def test_seed_determines_the_audio(vocoder):
    mel = random_mel()
    a = vocoder.decode(mel, seed=1)
    # the same seed (or generator state) repeats the same computation: bit-identical
    assert torch.equal(vocoder.decode(mel, seed=1), a)
    assert not torch.allclose(vocoder.decode(mel, seed=2), a)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(vocoder.decode(mel, generator=g), a)


def test_decode_matches_the_sampler_directly(vocoder):
    mel = random_mel()
    expected = get_sampler("fast")(
        ConditionedDenoiser(vocoder.model, mel), vocoder.diffusion, mel,
        schedule=plan("fast", vocoder.config.diffusion),
        draws=PositionalNoise.from_generator(torch.Generator().manual_seed(4), mel.shape[0]))
    # the inference engine reorders the float32 arithmetic: equal up to rounding, ~1e-6 of
    # eps per evaluation (u * sqrt(layers * terms), 4 layers of <= 32-term sums) carried
    # through 6 steps to ~5e-6 of the audio; 5e-5 is ~10x that and a wrong step is ~0.1
    torch.testing.assert_close(vocoder.decode(mel, seed=4), expected, atol=5e-5, rtol=0)


def test_mel_conditions_the_audio(vocoder):
    mel = random_mel()
    louder = vocoder.decode(mel + 2.0, seed=0, input_preset=None)  # taken as it is
    assert not torch.allclose(vocoder.decode(mel, seed=0), louder)


@pytest.mark.parametrize("sampler, steps, calls", [
    ("fast", None, 6), ("fast", 3, 3), ("ddim", None, 6), ("ddim", 4, 4), ("ddpm", None, 50),
])
def test_sampler_and_step_count(vocoder, sampler, steps, calls):
    seen = []
    wav = vocoder.decode(random_mel(1, 3), sampler=sampler, steps=steps, seed=0,
                         callback=lambda i, n, x: seen.append((i, n)))
    assert seen == [(i, calls) for i in range(calls)]
    assert wav.shape == (1, 3 * HOP)
    assert wav.abs().max() <= 1.0


# ---------------------------------------------------------------------- schedules
@pytest.mark.parametrize("steps, indices", [
    (8, [0, 7, 14, 21, 28, 35, 42, 49]),
    (4, [0, 16, 33, 49]),
    (2, [0, 49]),
    (50, list(range(50))),
])
def test_subsampled_betas_reproduce_training_alpha_bars(steps, indices):
    train = DiffusionConfig().training_betas()
    betas = _subsampled_betas(torch.tensor(train, dtype=torch.float64), steps)
    assert len(betas) == steps
    abar_train = alpha_bar(train)
    # float64 products of up to 50 factors, grouped differently: ~1e-15 relative
    np.testing.assert_allclose(alpha_bar(betas).numpy(), abar_train[indices].numpy(),
                               rtol=1e-12)
    # the fast sampler runs the denoiser exactly at those training steps (float64; the
    # alignment divides by level differences, so ~1e-12 at worst)
    np.testing.assert_allclose(align_fast_schedule(train, betas).numpy(), indices, atol=1e-6)
    if steps == 50:
        # 1 - abar_i / abar_(i-1) in float64 cancels: ~1e-16 / beta (<= 1e-12) relative
        np.testing.assert_allclose(betas, train, rtol=1e-9)


def test_subsampled_betas_range():
    train = torch.tensor(DiffusionConfig().training_betas(), dtype=torch.float64)
    with pytest.raises(ConfigError, match="steps"):
        _subsampled_betas(train, 0)
    with pytest.raises(ConfigError, match="steps"):
        _subsampled_betas(train, 51)


def test_fast_with_other_step_count_uses_subsampled_betas(vocoder):
    d = vocoder.config.diffusion
    assert vocoder.schedule_for("fast", None) == d.fast_schedule
    assert vocoder.schedule_for("fast", 6) == d.fast_schedule
    assert vocoder.schedule_for("fast", 8) == _subsampled_betas(vocoder.diffusion.betas, 8)

    seen = []
    reference = Vocoder(vocoder.model, vocoder.config, engine="reference")  # runs model.denoise
    original = vocoder.model.denoise

    def recording(x, steps, conds):
        seen.append(steps[0].item())
        return original(x, steps, conds)

    vocoder.model.denoise = recording
    try:
        reference.decode(random_mel(1, 2), steps=8, seed=0)
    finally:
        del vocoder.model.denoise
    # float64 alignment (~1e-12 off the integers) seen as float32 steps: exact integers
    np.testing.assert_allclose(sorted(seen), [0, 7, 14, 21, 28, 35, 42, 49], atol=1e-6)
    assert seen == sorted(seen, reverse=True)  # from the noisiest step down


def test_ddim_and_ddpm_schedules(vocoder):
    assert vocoder.schedule_for("ddim", None) == vocoder.config.diffusion.ddim_steps
    assert vocoder.schedule_for("ddim", 9) == 9
    assert vocoder.schedule_for("ddpm", None) is None
    assert vocoder.schedule_for("ddpm", 50) is None
    with pytest.raises(ConfigError, match="unknown sampler"):
        vocoder.schedule_for("euler", None)


def test_ddpm_with_wrong_step_count_raises(vocoder):
    with pytest.raises(ConfigError, match="50"):
        vocoder.decode(random_mel(1, 2), sampler="ddpm", steps=10, seed=0)


def test_configured_sampler_is_the_default():
    voc = tiny_vocoder(sampler="ddim", ddim_steps=3)
    seen = []
    voc.decode(random_mel(1, 2), seed=0, callback=lambda i, n, x: seen.append(n))
    assert seen == [3, 3, 3]


# ---------------------------------------------------------------------- batches
def test_decode_batch_of_unequal_lengths(vocoder):
    frames = [3, 7, 1, 5]
    mels = [random_mel(1, f, seed=i)[0].numpy() for i, f in enumerate(frames)]
    wavs = vocoder.decode_batch(mels, seed=0)
    assert [w.shape for w in wavs] == [(f * HOP,) for f in frames]
    assert all(torch.isfinite(w).all() and w.abs().max() <= 1.0 for w in wavs)
    assert all(w.std() > 1e-3 for w in wavs)


def test_lengths_zero_the_padding(vocoder):
    wav = vocoder.decode(random_mel(2, 6), lengths=[6, 2], seed=0)
    assert torch.all(wav[1, 2 * HOP:] == 0)  # written as 0.0: exact
    assert wav[1, :2 * HOP].abs().max() > 0
    assert wav[0, 2 * HOP:].abs().max() > 0


# ---------------------------------------------------------------------- bad input
def test_nan_mel_raises(vocoder):
    mel = random_mel()
    mel[1, 3, 2] = float("nan")
    with pytest.raises(MelError, match="NaN"):
        vocoder.decode(mel, seed=0)
    mel[1, 3, 2] = float("inf")
    with pytest.raises(MelError, match="Inf"):
        vocoder.decode(mel, seed=0)


def test_wrong_bins_raise(vocoder):
    with pytest.raises(MelError, match=str(N_MELS)):
        vocoder.decode(torch.zeros(1, N_MELS + 2, 4), seed=0)
    with pytest.raises(MelError):
        vocoder.decode(torch.zeros(4, N_MELS), seed=0)  # (frames, bins)
    with pytest.raises(MelError):
        vocoder.decode(torch.zeros(1, 1, N_MELS, 4), seed=0)


def test_empty_mel_raises(vocoder):
    with pytest.raises(MelError, match="an empty array"):  # found by the input check
        vocoder.decode(torch.zeros(1, N_MELS, 0), seed=0)
    with pytest.raises(MelError, match="frames > 0"):  # and without it
        vocoder.decode(torch.zeros(N_MELS, 0), seed=0, input_preset=None)


# ---------------------------------------------------------------------- copy synthesis
@pytest.mark.parametrize("padding", ["same", "center"])
@pytest.mark.parametrize("length", [1001, 999, 1024, 257])
def test_copy_synthesis_keeps_the_length(padding, length):
    voc = tiny_vocoder(padding)
    wav = 0.3 * torch.sin(torch.arange(length, dtype=torch.float32) * 0.2)
    out = voc.copy_synthesis(wav, seed=0)
    assert out.shape == (length,)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    assert out.abs().max() > 0
    batch = voc.copy_synthesis(torch.stack([wav, -wav]), seed=0)
    assert batch.shape == (2, length)


def test_mel_uses_the_model_convention():
    voc = tiny_vocoder("center")
    mel = voc.mel(torch.zeros(1000))
    assert mel.shape == (N_MELS, 1000 // HOP + 1)
    # float32 log of the clamp value vs the float64 floor: within 1 ulp, inside rtol 1e-5
    assert torch.allclose(mel, torch.full_like(mel, voc.preset.floor))
    assert voc.preset.padding == "center" and voc.sample_rate == 8000


def test_one_plan_for_every_sampler(vocoder):
    from wavediff.diffusion.schedule import ddim_timesteps

    d = vocoder.config.diffusion
    fast = plan("fast", d)
    assert fast.schedule == list(d.fast_schedule)
    # the same alignment of the same betas: equal, the default rtol 1e-7 is slack
    np.testing.assert_allclose(fast.network_steps,
                               align_fast_schedule(d.training_betas(), d.fast_schedule).numpy())
    assert plan("ddim", d, 5).network_steps == [float(t) for t in ddim_timesteps(50, 5)]
    assert plan("ddim", d, schedule=[3, 20, 49]).network_steps == [3.0, 20.0, 49.0]
    assert plan("ddpm", d).network_steps == [float(t) for t in range(50)]
    with pytest.raises(ConfigError, match="ddpm"):
        plan("ddpm", d, 6)
    # the facade and the engine use the same plan: the denoiser precomputes its steps
    assert vocoder.plan("ddim", 7).network_steps == plan("ddim", d, 7).network_steps
    with pytest.raises(ConfigError, match="fast sampler"):
        vocoder.plan("ddim", schedule=[0.1, 0.5])


def test_vocoder_leaves_the_callers_model_alone_and_engine_is_a_snapshot():
    from wavediff.inference.engine import InferenceEngine

    cfg = tiny_config()
    torch.manual_seed(0)
    model = DiffWave.from_config(cfg)
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.5)
    model.train()
    voc = Vocoder(model, cfg)
    assert model.training and all(p.requires_grad for p in model.parameters())
    mel = random_mel(1, 3)
    before = voc.decode(mel, seed=0)
    engine = InferenceEngine(model)
    cond = engine.conditioning(mel)
    steps = engine.step_bias(torch.tensor([10.0]))
    x = torch.randn(1, mel.shape[-1] * model.hop_length, generator=torch.Generator().manual_seed(1))
    snap = engine.denoise(x, steps, cond)
    with torch.no_grad():  # the caller trains on: every weight moves
        for p in model.parameters():
            p.add_(0.05)
    # the engine answers as before, for every part of the network (its own copy of the
    # weights: the same computation, bit-identical in fact; default tolerance as slack)
    torch.testing.assert_close(engine.denoise(x, steps, engine.conditioning(mel)), snap)
    torch.testing.assert_close(engine.step_bias(torch.tensor([10.0])).step, steps.step)
    # the vocoder sees the new weights (its engine is rebuilt)
    assert not torch.allclose(voc.decode(mel, seed=0), before)


def test_converted_batch_keeps_each_items_length():
    # tacotron2 mels (centred frames) carry one frame more than the hifigan model's own
    from wavediff.audio.mel import MelSpectrogram
    from wavediff.audio.presets import get_preset
    from wavediff.audio.prepare import convert_batch

    target = get_preset("hifigan")
    wav = 0.1 * torch.randn(2, 8192, generator=torch.Generator().manual_seed(0))
    foreign = MelSpectrogram(get_preset("tacotron2"))(wav)
    assert foreign.shape[-1] == MelSpectrogram(target)(wav).shape[-1] + 1
    mel, frames = convert_batch(foreign, target, "tacotron2")
    assert frames == [foreign.shape[-1] - 1] * 2 and mel.shape[-1] == frames[0]

    cfg = Config.from_dict({"audio": {"preset": "hifigan"},
                            "model": {"residual_layers": 2, "residual_channels": 4,
                                      "dilation_cycle": 2}})
    torch.manual_seed(0)
    model = DiffWave.from_config(cfg)
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.5)
    voc = Vocoder(model, cfg)
    given = [foreign.shape[-1], 20]  # the second item is padding after 20 frames
    out = voc.decode(foreign, input_preset="tacotron2", lengths=given, seed=0, steps=2)
    hop = target.hop_length
    assert out.shape[-1] == frames[0] * hop
    assert out[0, -hop:].abs().sum() > 0           # the whole first item is audio
    assert out[1, 19 * hop:].abs().sum() == 0      # zeroed: the second ends one frame earlier too
    assert out[1, : 19 * hop].abs().sum() > 0


# ---------------------------------------------------------------------- one default with the CLI
def tiny_hifigan_vocoder() -> Vocoder:
    cfg = Config.from_dict({"audio": {"preset": "hifigan"},
                            "model": {"residual_layers": 2, "residual_channels": 4,
                                      "dilation_cycle": 2}})
    torch.manual_seed(0)
    return Vocoder(DiffWave.from_config(cfg), cfg)


def test_python_decode_detects_the_convention_as_the_cli_does(caplog):
    # an ESPnet (T, 80) log10 mel given to decode with no option is detected and converted,
    # as `wavediff vocode` does, not vocoded as if it were the model's own convention
    import inspect

    from wavediff.cli.main import build_parser

    voc = tiny_hifigan_vocoder()
    cli_default = build_parser().parse_args(["vocode", "--checkpoint", "x", "--outdir", "y",
                                             "m.npy"]).input_preset
    for method in (voc.decode, voc.decode_batch, voc.decode_many):
        default = inspect.signature(method).parameters.get("input_preset")
        assert (default.default if default else "auto") == cli_default == "auto"
    # a mel file written by ESPnet's own code (T, 80), a short piece of it
    feats = np.load(Path(__file__).parent / "data" / "reference_mels" / "espnet.npy")[:60]
    assert feats.shape == (60, 80)
    with caplog.at_level("INFO", logger="wavediff.convert"):
        out = voc.decode(feats, steps=2, seed=0)
    assert "approximate conversion espnet -> hifigan" in caplog.text
    hop = voc.hop_length
    assert out.shape == ((feats.shape[0] - 1) * hop,)  # centred frames: one fewer
    # decode_batch and decode_many take the same files, stored layout, unequal lengths
    for method in (voc.decode_batch, voc.decode_many):
        outs = method([feats, feats[:20]], steps=2, seed=0)
        assert [o.shape[-1] for o in outs] == [(feats.shape[0] - 1) * hop, 19 * hop]
    # normalised features without their statistics are refused, not vocoded into noise
    normalised = (feats - feats.mean(0)) / (feats.std(0) + 1e-3)
    with pytest.raises(MelError, match="normalised per bin.*--stats"):
        voc.decode(normalised, steps=2, seed=0)


def test_non_finite_audio_from_a_finite_mel_is_blamed_on_the_model():
    voc = tiny_vocoder()
    with torch.no_grad():
        voc.model.output_projection.weight.fill_(3e38)  # overflows to inf in float32
    with pytest.raises(WavediffError, match="the model produced .* NaN or infinite samples "
                                            "from a finite mel.*--precision fp32"):
        voc.decode(random_mel(1, 4), seed=0, input_preset=None)
