"""The Gaussian diffusion process: forward noising and the training loss.

Follows DDPM (Ho et al. 2020) as DiffWave uses it (Kong et al. 2021): the forward process
``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` and a denoiser trained to predict the
added noise (eps-prediction), or, with ``prediction="residual"``, what ``x_t / sqrt(abar_t)``
lacks of ``x_0`` (so its reach does not shrink with the noise level); either is turned into
the noise estimate the samplers use by :meth:`GaussianDiffusion.noise_from_output`. The
denoiser knows no betas; it receives the step index.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from wavediff.audio.presets import MelConfig
from wavediff.config import LOSS_TYPES, PREDICTIONS, DiffusionConfig
from wavediff.diffusion.prior import EnergyPrior, NoiseShaper, SpectralPrior
from wavediff.diffusion.schedule import BetasLike, alpha_bar, as_betas, posterior_variance
from wavediff.errors import ConfigError

# denoiser(x_t (B, T), steps (B,) float, mel (B, n_mels, F)) -> eps_hat (B, T), or the
# residual x0_hat - x_t / sqrt(abar) with prediction="residual"
Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]
# aux_loss(reference (B, T), estimate (B, T)) -> scalar
AuxLoss = Callable[[Tensor, Tensor], Tensor]



def step_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float dtype of the step tensor given to a denoiser working in ``dtype``.

    At least float32, so fractional steps are not rounded by half precision; float64 stays.
    """
    return torch.promote_types(dtype, torch.float32)


