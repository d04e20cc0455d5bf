"""Noise schedules: betas, alpha-bar, noise levels, the alignment of short schedules and
the sampling plan (which schedule a sampler runs and where it evaluates the network).

This module is the one place that interprets a schedule given as betas, a step count or
step indices: :func:`plan` (from a config) and the constructors
:meth:`SamplingPlan.fast`, :meth:`SamplingPlan.ddim` and :meth:`SamplingPlan.ddpm` (from
training betas) turn them into a ready-made :class:`SamplingPlan`, which every sampler
(:mod:`wavediff.diffusion.samplers`) takes as it is and computes nothing from.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"): a schedule of
``T`` betas, ``alpha_t = 1 - beta_t`` and ``alpha_bar_t = prod_{i<=t} alpha_i``, indexed
``t = 0 .. T-1`` here (the papers count from 1). Every schedule is a 1-D float64 tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from wavediff.config import SAMPLER_NAMES, DiffusionConfig, linear_beta_values
from wavediff.errors import ConfigError

BetasLike = Union[Sequence[float], torch.Tensor]


def as_betas(betas: BetasLike, name: str = "betas") -> torch.Tensor:
    """``betas`` as a float64 CPU tensor of shape ``(T,)``, each value checked to lie in (0, 1).

    Raises :class:`ConfigError` naming the first offending value and its index.
    """
    b = torch.as_tensor(betas, dtype=torch.float64).detach().to("cpu").reshape(-1)
    if b.numel() == 0:
        raise ConfigError(f"{name} is empty; a noise schedule needs at least one beta in (0, 1)")
    for i, v in enumerate(b.tolist()):
        if not 0.0 < v < 1.0:  # also catches NaN
            raise ConfigError(f"{name}[{i}] = {v!r} is outside the valid range (0, 1)")
    return b


def linear_betas(num_steps: int, start: float, end: float) -> torch.Tensor:
    """The linear schedule of DDPM (Ho et al. 2020) and DiffWave (Kong et al. 2021).

    ``beta_i = start + i * (end - start) / (num_steps - 1)``, the same values as
    :meth:`wavediff.config.DiffusionConfig.training_betas`. DiffWave BASE is
    ``linear_betas(50, 1e-4, 0.05)``, LARGE ``linear_betas(200, 1e-4, 0.02)``.

    Returns: float64 tensor of shape ``(num_steps,)``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ConfigError(f"num_steps must be a positive integer, got {num_steps!r}")
    return as_betas(linear_beta_values(num_steps, start, end))


def alpha_bar(betas: BetasLike) -> torch.Tensor:
    """``alpha_bar_t = prod_{i<=t} (1 - beta_i)`` (Ho et al. 2020, eq. 4). Shape ``(T,)``."""
    return torch.cumprod(1.0 - as_betas(betas), dim=0)


def noise_levels(betas: BetasLike) -> torch.Tensor:
    """The continuous noise level ``sqrt(alpha_bar_t)`` of WaveGrad (Chen et al. 2021).

    It decreases from about 1 (clean) towards 0 (pure noise). Shape ``(T,)``.
    """
    return alpha_bar(betas).sqrt()


def posterior_variance(betas: BetasLike) -> torch.Tensor:
    """``beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t``, with
    ``alpha_bar_{-1} = 1`` so ``beta_tilde_0 = 0`` (Ho et al. 2020, eq. 7). Shape ``(T,)``.

    The variance of q(x_{t-1} | x_t, x_0); DiffWave samples with it (Kong et al. 2021, eq. 5).
    """
    b = as_betas(betas)
    abar = torch.cumprod(1.0 - b, dim=0)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return (1.0 - abar_prev) / (1.0 - abar) * b


