"""PriorGrad's data-dependent prior (Lee et al. 2022, "PriorGrad: Improving Conditional
Denoising Diffusion Models with Data-Dependent Adaptive Prior", ICLR).

Instead of ``N(0, I)`` the diffusion ends in ``N(0, Sigma)`` with a diagonal ``Sigma`` whose
standard deviation follows the loudness of the mel frame each sample belongs to: loud
frames get noise of scale about 1, silence gets the floor (0.1 in the paper). The forward
process adds ``sigma * eps``; the denoiser predicts that scaled noise and the loss weighs
its error by ``1 / sigma`` (the ``Sigma^-1`` norm of the paper); sampling starts from
``N(0, Sigma)`` and every noise draw of the reverse chain is scaled by ``sigma`` too.

Frame energy here is ``sqrt(mean_bins(linear_mel ** 2))`` of the mel in its own convention
(decompressed to linear magnitude), normalised to [0, 1] by the minimum and maximum over
the training set, which are stored in the config (``diffusion.prior_energy``) so a
checkpoint decodes with the statistics it was trained with.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from wavediff.audio.mel import decompress_mel
from wavediff.audio.presets import MelConfig
from wavediff.errors import ConfigError


def frame_energy(mel: Tensor, audio: MelConfig) -> Tensor:
    """``(..., n_mels, F)`` mel in ``audio``'s convention -> ``(..., F)`` frame energy
    ``sqrt(mean over bins of linear_mel^2)``, computed in float32 (float64 stays)."""
    linear = decompress_mel(audio, mel.to(torch.promote_types(mel.dtype, torch.float32)))
    return linear.square().mean(dim=-2).sqrt()


def energy_range(mels: Iterable[np.ndarray], audio: MelConfig) -> tuple[float, float]:
    """The minimum and maximum frame energy over ``mels`` (each ``(n_mels, F)``): the
    normalisation statistics of :class:`EnergyPrior`, taken from the training set."""
    lo, hi = float("inf"), float("-inf")
    for mel in mels:
        e = frame_energy(torch.from_numpy(np.asarray(mel, dtype=np.float32)), audio)
        if e.numel():
            lo, hi = min(lo, float(e.min())), max(hi, float(e.max()))
    if not lo < hi:
        raise ConfigError(
            "the training mels have no spread of frame energy (all frames equally loud); "
            "PriorGrad's prior needs real speech, or set diffusion.prior=none"
        )
    return lo, hi


class EnergyPrior:
    """``std(mel)``: the per-sample standard deviation of PriorGrad's prior.

    Args:
        audio: the mel convention the mels are in; each frame's std is repeated for its
            ``audio.hop_length`` samples.
        energy: ``(min, max)`` frame energy of the training set.
        floor: the smallest std (0.1 in the paper), in (0, 1].
    """

    def __init__(self, audio: MelConfig, energy: Sequence[float], floor: float = 0.1) -> None:
        lo, hi = (float(v) for v in energy)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigError(f"diffusion.prior_energy must be [min, max] with min < max, "
                              f"got {list(energy)}")
        if not 0.0 < floor <= 1.0:
            raise ConfigError(f"diffusion.prior_floor must be in (0, 1], got {floor}")
        self.audio = audio
        self.hop_length = audio.hop_length
        self.energy_min, self.energy_max, self.floor = lo, hi, float(floor)

    def frame_std(self, mel: Tensor) -> Tensor:
        """``(B, n_mels, F)`` -> ``(B, F)``: ``clamp((e - min) / (max - min), floor, 1)``."""
        e = frame_energy(mel, self.audio)
        scaled = (e - self.energy_min) / (self.energy_max - self.energy_min)
        return scaled.clamp(self.floor, 1.0)

    def std(self, mel: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
        """``(B, n_mels, F)`` -> ``(B, F * hop)``, in ``dtype`` (default: the mel's)."""
        s = self.frame_std(mel).repeat_interleave(self.hop_length, dim=-1)
        return s.to(dtype or mel.dtype)

    def __repr__(self) -> str:
        return (f"EnergyPrior(energy={self.energy_min:.4g}..{self.energy_max:.4g}, "
                f"floor={self.floor})")