class GaussianDiffusion:
    """A training noise schedule and the operations on it. Holds no parameters.

    Attributes (float64 CPU tensors of shape ``(T,)``): ``betas``, ``alphas``,
    ``alpha_bar``, ``posterior_variance`` (``beta_tilde``, 0 at ``t = 0``).
    """

    def __init__(self, betas: BetasLike, prior: Optional[EnergyPrior] = None,
                 continuous: bool = False, start_noise: float = 1.0,
                 prediction: str = "eps") -> None:
        self.betas = as_betas(betas, "diffusion betas")
        self.alphas = 1.0 - self.betas
        self.alpha_bar = alpha_bar(self.betas)
        self.posterior_variance = posterior_variance(self.betas)
        self.prior = prior
        self.continuous = continuous
        # the share of the first level's noise added to a start estimate (samplers' init)
        self.start_noise = float(start_noise)
        if prediction not in PREDICTIONS:
            raise ConfigError(f"prediction must be one of {', '.join(PREDICTIONS)}, "
                              f"got {prediction!r}")
        # what the denoiser's output means (noise_from_output)
        self.prediction = prediction

    @classmethod
    def from_config(cls, config: DiffusionConfig,
                    audio: Optional[MelConfig] = None) -> "GaussianDiffusion":
        """The training schedule of ``config`` (its ``betas``, else the linear one), its
        prior (``audio``, the mel convention, is needed for PriorGrad's) and whether the
        denoiser is trained at continuous noise levels."""
        prior = None
        if config.prior != "none":
            if audio is None or config.prior_energy is None:
                raise ConfigError(
                    f"diffusion.prior={config.prior} needs the mel convention and the training "
                    "set's frame energy range (diffusion.prior_energy, set by wavediff train)"
                )
            kind = SpectralPrior if config.prior == "specgrad" else EnergyPrior
            prior = kind(audio, config.prior_energy, config.prior_floor)
        return cls(config.training_betas(), prior=prior,
                   continuous=config.conditioning == "noise_level",
                   start_noise=config.start_noise, prediction=config.prediction)

    def start_around(self, init: Tensor, noise: Tensor, abar_first: float) -> Tensor:
        """The chain's start around an estimate: ``sqrt(abar_first) init + start_noise
        sqrt(1 - abar_first) noise`` (``noise`` already shaped by the prior; ``abar_first``:
        the alpha-bar of the schedule's first, noisiest step)."""
        return (math.sqrt(abar_first) * init
                + self.start_noise * math.sqrt(1.0 - abar_first) * noise)

    def noise_from_output(self, out: Tensor, signal, sigma) -> Tensor:
        """:func:`noise_from_output` with this process's ``prediction``."""
        return noise_from_output(self.prediction, out, signal, sigma)

    def noise_std(self, mel: Tensor, dtype: Optional[torch.dtype] = None) -> Optional[Tensor]:
        """The prior's per-sample std for ``mel`` ``(B, n_mels, F)``: ``(B, F * hop)``, or
        None for the standard normal prior."""
        return None if self.prior is None else self.prior.std(mel, dtype)

    def noise_shaper(self, mel: Tensor, dtype: Optional[torch.dtype] = None
                     ) -> Optional[NoiseShaper]:
        """The prior's noise for ``mel`` ``(B, n_mels, F)`` (``color`` white noise,
        ``whiten`` a residual), or None for the standard normal prior."""
        return None if self.prior is None else self.prior.shaper(mel, dtype)

    @property
    def num_steps(self) -> int:
        """T, the number of training steps."""
        return int(self.betas.numel())

    def __repr__(self) -> str:
        b = self.betas
        return (f"GaussianDiffusion(num_steps={self.num_steps}, "
                f"betas={b[0].item():.4g}..{b[-1].item():.4g})")

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Sample ``x_t ~ q(x_t | x_0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``
        (Ho et al. 2020, eq. 4).

        Args:
            x0: clean audio, ``(B, T_wav)``.
            t: integer training steps in ``[0, T-1]``, ``(B,)``.
            noise: ``(B, T_wav)``, standard normal.
        Returns:
            ``x_t``, ``(B, T_wav)``, in ``x0``'s dtype.
        """
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"t must be an integer tensor of training steps, got {t.dtype}")
        if t.dim() != 1 or t.shape[0] != x0.shape[0]:
            raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ConfigError(
                f"diffusion step {int(t.min()) if int(t.min()) < 0 else int(t.max())} is out "
                f"of range; valid steps are 0..{self.num_steps - 1}"
            )
        return self._q_sample(x0, t, noise)

    def _q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        signal, sigma = self._coefficients(t, x0)
        return signal * x0 + sigma * noise

    def _coefficients(self, t: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
        """``sqrt(abar_t)`` and ``sqrt(1 - abar_t)`` shaped to broadcast over ``x0``.

        Integer ``t`` indexes the schedule; fractional ``t`` (continuous noise levels)
        interpolates ``sqrt(abar)`` linearly between the neighbouring steps, the rule by
        which fast sampling places its levels (:func:`align_fast_schedule`).
        """
        shape = (-1,) + (1,) * (x0.dim() - 1)
        abar = self.alpha_bar.to(device=x0.device)
        if t.dtype.is_floating_point:
            t = t.to(device=x0.device, dtype=torch.float64).clamp(0, self.num_steps - 1)
            low = t.floor().long()
            high = (low + 1).clamp(max=self.num_steps - 1)
            levels = abar.sqrt()
            level = levels[low] + (levels[high] - levels[low]) * (t - low)
            abar = level.square()
        else:
            abar = abar[t.to(x0.device)]
        signal, sigma = abar.sqrt(), (1.0 - abar).sqrt()
        return signal.to(x0.dtype).view(shape), sigma.to(x0.dtype).view(shape)

    def draw_steps(self, n: int, generator: Optional[torch.Generator],
                   device: torch.device) -> Tensor:
        """Training steps for ``n`` samples: ``t ~ U{0..T-1}`` (int64); for continuous
        noise levels ``t + u`` with ``t ~ U{0..T-2}`` and a second draw ``u ~ U[0, 1)``
        (float64): uniform on ``[0, T-1)``, so the level lies uniformly between
        ``sqrt(abar_t)`` and its neighbour ``sqrt(abar_{t+1})``."""
        if not self.continuous or self.num_steps == 1:
            return randint(self.num_steps, (n,), generator, device)
        t = randint(self.num_steps - 1, (n,), generator, device)
        if generator is None:
            u = torch.rand((n,), device=device, dtype=torch.float64)
        else:
            u = torch.rand((n,), generator=generator, device=generator.device,
                           dtype=torch.float64).to(device)
        return t.to(torch.float64) + u

    # ------------------------------------------------------------------ training loss
    def loss(
        self,
        denoiser: Denoiser,
        x0: Tensor,
        mel: Tensor,
        *,
        loss_type: str = "l1",
        generator: Optional[torch.Generator] = None,
        t: Optional[Tensor] = None,
        noise: Optional[Tensor] = None,
        aux_loss: Optional[AuxLoss] = None,
        aux_weight: float = 0.0,
        aux_target: str = "x0",
    ) -> Tensor:
        """The eps-prediction loss (Ho et al. 2020, alg. 1; DiffWave alg. 1).

        Draws, from ``generator`` and in this order, ``t ~ U{0..T-1}`` (``torch.randint``,
        shape ``(B,)``) and ``noise ~ N(0, I)`` (``torch.randn``, ``x0``'s shape and
        dtype), both on the generator's device (the default device when ``generator`` is
        None) and then moved to ``x0``'s device. Returns the mean absolute (``"l1"``, as
        lmnt-com/diffwave) or squared (``"l2"``, as the paper) error between
        ``denoiser(x_t, t as float, mel)`` and ``noise``. Steps ``t`` ((B,) int64) and
        ``noise`` (``x0``'s shape) given by the caller are used instead of drawing them
        (distributed training draws them for a whole global batch and slices).

        With PriorGrad's prior the added noise is ``std * noise`` (``std`` from the mel,
        :meth:`noise_std`), the denoiser predicts it and the error is divided by ``std``;
        with SpecGrad's, the noise is filtered by the mel's envelope and the error by its
        inverse (:meth:`noise_shaper`).
        With continuous noise levels, ``t`` is fractional (:meth:`draw_steps`). With
        ``prediction="residual"`` the output is read as ``x0_hat - x_t / sqrt(abar)`` and
        the error is that of ``x0_hat`` (the noise error times ``sqrt(1 - abar) /
        sqrt(abar)``), so no level's error is weighted by its signal-to-noise ratio.
        ``aux_loss(reference, estimate)`` with ``aux_weight > 0`` adds an auxiliary term on
        ``x0`` against the denoiser's estimate ``x0_hat = (x_t - sqrt(1 - abar) eps_hat) /
        sqrt(abar)`` (``aux_target="x0"``) or on the added noise against its prediction
        (``"noise"``).

        Args:
            x0: clean audio crops, ``(B, T_wav)``.
            mel: their mels, ``(B, n_mels, F)`` with ``F * hop = T_wav``.
        Returns:
            a scalar tensor, computed in ``x0``'s dtype.
        """
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
        if x0.dim() != 2:
            raise ValueError(f"x0 must have shape (B, T_wav), got {tuple(x0.shape)}")
        if t is None:
            t = self.draw_steps(x0.shape[0], generator, x0.device)
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, x0.dtype)
        shaper = self.noise_shaper(mel, x0.dtype)
        if shaper is not None:
            noise = shaper.color(noise)
        signal, sigma = self._coefficients(t, x0)
        x_t = signal * x0 + sigma * noise
        eps = denoiser(x_t, t.to(step_dtype(x0.dtype)), mel)
        if eps.shape != noise.shape:
            raise ValueError(
                f"the denoiser returned shape {tuple(eps.shape)}, expected {tuple(noise.shape)}"
            )
        eps = self.noise_from_output(eps.to(x0.dtype), signal, sigma)
        err = eps - noise
        if self.prediction == "residual":  # the error of x0_hat = (x_t - sigma eps) / signal
            err = err * (sigma / signal)
        if shaper is not None:
            err = shaper.whiten(err)
        loss = err.abs().mean() if loss_type == "l1" else err.square().mean()
        if aux_loss is not None and aux_weight > 0.0:
            if aux_target == "x0":
                loss = loss + aux_weight * aux_loss(x0, (x_t - sigma * eps) / signal)
            else:
                loss = loss + aux_weight * aux_loss(noise, eps)
        return loss


def noise_from_output(prediction: str, out: Tensor, signal, sigma) -> Tensor:
    """The noise estimate that a denoiser's output ``out`` stands for at the level with
    ``signal = sqrt(abar)`` and ``sigma = sqrt(1 - abar)`` (floats, or tensors that
    broadcast): ``out`` itself for ``prediction="eps"``; for ``"residual"``, where
    ``x0_hat = x_t / signal + out``, ``eps = -(signal / sigma) out``."""
    return out if prediction == "eps" else out * (-signal / sigma)


def randn(
    shape: tuple[int, ...],
    generator: Optional[torch.Generator],
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """``torch.randn`` drawn on the generator's device, then moved to ``device``.

    A CPU generator thus gives the same numbers whatever device the audio is on.
    """
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    out = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return out.to(device)


def randint(
    high: int, shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device
) -> Tensor:
    """``torch.randint(0, high)`` (int64) drawn on the generator's device, moved to ``device``."""
    if generator is None:
        return torch.randint(0, high, shape, device=device)
    out = torch.randint(0, high, shape, generator=generator, device=generator.device)
    return out.to(device)
