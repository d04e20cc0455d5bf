"""The training switches for faster convergence: PriorGrad's prior, the auxiliary STFT loss,
continuous noise levels; each checked against closed forms, and 'off' against the plain
DiffWave arithmetic bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_corpus, tiny_config_dict
from wavediff.audio.presets import get_preset
from wavediff.cli.main import main
from wavediff.config import Config, DiffusionConfig
from wavediff.diffusion import GaussianDiffusion, SamplingPlan, sample_ddim, sample_fast
from wavediff.diffusion.prior import EnergyPrior, energy_range, frame_energy
from wavediff.errors import ConfigError
from wavediff.evaluation.spectral import multi_resolution_stft_loss
from wavediff.checkpoint import load_checkpoint
from wavediff.train.trainer import Trainer
from wavediff.vocoder import Vocoder

HIFIGAN = get_preset("hifigan")
HOP = HIFIGAN.hop_length


def _mel_of_levels(levels: list[float], n_mels: int = 80) -> torch.Tensor:
    """A hifigan mel (natural log) whose every bin of frame f has linear value levels[f]."""
    return torch.log(torch.tensor(levels, dtype=torch.float32)).repeat(n_mels, 1)[None]


class _Dummy:
    """A closed-form denoiser: returns ``scale * x`` and records what it was given."""

    hop_length = HOP

    def __init__(self, scale: float = 0.0) -> None:
        self.scale = scale
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, steps, mel):
        self.calls.append((x.clone(), steps.clone()))
        return self.scale * x


# ---------------------------------------------------------------------- PriorGrad prior
def test_frame_energy_and_std_closed_form():
    mel = _mel_of_levels([0.1, 0.5, 1.0, 2.0])
    # float32 log, exp, a mean over 80 bins and a sqrt: a few ulps (<= 1e-6 relative), well
    # inside the float32 default tolerance (atol 1e-5, rtol 1.3e-6); a wrong frame is off by 0.4+
    torch.testing.assert_close(frame_energy(mel, HIFIGAN)[0], torch.tensor([0.1, 0.5, 1.0, 2.0]))
    prior = EnergyPrior(HIFIGAN, (0.0, 1.0), floor=0.2)
    # (e - 0) / (1 - 0) clamped to [0.2, 1]
    torch.testing.assert_close(prior.frame_std(mel)[0], torch.tensor([0.2, 0.5, 1.0, 1.0]))
    std = prior.std(mel)
    assert std.shape == (1, 4 * HOP)
    # 0.2 is the clamp's own floor (exact) and each frame's value is repeated over its hop
    # (data movement: exact); 0.5 itself comes through log, exp, a mean and a sqrt in float32,
    # so it is compared to a few ulps
    assert torch.all(std[0, :HOP] == 0.2) and torch.all(std[0, HOP:2 * HOP] == std[0, HOP])
    torch.testing.assert_close(std[0, HOP], torch.tensor(0.5), rtol=0, atol=1e-6)


def test_energy_range_over_a_set():
    mels = [_mel_of_levels([0.3, 0.7])[0].numpy(), _mel_of_levels([0.05, 0.4])[0].numpy()]
    lo, hi = energy_range(mels, HIFIGAN)
    # float32 log/exp/mean/sqrt: a few ulps (~1e-7 relative); 1e-5 is slack
    assert lo == pytest.approx(0.05, rel=1e-5) and hi == pytest.approx(0.7, rel=1e-5)
    with pytest.raises(ConfigError, match="no spread"):
        energy_range([_mel_of_levels([0.3, 0.3])[0].numpy()], HIFIGAN)


def test_prior_loss_scales_noise_and_weights_by_inverse_std():
    diff = GaussianDiffusion([0.1, 0.2, 0.3], prior=EnergyPrior(HIFIGAN, (0.0, 1.0), 0.1))
    mel = _mel_of_levels([0.25, 0.5])
    x0 = torch.full((1, 2 * HOP), 0.3)
    noise = torch.randn(1, 2 * HOP, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1])
    zero = _Dummy(0.0)
    loss = diff.loss(zero, x0, mel, t=t, noise=noise)
    # eps_hat = 0: |0 - std * noise| / std = |noise|, each term within 2 roundings (1.2e-7)
    # and summed in the same order: rel=1e-6 (~17 ulps) covers it
    assert float(loss) == pytest.approx(float(noise.abs().mean()), rel=1e-6)
    abar = float(diff.alpha_bar[1])
    std = diff.noise_std(mel)
    expected_xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * std * noise
    # the same formula with the products in another order: a few float32 roundings of O(1)
    # values, inside the float32 default tolerance (atol 1e-5, rtol 1.3e-6)
    torch.testing.assert_close(zero.calls[0][0], expected_xt)


def test_prior_sampling_is_the_plain_chain_scaled_by_std():
    """All sampler updates are linear: with the prior, each state is std times the plain one."""
    mel = _mel_of_levels([0.2, 0.6, 0.9])
    prior = EnergyPrior(HIFIGAN, (0.0, 1.0), 0.1)
    plain, with_prior = GaussianDiffusion([0.1, 0.2, 0.3]), GaussianDiffusion([0.1, 0.2, 0.3], prior=prior)
    std = prior.std(mel)
    for sampler, kw in ((sample_fast, {"schedule": SamplingPlan.fast(plain.betas, [0.1, 0.3])}),
                        (sample_ddim, {"schedule": SamplingPlan.ddim(plain.betas, 3)})):
        outs = []
        for diff in (plain, with_prior):
            last = {}
            sampler(_Dummy(0.5), diff, mel, generator=torch.Generator().manual_seed(3),
                    callback=lambda i, n, x: last.update(x=x.clone()), **kw)
            outs.append(last["x"])
        # elementwise float32 only (no sums, so the same on every CPU), but the two chains
        # round differently: ~19 roundings of values up to ~4 over 2-3 steps stay below
        # 19 * 6e-8 * 4 = 4.5e-6 even if they all add up; a std missing from one draw or
        # from x_T changes values by 10% or more
        torch.testing.assert_close(outs[1], outs[0] * std, rtol=1e-5, atol=5e-6)


def test_priorgrad_needs_its_statistics():
    with pytest.raises(ConfigError, match="prior_energy"):
        GaussianDiffusion.from_config(DiffusionConfig(prior="priorgrad"), HIFIGAN)
    with pytest.raises(ConfigError, match="min < max"):
        Config.from_dict({"diffusion": {"prior": "priorgrad", "prior_energy": [1.0, 0.5]}})


# ---------------------------------------------------------------------- off = today's DiffWave
def test_switches_off_reproduce_plain_diffwave_bit_for_bit():
    diff = GaussianDiffusion.from_config(DiffusionConfig(), HIFIGAN)
    assert diff.prior is None and not diff.continuous
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    t = diff.draw_steps(5, g1, torch.device("cpu"))
    assert torch.equal(t, torch.randint(0, 50, (5,), generator=g2))  # same draws: integers
    x0 = torch.randn(5, 3 * HOP, generator=g1)
    mel = torch.randn(5, 80, 3)
    noise = torch.randn(5, 3 * HOP, generator=g1)
    zero = _Dummy(0.0)
    loss = diff.loss(zero, x0, mel, t=t, noise=noise)
    abar = diff.alpha_bar[t]  # the plain formula, float64 -> x0's dtype
    x_t = abar.sqrt().float()[:, None] * x0 + (1 - abar).sqrt().float()[:, None] * noise
    # the same operations in the same order and dtypes in one process: bit-identical
    assert torch.equal(zero.calls[0][0], x_t)
    # eps_hat = 0 makes the error exactly -noise; the same mean of the same values
    assert torch.equal(loss, noise.abs().mean())


# ---------------------------------------------------------------------- continuous levels
def test_continuous_levels_interpolate_sqrt_alpha_bar():
    diff = GaussianDiffusion(torch.linspace(1e-4, 0.05, 50).tolist(), continuous=True)
    t = diff.draw_steps(1000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert t.dtype == torch.float64 and float(t.min()) >= 0 and float(t.max()) <= 49
    assert (t != t.round()).float().mean() > 0.99  # fractional, not the 50 training steps
    x0 = torch.ones(3, 4)
    levels = diff.alpha_bar.sqrt()
    signal, sigma = diff._coefficients(torch.tensor([2.0, 2.5, 49.0], dtype=torch.float64), x0)
    expected = torch.stack([levels[2], (levels[2] + levels[3]) / 2, levels[49]]).float()
    # float64 interpolation rounded to float32 (<= 1 ulp apart) and a float32 sum of squares
    # (a few ulps of 1): inside the float32 default tolerance (atol 1e-5, rtol 1.3e-6)
    torch.testing.assert_close(signal[:, 0], expected)
    torch.testing.assert_close(sigma[:, 0] ** 2 + signal[:, 0] ** 2, torch.ones(3))


# ---------------------------------------------------------------------- auxiliary STFT loss
def test_stft_loss_closed_form():
    ref = torch.randn(2, 8192, generator=torch.Generator().manual_seed(0))
    # the same STFT of the same input twice: the differences are exactly 0
    assert float(multi_resolution_stft_loss(ref, ref)) == pytest.approx(0.0, abs=1e-6)
    # gen = ref / 2: spectral convergence 1/2, log-magnitude difference ln 2 at every bin
    # (halving is exact in floating point; the float32 logs and norms round by ~1e-6, so
    # 1e-3 is slack that still tells ln 2 = 0.69 from any other gain)
    value = float(multi_resolution_stft_loss(ref, ref / 2))
    assert value == pytest.approx(0.5 + math.log(2.0), abs=1e-3)


def test_stft_loss_gradient_is_finite_on_silence():
    ref = torch.zeros(2, 4096)
    gen = torch.zeros(2, 4096, requires_grad=True)
    multi_resolution_stft_loss(ref, gen).backward()
    assert torch.isfinite(gen.grad).all()


def test_aux_loss_targets():
    diff = GaussianDiffusion([0.1, 0.2])
    x0 = torch.randn(1, 4096, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 4096, generator=torch.Generator().manual_seed(2))
    mel = torch.zeros(1, 80, 16)
    t = torch.tensor([1])
    seen = {}

    def aux(ref, est):
        seen["ref"], seen["est"] = ref, est
        return torch.tensor(2.0)

    base = diff.loss(_Dummy(0.0), x0, mel, t=t, noise=noise)
    with_aux = diff.loss(_Dummy(0.0), x0, mel, t=t, noise=noise, aux_loss=aux, aux_weight=0.25)
    # 0.25 * 2 is exact; float32 (base + 0.5) - base is within one ulp of 1.3 (1.2e-7)
    assert float(with_aux - base) == pytest.approx(0.5)
    abar = float(diff.alpha_bar[1])
    x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise
    # eps_hat = 0; the same formula rounded in another order: a few float32 ulps of O(1)
    # values, inside the float32 default tolerance (atol 1e-5, rtol 1.3e-6)
    torch.testing.assert_close(seen["est"], x_t / math.sqrt(abar))
    assert torch.equal(seen["ref"], x0)  # passed through untouched
    diff.loss(_Dummy(0.0), x0, mel, t=t, noise=noise, aux_loss=aux, aux_weight=1.0,
              aux_target="noise")
    # passed through untouched, and 0 * x is exactly zero
    assert torch.equal(seen["ref"], noise) and torch.equal(seen["est"], torch.zeros_like(noise))


# ---------------------------------------------------------------------- through the trainer
@pytest.mark.slow  # trains (4 steps of a tiny model): -m "not slow" trains nothing
def test_priorgrad_training_stores_statistics_and_decodes(tmp_path):
    make_corpus(tmp_path / "wavs", n=3, seconds=0.5)
    assert main(["preprocess", "--wav-dir", str(tmp_path / "wavs"),
                 "--dumpdir", str(tmp_path / "dump"), "-q"]) == 0
    data = tiny_config_dict(max_steps=4, save_interval=2, log_interval=2, aux_loss_weight=0.1)
    data["diffusion"] = {"prior": "priorgrad", "conditioning": "noise_level"}
    cfg = Config.from_dict(data)
    Trainer(cfg, tmp_path / "dump", None, tmp_path / "exp", progress=False).run()
    state = load_checkpoint(tmp_path / "exp")
    energy = state["config"].diffusion.prior_energy
    assert energy is not None and 0 < energy[0] < energy[1]
    assert Config.load(tmp_path / "exp" / "config.yaml").diffusion.prior_energy == energy
    # resuming with the original config (no statistics) keeps the measured ones
    resumed = Trainer(Config.from_dict({**data, "train": {**data["train"], "max_steps": 6}}),
                      tmp_path / "dump", None, tmp_path / "exp", resume=True, progress=False)
    assert resumed.config.diffusion.prior_energy == energy
    voc = Vocoder.from_pretrained(tmp_path / "exp")
    assert voc.diffusion.prior is not None
    mel = np.load(next((tmp_path / "dump").glob("*.npz")))["mel"]
    for sampler in ("fast", "ddim"):
        wav = voc.decode(mel, seed=0, sampler=sampler)
        assert wav.shape == (mel.shape[-1] * HOP,) and torch.isfinite(wav).all()
    long = voc.decode(mel, seed=0, chunk_seconds=0.05)  # chunked: same audio
    # chunks run the engine's float32 GEMMs on other shapes: ~1e-6 after the 6 steps; 1e-4
    # is ample and a misplaced chunk or crossfade changes samples by ~0.1
    torch.testing.assert_close(long, voc.decode(mel, seed=0, chunk_seconds=0), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------- wavelet sub-bands
def test_haar_split_is_orthonormal_and_perfectly_reconstructs():
    from wavediff.model.diffwave import haar_analysis, haar_synthesis

    x = torch.randn(3, 1024, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = haar_analysis(x)
    assert z.shape == (3, 2, 512)
    # float64: 4 roundings of values up to ~4 are ~1e-15; 1e-12 leaves room for any kernel
    torch.testing.assert_close(haar_synthesis(z), x, rtol=0, atol=1e-12)
    # energy kept: float64 sums of 1024 squares, default float64 tolerance (rtol 1e-7)
    torch.testing.assert_close(z.square().sum(dim=(1, 2)), x.square().sum(dim=1))
    # a constant signal is all low band: (c + c) / sqrt(2), one float32 rounding
    z = haar_analysis(torch.ones(1, 8))
    torch.testing.assert_close(z[0, 0], torch.full((4,), math.sqrt(2.0)))
    assert float(z[0, 1].abs().max()) == 0.0  # (1 - 1) * c is exactly 0


def test_subband_model_runs_at_half_rate_and_decodes(tmp_path):
    from wavediff.config import ModelConfig
    from wavediff.model import DiffWave

    cfg = ModelConfig(residual_layers=2, residual_channels=8, dilation_cycle=2,
                      step_embedding_dim=16, step_hidden_dim=32, subbands=2)
    model = DiffWave(80, HOP, cfg)
    mel = torch.randn(2, 80, 3) - 5
    conds = model.conditioning(mel)
    assert conds[0].shape == (2, 16, 3 * HOP // 2)  # the layers run at half the rate
    with torch.no_grad():
        model.output_projection.weight.normal_()
    eps = model(torch.randn(2, 3 * HOP), torch.tensor([3.0, 7.0]), mel)
    assert eps.shape == (2, 3 * HOP) and torch.isfinite(eps).all()
    config = Config.from_dict({**tiny_config_dict(), "model": {
        "residual_layers": 2, "residual_channels": 8, "dilation_cycle": 2,
        "step_embedding_dim": 16, "step_hidden_dim": 32, "subbands": 2}})
    voc = Vocoder(DiffWave.from_config(config), config, precision="fp32")
    assert voc.engine == "fused"  # the engine runs sub-band models too (tests/test_subbands.py)
    assert voc.decode(mel[0], seed=0, input_preset=None).shape == (3 * HOP,)
    with pytest.raises(ConfigError, match="subbands"):
        DiffWave(80, 255, ModelConfig(subbands=2))


def test_every_convergence_run_is_a_valid_config():
    """benchmarks/convergence.py: each run's overrides on its base make a valid config, and
    the runs trained through their own schedule are few-step runs."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "convergence.py"
    spec = importlib.util.spec_from_file_location("convergence_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    base = Config.from_dict(bench.BASE)
    assert set(bench.OWN_SCHEDULE) <= set(bench.RUNS)
    for name, overrides in bench.RUNS.items():
        config = base.override(overrides)  # raises ConfigError on a bad key or value
        assert (config.train.objective == "few_step") == (name in bench.OWN_SCHEDULE), name
    assert base.override(bench.RUNS["priorgrad+noise_level+gl_cond"]).model.gl_condition == 16
