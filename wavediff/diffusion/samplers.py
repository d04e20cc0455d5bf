"""Samplers: plain functions that turn a mel into a waveform with a denoiser.

All share one signature::

    fn(denoiser, diffusion, mel, *, schedule=None, generator=None, noise=None, callback=None,
       project=None, init=None)
        -> Tensor (B, F * denoiser.hop_length)

``mel`` is ``(B, n_mels, F)``; the audio is computed in ``mel``'s device and dtype. The
starting point ``x_T`` is ``noise`` when given (shape ``(B, F * hop)``), else drawn with
``torch.randn`` from ``generator``. With a data-dependent prior (``diffusion.prior``,
PriorGrad) ``x_T`` and every per-step draw are scaled by the prior's std of ``mel``. Random numbers are drawn from ``generator`` in this
order: ``x_T`` first (unless ``noise`` is given), then one ``(B, F * hop)`` standard normal
per step that adds noise, drawn right after that step's denoiser call; steps that add no
noise (the last step, every DDIM step with ``eta = 0``) draw nothing. Draws happen on the
generator's device and are moved to ``mel``'s, so a CPU generator gives the same audio
on any device. ``callback(i, n, x)`` is called after step ``i`` of ``n`` (``i = 0..n-1``
in the order of sampling) with the current, unclamped ``x``. The result is clamped to
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
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from wavediff.config import DIFFWAVE_FAST_SCHEDULE, SAMPLER_NAMES
from wavediff.diffusion.process import Denoiser, GaussianDiffusion, randn, step_dtype
from wavediff.diffusion.schedule import align_fast_schedule, alpha_bar, ddim_schedule
from wavediff.errors import ConfigError, MelError

Callback = Callable[[int, int, Tensor], None]
Projection = Callable[[Tensor], Tensor]
Sampler = Callable[..., Tensor]


def sample_ddpm(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    *,
    schedule: None = None,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
    callback: Optional[Callback] = None,
    project: Optional[Projection] = None,
    init: Optional[Tensor] = None,
) -> Tensor:
    """Ancestral sampling over all ``T`` training steps (Ho et al. 2020, alg. 2).

    ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) * eps(x_t, t)) / sqrt(alpha_t) + sigma_t z``
    with ``sigma_t^2 = beta_tilde_t`` (the posterior variance, as DiffWave samples) and no
    noise at the last step ``t = 0``. ``schedule`` must be None. Returns ``(B, F * hop)``.
    """
    if schedule is not None:
        raise ConfigError(
            f"sample_ddpm runs all {diffusion.num_steps} training steps and takes no schedule, "
            f"got {schedule!r}; use sample_fast or sample_ddim for a shorter one"
        )
    betas = diffusion.betas.tolist()
    return _ancestral(denoiser, diffusion, mel, betas, [float(t) for t in range(len(betas))],
                      generator, noise, callback, project, init=init)


def sample_fast(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    *,
    schedule: Optional[Sequence[float]] = None,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
    callback: Optional[Callback] = None,
    project: Optional[Projection] = None,
    init: Optional[Tensor] = None,
) -> Tensor:
    """DiffWave fast sampling (Kong et al. 2021, appendix B; lmnt-com/diffwave).

    ``schedule`` is a short sequence of inference betas (default
    ``DIFFWAVE_FAST_SCHEDULE``, 6 steps). Each inference step ``s`` runs the denoiser at
    the fractional training step of :func:`align_fast_schedule` and updates
    ``x = (x - beta_s / sqrt(1 - abar_s) * eps) / sqrt(alpha_s)``, then for ``s > 0`` adds
    ``sigma_s z`` with ``sigma_s^2 = (1 - abar_{s-1}) / (1 - abar_s) * beta_s``, alpha-bar
    taken over the inference schedule. With the training betas as ``schedule`` this is
    exactly :func:`sample_ddpm`. Returns ``(B, F * hop)``.
    """
    return _fast(denoiser, diffusion, mel, schedule, generator, noise, callback, project, init)


def sample_ddim(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    *,
    schedule: Union[int, Sequence[int], None] = None,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
    callback: Optional[Callback] = None,
    eta: float = 0.0,
    project: Optional[Projection] = None,
    init: Optional[Tensor] = None,
) -> Tensor:
    """DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12).

    ``schedule``: a number of steps (evenly spaced by :func:`ddim_timesteps`; default
    ``DiffusionConfig.ddim_steps``) or an increasing sequence of training-step indices.
    Visiting them from the last to the first, with ``abar_prev = 1`` after the first::

        x0_hat = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t)
        sigma  = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
        x      = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z

    ``eta = 0`` is deterministic given ``x_T`` and draws no per-step noise; ``eta = 1``
    over all training steps is :func:`sample_ddpm`. Returns ``(B, F * hop)``.
    """
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"DDIM eta must be in [0, 1], got {eta!r}")
    timesteps = ddim_schedule(schedule, diffusion.num_steps)
    abar = diffusion.alpha_bar.tolist()
    with torch.inference_mode():
        x, std = _start(denoiser, diffusion, mel, generator, noise, init, abar[timesteps[-1]])
        n = len(timesteps)
        for i, t in enumerate(reversed(timesteps)):
            a_t = abar[t]
            a_prev = abar[timesteps[n - 2 - i]] if i < n - 1 else 1.0
            eps = _eps(denoiser, x, float(t), mel)
            x0_hat = (x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
            if project is not None:
                x0_hat = project(x0_hat)
                eps = (x - math.sqrt(a_t) * x0_hat) / math.sqrt(1.0 - a_t)
            sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
            x = math.sqrt(a_prev) * x0_hat + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
            if sigma > 0.0:
                x = x + sigma * _draw(x, std, generator)
            if callback is not None:
                callback(i, n, x)
        return x.clamp(-1.0, 1.0)


def unrolled_fast(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    *,
    schedule: Optional[Sequence[float]] = None,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
    init: Optional[Tensor] = None,
) -> Tensor:
    """:func:`sample_fast`'s chain with the autograd graph kept: the same arithmetic and
    random draws, so a loss on the result trains the denoiser through the inference
    schedule (InferGrad, Chen et al. 2022). Returns ``(B, F * hop)``, clamped to [-1, 1]."""
    return _fast(denoiser, diffusion, mel, schedule, generator, noise, None, None, init,
                 grad=True)


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
def _fast(denoiser: Denoiser, diffusion: GaussianDiffusion, mel: Tensor,
          schedule: Optional[Sequence[float]], generator: Optional[torch.Generator],
          noise: Optional[Tensor], callback: Optional[Callback],
          project: Optional[Projection], init: Optional[Tensor], grad: bool = False) -> Tensor:
    """The fast sampler's chain over ``schedule`` (default ``DIFFWAVE_FAST_SCHEDULE``)."""
    betas = list(DIFFWAVE_FAST_SCHEDULE if schedule is None else schedule)
    steps = align_fast_schedule(diffusion.betas, betas).tolist()
    return _ancestral(denoiser, diffusion, mel, betas, steps, generator, noise, callback, project,
                      init=init, grad=grad)


