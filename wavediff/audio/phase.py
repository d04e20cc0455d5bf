"""Spectral consistency: the magnitudes a mel implies, and projections onto them.

A mel fixes (approximately) the magnitude of the short-time spectrum; a waveform fixes
magnitude and phase. :class:`SpectralProjector` estimates the linear magnitudes of a mel
(non-negative least squares through the mel filterbank) and projects a waveform onto them:
its STFT, framed exactly as :class:`~wavediff.audio.mel.MelSpectrogram` frames it, keeps its
phase and takes the target magnitude, and is turned back into a waveform by windowed
overlap-add (one Griffin-Lim iteration, Griffin & Lim 1984). Inside a diffusion sampler it
is applied to each step's clean estimate, as GLA-Grad does (Liu et al. 2024), so that the
denoiser's phase and the mel's magnitudes meet.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wavediff.audio.mel import decompress_mel, mel_filterbank
from wavediff.audio.presets import MelConfig
from wavediff.errors import MelError

# iterations of the accelerated projected-gradient NNLS that turns a linear mel into linear
# magnitudes (relative residual about 1e-7 on speech mels after 50)
NNLS_ITERS = 50


def mel_to_magnitude(config: MelConfig, mel: Tensor, iters: int = NNLS_ITERS) -> Tensor:
    """Non-negative linear STFT magnitudes ``(B, n_fft // 2 + 1, F)`` whose mel is closest
    (least squares) to ``mel`` ``(B, n_mels, F)`` in ``config``'s convention.

    Accelerated projected gradient (FISTA, Beck & Teboulle 2009) from the clipped
    pseudo-inverse, step ``1 / ||M||^2``, in float32; returned as float64. Where the
    filterbank has no band (above ``fmax``) the magnitude is 0.
    """
    if mel.dim() != 3 or mel.shape[1] != config.n_mels:
        raise MelError(f"expected a mel of shape (B, {config.n_mels}, frames), "
                       f"got {tuple(mel.shape)}")
    basis64 = mel_filterbank(config).to(device=mel.device, dtype=torch.float64)  # (M, K)
    linear = decompress_mel(config, mel.to(torch.float64))
    if config.stft_normalized:
        window = torch.hann_window(config.win_length, periodic=True, dtype=torch.float64)
        linear = linear * window.square().sum().sqrt().to(mel.device)
    step = 1.0 / float(torch.linalg.matrix_norm(basis64, ord=2)) ** 2
    a = (torch.linalg.pinv(basis64) @ linear).clamp(min=0.0).float()
    basis, linear = basis64.float(), linear.float()
    z, t = a, 1.0
    for _ in range(iters):
        # the gradient of 0.5 ||M z - y||^2, through the (n_mels x K) basis
        nxt = (z - step * (basis.T @ (basis @ z - linear))).clamp(min=0.0)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = nxt + ((t - 1.0) / t_next) * (nxt - a)
        a, t = nxt, t_next
    return a.double()


class SpectralProjector:
    """Projects waveforms of ``mel``'s length onto the magnitudes ``mel`` implies.

    ``mel``: ``(B, n_mels, F)`` in ``config``'s convention. Calling the projector on ``wav``
    ``(B, F * hop)`` returns the waveform whose STFT has ``wav``'s phase and the mel's
    magnitudes (as near as overlap-add allows), same shape and dtype.
    """

    def __init__(self, config: MelConfig, mel: Tensor, iters: int = NNLS_ITERS) -> None:
        self.config = config
        self.frames = mel.shape[-1]
        self.magnitude = mel_to_magnitude(config, mel, iters)
        n_fft, win = config.n_fft, config.win_length
        window = torch.hann_window(win, periodic=True, dtype=torch.float64, device=mel.device)
        left = (n_fft - win) // 2
        self.window = F.pad(window, (left, n_fft - win - left))  # centred, as torch.stft does
        self.pad = (n_fft // 2 if config.padding == "center"
                    else (n_fft - config.hop_length) // 2)

    def __call__(self, wav: Tensor) -> Tensor:
        cfg = self.config
        hop, n_fft = cfg.hop_length, cfg.n_fft
        if wav.dim() != 2 or wav.shape[-1] != self.frames * hop:
            raise MelError(f"expected a waveform of shape (B, {self.frames * hop}), "
                           f"got {tuple(wav.shape)}")
        x = wav.to(torch.float64)
        x = F.pad(x.unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)
        spec = torch.stft(x, n_fft, hop_length=hop, window=self.window, center=False,
                          return_complex=True)
        frames = min(spec.shape[-1], self.magnitude.shape[-1])
        spec = spec[..., :frames]
        phase = spec / spec.abs().clamp(min=1e-12)
        spec = self.magnitude[..., :frames] * phase
        chunks = torch.fft.irfft(spec, n=n_fft, dim=1) * self.window[:, None]  # (B, n_fft, F)
        length = x.shape[-1]
        out = F.fold(chunks, output_size=(1, length), kernel_size=(1, n_fft),
                     stride=(1, hop)).reshape(x.shape[0], length)
        norm = F.fold(self.window.square()[None, :, None].expand(1, n_fft, frames),
                      output_size=(1, length), kernel_size=(1, n_fft),
                      stride=(1, hop)).reshape(1, length)
        out = torch.where(norm > 1e-8, out / norm.clamp(min=1e-8), x)
        out = out[:, self.pad:self.pad + wav.shape[-1]]
        return out.to(wav.dtype)

    def griffin_lim(self, wav: Tensor, iters: int) -> Tensor:
        """``iters`` projections in a row, starting from ``wav``'s phase."""
        for _ in range(iters):
            wav = self(wav)
        return wav


def consistency_projector(config: MelConfig, mel: Tensor,
                          iters: int) -> Optional[Callable[[Tensor], Tensor]]:
    """The ``project`` argument of the samplers: ``x0 -> x0`` after ``iters`` projections
    onto ``mel``'s magnitudes; None when ``iters`` is 0."""
    if iters <= 0:
        return None
    projector = SpectralProjector(config, mel)
    return lambda x0: projector.griffin_lim(x0, iters)
