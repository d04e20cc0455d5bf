"""Samplers: plain functions that turn a mel into a waveform with a denoiser.

All share one signature::

    fn(denoiser, diffusion, mel, *, schedule, generator=None, noise=None, callback=None,
       project=None, init=None, draws=None)
        -> Tensor (B, F * denoiser.hop_length)

``schedule`` is a ready-made :class:`~wavediff.diffusion.schedule.SamplingPlan` of that
sampler: :func:`~wavediff.diffusion.schedule.plan` from a config, or
``SamplingPlan.fast(diffusion.betas, betas)``, ``SamplingPlan.ddim(diffusion.betas, steps,
eta)``, ``SamplingPlan.ddpm(diffusion.betas)``. The sampler only walks it (its betas,
alpha-bars, network steps and DDIM's eta, all computed once there); it interprets no
count, betas or indices and has no default schedule, so every caller decodes with the one
rule of :mod:`wavediff.diffusion.schedule`. Anything else, or a plan of another sampler, is
refused with :class:`ConfigError`. ``diffusion`` supplies the prior and must have the
plan's number of training steps.

``mel`` is ``(B, n_mels, F)``; the audio is computed in ``mel``'s device and dtype. The
starting point ``x_T`` is ``noise`` when given (shape ``(B, F * hop)``), else drawn with
``torch.randn`` from ``generator``. With a data-dependent prior (``diffusion.prior``,
PriorGrad, SpecGrad) ``x_T`` and every per-step draw are coloured by the prior of ``mel``.
Random numbers are drawn from ``generator`` in this
order: ``x_T`` first (unless ``noise`` is given), then one ``(B, F * hop)`` standard normal
per step that adds noise, drawn right after that step's denoiser call; steps that add no
noise (the last step, every DDIM step with ``eta = 0``) draw nothing. Draws happen on the
generator's device and are moved to ``mel``'s, so a CPU generator gives the same audio
on any device. ``draws`` (a :class:`~wavediff.diffusion.noise.PositionalNoise`) replaces the
generator: ``x_T`` is its ``X_T`` stream and the draw after network evaluation ``i`` its
``step_stream(i)``, each sample a function of its position (how :class:`wavediff.Vocoder`
decodes, so that streamed and whole decodes agree). ``callback(i, n, x)`` is called after
step ``i`` of ``n`` (``i = 0..n-1`` in the order of sampling) with the current, unclamped
``x``. The result is clamped to
``[-1, 1]`` once, at the end.

``project(x0_hat) -> x0`` (optional) corrects every step's clean estimate before the step
is taken, e.g. onto the magnitudes the mel implies
(:class:`~wavediff.audio.phase.SpectralProjector`, GLA-Grad); the noise estimate is
recomputed from it, so the last step returns the projected estimate.

``init`` ``(B, F * hop)`` (optional) is a first estimate of the clean waveform (e.g. a
Griffin-Lim decode of the mel) that the chain starts around: ``x_T = sqrt(abar_T) init +
sqrt(1 - abar_T) std z``, the forward process run from ``init`` to the schedule's first
noise level (SDEdit, Meng et al. 2022; a data-dependent prior mean), instead of ``std z``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional

import torch
from torch import Tensor

from wavediff.config import SAMPLER_NAMES
from wavediff.diffusion.noise import X_T, PositionalNoise, step_stream
from wavediff.diffusion.prior import NoiseShaper
from wavediff.diffusion.process import (
    Denoiser, GaussianDiffusion, noise_from_output, randn, step_dtype,
)
from wavediff.diffusion.schedule import SamplingPlan
from wavediff.errors import ConfigError, MelError

Callback = Callable[[int, int, Tensor], None]
Projection = Callable[[Tensor], Tensor]
Sampler = Callable[..., Tensor]


def sample_ddpm(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    *,
    schedule: SamplingPlan,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
    callback: Optional[Callback] = None,
    project: Optional[Projection] = None,
    init: Optional[Tensor] = None,
    draws: Optional[PositionalNoise] = None,
) -> Tensor:
    """Ancestral sampling over all ``T`` training steps (Ho et al. 2020, alg. 2).

    ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) * eps(x_t, t)) / sqrt(alpha_t) + sigma_t z``
    with ``sigma_t^2 = beta_tilde_t`` (the posterior variance, as DiffWave samples) and no
    noise at the last step ``t = 0``. ``schedule``: ``SamplingPlan.ddpm(diffusion.betas)``
    (or ``plan("ddpm", config)``). Returns ``(B, F * hop)``.
    """
    chosen = _checked(schedule, "ddpm", diffusion)
    return _chain(denoiser, diffusion, mel, chosen, generator, noise, callback, project,
                  init=init, draws=draws)


def sample_fast(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    *,
    schedule: SamplingPlan,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
    callback: Optional[Callback] = None,
    project: Optional[Projection] = None,
    init: Optional[Tensor] = None,
    draws: Optional[PositionalNoise] = None,
) -> Tensor:
    """DiffWave fast sampling (Kong et al. 2021, appendix B; lmnt-com/diffwave).

    ``schedule``: ``SamplingPlan.fast(diffusion.betas, betas)`` over a short sequence of
    inference betas (or ``plan("fast", config)``: the configured ``fast_schedule``,
    DiffWave's 6 steps by default). Each inference step ``s`` runs the denoiser at the
    fractional training step of :func:`align_fast_schedule` and updates
    ``x = (x - beta_s / sqrt(1 - abar_s) * eps) / sqrt(alpha_s)``, then for ``s > 0`` adds
    ``sigma_s z`` with ``sigma_s^2 = (1 - abar_{s-1}) / (1 - abar_s) * beta_s``, alpha-bar
    taken over the inference schedule. Over the training betas this is exactly
    :func:`sample_ddpm`. Returns ``(B, F * hop)``.
    """
    chosen = _checked(schedule, "fast", diffusion)
    return _chain(denoiser, diffusion, mel, chosen, generator, noise, callback, project,
                  init=init, draws=draws)


def sample_ddim(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    *,
    schedule: SamplingPlan,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
    callback: Optional[Callback] = None,
    project: Optional[Projection] = None,
    init: Optional[Tensor] = None,
    draws: Optional[PositionalNoise] = None,
) -> Tensor:
    """DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12).

    ``schedule``: ``SamplingPlan.ddim(diffusion.betas, steps, eta)`` (or
    ``plan("ddim", config)``), ``steps`` a count or increasing training-step indices.
    Visiting them from the last to the first, with ``abar_prev = 1`` after the first::

        x0_hat = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t)
        sigma  = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
        x      = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z

    ``eta = 0`` is deterministic given ``x_T`` and draws no per-step noise; ``eta = 1``
    over all training steps is :func:`sample_ddpm`. Returns ``(B, F * hop)``.
    """
    chosen = _checked(schedule, "ddim", diffusion)
    return _chain(denoiser, diffusion, mel, chosen, generator, noise, callback, project,
                  init=init, draws=draws)


def unrolled_fast(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    *,
    schedule: SamplingPlan,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
    init: Optional[Tensor] = None,
) -> Tensor:
    """:func:`sample_fast`'s chain with the autograd graph kept: the same arithmetic and
    random draws over the same ``"fast"`` plan, so a loss on the result trains the denoiser
    through the inference schedule (InferGrad, Chen et al. 2022). Returns ``(B, F * hop)``,
    clamped to [-1, 1]."""
    chosen = _checked(schedule, "fast", diffusion, "unrolled_fast")
    return _chain(denoiser, diffusion, mel, chosen, generator, noise, None, None,
                  init=init, grad=True)


SAMPLERS: dict[str, Sampler] = {"fast": sample_fast, "ddim": sample_ddim, "ddpm": sample_ddpm}
assert tuple(SAMPLERS) == SAMPLER_NAMES


def get_sampler(name: str) -> Sampler:
    """The sampler registered as ``name`` in :data:`SAMPLERS`."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}"
        ) from None


