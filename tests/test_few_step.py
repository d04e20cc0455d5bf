"""Training through the few-step decode (train.objective: few_step) and the discriminators."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from conftest import make_dump, tiny_config_dict
from wavediff.checkpoint import load_checkpoint
from wavediff.config import Config
from wavediff.diffusion import GaussianDiffusion, sample_fast
from wavediff.diffusion.samplers import unrolled_fast
from wavediff.diffusion.schedule import plan
from wavediff.errors import ConfigError
from wavediff.evaluation.spectral import PHASE_FFT_SIZES, phase_derivative_loss
from wavediff.model import DiffWave
from wavediff.train.adversarial import (
    Discriminators, discriminator_loss, feature_matching_loss, generator_loss,
)
from wavediff.train.trainer import Trainer


def _model(seed: int = 0) -> tuple[DiffWave, Config]:
    cfg = Config.from_dict(tiny_config_dict())
    torch.manual_seed(seed)
    model = DiffWave.from_config(cfg)
    torch.nn.init.normal_(model.output_projection.weight, std=0.1)  # not the zero init
    return model, cfg


def test_unrolled_chain_is_the_fast_sampler_with_gradients():
    model, cfg = _model()
    diffusion = GaussianDiffusion.from_config(cfg.diffusion, cfg.audio)
    mel = torch.randn(2, 80, 4)
    noise = torch.randn(2, 4 * 256, generator=torch.Generator().manual_seed(1))
    fast = plan("fast", cfg.diffusion)  # the configured fast_schedule
    ref = sample_fast(model, diffusion, mel, schedule=fast, noise=noise,
                      generator=torch.Generator().manual_seed(2))
    out = unrolled_fast(model, diffusion, mel, schedule=fast, noise=noise,
                        generator=torch.Generator().manual_seed(2))
    # the same operations on the same inputs in one process (autograd only records them):
    # identical up to the last bit in practice; 1e-6 allows a kernel that differs with
    # gradient mode and still catches a different draw order (differences of order 0.1)
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=1e-6)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert float(model.output_projection.weight.grad.abs().sum()) > 0
    # gradients reach the first layer through every step of the chain
    assert float(model.input_projection.weight.grad.abs().sum()) > 0


def test_discriminators_judge_and_learn_to_tell_real_from_fake():
    torch.manual_seed(0)
    d = Discriminators()
    t = torch.arange(4096) / 22050
    real = (0.5 * torch.sin(2 * math.pi * 150 * t)).expand(2, -1).contiguous()
    fake = 0.05 * torch.randn(2, 4096, generator=torch.Generator().manual_seed(3))
    judged = d(real)
    assert len(judged) == 8  # 5 periods + 3 resolutions
    for logits, features in judged:
        assert logits.shape[0] == 2 and logits.dim() == 2 and len(features) >= 4
    opt = torch.optim.Adam(d.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = discriminator_loss(d(real), d(fake))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # 8 discriminators, each starting near (1 - 0)^2 + 0^2 = 1: they learn the difference
    assert losses[-1] < 0.5 * losses[0], losses
    # a perfect discriminator's verdicts give the generator the largest loss, and feature
    # matching is zero only for identical audio
    with torch.no_grad():
        assert float(generator_loss(d(fake))) > float(generator_loss(d(real)))
    assert float(feature_matching_loss(d(real), d(real))) == 0.0  # exactly: |a - a| = 0
    assert float(feature_matching_loss(d(real), d(fake))) > 0.0


def test_objective_fields_are_checked():
    with pytest.raises(ConfigError, match="train.objective"):
        Config.from_dict(tiny_config_dict(objective="gan"))
    with pytest.raises(ConfigError, match="train.adversarial_weight"):
        Config.from_dict(tiny_config_dict(objective="few_step", adversarial_weight=-1))
    with pytest.raises(ConfigError, match="train.phase_loss_weight"):
        Config.from_dict(tiny_config_dict(objective="few_step", phase_loss_weight=float("nan")))
    with pytest.raises(ConfigError, match="discriminator_lr"):
        Config.from_dict(tiny_config_dict(discriminator_lr=0))



# ---------------------------------------------------------------------- phase-derivative loss
def _voiced(seconds: float = 0.5, f0: float = 110.0, sr: int = 22050) -> torch.Tensor:
    """A pulse-train-like voiced signal: 30 harmonics of f0 with falling amplitudes and
    fixed phases (a waveform whose phase structure is not that of random phases)."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return sum(torch.cos(2 * math.pi * k * f0 * t + 0.3 * k * k) / k
               for k in range(1, 31)).float() / 3


