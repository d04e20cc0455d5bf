"""Schedules, the diffusion process and the samplers, checked against a closed-form denoiser.

Golden values come from each sampler's recurrence written out again here in float64 numpy,
fed with the same random numbers (drawn from a generator with the same seed, in the order
the samplers document).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from wavediff.config import DIFFWAVE_FAST_SCHEDULE, DiffusionConfig
from wavediff.diffusion import (
    SAMPLERS,
    GaussianDiffusion,
    SamplingPlan,
    align_fast_schedule,
    alpha_bar,
    ddim_timesteps,
    get_sampler,
    linear_betas,
    noise_levels,
    plan,
    posterior_variance,
    sample_ddim,
    sample_ddpm,
    sample_fast,
)
from wavediff.diffusion.samplers import ChainStep
from wavediff.errors import ConfigError

HOP = 4
B, N_MELS, FRAMES = 2, 3, 5
LENGTH = FRAMES * HOP


class DummyDenoiser:
    """``eps = a x_t + b (mel mean over bins, repeated hop times) + c * steps``; records steps."""

    hop_length = HOP

    def __init__(self, a: float = 0.3, b: float = 0.2, c: float = 0.01) -> None:
        self.a, self.b, self.c = a, b, c
        self.steps: list[torch.Tensor] = []

    def __call__(self, x_t, steps, mel):
        self.steps.append(steps.clone())
        cond = mel.mean(1).repeat_interleave(HOP, dim=-1)
        return self.a * x_t + self.b * cond + self.c * steps[:, None]

    def numpy(self, x, step, mel):
        cond = np.repeat(mel.mean(1), HOP, axis=-1)
        return self.a * x + self.b * cond + self.c * step


class OracleDenoiser:
    """Returns the true noise of ``x_t`` given the clean ``x0`` it was made from (integer
    steps); ``residual``: the true residual ``x0 - x_t / sqrt(abar_t)`` instead."""

    hop_length = HOP

    def __init__(self, diffusion: GaussianDiffusion, x0: torch.Tensor,
                 residual: bool = False) -> None:
        self.abar, self.x0, self.residual = diffusion.alpha_bar, x0, residual

    def __call__(self, x_t, steps, mel):
        abar = self.abar[steps.long()].to(x_t.dtype)[:, None]
        if self.residual:
            return self.x0 - x_t / abar.sqrt()
        return (x_t - abar.sqrt() * self.x0) / (1 - abar).sqrt()


@pytest.fixture
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion.from_config(DiffusionConfig())  # linear(1e-4, 0.05, 50)


def make_mel(seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(B, N_MELS, FRAMES, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)


def draws(seed: int, count: int) -> list[np.ndarray]:
    """``count`` (B, LENGTH) standard normals from a float64 generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, LENGTH, generator=g, dtype=torch.float64).numpy() for _ in range(count)]


def np_abar(betas) -> np.ndarray:
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


def np_align(train, infer) -> np.ndarray:
    at, ai = np_abar(train), np_abar(infer)
    out = []
    for a in ai:
        for t in range(len(at) - 1):
            if at[t + 1] <= a <= at[t]:
                out.append(t + (at[t] ** 0.5 - a ** 0.5) / (at[t] ** 0.5 - at[t + 1] ** 0.5))
                break
    return np.array(out)