# ---------------------------------------------------------------------- shared parts
def _checked(schedule: object, sampler: str, diffusion: GaussianDiffusion,
             fn: Optional[str] = None) -> SamplingPlan:
    """``schedule`` when it is a plan of ``sampler`` for ``diffusion``'s training steps;
    else a :class:`ConfigError` saying what to pass (``fn``: the caller's name)."""
    fn = fn or f"sample_{sampler}"
    make = (f"SamplingPlan.{sampler}(diffusion.betas{', ...' if sampler != 'ddpm' else ''}) "
            f"or plan({sampler!r}, config)")
    if not isinstance(schedule, SamplingPlan):
        raise ConfigError(f"{fn} takes a SamplingPlan as schedule, got "
                          f"{type(schedule).__name__} {schedule!r:.60}; pass {make}")
    if schedule.sampler != sampler:
        raise ConfigError(f"{fn} was given a plan of the {schedule.sampler!r} sampler; pass "
                          f"{make}, or run get_sampler(plan.sampler)")
    if schedule.train_steps != diffusion.num_steps:
        raise ConfigError(f"the {sampler!r} plan was made for {schedule.train_steps} training "
                          f"steps, the diffusion has {diffusion.num_steps}; make it from "
                          f"diffusion.betas")
    return schedule