def align_fast_schedule(train_betas: BetasLike, infer_betas: BetasLike) -> torch.Tensor:
    """Fractional training steps at which a short inference schedule's noise levels lie.

    DiffWave's fast sampling (Kong et al. 2021, appendix B; the rule of lmnt-com/diffwave
    ``inference.py``): for each inference step ``s``, find the training step ``t`` with
    ``abar_train[t+1] <= abar_infer[s] <= abar_train[t]`` (the first such ``t``) and return

        t + (sqrt(abar_train[t]) - sqrt(abar_infer[s]))
            / (sqrt(abar_train[t]) - sqrt(abar_train[t+1]))

    i.e. the point where the linear interpolation of ``sqrt(abar_train)`` over the step
    index meets ``sqrt(abar_infer[s])``. The denoiser's step embedding is evaluated there.
    When ``infer_betas`` equals ``train_betas`` the result is exactly ``0, 1, ..., T-1``.

    Args:
        train_betas: the training schedule, shape ``(T,)``.
        infer_betas: the inference schedule, shape ``(S,)``.
    Returns:
        float64 tensor of shape ``(S,)`` with values in ``[0, T-1]``, increasing.
    Raises:
        ConfigError: a beta outside (0, 1), or an inference alpha-bar outside the range
        ``[abar_train[T-1], abar_train[0]]`` that the training steps cover.
    """
    abar_t = alpha_bar(as_betas(train_betas, "training betas")).tolist()
    infer = as_betas(infer_betas, "inference betas")
    abar_s = alpha_bar(infer).tolist()
    lo, hi = abar_t[-1], abar_t[0]
    tol = 1e-12  # absorbs rounding when an inference level sits on a training level
    steps = []
    for s, a in enumerate(abar_s):
        if not lo - tol <= a <= hi + tol:
            raise ConfigError(
                f"inference beta[{s}] = {infer[s].item()!r} brings alpha-bar to {a:.6g}, "
                f"outside the range [{lo:.6g}, {hi:.6g}] the training steps cover; the first "
                f"inference beta must be >= the first training beta ({1.0 - hi:.6g}) and the "
                f"inference schedule must not add more noise in total than the training one"
            )
        a = min(max(a, lo), hi)
        steps.append(_fractional_step(abar_t, a))
    return torch.tensor(steps, dtype=torch.float64)


def _fractional_step(abar_train: list[float], a: float) -> float:
    """The fractional step of ``align_fast_schedule`` for one alpha-bar ``a`` in range."""
    if len(abar_train) == 1:
        return 0.0
    for t in range(len(abar_train) - 1):
        if abar_train[t + 1] <= a <= abar_train[t]:
            hi, lo = math.sqrt(abar_train[t]), math.sqrt(abar_train[t + 1])
            return t + (hi - math.sqrt(a)) / (hi - lo)
    raise AssertionError("unreachable: alpha-bar was checked to lie in the training range")