class LastX:
    """A callback that keeps the unclamped sample after the last step and the call indices."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.x = None

    def __call__(self, i, n, x):
        self.calls.append((i, n))
        self.x = x.clone()


# --------------------------------------------------------------------------- schedule
def test_linear_betas_match_config_and_formula():
    betas = linear_betas(50, 1e-4, 0.05)
    assert betas.dtype == torch.float64 and betas.shape == (50,)
    assert betas.tolist() == DiffusionConfig().training_betas()  # the same values, copied
    # start + i * step vs numpy's linspace formula in float64: a few ulps (~1e-15)
    np.testing.assert_allclose(betas.numpy(), np.linspace(1e-4, 0.05, 50), rtol=1e-12)
    assert linear_betas(1, 0.3, 0.9).tolist() == [0.3]


def test_alpha_bar_noise_levels_posterior_variance():
    b = np.array([0.1, 0.2, 0.3])
    abar = np.cumprod(1 - b)
    # the same float64 products in the same order (a sequential cumprod of 3 values), at
    # most a few roundings apart: rtol 1e-15 is ~5 ulps
    np.testing.assert_allclose(alpha_bar(b.tolist()).numpy(), abar, rtol=1e-15)
    np.testing.assert_allclose(noise_levels(b.tolist()).numpy(), np.sqrt(abar), rtol=1e-15)
    prev = np.concatenate([[1.0], abar[:-1]])
    np.testing.assert_allclose(posterior_variance(b.tolist()).numpy(),
                               (1 - prev) / (1 - abar) * b, rtol=1e-14)
    assert posterior_variance(b.tolist())[0] == 0.0  # (1 - 1.0) * ... is exactly 0


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_invalid_betas_raise_naming_value(bad):
    with pytest.raises(ConfigError, match=r"betas\[1\] = .*" + ("nan" if bad != bad else "")):
        GaussianDiffusion([0.1, bad, 0.2])
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        align_fast_schedule([0.1, 0.2], [bad])
    with pytest.raises(ConfigError, match="empty"):
        GaussianDiffusion([])


def test_diffwave_fast_schedule_alignment(diffusion):
    train = linear_betas(50, 1e-4, 0.05).numpy()
    steps = align_fast_schedule(train, DIFFWAVE_FAST_SCHEDULE).numpy()
    # float64, the same rule written twice; the level differences it divides by cost at most
    # ~100x of 1e-16 relative on steps up to 49: ~1e-13
    np.testing.assert_allclose(steps, np_align(train, DIFFWAVE_FAST_SCHEDULE), rtol=0, atol=1e-12)
    # Hand-checked values of the rule for this pair of schedules (printed to 6 decimals).
    np.testing.assert_allclose(
        steps, [0.0, 0.894134, 4.086654, 10.451817, 22.992493, 42.918643], atol=1e-6
    )
    # The defining property: sqrt(abar_train), linearly interpolated over the step index,
    # meets sqrt(abar_infer) at the aligned steps.
    levels = np.interp(steps, np.arange(50), np.sqrt(np_abar(train)))
    np.testing.assert_allclose(levels, np.sqrt(np_abar(DIFFWAVE_FAST_SCHEDULE)), rtol=1e-12)
    # the first inference beta is the first training beta: the same alpha-bar, a 0 fraction
    assert np.all(np.diff(steps) > 0) and steps[0] == 0.0 and steps[-1] < 49


def test_alignment_to_training_betas_is_integer(diffusion):
    steps = align_fast_schedule(diffusion.betas, diffusion.betas.tolist())
    # every alpha-bar is a training one, computed the same way: fractions are exactly 0
    assert steps.tolist() == [float(t) for t in range(50)]


@pytest.mark.parametrize("infer", [[1e-5, 0.1], [0.5] * 10, [1e-4, 0.9]])
def test_alignment_out_of_training_range_raises(diffusion, infer):
    with pytest.raises(ConfigError, match=r"inference beta\[\d\] = .* outside the range \["):
        align_fast_schedule(diffusion.betas, infer)
    with pytest.raises(ConfigError):
        SamplingPlan.fast(diffusion.betas, infer)


def test_ddim_timesteps():
    assert ddim_timesteps(50, 6) == [0, 10, 20, 29, 39, 49]
    assert ddim_timesteps(50, 50) == list(range(50))
    assert ddim_timesteps(50, 1) == [49]
    for n in range(1, 51):
        ts = ddim_timesteps(50, n)
        assert len(ts) == n and ts[-1] == 49 and all(b > a for a, b in zip(ts, ts[1:]))
    for n in (0, 51, -2, 2.5, True):
        with pytest.raises(ConfigError, match=repr(n)):
            ddim_timesteps(50, n)


# --------------------------------------------------------------------------- process
def test_diffusion_attributes(diffusion):
    assert diffusion.num_steps == 50
    for name in ("betas", "alphas", "alpha_bar", "posterior_variance"):
        assert getattr(diffusion, name).dtype == torch.float64
    # a sequential float64 cumprod of 50 factors either way: within a few ulps
    np.testing.assert_allclose(diffusion.alpha_bar.numpy(),
                               np_abar(diffusion.betas.numpy()), rtol=1e-14)
    explicit = GaussianDiffusion.from_config(DiffusionConfig(betas=[0.1, 0.2]))
    assert explicit.betas.tolist() == [0.1, 0.2]


def test_q_sample_formula_and_statistics(diffusion):
    x0 = torch.tensor([[0.5], [-0.8], [0.9]], dtype=torch.float64).expand(3, 100_000)
    t = torch.tensor([0, 25, 49])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=x0.dtype)
    x_t = diffusion.q_sample(x0, t, noise)
    abar = diffusion.alpha_bar[t][:, None]
    # the same float64 formula: within float64's default tolerance (rtol 1e-7)
    torch.testing.assert_close(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    # statistics of 100,000 fixed draws, not rounding: standard errors ~0.003 and ~0.5%
    np.testing.assert_allclose(x_t.mean(1).numpy(), (abar.sqrt() * x0[:, :1]).squeeze(1), atol=0.01)
    np.testing.assert_allclose(x_t.var(1).numpy(), (1 - abar).squeeze(1), rtol=0.03)


def test_q_sample_rejects_bad_steps(diffusion):
    x0 = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="valid steps are 0..49"):
        diffusion.q_sample(x0, torch.tensor([0, 50]), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="-1"):
        diffusion.q_sample(x0, torch.tensor([-1, 3]), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="integer"):
        diffusion.q_sample(x0, torch.tensor([1.0, 3.0]), torch.zeros(2, 8))


@pytest.mark.parametrize("loss_type", ["l1", "l2"])
def test_loss_matches_hand_computation(diffusion, loss_type):
    x0 = torch.rand(B, LENGTH, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mel, model = make_mel(), DummyDenoiser()
    loss = diffusion.loss(model, x0, mel, loss_type=loss_type,
                          generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # documented order: t, then noise
    t = torch.randint(0, 50, (B,), generator=g).numpy()
    noise = torch.randn(B, LENGTH, generator=g, dtype=torch.float64).numpy()
    abar = np_abar(diffusion.betas.numpy())[t][:, None]
    x_t = np.sqrt(abar) * x0.numpy() + np.sqrt(1 - abar) * noise
    err = model.numpy(x_t, t[:, None].astype(np.float64), mel.numpy()) - noise
    expected = np.abs(err).mean() if loss_type == "l1" else (err ** 2).mean()
    assert loss.shape == () and loss.dtype == torch.float64
    # float64 torch vs float64 numpy, a mean of 40 terms: ~1e-15 apart; 1e-12 is slack
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert model.steps[0].dtype == torch.float64 and model.steps[0].tolist() == t.tolist()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-3)])
def test_loss_is_zero_for_oracle(diffusion, dtype, tol):
    x0 = torch.rand(8, LENGTH, generator=torch.Generator().manual_seed(0), dtype=dtype) - 0.5
    mel = torch.zeros(8, N_MELS, FRAMES, dtype=dtype)
    for loss_type in ("l1", "l2"):
        loss = diffusion.loss(OracleDenoiser(diffusion, x0), x0, mel, loss_type=loss_type,
                              generator=torch.Generator().manual_seed(1))
        assert loss.dtype == dtype and loss.item() < tol
    with pytest.raises(ConfigError, match="'l3'"):
        diffusion.loss(OracleDenoiser(diffusion, x0), x0, mel, loss_type="l3")


# --------------------------------------------------------------------------- samplers
def np_ancestral(model, mel, betas, steps, x, zs):
    """DDPM / DiffWave fast recurrence in float64 numpy; zs are the per-step noises in order."""
    abar = np_abar(betas)
    zs = iter(zs)
    for s in range(len(betas) - 1, -1, -1):
        eps = model.numpy(x, steps[s], mel)
        x = (x - betas[s] / np.sqrt(1 - abar[s]) * eps) / np.sqrt(1 - betas[s])
        if s > 0:
            x = x + np.sqrt((1 - abar[s - 1]) / (1 - abar[s]) * betas[s]) * next(zs)
    return x


def np_ddim(model, mel, abar_train, timesteps, x, eta, zs):
    zs = iter(zs)
    for i in range(len(timesteps) - 1, -1, -1):
        a = abar_train[timesteps[i]]
        a_prev = abar_train[timesteps[i - 1]] if i > 0 else 1.0
        eps = model.numpy(x, float(timesteps[i]), mel)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a)) * np.sqrt(1 - a / a_prev)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma ** 2) * eps
        if sigma > 0:
            x = x + sigma * next(zs)
    return x


def check_golden(out, cb, golden, n_steps):
    assert out.shape == (B, LENGTH)
    assert cb.calls == [(i, n_steps) for i in range(n_steps)]
    # float64 torch vs the float64 numpy recurrence: up to 50 steps of a few roundings of
    # values up to ~5 (errors ~1e-14); 1e-10/1e-12 leave room for any kernel
    np.testing.assert_allclose(cb.x.numpy(), golden, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.numpy(), np.clip(golden, -1, 1), rtol=1e-10, atol=1e-12)


def test_ddpm_golden(diffusion):
    model, mel, cb = DummyDenoiser(), make_mel(), LastX()
    out = sample_ddpm(model, diffusion, mel, schedule=SamplingPlan.ddpm(diffusion.betas),
                      generator=torch.Generator().manual_seed(5), callback=cb)
    x_T, *zs = draws(5, 50)  # x_T, then one noise per step t = 49..1
    betas = diffusion.betas.numpy()
    golden = np_ancestral(model, mel.numpy(), betas, np.arange(50.0), x_T, zs)
    check_golden(out, cb, golden, 50)
    assert [s[0].item() for s in model.steps] == list(range(49, -1, -1))


def test_fast_golden(diffusion):
    model, mel, cb = DummyDenoiser(), make_mel(), LastX()
    chosen = SamplingPlan.fast(diffusion.betas, DIFFWAVE_FAST_SCHEDULE)
    out = sample_fast(model, diffusion, mel, schedule=chosen,
                      generator=torch.Generator().manual_seed(6), callback=cb)
    x_T, *zs = draws(6, 6)
    steps = np_align(diffusion.betas.numpy(), DIFFWAVE_FAST_SCHEDULE)
    golden = np_ancestral(model, mel.numpy(), np.array(DIFFWAVE_FAST_SCHEDULE), steps, x_T, zs)
    check_golden(out, cb, golden, 6)
    # float64 steps from the same rule (see test_diffwave_fast_schedule_alignment)
    np.testing.assert_allclose([s[0].item() for s in model.steps], steps[::-1], atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_golden(diffusion, eta):
    model, mel, cb = DummyDenoiser(), make_mel(), LastX()
    timesteps = [0, 7, 20, 33, 49]
    out = sample_ddim(model, diffusion, mel, schedule=SamplingPlan.ddim(diffusion.betas,
                                                                        timesteps, eta),
                      generator=torch.Generator().manual_seed(8), callback=cb)
    x_T, *zs = draws(8, 5)
    abar = np_abar(diffusion.betas.numpy())
    golden = np_ddim(model, mel.numpy(), abar, timesteps, x_T, eta, zs)
    check_golden(out, cb, golden, 5)
    assert [s[0].item() for s in model.steps] == [49.0, 33.0, 20.0, 7.0, 0.0]


def test_fast_with_training_betas_is_ddpm(diffusion):
    mel = make_mel()
    ddpm_model, fast_model = DummyDenoiser(), DummyDenoiser()
    ddpm = sample_ddpm(ddpm_model, diffusion, mel, schedule=SamplingPlan.ddpm(diffusion.betas),
                       generator=torch.Generator().manual_seed(2))
    fast = sample_fast(fast_model, diffusion, mel,
                       schedule=SamplingPlan.fast(diffusion.betas, diffusion.betas.tolist()),
                       generator=torch.Generator().manual_seed(2))
    # the same recurrence (_chain) on the same betas, integer steps and draws: the same
    # computation, bit-identical
    assert torch.equal(ddpm, fast)
    assert all(torch.equal(a, b) for a, b in zip(ddpm_model.steps, fast_model.steps))


def test_ddim_all_steps_eta_one_is_ddpm(diffusion):
    mel = make_mel()
    ddpm = sample_ddpm(DummyDenoiser(), diffusion, mel, schedule=SamplingPlan.ddpm(diffusion.betas),
                       generator=torch.Generator().manual_seed(4))
    ddim = sample_ddim(DummyDenoiser(), diffusion, mel,
                       schedule=SamplingPlan.ddim(diffusion.betas, 50, eta=1.0),
                       generator=torch.Generator().manual_seed(4))
    # two float64 formulas of the same chain, 50 steps: ~1e-14 apart
    torch.testing.assert_close(ddim, ddpm, rtol=1e-10, atol=1e-12)


def test_ddim_eta_zero_is_deterministic_and_draws_nothing(diffusion):
    mel = make_mel()
    x_T = torch.randn(B, LENGTH, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    six = SamplingPlan.ddim(diffusion.betas, 6)
    a = sample_ddim(DummyDenoiser(), diffusion, mel, schedule=six, noise=x_T, generator=g)
    assert torch.equal(g.get_state(), state)  # bytes of the generator state
    b = sample_ddim(DummyDenoiser(), diffusion, mel, schedule=six, noise=x_T,
                    generator=torch.Generator().manual_seed(99))
    assert torch.equal(a, b)  # the same computation on the same x_T: bit-identical


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_seeds(diffusion, name):
    sampler, mel = get_sampler(name), make_mel(dtype=torch.float32)
    chosen = plan(name, DiffusionConfig())

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sampler(DummyDenoiser(), diffusion, mel, schedule=chosen, generator=g)

    a, b, c = run(0), run(0), run(1)
    assert a.dtype == torch.float32 and a.shape == (B, LENGTH)
    assert torch.equal(a, b)  # same seed, same computation, one process: bit-identical
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_output_shape_clamp_and_given_noise(diffusion, name):
    sampler, mel = get_sampler(name), make_mel(dtype=torch.float32)
    chosen = plan(name, DiffusionConfig())
    noise = 10 * torch.randn(B, LENGTH, generator=torch.Generator().manual_seed(0))
    model = DummyDenoiser()
    out = sampler(model, diffusion, mel, schedule=chosen, noise=noise,
                  generator=torch.Generator().manual_seed(0))
    assert out.shape == (B, FRAMES * HOP) and out.dtype == torch.float32
    assert out.abs().max() <= 1.0 and (out.abs() == 1.0).any()  # clamped: exactly +-1
    assert model.steps[0].dtype == torch.float32 and model.steps[0].shape == (B,)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 20\)"):
        sampler(DummyDenoiser(), diffusion, mel, schedule=chosen,
                noise=torch.zeros(B, LENGTH + 1))


def test_plan_schedule_validation(diffusion):
    with pytest.raises(ConfigError, match=r"schedule\[1\] = 2 follows 3"):
        SamplingPlan.ddim(diffusion.betas, [3, 2])
    with pytest.raises(ConfigError, match=r"schedule\[1\] = 50 .* 0..49"):
        SamplingPlan.ddim(diffusion.betas, [0, 50])
    with pytest.raises(ConfigError, match="51"):
        SamplingPlan.ddim(diffusion.betas, 51)
    with pytest.raises(ConfigError, match="eta"):
        SamplingPlan.ddim(diffusion.betas, 6, eta=1.5)
    with pytest.raises(ConfigError, match="SamplingPlan.fast/ddim/ddpm"):
        SamplingPlan("fast", [0.1], [0.0])  # by hand, without its alpha-bars and betas
    with pytest.raises(ConfigError, match=r"fast, ddim, ddpm"):
        get_sampler("euler")
    assert get_sampler("fast") is sample_fast


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("raw", [[0.1, 0.5], [3, 20], 6, None, "fast"])
def test_samplers_refuse_anything_but_a_plan(diffusion, name, raw):
    model = DummyDenoiser()
    with pytest.raises(ConfigError, match=rf"sample_{name} takes a SamplingPlan as schedule, "
                                          rf"got .*; pass SamplingPlan\.{name}\(") as err:
        get_sampler(name)(model, diffusion, make_mel(), schedule=raw)
    assert "\n" not in str(err.value) and not model.steps  # one line, before any work


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_refuse_a_plan_of_another_sampler(diffusion, name):
    config = DiffusionConfig()
    for other in sorted(set(SAMPLERS) - {name}):
        with pytest.raises(ConfigError, match=rf"given a plan of the '{other}' sampler; "
                                              rf"pass SamplingPlan\.{name}\("):
            get_sampler(name)(DummyDenoiser(), diffusion, make_mel(),
                              schedule=plan(other, config))
    from wavediff.diffusion.samplers import unrolled_fast

    with pytest.raises(ConfigError, match="unrolled_fast was given a plan of the 'ddpm'"):
        unrolled_fast(DummyDenoiser(), diffusion, make_mel(), schedule=plan("ddpm", config))


def test_samplers_refuse_a_plan_of_other_training_steps(diffusion):
    other = GaussianDiffusion([0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="made for 3 training steps, the diffusion has 50"):
        sample_fast(DummyDenoiser(), diffusion, make_mel(),
                    schedule=SamplingPlan.fast(other.betas, [0.1, 0.2]))


def test_ddpm_plan_is_the_fast_plan_over_the_training_betas(diffusion):
    config = DiffusionConfig()
    ddpm = plan("ddpm", config)
    fast = plan("fast", config, schedule=config.training_betas())
    # the same chain: only the name and the schedule as asked (None for ddpm) differ
    assert dataclasses.replace(ddpm, sampler="fast", schedule=fast.schedule) == fast
    assert ddpm == SamplingPlan.ddpm(diffusion.betas)
    assert ddpm.betas == diffusion.betas.tolist() and ddpm.eta == 0.0
    assert ddpm.alpha_bars == diffusion.alpha_bar.tolist()
    mel = make_mel()
    a = sample_ddpm(DummyDenoiser(), diffusion, mel, schedule=ddpm,
                    generator=torch.Generator().manual_seed(3))
    b = sample_fast(DummyDenoiser(), diffusion, mel, schedule=fast,
                    generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)  # the same recurrence on equal plans and draws: bit-identical


def test_plans_carry_what_the_samplers_compute_with(diffusion):
    config = DiffusionConfig()
    fast = plan("fast", config)
    assert fast.betas == list(DIFFWAVE_FAST_SCHEDULE) == fast.schedule
    assert fast.alpha_bars == alpha_bar(DIFFWAVE_FAST_SCHEDULE).tolist()
    assert fast.network_steps == align_fast_schedule(diffusion.betas,
                                                     DIFFWAVE_FAST_SCHEDULE).tolist()
    ddim = plan("ddim", DiffusionConfig(ddim_eta=0.5), schedule=[0, 7, 49])
    abar = diffusion.alpha_bar.tolist()
    assert ddim.alpha_bars == [abar[0], abar[7], abar[49]] and ddim.eta == 0.5
    assert ddim.network_steps == [0.0, 7.0, 49.0] and ddim.betas == []


def test_default_ddim_plan_uses_config_steps(diffusion):
    model = DummyDenoiser()
    sample_ddim(model, diffusion, make_mel(), schedule=plan("ddim", DiffusionConfig()))
    assert [s[0].item() for s in model.steps] == [49.0, 39.0, 29.0, 20.0, 10.0, 0.0]


def test_sampler_output_is_not_tracked_by_autograd(diffusion):
    mel = make_mel().requires_grad_(True)
    out = sample_fast(DummyDenoiser(), diffusion, mel, schedule=plan("fast", DiffusionConfig()),
                      generator=torch.Generator().manual_seed(0))
    assert not out.requires_grad and math.isfinite(out.sum().item())


# --------------------------------------------------------------------------- residual prediction
def test_residual_loss_is_the_error_of_x0():
    residual = GaussianDiffusion.from_config(DiffusionConfig(prediction="residual"))
    assert residual.prediction == "residual"
    x0 = torch.rand(8, LENGTH, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64) - 0.5
    mel = torch.zeros(8, N_MELS, FRAMES, dtype=torch.float64)
    oracle = residual.loss(OracleDenoiser(residual, x0, residual=True), x0, mel,
                           generator=torch.Generator().manual_seed(1))
    assert oracle.item() < 1e-12
    # a network that returns nothing leaves x0_hat = x_t / sqrt(abar): its error is
    # sqrt(1 - abar) / sqrt(abar) times the noise (not the noise itself, as for eps)
    zero = residual.loss(lambda x, t, m: torch.zeros_like(x), x0, mel,
                         generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 50, (8,), generator=g)
    noise = torch.randn(8, LENGTH, generator=g, dtype=torch.float64)
    abar = residual.alpha_bar[t][:, None]
    expected = ((1 - abar).sqrt() / abar.sqrt() * noise).abs().mean()
    assert zero.item() == pytest.approx(expected.item(), rel=1e-12)
    eps = GaussianDiffusion.from_config(DiffusionConfig())
    assert eps.loss(lambda x, t, m: torch.zeros_like(x), x0, mel,
                    generator=torch.Generator().manual_seed(1)).item() == pytest.approx(
        noise.abs().mean().item(), rel=1e-12)


@pytest.mark.parametrize("sampler", ["fast", "ddim"])
def test_residual_chain_step_clean_estimate(sampler):
    betas = DiffusionConfig().training_betas()
    chosen = (SamplingPlan.fast(betas, [1e-4, 0.02, 0.3]) if sampler == "fast"
              else SamplingPlan.ddim(betas, 4))
    g = torch.Generator().manual_seed(2)
    x, out = torch.randn(B, LENGTH, generator=g), torch.randn(B, LENGTH, generator=g)
    for i in range(len(chosen.network_steps)):
        step = ChainStep(chosen, i, "residual")
        torch.testing.assert_close(step.clean(x, step.noise(out)),
                                   x / math.sqrt(step.abar) + out, rtol=1e-5, atol=1e-5)
        assert ChainStep(chosen, i).noise(out) is out  # eps-prediction: the output itself


def test_residual_network_that_returns_nothing_keeps_the_start():
    """DDIM (eta 0) from a noiseless Griffin-Lim-like start with a zero residual network
    ends at the start itself: each step's x0_hat is x / sqrt(abar), so what the network
    learns is all it changes."""
    betas = DiffusionConfig().training_betas()
    quiet = GaussianDiffusion(betas, start_noise=0.0, prediction="residual")
    init = 0.5 * torch.sin(torch.linspace(0, 20, LENGTH)).expand(B, LENGTH)

    def zero(x, t, m):
        return torch.zeros_like(x)
    zero.hop_length = HOP
    out = sample_ddim(zero, quiet, make_mel(dtype=torch.float32),
                      schedule=SamplingPlan.ddim(betas, 5), init=init,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, init, rtol=0, atol=1e-5)
    # a constant residual c over one step ends at the start plus c
    def const(x, t, m):
        return torch.full_like(x, 0.1)
    const.hop_length = HOP
    one = sample_ddim(const, quiet, make_mel(dtype=torch.float32),
                      schedule=SamplingPlan.ddim(betas, [20]), init=init,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one, (init + 0.1).clamp(-1, 1), rtol=0, atol=1e-5)


def test_prediction_is_checked():
    with pytest.raises(ConfigError, match="diffusion.prediction"):
        from wavediff.config import Config
        Config.from_dict({"diffusion": {"prediction": "x0"}})
    with pytest.raises(ConfigError, match="prediction"):
        GaussianDiffusion([1e-4, 0.02], prediction="v")
