"""A phase for STFT magnitudes that is coherent from frame to frame: where Griffin-Lim starts
(``diffusion.gl_init: phase-vocoder``). numpy only: ``wavediff export`` copies this file
beside the exported decoder, which imports nothing of wavediff.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

PEAK_FLOOR = 1e-3  # spectral peaks below this fraction of the frame's largest are not tracked


class PhaseVocoder:
    """The phase a phase-locked vocoder gives magnitude frames (Laroche & Dolson 1999),
    frame after frame: :meth:`advance` takes the next frames' magnitudes and returns their
    phase, continuing the previous call's (a mel that arrives in pieces gets the phase of
    the whole mel).

    In each frame the magnitude's peaks are found, each peak's frequency refined by a
    parabola through its log-magnitude and its neighbours'; the peak's phase advances by
    that frequency times the hop from the phase the previous frame had at its bin, and every
    bin of the peak's region (the bins nearer to it than to another peak) takes the peak's
    phase, less ``pi`` per bin (the window centred in the frame: the phase a sinusoid has
    across its main lobe). Griffin-Lim from this phase instead of noise keeps voiced speech
    periodic: noise gives each frame's harmonics unrelated phases that overlap-add partly
    cancels and the projections do not fully undo. Deterministic; a few milliseconds a
    second of audio. Give it float64 magnitudes: the phase accumulates, so float32's
    last-bit differences would be carried on.
    """

    def __init__(self, hop_length: int, n_fft: int) -> None:
        self.hop_length, self.n_fft = hop_length, n_fft
        self._acc: Optional[np.ndarray] = None  # (B, K): each bin's phase before the lobe term

    def advance(self, magnitude: np.ndarray) -> np.ndarray:
        """The phase ``(B, K, n)`` (float64 in ``[-pi, pi)``) of the next ``n`` frames'
        magnitudes ``(B, K, n)``."""
        mags = np.asarray(magnitude, dtype=np.float64)
        if mags.ndim != 3:
            raise ValueError(f"expected magnitudes (batch, bins, frames), got {mags.shape}")
        batch, k_bins, frames = mags.shape
        if self._acc is None:
            self._acc = np.zeros((batch, k_bins))
        elif self._acc.shape != (batch, k_bins):
            raise ValueError(f"expected magnitudes of {self._acc.shape[0]} item(s) and "
                             f"{self._acc.shape[1]} bins, got {mags.shape}")
        out = np.empty_like(mags)
        bins = np.arange(k_bins)
        lobe = np.pi * bins
        log_mags = np.log(mags + 1e-12)
        for b in range(batch):
            acc = self._acc[b]
            for t in range(frames):
                m, a = log_mags[b, :, t], mags[b, :, t]
                inner = ((m[1:-1] > m[:-2]) & (m[1:-1] >= m[2:])
                         & (a[1:-1] > a.max() * PEAK_FLOOR))
                peaks = np.flatnonzero(inner) + 1
                if peaks.size:
                    left, mid, right = m[peaks - 1], m[peaks], m[peaks + 1]
                    curve = left - 2.0 * mid + right
                    safe = np.where(curve < 0.0, curve, -1.0)
                    offset = np.where(curve < 0.0, 0.5 * (left - right) / safe, 0.0)
                    omega = 2.0 * np.pi * (peaks + offset.clip(-0.5, 0.5)) / self.n_fft
                    region = np.searchsorted((peaks[:-1] + peaks[1:]) / 2.0, bins)
                    # kept within [0, 2 pi): the float32 phase of a long utterance keeps
                    # its resolution, and rounding differences do not grow with time
                    acc = np.mod(acc[peaks] + self.hop_length * omega, 2.0 * np.pi)[region]
                out[b, :, t] = np.mod(acc - lobe + np.pi, 2.0 * np.pi) - np.pi
            self._acc[b] = acc
        return out

