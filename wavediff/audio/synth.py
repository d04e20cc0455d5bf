"""Synthetic speech-like test audio: harmonic source, formant filters, noise and silence."""

from __future__ import annotations

import numpy as np

# (F1, F2, F3) in Hz of a few vowels
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
           (640, 1190, 2390))


def _resonator(x: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    """Second-order all-pole resonance (a formant) applied to ``x``."""
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bandwidth / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1.0 - r], a, x)


def toy_utterance(sample_rate: int = 22050, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A float32 waveform of about ``seconds`` (±25%), peak 0.9, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    total = int(sample_rate * seconds * rng.uniform(0.75, 1.25))
    out = np.zeros(total, dtype=np.float64)
    pos = int(rng.uniform(0.05, 0.15) * sample_rate)
    f0_base = rng.uniform(90, 220)
    while pos < total - sample_rate // 10:
        dur = int(rng.uniform(0.12, 0.35) * sample_rate)
        dur = min(dur, total - pos)
        t = np.arange(dur) / sample_rate
        f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        source = np.zeros(dur)
        for h in range(1, int(sample_rate / 2 / f0.max())):
            source += np.sin(h * phase) / h
        if rng.random() < 0.3:  # a fricative-like burst before the vowel
            source[: dur // 4] += rng.normal(0, 0.5, dur // 4)
        voiced = sum(_resonator(source, f, 60 + 20 * k, sample_rate) * (0.5 ** k)
                     for k, f in enumerate(_VOWELS[rng.integers(len(_VOWELS))]))
        envelope = np.sin(np.pi * np.arange(dur) / dur) ** 0.5
        out[pos:pos + dur] += voiced * envelope * rng.uniform(0.4, 1.0)
        pos += dur + int(rng.uniform(0.0, 0.12) * sample_rate)
    out += rng.normal(0, 1e-4, total)
    out *= 0.9 / max(np.abs(out).max(), 1e-9)
    return out.astype(np.float32)
