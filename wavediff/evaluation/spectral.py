"""Cheap waveform and spectral distances that need only torch and numpy.

These are the metrics training can afford on every dev decode: multi-resolution STFT
distance, log-mel L1 in a mel preset, SNR and SI-SDR. Nothing here imports the optional
``eval`` dependencies (pesq, pystoi, pysptk, pyworld, speechmos).

All functions take a reference and a generated waveform, float in [-1, 1], of the same
length (shape ``(T,)``; the torch functions also take ``(B, T)``).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

from wavediff.errors import AudioError

__all__ = [
    "STFT_RESOLUTIONS", "multi_resolution_stft_distance", "multi_resolution_stft_loss",
    "PHASE_FFT_SIZES", "phase_derivative_loss", "multi_resolution_phase_loss", "log_mel_l1",
    "snr", "si_sdr", "MAX_DB",
]

# (n_fft, hop, win) of the multi-resolution STFT loss of Parallel WaveGAN / HiFi-GAN v2 era
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = (
    (1024, 120, 600), (2048, 240, 1200), (512, 50, 240),
)
# the phase-derivative loss's STFT sizes (hop a quarter of each): a long window that
# resolves the harmonics of a low voice, a short one (about a period of it) that sees the
# pulse's shape, which the long one does not
PHASE_FFT_SIZES: tuple[int, ...] = (1024, 256)
MAX_DB = 100.0  # SNR and SI-SDR of identical signals (instead of +inf)

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    return t.to(torch.float32)


def _check_pair(ref: torch.Tensor, gen: torch.Tensor) -> None:
    if ref.shape != gen.shape:
        raise AudioError(
            f"reference {tuple(ref.shape)} and generated {tuple(gen.shape)} waveforms differ "
            "in shape; trim them to the same length first"
        )


def _stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """``|STFT|`` of ``(B, T)`` with a Hann window, floored at 1e-7: ``(B, n_fft//2+1, F)``."""
    window = torch.hann_window(win, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    # |z| floored at 1e-7, written so that the gradient is finite at z = 0 (silence)
    return (spec.real.square() + spec.imag.square()).clamp(min=1e-14).sqrt()


def multi_resolution_stft_distance(
    ref: ArrayLike, gen: ArrayLike,
    resolutions: Sequence[tuple[int, int, int]] = STFT_RESOLUTIONS,
) -> float:
    """Multi-resolution STFT distance (lower is better, 0 for identical signals).

    For each ``(n_fft, hop, win)`` the spectral convergence
    ``||S_ref - S_gen||_F / ||S_ref||_F`` plus the mean absolute difference of the natural
    log magnitudes; the result is the average over resolutions (the auxiliary loss of
    Parallel WaveGAN, Yamamoto et al. 2020). ``ref``, ``gen``: ``(T,)`` or ``(B, T)``,
    numpy or torch; a batch is averaged.
    """
    r, g = _as_tensor(ref), _as_tensor(gen)
    _check_pair(r, g)
    if r.dim() == 1:
        r, g = r[None], g[None]
    with torch.no_grad():
        return float(np.mean([float(multi_resolution_stft_loss(a, b, resolutions))
                              for a, b in zip(r, g)]))


def multi_resolution_stft_loss(
    ref: torch.Tensor, gen: torch.Tensor,
    resolutions: Sequence[tuple[int, int, int]] = STFT_RESOLUTIONS,
) -> torch.Tensor:
    """The multi-resolution STFT loss as a differentiable scalar tensor (training's
    auxiliary loss; :func:`multi_resolution_stft_distance` is its value).

    Per resolution, spectral convergence ``||S_ref - S_gen||_F / ||S_ref||_F`` with the
    norms taken over the whole batch (as Parallel WaveGAN does, so a silent crop cannot
    blow it up) plus the mean absolute log-magnitude difference; then averaged over the
    resolutions. ``ref``, ``gen``: ``(T,)`` or ``(B, T)`` float tensors of one shape;
    computed in float32 at least.
    """
    if ref.shape != gen.shape:
        _check_pair(ref, gen)
    dtype = torch.promote_types(ref.dtype, torch.float32)
    r, g = ref.to(dtype), gen.to(dtype)
    if r.dim() == 1:
        r, g = r[None], g[None]
    total = r.new_zeros(())
    for n_fft, hop, win in resolutions:
        if r.shape[-1] <= n_fft // 2:  # too short for reflect padding at this size
            n_fft, win = _shrink(r.shape[-1], n_fft, win)
        sr_, sg = _stft_magnitude(r, n_fft, hop, win), _stft_magnitude(g, n_fft, hop, win)
        sc = torch.linalg.vector_norm(sr_ - sg) / torch.linalg.vector_norm(sr_).clamp(min=1e-7)
        mag = (sr_.log() - sg.log()).abs().mean()
        total = total + sc + mag
    return total / len(resolutions)


def phase_derivative_loss(ref: torch.Tensor, gen: torch.Tensor, n_fft: int = 1024,
                          hop: int = 256, eps: float = 1e-6) -> torch.Tensor:
    """How far the phase structure of ``gen`` is from that of ``ref``: a differentiable
    scalar in ``[0, 2]``, 0 when the phase derivatives agree everywhere.

    A waveform's absolute STFT phase cannot be told from its magnitude (nor from a mel),
    but its derivatives can: the instantaneous frequency (the phase advance from one frame
    to the next in a bin) and the group delay (the phase step from one bin to the next in a
    frame), the quantities APNet (Ai & Ling 2023) trains with anti-wrapping losses. Each is
    compared here as ``1 - cos(d_gen - d_ref)``, written with complex products so that
    nothing wraps and nothing divides by a vanishing magnitude::

        u = Z[t] conj(Z[t-1]) conj(R[t] conj(R[t-1]))      (time; the same over frequency)
        loss = sum w (1 - Re u / (|u| + eps)) / sum w,      w = |R[t]| |R[t-1]|

    weighted by the reference's magnitudes, so the phase of silence and of empty bins (which
    carries nothing) is not learned. The two directions are averaged. ``ref`` is treated as a
    constant; ``ref``, ``gen``: ``(B, T)`` or ``(T,)`` float tensors of one shape.
    """
    _check_pair(ref, gen)
    dtype = torch.promote_types(gen.dtype, torch.float32)
    r, g = ref.detach().to(dtype), gen.to(dtype)
    if r.dim() == 1:
        r, g = r[None], g[None]
    if r.shape[-1] <= n_fft // 2:
        n_fft, _ = _shrink(r.shape[-1], n_fft, n_fft)
        hop = min(hop, max(n_fft // 4, 1))
    window = torch.hann_window(n_fft, device=g.device, dtype=dtype)

    def spectrum(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, n_fft, hop_length=hop, window=window, center=True,
                          pad_mode="reflect", return_complex=True)

    with torch.no_grad():
        rs = spectrum(r)
    gs = spectrum(g)
    total = gs.real.new_zeros(())
    for dim in (-1, -2):  # over frames (instantaneous frequency), over bins (group delay)
        n = rs.shape[dim]
        if n < 2:
            continue
        r1, r0 = rs.narrow(dim, 1, n - 1), rs.narrow(dim, 0, n - 1)
        g1, g0 = gs.narrow(dim, 1, n - 1), gs.narrow(dim, 0, n - 1)
        with torch.no_grad():
            ref_step = r1 * r0.conj()
            weight = ref_step.abs()
        u = g1 * g0.conj() * ref_step.conj()
        magnitude = (u.real.square() + u.imag.square() + eps * eps).sqrt()
        cosine = u.real / magnitude
        total = total + (weight * (1.0 - cosine)).sum() / weight.sum().clamp(min=1e-12)
    return total / 2.0


def multi_resolution_phase_loss(ref: torch.Tensor, gen: torch.Tensor,
                                sizes: Sequence[int] = PHASE_FFT_SIZES) -> torch.Tensor:
    """:func:`phase_derivative_loss` averaged over the STFT sizes ``sizes`` (hop a quarter
    of each): training's phase term and the trainer's ``dev/phase``."""
    return sum(phase_derivative_loss(ref, gen, n_fft=n, hop=n // 4) for n in sizes) / len(sizes)


def _shrink(length: int, n_fft: int, win: int) -> tuple[int, int]:
    """The largest power-of-two FFT (and window) that fits a signal of ``length`` samples."""
    size = 2 ** max(int(math.log2(max(length - 1, 2))), 1)
    return size, min(win, size)


def log_mel_l1(ref: ArrayLike, gen: ArrayLike, mel_fn: torch.nn.Module) -> float:
    """Mean absolute difference of the two log-mel spectrograms (lower is better).

    ``mel_fn`` is a :class:`~wavediff.audio.mel.MelSpectrogram` (the model's preset), so the
    value is in that preset's units (e.g. natural-log magnitude for ``hifigan``).
    """
    r, g = _as_tensor(ref), _as_tensor(gen)
    _check_pair(r, g)
    with torch.no_grad():
        return float((mel_fn(r) - mel_fn(g)).abs().mean())


def snr(ref: np.ndarray, gen: np.ndarray) -> float:
    """Signal-to-noise ratio in dB, ``10 log10(|ref|^2 / |ref - gen|^2)``, capped at ``MAX_DB``."""
    r, g = np.asarray(ref, np.float64), np.asarray(gen, np.float64)
    if r.shape != g.shape:
        raise AudioError(f"reference {r.shape} and generated {g.shape} differ in shape")
    return _db(np.sum(r * r), np.sum((r - g) ** 2))


def si_sdr(ref: np.ndarray, gen: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), capped at ``MAX_DB``.

    Both signals are made zero-mean; the target is the projection of ``gen`` on ``ref``.
    """
    r, g = np.asarray(ref, np.float64), np.asarray(gen, np.float64)
    if r.shape != g.shape:
        raise AudioError(f"reference {r.shape} and generated {g.shape} differ in shape")
    r, g = r - r.mean(), g - g.mean()
    energy = np.sum(r * r)
    if energy == 0.0:
        return float("nan")
    target = (np.dot(g, r) / energy) * r
    return _db(np.sum(target * target), np.sum((g - target) ** 2))


def _db(signal: float, noise: float) -> float:
    if signal <= 0.0:
        return float("nan") if noise <= 0.0 else -MAX_DB
    if noise <= signal * 10 ** (-MAX_DB / 10):
        return MAX_DB
    return float(min(10.0 * math.log10(signal / noise), MAX_DB))