def test_phase_loss_sees_the_phase_derivatives_only():
    ref = _voiced()
    # invariant to what the mel cannot tell and the ear does not hear: gain and polarity
    # (a constant phase offset of pi in every bin); float32 STFTs of the same samples round
    # alike, so the few-1e-7 left is rounding
    for same in (ref, 0.5 * ref, -ref):
        assert float(phase_derivative_loss(ref, same)) == pytest.approx(0.0, abs=1e-4)
    # the same harmonics with random phases: the same long-window magnitude spectrum (a
    # mel loss sees nothing). A window of many periods resolves the harmonics and sees
    # almost nothing either (each harmonic alone has the reference's phase derivatives);
    # a window of about one period sees the pulse's shape change: why the objective takes
    # both sizes (PHASE_FFT_SIZES)
    t = torch.arange(ref.numel(), dtype=torch.float64) / 22050
    phases = torch.rand(30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scrambled = sum(torch.cos(2 * math.pi * k * 110.0 * t + 2 * math.pi * phases[k - 1]) / k
                    for k in range(1, 31)).float() / 3
    assert float(phase_derivative_loss(ref, scrambled, n_fft=1024, hop=256)) < 0.05
    value = float(phase_derivative_loss(ref, scrambled, n_fft=256, hop=64))
    assert 0.2 < value <= 2.0, value
    noise = 0.3 * torch.randn(ref.numel(), generator=torch.Generator().manual_seed(1))
    for n_fft in PHASE_FFT_SIZES:  # no structure at all: far off at every size
        assert float(phase_derivative_loss(ref, noise, n_fft=n_fft, hop=n_fft // 4)) > 0.2


def test_phase_loss_gradient_is_finite_on_silence_and_points_downhill():
    ref = _voiced(0.2)
    for r, g0 in ((torch.zeros(4096), torch.zeros(4096)), (ref, torch.zeros_like(ref))):
        g = g0.clone().requires_grad_()
        phase_derivative_loss(r, g).backward()
        assert torch.isfinite(g.grad).all()
    g = (ref + 0.2 * torch.randn(ref.numel(), generator=torch.Generator().manual_seed(2)))
    g.requires_grad_()
    before = phase_derivative_loss(ref, g)
    before.backward()
    with torch.no_grad():  # a small step against the gradient lowers it
        after = phase_derivative_loss(ref, g - 1e-3 * g.grad / g.grad.abs().max())
    assert float(after) < float(before.detach())


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    return make_dump(tmp_path_factory.mktemp("few_step"), n=3, seconds=0.3)


def _few_step_config(diffusion: dict | None = None, **train) -> Config:
    fields = {"objective": "few_step", "adversarial_weight": 1.0,
              "feature_matching_weight": 2.0, "batch_size": 2, "crop_samples": 2048,
              "save_interval": 2, "log_interval": 1}
    d = tiny_config_dict(**{**fields, **train})
    d["diffusion"] = {"fast_schedule": [1e-4, 0.05, 0.5], **(diffusion or {})}
    return Config.from_dict(d)


@pytest.mark.slow  # trains
def test_few_step_training_steps_logs_every_term_and_resumes_exactly(dump, tmp_path):
    straight = Trainer(_few_step_config(max_steps=4), dump, None, tmp_path / "a",
                       progress=False)
    straight.run()
    assert set(straight.last_terms) == {"mel_l1", "discriminator", "adversarial",
                                        "feature_matching", "diffusion"}
    assert all(math.isfinite(v) for v in straight.last_terms.values())
    first = Trainer(_few_step_config(max_steps=2), dump, None, tmp_path / "b", progress=False)
    first.run()
    state = load_checkpoint(tmp_path / "b")
    assert set(state["objective"]) == {"discriminators", "optimizer"}
    resumed = Trainer(_few_step_config(max_steps=4), dump, None, tmp_path / "b",
                      resume=True, progress=False)
    resumed.run()
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    # the same steps on the same batches and noise in one process: bit-identical, the
    # discriminators included (their state went through the checkpoint)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    for key, value in a["objective"]["discriminators"].items():
        torch.testing.assert_close(value, b["objective"]["discriminators"][key], rtol=0,
                                   atol=0, msg=key)


@pytest.mark.slow  # trains
def test_phase_loss_is_a_logged_term_of_the_objective(dump, tmp_path):
    trainer = Trainer(_few_step_config(max_steps=2, phase_loss_weight=3.0), dump, None,
                      tmp_path / "p", progress=False)
    trainer.run()
    assert 0.0 < trainer.last_terms["phase"] <= 2.0


@pytest.mark.slow  # trains
@pytest.mark.parametrize("diffusion", [{}, {"prediction": "residual", "start_iters": 4,
                                            "start_noise": 0.3}],
                         ids=["eps", "residual from griffin-lim"])
def test_mel_loss_alone_lowers_the_decodes_mel_error(dump, tmp_path, diffusion):
    # without discriminators: the few-step decode's log-mel L1 falls within 30 steps
    cfg = _few_step_config(diffusion, max_steps=30, adversarial_weight=0.0,
                           feature_matching_weight=0.0, diffusion_loss_weight=0.0,
                           learning_rate=3e-3, save_interval=30)
    trainer = Trainer(cfg, dump, None, tmp_path / "m", progress=False)
    assert trainer.objective.discriminators is None
    seen = []
    real = trainer._loss

    def spy(*args):
        loss = real(*args)
        seen.append(trainer.last_terms["mel_l1"])
        return loss

    trainer._loss = spy
    trainer.run()
    assert set(trainer.last_terms) == {"mel_l1"}
    first, last = sum(seen[:5]) / 5, sum(seen[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_inference_never_imports_the_discriminators(tmp_path):
    code = ("import sys, torch; from wavediff import Vocoder; "
            "v = Vocoder.from_pretrained('joe'); v.decode(torch.full((1, 80, 4), -5.0), "
            "steps=2, seed=0, input_preset=None); "
            "print([m for m in sys.modules if m.startswith('wavediff.train')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