def _chain(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    chosen: SamplingPlan,
    generator: Optional[torch.Generator],
    noise: Optional[Tensor],
    callback: Optional[Callback],
    project: Optional[Projection] = None,
    init: Optional[Tensor] = None,
    grad: bool = False,
    draws: Optional[PositionalNoise] = None,
) -> Tensor:
    """A plan's reverse chain (:class:`ChainStep` by step), the denoiser run at its
    network steps; ``grad``: keep the autograd graph (training through the chain), else
    inference mode."""
    with contextlib.nullcontext() if grad else torch.inference_mode():
        x, shaper = _start(denoiser, diffusion, mel, generator, noise, init,
                           chosen.alpha_bars[-1], draws)
        n = len(chosen.network_steps)
        for i in range(n):
            step = ChainStep(chosen, i, diffusion.prediction)
            eps = step.noise(_eps(denoiser, x, step.network_step, mel))
            x0 = None if project is None else project(step.clean(x, eps))
            x = step.update(x, eps, x0)
            if step.sigma > 0.0:
                x = x + step.sigma * _draw(x, shaper, generator, draws, i)
            if callback is not None:
                callback(i, n, x)
        return x.clamp(-1.0, 1.0)


class ChainStep:
    """Step ``i`` (0-based, in the order of sampling) of a plan's reverse chain: where the
    denoiser runs, the clean estimate, the update and the std of the noise added after it.
    The samplers and the streaming decoder (:mod:`wavediff.inference.stream`) both take
    their arithmetic from here.

    * fast and ddpm (ancestral, Ho et al. 2020): ``x <- (x - beta_s / sqrt(1 - abar_s) eps)
      / sqrt(1 - beta_s)``, then ``sigma_s^2 = (1 - abar_{s-1}) / (1 - abar_s) beta_s``
      (none at the last step);
    * ddim (Song et al. 2021, eq. 12): ``x <- sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev -
      sigma^2) eps`` with ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t) (1 - abar_t /
      abar_prev))``.

    With a projection (``x0`` given to :meth:`update`), ``x0`` replaces the clean estimate
    and ``eps`` is recomputed from it (GLA-Grad). ``prediction`` (``diffusion.prediction``)
    says what the network returns; :meth:`noise` turns it into ``eps``.
    """

    def __init__(self, chosen: SamplingPlan, i: int, prediction: str = "eps") -> None:
        n = len(chosen.network_steps)
        self.prediction = prediction
        s = n - 1 - i  # index into the plan, noisiest last
        self.ddim = chosen.sampler == "ddim"
        self.network_step = chosen.network_steps[s]
        self.abar = chosen.alpha_bars[s]
        if self.ddim:
            self.abar_prev = chosen.alpha_bars[s - 1] if s > 0 else 1.0
            self.sigma = chosen.eta * math.sqrt((1.0 - self.abar_prev) / (1.0 - self.abar)
                                                * (1.0 - self.abar / self.abar_prev))
        else:
            self.beta = chosen.betas[s]
            self.sigma = (math.sqrt((1.0 - chosen.alpha_bars[s - 1]) / (1.0 - self.abar)
                                    * self.beta) if s > 0 else 0.0)

    def noise(self, out: Tensor) -> Tensor:
        """The noise estimate the network's output stands for: ``out`` (eps-prediction), or
        for ``"residual"`` (``x0_hat = x / sqrt(abar) + out``) ``-sqrt(abar / (1 - abar))
        out``, so that :meth:`clean` gives that ``x0_hat``."""
        return noise_from_output(self.prediction, out, math.sqrt(self.abar),
                                 math.sqrt(1.0 - self.abar))

    def clean(self, x: Tensor, eps: Tensor) -> Tensor:
        """The clean estimate ``x0_hat = (x - sqrt(1 - abar) eps) / sqrt(abar)``."""
        return (x - math.sqrt(1.0 - self.abar) * eps) / math.sqrt(self.abar)

    def update(self, x: Tensor, eps: Tensor, x0: Optional[Tensor] = None) -> Tensor:
        """``x`` of the next level, before its noise (``sigma`` times a prior draw)."""
        if x0 is not None:  # projected clean estimate: the noise estimate that gives it
            eps = (x - math.sqrt(self.abar) * x0) / math.sqrt(1.0 - self.abar)
        if not self.ddim:
            return (x - self.beta / math.sqrt(1.0 - self.abar) * eps) / math.sqrt(1.0 - self.beta)
        x0 = self.clean(x, eps) if x0 is None else x0
        return (math.sqrt(self.abar_prev) * x0
                + math.sqrt(max(1.0 - self.abar_prev - self.sigma**2, 0.0)) * eps)


