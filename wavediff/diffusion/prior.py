"""Data-dependent priors: PriorGrad's (Lee et al. 2022, "PriorGrad: Improving Conditional
Denoising Diffusion Models with Data-Dependent Adaptive Prior", ICLR) and SpecGrad's
(Koizumi et al. 2022, "SpecGrad: Diffusion Probabilistic Model based Neural Vocoder with
Adaptive Noise Spectral Shaping", Interspeech).

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

SpecGrad's prior shapes the noise's spectrum too: ``Sigma = L L^T`` with the time-varying
filter ``L = G^+ D G`` (``G`` the STFT of the mel's framing, ``G^+`` its least-squares
inverse, ``D`` a real, per-frame gain over frequency), so the noise has the spectral
envelope of the mel, frame by frame. Here ``D`` is the mel's cepstrally smoothed spectral
envelope (pseudo-inverse of the filterbank, ``SHAPE_LIFTER`` cepstral coefficients),
floored at ``SHAPE_FLOOR`` of its rms and scaled to PriorGrad's frame std, so the level
follows PriorGrad and the shape follows the mel. The forward process adds ``L eps``; the
loss weighs the error by ``L^-1 ~ G^+ D^-1 G``. The filter is zero-phase (the paper uses the
minimum-phase response of the envelope).

Both priors hand the samplers and the loss a :class:`NoiseShaper` per mel: ``color`` turns
white noise into the prior's, ``whiten`` undoes it on the loss's error.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from wavediff.audio.mel import decompress_mel, mel_filterbank
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

    def shaper(self, mel: Tensor, dtype: Optional[torch.dtype] = None) -> "NoiseShaper":
        """The prior's noise for ``mel`` ``(B, n_mels, F)``: white noise times :meth:`std`."""
        return DiagonalShaper(self.std(mel, dtype))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(energy={self.energy_min:.4g}..{self.energy_max:.4g}, "
                f"floor={self.floor})")


class NoiseShaper(Protocol):
    """The prior's covariance factor ``L`` for one batch of mels (waveforms ``(B, F * hop)``)."""

    def color(self, z: Tensor) -> Tensor:
        """White noise ``z`` -> the prior's noise ``L z``."""

    def whiten(self, r: Tensor) -> Tensor:
        """A residual in the prior's noise space -> ``L^-1 r`` (the loss's weighting)."""


class DiagonalShaper:
    """PriorGrad's ``L``: a per-sample std ``(B, T)``."""

    def __init__(self, std: Tensor) -> None:
        self.std = std

    def color(self, z: Tensor) -> Tensor:
        return z * self.std

    def whiten(self, r: Tensor) -> Tensor:
        return r / self.std


# SpecGrad's filter: cepstral coefficients of the smoothed envelope (the paper keeps 24) and
# the smallest gain relative to a frame's rms gain (so that L^-1 stays bounded where the
# mel has no energy, e.g. above fmax)
SHAPE_LIFTER = 24
SHAPE_FLOOR = 0.1


@lru_cache(maxsize=8)
def _pinv_filterbank(audio: MelConfig) -> Tensor:
    return torch.linalg.pinv(mel_filterbank(audio).to(torch.float64)).float()  # (K, n_mels)


def spectral_envelope(mel: Tensor, audio: MelConfig, lifter: int = SHAPE_LIFTER) -> Tensor:
    """``(B, n_mels, F)`` -> ``(B, n_fft // 2 + 1, F)``: the cepstrally smoothed linear
    magnitude envelope of each frame (float32, positive)."""
    linear = decompress_mel(audio, mel.float())
    mag = (_pinv_filterbank(audio).to(mel.device) @ linear).clamp(min=0.0)
    floor = 1e-5 * mag.amax(dim=1, keepdim=True) + 1e-12
    cep = torch.fft.irfft(torch.log(mag + floor), n=audio.n_fft, dim=1)  # real cepstrum
    cep[:, lifter:audio.n_fft - lifter + 1] = 0.0
    return torch.exp(torch.fft.rfft(cep, dim=1).real)


class SpectralShaper:
    """SpecGrad's ``L = G^+ D G``: ``D`` ``(B, n_fft // 2 + 1, F)`` real gains per mel frame,
    applied in the STFT of the mel's geometry (centred frames, Hann window; STFT frame ``k``
    takes mel frame ``min(k, F - 1)``'s gains). Computed in float32, returned in the input's
    dtype."""

    def __init__(self, gain: Tensor, audio: MelConfig) -> None:
        self.gain = torch.cat([gain, gain[..., -1:]], dim=-1)  # F + 1 centred STFT frames
        self.n_fft, self.hop, self.win = audio.n_fft, audio.hop_length, audio.win_length
        self.window = torch.hann_window(self.win, periodic=True, device=gain.device)

    def _filter(self, x: Tensor, gain: Tensor) -> Tensor:
        # zero padding at the ends (any length, even shorter than the window)
        spec = torch.stft(x.float(), self.n_fft, self.hop, self.win, self.window, center=True,
                          pad_mode="constant", return_complex=True)
        spec = spec * gain[..., :spec.shape[-1]]
        return torch.istft(spec, self.n_fft, self.hop, self.win, self.window, center=True,
                           length=x.shape[-1]).to(x.dtype)

    def color(self, z: Tensor) -> Tensor:
        return self._filter(z, self.gain)

    def whiten(self, r: Tensor) -> Tensor:
        return self._filter(r, 1.0 / self.gain)


class SpectralPrior(EnergyPrior):
    """SpecGrad's prior: PriorGrad's frame level (:class:`EnergyPrior`, same statistics and
    floor) with the mel's spectral envelope as the noise's shape (:class:`SpectralShaper`)."""

    def gain(self, mel: Tensor) -> Tensor:
        """``(B, n_mels, F)`` -> ``(B, n_fft // 2 + 1, F)``: per frame, the envelope floored
        at ``SHAPE_FLOOR`` of its rms, with rms :meth:`frame_std` (float32)."""
        env = spectral_envelope(mel, self.audio)
        env = env / env.square().mean(dim=1, keepdim=True).sqrt()
        env = env.clamp(min=SHAPE_FLOOR)
        env = env / env.square().mean(dim=1, keepdim=True).sqrt()
        return env * self.frame_std(mel.float()).unsqueeze(1)

    def shaper(self, mel: Tensor, dtype: Optional[torch.dtype] = None) -> NoiseShaper:
        return SpectralShaper(self.gain(mel), self.audio)
