"""Waveform to mel spectrogram, for any :class:`~wavediff.audio.presets.MelConfig`.

:class:`MelSpectrogram` is the only place in wavediff that turns audio into mels. The
computation is split in two so that conventions can be converted through the linear
domain:

* :meth:`MelSpectrogram.linear` - waveform to linear-magnitude mel (steps 1-3 of the
  computation documented in :mod:`wavediff.audio.presets`);
* :meth:`MelSpectrogram.compress` / :meth:`MelSpectrogram.decompress` - linear mel to the
  convention's log/normalised values and back (steps 4-5).

``forward(wav) == compress(linear(wav))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wavediff.audio.presets import MelConfig, get_preset
from wavediff.errors import AudioError, MelError

__all__ = ["MelSpectrogram", "mel_filterbank"]


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """The mel filterbank of ``config`` as float32, shape ``(n_mels, n_fft // 2 + 1)``.

    Slaney-scale banks come from ``librosa.filters.mel`` and HTK-scale banks from
    ``torchaudio.functional.melscale_fbanks``, the functions the reference systems use,
    so that the bases agree bit for bit.
    """
    n_freqs = config.n_fft // 2 + 1
    if config.mel_scale == "slaney":
        import librosa

        basis = librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.max_frequency,
            htk=False,
            norm=config.mel_norm,
            dtype="float32",
        )
        return torch.from_numpy(basis).to(torch.float32)
    import torchaudio

    fbanks = torchaudio.functional.melscale_fbanks(
        n_freqs=n_freqs,
        f_min=float(config.fmin),
        f_max=config.max_frequency,
        n_mels=config.n_mels,
        sample_rate=config.sample_rate,
        norm=config.mel_norm,
        mel_scale="htk",
    )
    return fbanks.T.contiguous().to(torch.float32)



def compress_mel(cfg: MelConfig, linear_mel: torch.Tensor) -> torch.Tensor:
    """Linear mel -> the values of convention ``cfg`` (log, affine normalisation, clip).

    Any shape and floating dtype (float64 in, float64 out); see :meth:`MelSpectrogram.compress`.
    """
    x = linear_mel.clamp(min=cfg.clamp_min)
    if cfg.compression == "ln":
        y = torch.log(x)
    elif cfg.compression == "log10":
        y = torch.log10(x)
    else:
        y = 20.0 * torch.log10(x) - cfg.ref_level_db
    if cfg.norm_mean != 0.0 or cfg.norm_std != 1.0:
        y = (y - cfg.norm_mean) / cfg.norm_std
    if cfg.clip is not None:
        y = y.clamp(cfg.clip[0], cfg.clip[1])
    return y

def decompress_mel(cfg: MelConfig, mel: torch.Tensor) -> torch.Tensor:
    """The values of convention ``cfg`` -> linear mel; the inverse of :func:`compress_mel`.

    Exact where compression neither clamped at ``clamp_min`` nor clipped. Any shape.
    """
    y = mel
    if cfg.norm_mean != 0.0 or cfg.norm_std != 1.0:
        y = y * cfg.norm_std + cfg.norm_mean
    if cfg.compression == "ln":
        return torch.exp(y)
    if cfg.compression == "log10":
        return torch.pow(10.0, y)
    return torch.pow(10.0, (y + cfg.ref_level_db) / 20.0)


class MelSpectrogram(torch.nn.Module):
    """Mel spectrogram of one convention (a :class:`MelConfig`).

    Shapes: ``wav`` is ``(B, T)`` or ``(T,)``, a float tensor in [-1, 1]; the result is
    ``(B, n_mels, F)`` or ``(n_mels, F)`` with ``F = config.num_frames(T)``. float64 input is
    computed in float64, every other float dtype in float32. The window and the filterbank
    are non-persistent buffers: ``.to(device)`` moves them and they are not saved in a
    ``state_dict``.
    """

    window: torch.Tensor
    mel_basis: torch.Tensor

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        if not isinstance(config, MelConfig):
            raise MelError(
                f"MelSpectrogram needs a MelConfig, got {type(config).__name__}; "
                "use MelSpectrogram.from_preset(name) for a named convention"
            )
        self.config = config
        window = torch.hann_window(config.win_length, periodic=True, dtype=torch.float32)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("mel_basis", mel_filterbank(config), persistent=False)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MelSpectrogram":
        """The transform of preset ``name`` (see ``PRESET_NAMES``), with field overrides."""
        return cls(get_preset(name, **overrides))

    # ------------------------------------------------------------------ geometry
    @property
    def pad(self) -> int:
        """Reflect padding added to each side of the waveform, in samples."""
        if self.config.padding == "center":
            return self.config.n_fft // 2
        return (self.config.n_fft - self.config.hop_length) // 2

    @property
    def min_samples(self) -> int:
        """The shortest input this transform accepts (reflect padding needs pad + 1)."""
        return max(self.pad + 1, self.config.hop_length)

    # ------------------------------------------------------------------ pipeline
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Compressed mel: ``(B, T)`` -> ``(B, n_mels, F)``, ``(T,)`` -> ``(n_mels, F)``."""
        return self.compress(self.linear(wav))

    def linear(self, wav: torch.Tensor) -> torch.Tensor:
        """Linear-magnitude mel (no log, no normalisation), same shapes as :meth:`forward`.

        Long inputs are analysed ``BLOCK_FRAMES`` frames at a time (each frame is its own
        FFT, so the result is the same): the complex spectrum, the largest intermediate, is
        never held for the whole input, and memory stays near the size of the output.
        """
        x, squeeze = self._check_wav(wav)
        cfg = self.config
        x = F.pad(x.unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)
        window = self._window_for(x)
        basis = self.mel_basis.to(device=x.device, dtype=x.dtype)
        hop = cfg.hop_length
        frames = (x.shape[-1] - cfg.n_fft) // hop + 1
        if frames <= self.BLOCK_FRAMES:
            mel = self._block(x, window, basis)
        else:
            mel = torch.empty(x.shape[0], cfg.n_mels, frames, dtype=x.dtype, device=x.device)
            for f0 in range(0, frames, self.BLOCK_FRAMES):
                f1 = min(f0 + self.BLOCK_FRAMES, frames)
                mel[..., f0:f1] = self._block(x[:, f0 * hop:(f1 - 1) * hop + cfg.n_fft],
                                              window, basis)
        return mel.squeeze(0) if squeeze else mel

    BLOCK_FRAMES = 4096  # frames analysed at once (about 48 s at 22,050 Hz, hop 256)

    def _block(self, x: torch.Tensor, window: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """The linear mel of every whole frame of the padded signal ``x`` ``(B, samples)``."""
        cfg = self.config
        spec = torch.stft(
            x,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=window,
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        del spec
        if cfg.magnitude_eps:
            power = power + cfg.magnitude_eps
        magnitude = power.sqrt_()
        if cfg.stft_normalized:
            magnitude = magnitude / window.square().sum().sqrt()
        return torch.matmul(basis, magnitude)

    def compress(self, linear_mel: torch.Tensor) -> torch.Tensor:
        """Linear mel -> this convention's values (log, affine normalisation, clip).

        Any shape; the result has the shape and dtype of ``linear_mel``.
        """
        return compress_mel(self.config, self._check_mel(linear_mel, "compress"))

    def decompress(self, mel: torch.Tensor) -> torch.Tensor:
        """This convention's values -> linear mel; the inverse of :meth:`compress`.

        Exact where ``compress`` neither clamped at ``clamp_min`` nor clipped; values at the
        floor map back to ``clamp_min`` and clipped values to the clip edge. Any shape.
        """
        return decompress_mel(self.config, self._check_mel(mel, "decompress"))

    # ------------------------------------------------------------------ checks
    def _check_wav(self, wav: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``wav`` as a ``(B, T)`` float32/float64 tensor, and whether it was 1-D.

        A numpy array (what ``soundfile.read`` returns) is taken as it is."""
        if isinstance(wav, np.ndarray):
            wav = torch.from_numpy(np.ascontiguousarray(wav))
        if not isinstance(wav, torch.Tensor):
            raise AudioError(
                f"waveform must be a torch.Tensor or numpy array, got {type(wav).__name__}"
            )
        if not wav.is_floating_point():
            raise AudioError(
                f"waveform must be a float tensor in [-1, 1], got dtype {wav.dtype}; "
                "for int16 PCM use wav.float() / 32768"
            )
        if wav.dim() not in (1, 2):
            raise AudioError(
                f"waveform must have shape (T,) or (B, T), got {tuple(wav.shape)}; "
                "mix channels down to mono first"
            )
        squeeze = wav.dim() == 1
        x = wav.unsqueeze(0) if squeeze else wav
        if x.dtype != torch.float64:
            x = x.to(torch.float32)
        n = x.shape[-1]
        if n < self.min_samples:
            raise AudioError(
                f"waveform has {n} samples but mel preset {self.config.preset!r} needs at "
                f"least {self.min_samples} (reflect padding of {self.pad}, hop "
                f"{self.config.hop_length}); use a longer clip or zero-pad it"
            )
        if x.numel() and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise AudioError(
                f"waveform contains {bad} NaN or infinite sample(s); "
                "fix or drop the audio before computing mels"
            )
        return x, squeeze

    def _window_for(self, x: torch.Tensor) -> torch.Tensor:
        """The Hann window on ``x``'s device, computed in float64 for float64 input."""
        if x.dtype == torch.float64:
            return torch.hann_window(
                self.config.win_length, periodic=True, dtype=torch.float64, device=x.device
            )
        return self.window.to(device=x.device, dtype=x.dtype)

    @staticmethod
    def _check_mel(mel: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(mel, torch.Tensor) or not mel.is_floating_point():
            kind = mel.dtype if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise MelError(f"{what} needs a float tensor, got {kind}; convert it with .float()")
        return mel

    def extra_repr(self) -> str:
        cfg = self.config
        fmax = cfg.max_frequency
        return (
            f"preset={cfg.preset!r}, sample_rate={cfg.sample_rate}, n_fft={cfg.n_fft}, "
            f"hop={cfg.hop_length}, n_mels={cfg.n_mels}, fmin={cfg.fmin:g}, "
            f"fmax={fmax:g}, padding={cfg.padding!r}, compression={cfg.compression!r}"
        )