def _ancestral(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    mel: Tensor,
    betas: list[float],
    steps: list[float],
    generator: Optional[torch.Generator],
    noise: Optional[Tensor],
    callback: Optional[Callback],
    project: Optional[Projection] = None,
    init: Optional[Tensor] = None,
    grad: bool = False,
) -> Tensor:
    """The DDPM/DiffWave reverse chain over ``betas``, the denoiser run at ``steps``;
    ``grad``: keep the autograd graph (training through the chain), else inference mode."""
    abar = alpha_bar(betas).tolist()
    with contextlib.nullcontext() if grad else torch.inference_mode():
        x, std = _start(denoiser, diffusion, mel, generator, noise, init, abar[-1])
        n = len(betas)
        for i, s in enumerate(reversed(range(n))):
            eps = _eps(denoiser, x, steps[s], mel)
            if project is not None:
                eps = _projected_eps(x, eps, abar[s], project)
            x = (x - betas[s] / math.sqrt(1.0 - abar[s]) * eps) / math.sqrt(1.0 - betas[s])
            if s > 0:
                sigma = math.sqrt((1.0 - abar[s - 1]) / (1.0 - abar[s]) * betas[s])
                x = x + sigma * _draw(x, std, generator)
            if callback is not None:
                callback(i, n, x)
        return x.clamp(-1.0, 1.0)


def _projected_eps(x: Tensor, eps: Tensor, abar: float, project: Projection) -> Tensor:
    """The noise estimate whose clean estimate is ``project(x0_hat)`` (same ``x``)."""
    x0 = project((x - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar))
    return (x - math.sqrt(abar) * x0) / math.sqrt(1.0 - abar)


def _draw(x: Tensor, std: Optional[Tensor], generator: Optional[torch.Generator]) -> Tensor:
    """One noise draw of ``x``'s shape from the prior: standard normal, times ``std``."""
    z = randn(x.shape, generator, x.device, x.dtype)
    return z if std is None else z * std


def _start(
    denoiser: Denoiser, diffusion: GaussianDiffusion, mel: Tensor,
    generator: Optional[torch.Generator], noise: Optional[Tensor],
    init: Optional[Tensor] = None, abar_first: float = 0.0,
) -> tuple[Tensor, Optional[Tensor]]:
    """``x_T`` and the prior's std (None for ``N(0, I)``): ``noise`` (checked to be
    ``(B, F * hop)``) or a fresh standard normal, times the prior's std; with ``init``,
    ``sqrt(abar_first) init + sqrt(1 - abar_first)`` times that (``abar_first``: the
    alpha-bar of the schedule's first, noisiest step)."""
    x = _start_noise(denoiser, mel, generator, noise)
    std = diffusion.noise_std(mel, x.dtype)
    if std is not None:
        x = x * std
    if init is not None:
        if tuple(init.shape) != tuple(x.shape):
            raise ValueError(f"init must have shape {tuple(x.shape)} (B, frames * hop), "
                             f"got {tuple(init.shape)}")
        x = math.sqrt(abar_first) * init.to(x.dtype) + math.sqrt(1.0 - abar_first) * x
    return x, std


def _start_noise(
    denoiser: Denoiser, mel: Tensor, generator: Optional[torch.Generator], noise: Optional[Tensor]
) -> Tensor:
    """A standard normal ``x_T``: ``noise`` (checked to be ``(B, F * hop)``) or a fresh draw."""
    if mel.dim() != 3:
        raise MelError(f"mel must have shape (B, n_mels, frames), got {tuple(mel.shape)}")
    hop = getattr(denoiser, "hop_length", None)
    if isinstance(hop, bool) or not isinstance(hop, int) or hop < 1:
        raise TypeError(f"the denoiser needs a positive int attribute hop_length, got {hop!r}")
    shape = (mel.shape[0], mel.shape[-1] * hop)
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