def _draw(x: Tensor, shaper: Optional[NoiseShaper], generator: Optional[torch.Generator],
          draws: Optional[PositionalNoise] = None, i: int = 0) -> Tensor:
    """One noise draw of ``x``'s shape from the prior: standard normal (``draws``' stream
    of network evaluation ``i`` when given, else from ``generator``), coloured by ``shaper``
    (PriorGrad: times the std)."""
    z = (draws.full(step_stream(i), x) if draws is not None
         else randn(x.shape, generator, x.device, x.dtype))
    return z if shaper is None else shaper.color(z)


def _start(
    denoiser: Denoiser, diffusion: GaussianDiffusion, mel: Tensor,
    generator: Optional[torch.Generator], noise: Optional[Tensor],
    init: Optional[Tensor] = None, abar_first: float = 0.0,
    draws: Optional[PositionalNoise] = None,
) -> tuple[Tensor, Optional[NoiseShaper]]:
    """``x_T`` and the prior's noise shaper (None for ``N(0, I)``): ``noise`` (checked to
    be ``(B, F * hop)``) or a fresh standard normal, coloured by the prior (PriorGrad: times
    its std); with ``init``, ``sqrt(abar_first) init + s sqrt(1 - abar_first)`` times that
    (``abar_first``: the alpha-bar of the schedule's first, noisiest step; ``s``:
    ``diffusion.start_noise``, 1 for the forward process)."""
    x = _start_noise(denoiser, mel, generator, noise, draws)
    shaper = diffusion.noise_shaper(mel, x.dtype)
    if shaper is not None:
        x = shaper.color(x)
    if init is not None:
        if tuple(init.shape) != tuple(x.shape):
            raise ValueError(f"init must have shape {tuple(x.shape)} (B, frames * hop), "
                             f"got {tuple(init.shape)}")
        x = diffusion.start_around(init.to(x.dtype), x, abar_first)
    return x, shaper


def _start_noise(
    denoiser: Denoiser, mel: Tensor, generator: Optional[torch.Generator], noise: Optional[Tensor],
    draws: Optional[PositionalNoise] = None,
) -> Tensor:
    """A standard normal ``x_T``: ``noise`` (checked to be ``(B, F * hop)``), else
    ``draws``' ``X_T`` stream, else a fresh draw from ``generator``."""
    if mel.dim() != 3:
        raise MelError(f"mel must have shape (B, n_mels, frames), got {tuple(mel.shape)}")
    hop = getattr(denoiser, "hop_length", None)
    if isinstance(hop, bool) or not isinstance(hop, int) or hop < 1:
        raise TypeError(f"the denoiser needs a positive int attribute hop_length, got {hop!r}")
    shape = (mel.shape[0], mel.shape[-1] * hop)
    if noise is None and draws is not None:
        if draws.batch != shape[0]:
            raise ValueError(f"draws has {draws.batch} keys for a batch of {shape[0]}")
        return draws.draw(X_T, 0, shape[1], device=mel.device, dtype=mel.dtype)
    if noise is None:
        return randn(shape, generator, mel.device, mel.dtype)
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape} (B, frames * hop), "
                         f"got {tuple(noise.shape)}")
    return noise.to(device=mel.device, dtype=mel.dtype)


def _eps(denoiser: Denoiser, x: Tensor, step: float, mel: Tensor) -> Tensor:
    """The denoiser's noise estimate at one (possibly fractional) training step."""
    steps = torch.full((x.shape[0],), step, device=x.device, dtype=step_dtype(x.dtype))
    eps = denoiser(x, steps, mel)
    if eps.shape != x.shape:
        raise ValueError(f"the denoiser returned shape {tuple(eps.shape)}, "
                         f"expected {tuple(x.shape)}")
    return eps.to(x.dtype)