def ddim_timesteps(num_steps: int, n: int) -> list[int]:
    """``n`` training-step indices for DDIM (Song et al. 2021), evenly spaced over
    ``[0, num_steps-1]``, increasing, the last one ``num_steps-1`` (for ``n = 1`` only it).

    Index ``i`` is ``round(i * (num_steps-1) / (n-1))`` (halves rounded up), so
    ``n = num_steps`` gives every step and ``ddim_timesteps(50, 6)`` gives
    ``[0, 10, 20, 29, 39, 49]``.
    """
    for name, v in (("num_steps", num_steps), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"DDIM {name} must be a positive integer, got {v!r}")
    if n > num_steps:
        raise ConfigError(
            f"DDIM steps n = {n} exceeds the {num_steps} training steps; use 1..{num_steps}"
        )
    if n == 1:
        return [num_steps - 1]
    span, gaps = num_steps - 1, n - 1
    return [(2 * i * span + gaps) // (2 * gaps) for i in range(n)]


def ddim_schedule(schedule: Union[int, Sequence[int]], num_steps: int) -> list[int]:
    """DDIM's increasing training-step indices from a step count (evenly spaced by
    :func:`ddim_timesteps`) or an explicit sequence of indices."""
    if isinstance(schedule, int) and not isinstance(schedule, bool):
        return ddim_timesteps(num_steps, schedule)
    if schedule is None or isinstance(schedule, (bool, float, str)):
        raise ConfigError(f"a DDIM schedule is a step count or increasing training-step "
                          f"indices, got {schedule!r}")
    steps = list(schedule)
    if not steps:
        raise ConfigError("DDIM schedule is empty; give a step count or training-step indices")
    for i, t in enumerate(steps):
        if isinstance(t, bool) or int(t) != t or not 0 <= t < num_steps:
            raise ConfigError(
                f"DDIM schedule[{i}] = {t!r} is not a training step; valid: integers "
                f"0..{num_steps - 1}"
            )
        if i and t <= steps[i - 1]:
            raise ConfigError(
                f"DDIM schedule must be strictly increasing, but schedule[{i}] = {t!r} "
                f"follows {steps[i - 1]!r}"
            )
    return [int(t) for t in steps]


def subsampled_betas(train_betas: BetasLike, steps: int) -> list[float]:
    """``steps`` inference betas whose alpha-bars equal those of evenly spaced training steps."""
    train = as_betas(train_betas, "training betas")
    num = len(train)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num:
        raise ConfigError(f"steps must be between 1 and {num} (the training steps), got {steps}")
    abar = alpha_bar(train).tolist()
    idx = np.unique(np.round(np.linspace(0, num - 1, steps)).astype(int)).tolist()
    picked = [abar[i] for i in idx]
    return [1.0 - picked[0]] + [1.0 - picked[i] / picked[i - 1] for i in range(1, len(picked))]


@dataclass(frozen=True)
class SamplingPlan:
    """What a sampler runs, ready-made: the samplers take it as their ``schedule``
    argument and compute nothing from counts, betas or indices (k-diffusion's way, where
    a sampler receives the finished sigmas). Make one with :func:`plan` (from a config)
    or :meth:`fast`, :meth:`ddim`, :meth:`ddpm` (from training betas); a plan made by hand
    is checked to be consistent.

    Fields, per network evaluation in increasing order of noise (the samplers walk them
    from the last to the first):

    * ``sampler``: the sampler it is for (``"fast"``, ``"ddim"``, ``"ddpm"``), or
      :data:`GRIFFIN_LIM` (no network at all).
    * ``schedule``: the schedule as asked, for reports (fast: its betas; ddim: the step
      count or the indices; ddpm: None); no sampler reads it.
    * ``network_steps``: the (fractional) training steps where the denoiser runs,
      increasing.
    * ``eta``: DDIM's noise scale in [0, 1] (the configured ``diffusion.ddim_eta``; 0 for
      the other samplers).
    * ``alpha_bars``: the alpha-bar of each level (fast: over its inference betas; ddim
      and ddpm: the training ones at ``network_steps``).
    * ``betas``: the per-step betas of the chain walked (fast, ddpm; empty for ddim).
    * ``train_steps``: T of the training schedule the plan was made for (0: Griffin-Lim).
    """

    sampler: str
    schedule: Union[None, int, list[float], list[int]]
    network_steps: list[float]
    eta: float = 0.0
    alpha_bars: list[float] = field(default_factory=list)
    betas: list[float] = field(default_factory=list)
    train_steps: int = 0

    def __post_init__(self) -> None:
        n = len(self.network_steps)
        ancestral = self.sampler in ("fast", "ddpm")
        if (len(self.alpha_bars) != n or (ancestral and len(self.betas) != n)
                or (self.sampler != GRIFFIN_LIM and (n == 0 or self.train_steps < 1))):
            raise ConfigError(
                f"inconsistent {self.sampler!r} plan ({n} network steps, "
                f"{len(self.alpha_bars)} alpha-bars, {len(self.betas)} betas, "
                f"{self.train_steps} training steps); make plans with plan() or "
                f"SamplingPlan.fast/ddim/ddpm"
            )
        if not 0.0 <= self.eta <= 1.0:  # also catches NaN
            raise ConfigError(f"DDIM eta must be in [0, 1], got {self.eta!r}")

    @classmethod
    def fast(cls, train_betas: BetasLike, betas: BetasLike) -> "SamplingPlan":
        """DiffWave's fast sampling over the inference ``betas`` (Kong et al. 2021,
        appendix B): the denoiser runs at their :func:`align_fast_schedule` steps, the
        chain uses their own alpha-bars. With ``betas = train_betas`` this is the
        :meth:`ddpm` plan under another name."""
        train = as_betas(train_betas, "training betas")
        infer = as_betas(betas, "inference betas")
        steps = align_fast_schedule(train, infer).tolist()
        values = infer.tolist()
        return cls("fast", values, steps, alpha_bars=alpha_bar(infer).tolist(),
                   betas=list(values), train_steps=len(train))

    @classmethod
    def ddim(cls, train_betas: BetasLike, steps: Union[int, Sequence[int]],
             eta: float = 0.0) -> "SamplingPlan":
        """DDIM (Song et al. 2021) over ``steps``: a count (evenly spaced by
        :func:`ddim_timesteps`) or increasing training-step indices; ``eta`` in [0, 1]
        (0: deterministic). The levels are the training alpha-bars at those indices."""
        train = as_betas(train_betas, "training betas")
        indices = ddim_schedule(steps, len(train))
        abar = alpha_bar(train).tolist()
        return cls("ddim", steps if isinstance(steps, int) else indices,
                   [float(t) for t in indices], eta=float(eta),
                   alpha_bars=[abar[t] for t in indices], train_steps=len(train))

    @classmethod
    def ddpm(cls, train_betas: BetasLike) -> "SamplingPlan":
        """Ancestral sampling over every training step (Ho et al. 2020, alg. 2)."""
        train = as_betas(train_betas, "training betas")
        betas = train.tolist()
        return cls("ddpm", None, [float(t) for t in range(len(betas))],
                   alpha_bars=alpha_bar(train).tolist(), betas=betas, train_steps=len(betas))


# The plan of ``steps=0``: no denoiser call, only Griffin-Lim projections of noise
GRIFFIN_LIM = "griffin-lim"
GRIFFIN_LIM_ITERS = 32  # projections of a Griffin-Lim decode when none are asked for


def plan(sampler: str, diffusion: DiffusionConfig, steps: Optional[int] = None,
         schedule: Union[None, int, Sequence[float]] = None) -> SamplingPlan:
    """The one rule for turning a sampler name and a step count (or an explicit schedule)
    into a :class:`SamplingPlan`, used by the samplers' callers, the inference engine and
    the facade.

    ``fast``: ``schedule`` (betas) when given; the configured ``fast_schedule`` when
    ``steps`` is None or its length; otherwise ``steps`` betas whose alpha-bars match evenly
    spaced training steps. ``ddim``: ``schedule`` or ``steps`` (a count) or the configured
    ``ddim_steps``, with the configured ``ddim_eta``. ``ddpm``: the whole training chain
    only. ``steps=0`` (any sampler): the :data:`GRIFFIN_LIM` plan, no network evaluation.
    """
    if steps == 0 and schedule is None:
        # no network: Griffin-Lim alone from noise (the no-network baseline)
        return SamplingPlan(GRIFFIN_LIM, None, [])
    train = diffusion.training_betas()
    num = len(train)
    if sampler == "fast":
        if schedule is not None:
            betas = [float(b) for b in schedule]
        elif steps is None or steps == len(diffusion.fast_schedule):
            betas = list(diffusion.fast_schedule)
        else:
            betas = subsampled_betas(train, steps)
        return SamplingPlan.fast(train, betas)
    if sampler == "ddim":
        chosen = schedule if schedule is not None else (
            diffusion.ddim_steps if steps is None else int(steps))
        return SamplingPlan.ddim(train, chosen, eta=float(diffusion.ddim_eta))
    if sampler == "ddpm":
        if schedule is not None or steps not in (None, num):
            raise ConfigError(f"the ddpm sampler runs all {num} training steps; "
                              f"use --sampler fast or ddim for {steps or schedule} steps")
        return SamplingPlan.ddpm(train)
    raise ConfigError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLER_NAMES)}")
