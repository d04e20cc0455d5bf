"""Conversion of a mel from one convention to another (:class:`MelConverter`).

It is exact (float64, through the linear mel) where the two conventions differ only by
log base, offsets, scaling, normalisation statistics, STFT normalisation or padding/frame
count; where filterbanks or band limits differ it goes through the linear magnitude
spectrum (non-negative least squares through the source filterbank, :func:`nnls`) and
says how large the error is,
measured on a speech-like reference clip. Sample-rate or hop mismatches are refused with
the numbers. Detection is in :mod:`wavediff.audio.detect`, per-file and batch preparation
in :mod:`wavediff.audio.prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from wavediff.audio.detect import (
    FLOOR_GAP_DB, PresetLike, Stats, compress, decompress, describe_band, describe_values,
    filterbank64, resolve_preset, same_values, to_db, window_sums,
)
from wavediff.audio.presets import MelConfig
from wavediff.errors import MelError
# the NNLS solver (FISTA), shared with the exported decoder (a module of numpy alone)
from wavediff.onnx_decoder import nnls

# iterations of the projected-gradient NNLS from source mel to linear spectrum: on ESPnet
# mels of the joe voice converted to hifigan, 0.174 log-mel L1 to the native mel with the
# clipped pseudo-inverse, 0.152 with the NNLS (vocoded: PESQ 2.97 -> 3.02)
NNLS_ITERS = 50


# ---------------------------------------------------------------------- conversion
@dataclass
class ErrorStats:
    """Absolute errors of a conversion, in the target convention's units and in dB."""

    mean: float
    p95: float
    max: float
    mean_db: float

    def __str__(self) -> str:
        return (f"mean {self.mean:.3f}, p95 {self.p95:.3f}, max {self.max:.3f} "
                f"(mean {self.mean_db:.2f} dB)")


def error_stats(target: MelConfig, converted: np.ndarray, reference: np.ndarray) -> ErrorStats:
    """Errors of ``converted`` against ``reference`` (both ``(n_mels, T)``, target units)."""
    n = min(converted.shape[-1], reference.shape[-1])
    c = np.asarray(converted, np.float64)[..., :n]
    r = np.asarray(reference, np.float64)[..., :n]
    d = np.abs(c - r)
    d_db = np.abs(to_db(target, c) - to_db(target, r))
    return ErrorStats(float(d.mean()), float(np.percentile(d, 95)), float(d.max()),
                      float(d_db.mean()))


def half_way(ext: np.ndarray) -> np.ndarray:
    """``(n, T + 2)`` frames (one extra at each end) -> ``(n, T - 1)`` frames half-way
    between neighbours: the 4-tap cubic interpolation ``(-a + 9 b + 9 c - d) / 16``
    (none for fewer than four frames in all)."""
    return (9.0 * (ext[:, 1:-2] + ext[:, 2:-1]) - ext[:, :-3] - ext[:, 3:]) / 16.0


class MelConverter:
    """Converts mels ``(n_mels_src, T)`` of ``source`` to ``(n_mels_dst, T')`` of ``target``.

    ``source_stats`` / ``target_stats`` (per-bin ``(mean, scale)``) mark features normalised
    as ``(raw - mean) / scale`` on top of the convention (ESPnet, ParallelWaveGAN). ``kind``
    is ``"identity"``, ``"exact"`` or ``"approximate"``; ``notes`` says what changes.
    Raises :class:`MelError` when sample rates or hops differ.
    """

    def __init__(self, source: PresetLike, target: PresetLike, *,
                 source_stats: Optional[Stats] = None,
                 target_stats: Optional[Stats] = None) -> None:
        self.source = resolve_preset(source)
        self.target = resolve_preset(target)
        self.source_stats = check_stats(source_stats, self.source, "source")
        self.target_stats = check_stats(target_stats, self.target, "target")
        s, t = self.source, self.target
        if s.sample_rate != t.sample_rate or s.hop_length != t.hop_length:
            raise MelError(
                f"cannot convert {s.preset} mels ({s.sample_rate} Hz, hop {s.hop_length} = "
                f"{1000 * s.hop_length / s.sample_rate:.2f} ms per frame) to {t.preset} "
                f"({t.sample_rate} Hz, hop {t.hop_length} = "
                f"{1000 * t.hop_length / t.sample_rate:.2f} ms): the frame rate or band "
                f"differs; use a model trained at {s.sample_rate} Hz with hop {s.hop_length}, "
                f"or compute the mels from audio resampled to {t.sample_rate} Hz"
            )
        filterbank_same = all(getattr(s, k) == getattr(t, k) for k in (
            "n_fft", "win_length", "n_mels", "fmin", "mel_scale", "mel_norm")) and (
            s.max_frequency == t.max_frequency)
        self.notes: list[str] = []
        self.filterbank_same = filterbank_same
        if same_values(s, t) and s.padding == t.padding and not (source_stats or target_stats):
            self.kind = "identity"
        elif filterbank_same and s.padding == t.padding:
            self.kind = "exact"
        elif filterbank_same:
            # the values convert exactly, but every frame was analysed half a hop away from
            # where the target's frame would be: as large an error as a spectral conversion
            self.kind = "approximate"
        else:
            self.kind = "approximate"
            self.notes.append(f"filterbank {describe_band(s)} -> {describe_band(t)}")
        if s.compression != t.compression or s.norm_mean != t.norm_mean or (
                s.norm_std != t.norm_std or s.ref_level_db != t.ref_level_db):
            self.notes.append(f"values {describe_values(s)} -> {describe_values(t)}")
        if s.stft_normalized != t.stft_normalized:
            self.notes.append("STFT window normalisation (a constant gain)")
        if self.source_stats is not None:
            self.notes.append("per-bin statistics removed")
        if self.target_stats is not None:
            self.notes.append("per-bin statistics applied")
        if s.padding != t.padding:
            self.notes.append(
                f"frames: the grid moves half a hop ({s.hop_length // 2} samples) onto the "
                f"model's, each frame interpolated half-way between the two around it "
                + ("(len//hop+1 -> len//hop)" if s.padding == "center"
                   else "(len//hop -> len//hop+1, the end frames kept)"))
        self._expected: Optional[ErrorStats] = None
        self._pinv: Optional[np.ndarray] = None
        self._basis_t: Optional[np.ndarray] = None

    @property
    def exact(self) -> bool:
        return self.kind != "approximate"

    # ------------------------------------------------------------------ core
    def __call__(self, mel: Any) -> np.ndarray:
        """``(n_mels_src, T)`` (numpy or tensor) -> float32 ``(n_mels_dst, T')``."""
        x = as_float64(mel)
        s = self.source
        if x.ndim != 2 or x.shape[0] != s.n_mels:
            raise MelError(f"expected a {s.preset} mel of shape ({s.n_mels}, T), got {x.shape}")
        if self.kind == "identity":
            return x.astype(np.float32)
        return self._finish_frames(self._fix_frames(self._frame_values(x)))

    def _frame_values(self, x: np.ndarray) -> np.ndarray:
        """Every frame's values in the target convention, on the source's frame grid."""
        if self.source_stats is not None:
            x = x * self.source_stats[1][:, None] + self.source_stats[0][:, None]
        if self.filterbank_same:
            return self._convert_values(x)
        return self._convert_spectrum(x)

    def _finish_frames(self, y: np.ndarray) -> np.ndarray:
        """The target's per-bin statistics applied, float32."""
        if self.target_stats is not None:
            y = (y - self.target_stats[0][:, None]) / self.target_stats[1][:, None]
        return y.astype(np.float32)

    def _gain(self) -> float:
        """Linear factor from source to target magnitudes from STFT normalisation alone."""
        g = 1.0
        if self.source.stft_normalized:
            g *= window_sums(self.source)[1]
        if self.target.stft_normalized:
            g /= window_sums(self.target)[1]
        return g

    def _convert_values(self, x: np.ndarray) -> np.ndarray:
        s, t = self.source, self.target
        if (s.compression == t.compression and s.ref_level_db == t.ref_level_db
                and s.clamp_min == t.clamp_min and s.clip is None and t.clip is None
                and self._gain() == 1.0):
            # affine in the value domain: no trip through exp/log, bit-stable round trips
            raw = x * s.norm_std + s.norm_mean
            return (raw - t.norm_mean) / t.norm_std
        lin = decompress(s, x) * self._gain()
        return compress(t, lin)

    def _convert_spectrum(self, x: np.ndarray) -> np.ndarray:
        s, t = self.source, self.target
        if self._pinv is None:
            basis_s = filterbank64(s)
            self._pinv = np.linalg.pinv(basis_s)
            self._basis_s = basis_s
            self._step = 1.0 / float(np.linalg.norm(basis_s, 2)) ** 2
            covered = np.nonzero(basis_s.sum(axis=0) > 0)[0]
            self._edges = (int(covered[0]), int(covered[-1]))
            self._basis_t = filterbank64(t)
        lin = decompress(s, x)
        at_floor = np.abs(x - s.floor) <= max(1e-4, 1e-6 * abs(s.floor))
        lin[at_floor] *= 10 ** (-FLOOR_GAP_DB / 20)  # a floor value means "this or lower"
        if s.stft_normalized:
            lin = lin * window_sums(s)[1]
        spec = nnls(self._basis_s, lin, self._pinv, self._step, iters=NNLS_ITERS)  # (K_s, T)
        lo, hi = self._edges
        spec[:lo] = spec[lo]
        spec[hi + 1:] = spec[hi]
        if s.n_fft != t.n_fft or s.win_length != t.win_length:
            f_s = np.arange(spec.shape[0]) * s.sample_rate / s.n_fft
            f_t = np.arange(t.n_fft // 2 + 1) * t.sample_rate / t.n_fft
            spec = np.stack([np.interp(f_t, f_s, col) for col in spec.T], axis=1)
            spec *= window_sums(t)[0] / window_sums(s)[0]
        lin_t = self._basis_t @ spec
        if t.stft_normalized:
            lin_t = lin_t / window_sums(t)[1]
        return compress(t, lin_t)

    def _fix_frames(self, y: np.ndarray) -> np.ndarray:
        """Move the frames onto the target's grid when the paddings differ.

        A centred STFT (``padding="center"``) puts frame ``t`` at sample ``t * hop``; the
        others at ``t * hop + hop / 2``. Reading one as the other would shift the decoded
        audio by half a hop (about 0.1 log-mel L1 against the recording, measured). Each
        target frame is instead interpolated half-way between the two source frames around
        it, in the target's compressed (log) domain, by the 4-tap cubic
        ``(-y[k-1] + 9 y[k] + 9 y[k+1] - y[k+2]) / 16`` (the end frames repeated past the
        ends): on the joe reference mels it lands 0.006-0.018 log-mel L1 closer to the
        native frames than the mean of the two (which the log-domain mean beat the linear
        one by before).
        """
        s, t = self.source, self.target
        if s.padding == t.padding:
            return y
        if s.padding == "center" and y.shape[1] < 2:
            raise MelError(f"a {s.preset} mel of {y.shape[1]} frame is too short to convert")
        mid = half_way(np.concatenate([y[:, :1], y, y[:, -1:]], axis=1))
        if s.padding == "center":
            return mid
        return np.concatenate([y[:, :1], mid, y[:, -1:]], axis=1)

    def streaming(self) -> "StreamingConverter":
        """A converter of one mel that arrives in pieces (see :class:`StreamingConverter`)."""
        return StreamingConverter(self)

    # ------------------------------------------------------------------ reporting
    def expected_error(self) -> ErrorStats:
        """Errors against the target's own mel, measured on a speech-like reference clip.

        The clip (:func:`wavediff.audio.synth.toy_utterance`, 3 s, seed 0) is analysed in
        both conventions; the source mel is converted and compared frame by frame with the
        target mel of the same audio (frame grids aligned as the conversion aligns them).
        """
        if self._expected is None:
            import torch

            from wavediff.audio.mel import MelSpectrogram
            from wavediff.audio.synth import toy_utterance

            wav = torch.from_numpy(toy_utterance(self.source.sample_rate, 3.0, seed=0)).double()
            src = MelSpectrogram(self.source)(wav).numpy()
            ref = MelSpectrogram(self.target)(wav).numpy()
            if self.source_stats is not None:
                m, sc = self.source_stats
                src = (src - m[:, None]) / sc[:, None]
            got = self(src).astype(np.float64)
            if self.target_stats is not None:
                m, sc = self.target_stats
                got, ref = got * sc[:, None] + m[:, None], ref
            self._expected = error_stats(self.target, got, ref)
        return self._expected

    def describe(self) -> str:
        """One line: what the conversion does and, if approximate, how large its error is."""
        s, t = self.source.preset, self.target.preset
        if self.kind == "identity":
            return f"{s} is the model's convention: no conversion"
        what = "; ".join(self.notes)
        if self.kind == "exact":
            return f"exact conversion {s} -> {t}: {what}"
        how = ("values exact, frames moved onto the model's grid" if self.filterbank_same
               else "through the linear spectrum, by non-negative least squares through the "
                    "filterbank")
        return (f"approximate conversion {s} -> {t} ({how}): {what}; expected error on "
                f"speech-like audio in {t} units: {self.expected_error()}")


def as_float64(mel: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(mel, torch.Tensor):
            return mel.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(mel, dtype=np.float64)


def check_stats(stats: Optional[Stats], cfg: MelConfig, what: str) -> Optional[Stats]:
    if stats is None:
        return None
    mean, scale = (np.asarray(v, dtype=np.float64).reshape(-1) for v in stats)
    if mean.size != cfg.n_mels or scale.size != cfg.n_mels:
        raise MelError(f"{what} stats have {mean.size} bins but the {cfg.preset} mel has "
                       f"{cfg.n_mels}; check --stats")
    if (scale <= 0).any():
        raise MelError(f"{what} stats hold non-positive scales; check --stats")
    return mean, scale


class StreamingConverter:
    """Converts a mel that arrives in pieces to exactly what :class:`MelConverter` makes of
    the whole: values frame by frame; where the frame grids differ by half a hop, each
    target frame is interpolated from the two source frames on each side of it, so the
    last two source frames of a piece are held back until the next piece (or
    :meth:`finish`) completes them.

    ``push(chunk)`` ``(n_mels_src, k)`` -> the target frames now complete
    ``(n_mels_dst, k')``; ``finish()`` -> the last ones.
    """

    def __init__(self, converter: MelConverter) -> None:
        self.converter = converter
        # the source frames (converted values) the next outputs still need, the first one
        # repeated in front as the whole conversion does
        self.held: Optional[np.ndarray] = None
        self.frames = 0
        self.n_out = converter.target.n_mels

    def push(self, chunk: Any) -> np.ndarray:
        conv = self.converter
        x = as_float64(chunk)
        if x.ndim != 2 or x.shape[0] != conv.source.n_mels:
            raise MelError(f"expected a {conv.source.preset} mel of shape "
                           f"({conv.source.n_mels}, T), got {x.shape}")
        if x.shape[1] == 0:
            return np.zeros((self.n_out, 0), np.float32)
        if conv.kind == "identity":
            return x.astype(np.float32)
        y = conv._frame_values(x)
        first = self.frames == 0
        self.frames += y.shape[1]
        s, t = conv.source, conv.target
        if s.padding == t.padding:
            return conv._finish_frames(y)
        ext = (np.concatenate([y[:, :1], y], axis=1) if self.held is None
               else np.concatenate([self.held, y], axis=1))
        self.held = ext[:, -3:]
        out = half_way(ext)  # none until four frames are there
        if s.padding != "center" and first:  # the first target frame is the first frame
            out = np.concatenate([ext[:, :1], out], axis=1)
        return conv._finish_frames(out)

    def finish(self) -> np.ndarray:
        """The frames held back: the last half-way frame, and the last target frame where
        the grid gives one more."""
        conv = self.converter
        s, t = conv.source, conv.target
        if s.padding == t.padding or conv.kind == "identity":
            return np.zeros((self.n_out, 0), np.float32)
        if s.padding == "center" and self.frames == 1:
            raise MelError(f"a {s.preset} mel of 1 frame is too short to convert")
        if self.held is None:
            return np.zeros((self.n_out, 0), np.float32)
        ext = np.concatenate([self.held, self.held[:, -1:]], axis=1)
        out = half_way(ext)  # none after a single frame
        if s.padding != "center":
            out = np.concatenate([out, self.held[:, -1:]], axis=1)
        return conv._finish_frames(out)
