"""Mel conventions of other systems: detect them from the array, convert them to the model's.

* :func:`detect` decides the layout and the convention (one of the presets of
  :mod:`wavediff.audio.presets`, or the model's own config) of a stored mel array from its
  number of bins, value range (floor, clip edges, the largest value full-scale audio can
  give), how many values sit exactly at a floor, the dynamic range and the spectral tilt of
  the per-bin means. It returns its decision with the evidence, or raises
  :class:`AmbiguousMelError` listing the candidates and the option to set.
* :class:`MelConverter` converts one convention to another. It is exact (float64, through
  the linear mel) where the two differ only by log base, offsets, scaling, normalisation
  statistics, STFT normalisation or padding/frame count; where filterbanks or band limits
  differ it goes through the linear magnitude spectrum (pseudo-inverse of the source
  filterbank) and says how large the error is, measured on a speech-like reference clip.
  Sample-rate or hop mismatches are refused with the numbers.
* :func:`prepare_mel` is what the vocoder, the CLI and the compatibility wrappers call:
  stored array in, ``(n_mels, T)`` in the model's convention out.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from wavediff.audio.formats import LAYOUT_SHAPES, LAYOUTS, apply_layout, possible_layouts
from wavediff.audio.mel import compress_mel, mel_filterbank
from wavediff.audio.presets import PRESET_NAMES, MelConfig, get_preset
from wavediff.errors import MelError

log = logging.getLogger("wavediff.convert")

Stats = tuple[np.ndarray, np.ndarray]
PresetLike = Union[str, MelConfig]

# layouts the systems of each preset write their mel files in (DESIGN section 4); used only
# to choose between presets whose values are identical (hifigan and tacotron2)
TYPICAL_LAYOUTS = {
    "hifigan": ("1-mels-frames", "frames-mels"),
    "tacotron2": ("mels-frames",),
    "matcha": ("mels-frames",),
    "espnet": ("frames-mels",),
    "diffwave-lmnt": ("mels-frames",),
    "coqui": ("mels-frames",),
    "vocos": ("mels-frames", "1-mels-frames"),
}
FLOOR_GAP_DB = 15.0  # clamped/clipped floor entries are taken this far below the floor
_TOL_DB = 3.0        # values this far beyond a convention's range still count as in range
_MIN_FLOOR_MASS = 1e-3
_MAX_OUTSIDE = 0.01
_DR_RANGE_DB = (25.0, 80.0)  # p50 -> p99.5 level span of speech mels
_TYPICAL_DR_DB = 45.0
_NORMALISED_TILT = 0.3


class AmbiguousMelError(MelError):
    """The layout or convention of a mel cannot be decided from the array alone."""


class NormalisedMelError(AmbiguousMelError):
    """The mel looks normalised per bin (ESPnet, ParallelWaveGAN) and no statistics were given."""


# ---------------------------------------------------------------------- helpers
def resolve_preset(preset: PresetLike) -> MelConfig:
    return preset if isinstance(preset, MelConfig) else get_preset(preset)


def _window_sums(cfg: MelConfig) -> tuple[float, float]:
    """``(sum(w), sqrt(sum(w^2)))`` of the periodic Hann window of ``cfg``."""
    n = cfg.win_length
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    return float(w.sum()), float(np.sqrt((w * w).sum()))


def _basis(cfg: MelConfig) -> np.ndarray:
    return mel_filterbank(cfg).double().numpy()


def units_per_db(cfg: MelConfig) -> float:
    """How much a convention's value moves for 1 dB of linear mel (before clipping)."""
    per = {"ln": 1 / (20 * math.log10(math.e)), "log10": 1 / 20.0, "db": 1.0}[cfg.compression]
    return per / cfg.norm_std


def to_db(cfg: MelConfig, y: np.ndarray) -> np.ndarray:
    """Convention values -> 20 log10(linear mel), float64 (no exponentials, no overflow)."""
    v = np.asarray(y, dtype=np.float64) * cfg.norm_std + cfg.norm_mean
    if cfg.compression == "ln":
        return v * (20 * math.log10(math.e))
    if cfg.compression == "log10":
        return 20.0 * v
    return v + cfg.ref_level_db


def compress(cfg: MelConfig, linear: np.ndarray) -> np.ndarray:
    """Linear mel -> convention values (float64); as :meth:`MelSpectrogram.compress`."""
    x = torch.from_numpy(np.array(linear, dtype=np.float64))
    return compress_mel(cfg, x).numpy()


def decompress(cfg: MelConfig, y: np.ndarray) -> np.ndarray:
    """Convention values -> linear mel (float64); as :meth:`MelSpectrogram.decompress`."""
    return 10.0 ** (to_db(cfg, y) / 20.0)


def ceiling(cfg: MelConfig) -> float:
    """The largest value audio in [-1, 1] can reach in ``cfg`` (every bin at sum(window))."""
    wsum, wnorm = _window_sums(cfg)
    top = wsum * float(_basis(cfg).sum(axis=1).max())
    if cfg.stft_normalized:
        top /= wnorm
    return float(compress(cfg, np.array(top)))


def same_values(a: MelConfig, b: MelConfig) -> bool:
    """Whether ``a`` and ``b`` give identical values for the same frame (padding may differ)."""
    keys = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "mel_scale",
            "mel_norm", "stft_normalized", "compression", "clamp_min", "ref_level_db",
            "norm_mean", "norm_std", "clip")
    return all(getattr(a, k) == getattr(b, k) for k in keys) and (
        a.max_frequency == b.max_frequency)


def _describe_band(cfg: MelConfig) -> str:
    return (f"{cfg.n_mels} bins {cfg.fmin:g}-{cfg.max_frequency:g} Hz, {cfg.mel_scale} scale"
            f"{', slaney norm' if cfg.mel_norm else ', no norm'}")


def _describe_values(cfg: MelConfig) -> str:
    base = {"ln": f"ln(max(mel, {cfg.clamp_min:g}))", "log10": f"log10(max(mel, {cfg.clamp_min:g}))",
            "db": f"20 log10(max(mel, {cfg.clamp_min:g})) - {cfg.ref_level_db:g}"}[cfg.compression]
    if cfg.norm_mean != 0.0 or cfg.norm_std != 1.0:
        sign = "-" if cfg.norm_mean >= 0 else "+"
        base = f"({base} {sign} {abs(cfg.norm_mean):g}) / {cfg.norm_std:g}"
    if cfg.clip is not None:
        base += f" clipped to [{cfg.clip[0]:g}, {cfg.clip[1]:g}]"
    return base


# ---------------------------------------------------------------------- detection
@dataclass
class Evidence:
    """What one candidate convention makes of an array (values in that convention)."""

    preset: MelConfig
    layout: str
    outside: float      # fraction of values outside [floor, ceiling] (with a 3 dB margin)
    floor_mass: float   # fraction of values exactly at the floor (clamp or clip)
    dynamic_db: float   # level span p50 -> p99.5 in dB
    rejected: str = ""  # why it is impossible, empty if possible

    @property
    def name(self) -> str:
        return self.preset.preset


@dataclass
class Detection:
    """The decided layout and convention of a stored mel, with the evidence."""

    preset: MelConfig
    layout: str
    shape: tuple[int, ...]
    evidence: str
    alternatives: list[str] = field(default_factory=list)

    def describe(self, source: str = "mel") -> str:
        """One line: ``<source>: <preset>, layout (n_mels, T) (80, 228); evidence``."""
        return (f"{source}: {self.preset.preset}, layout {LAYOUT_SHAPES[self.layout]} "
                f"{self.shape}; {self.evidence}")


def _evaluate(a: np.ndarray, cfg: MelConfig, layout: str) -> Evidence:
    """Score convention ``cfg`` for ``a`` ``(n_mels, T)``."""
    tol = _TOL_DB * units_per_db(cfg)
    lo, hi = cfg.floor, ceiling(cfg)
    if cfg.clip is not None:
        lo, hi = max(lo, cfg.clip[0]), min(hi, cfg.clip[1])
    outside = float(np.mean((a < lo - tol) | (a > hi + tol)))
    floor_tol = max(1e-4, 1e-6 * abs(lo))
    floor_mass = float(np.mean(np.abs(a - lo) <= floor_tol))
    db = to_db(cfg, a)
    dynamic = float(np.percentile(db, 99.5) - np.percentile(db, 50))
    ev = Evidence(cfg, layout, outside, floor_mass, dynamic)
    if outside > _MAX_OUTSIDE:
        below = float(np.mean(a < lo - tol))
        ev.rejected = (f"{100 * below:.0f}% below its floor {lo:.3g}" if below >= outside / 2
                       else f"{100 * (outside - below):.0f}% above its ceiling {hi:.3g}")
    return ev


def _tilt(a: np.ndarray) -> float:
    """(mean of the lowest quarter of bins - mean of the highest quarter) / overall std."""
    q = max(1, a.shape[0] // 4)
    std = float(a.std()) or 1.0
    return float(a[:q].mean() - a[-q:].mean()) / std


def _candidates(extra: Sequence[MelConfig]) -> list[MelConfig]:
    out = [get_preset(n) for n in PRESET_NAMES]
    for cfg in extra:
        if not any(cfg.to_dict() == c.to_dict() for c in out):
            out.append(cfg)
    return out


def detect(array: np.ndarray, *, source: str = "mel", layout: Optional[str] = None,
           preset: Optional[PresetLike] = None, extra: Sequence[MelConfig] = (),
           stats_given: bool = False, prefer: Optional[MelConfig] = None) -> Detection:
    """Decide the layout and the convention of a stored mel ``array``.

    ``layout`` or ``preset`` fix that part of the decision; ``extra`` adds conventions to
    the presets (e.g. a model's custom config). ``stats_given`` tells that the array was
    already de-normalised with per-bin statistics. ``prefer`` (the model's convention) wins
    a tie between presets whose values are identical (hifigan and tacotron2 differ only by
    one frame of padding), which is otherwise decided by the layout. Raises :class:`AmbiguousMelError` naming
    the candidates and the option to set when the array does not decide.
    """
    a_raw = np.asarray(array)
    if a_raw.dtype.kind not in "fiu" or a_raw.size == 0:
        raise MelError(f"{source}: not a numeric, non-empty array (dtype {a_raw.dtype}, "
                       f"shape {tuple(a_raw.shape)}); write the mel as a float array with at "
                       "least one frame")
    fixed = resolve_preset(preset) if preset is not None else None
    cands = [fixed] if fixed is not None else _candidates(extra)
    shape = tuple(int(s) for s in a_raw.shape)
    hypotheses = possible_layouts(shape, [c.n_mels for c in cands])
    if layout is not None:
        if layout not in LAYOUTS:
            raise MelError(f"unknown mel layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        hypotheses = [h for h in hypotheses if h[0] == layout]
    if not hypotheses:
        bins = sorted({c.n_mels for c in cands})
        raise MelError(
            f"{source}: shape {shape} has no axis of {' or '.join(f'{n} bins' for n in bins)} "
            f"{'in layout ' + LAYOUT_SHAPES[layout] + ' ' if layout else ''}"
            f"(layouts read: (n_mels, T), (1, n_mels, T), (T, n_mels))"
            + (f"; this model expects {prefer.n_mels} mel bins" if prefer is not None else "")
            + "; check the TTS system's n_mels"
        )
    layouts = [x for x in LAYOUTS if x in {h[0] for h in hypotheses}]
    if len(layouts) > 1 and len({h[1] for h in hypotheses}) == 1:
        raise AmbiguousMelError(
            f"{source}: shape {shape} could be {' or '.join(LAYOUT_SHAPES[x] for x in layouts)}; "
            f"set --input-layout ({', '.join(layouts)}) (Python: layout=...)"
        )

    evidences: list[Evidence] = []
    normalised: list[tuple[str, float]] = []
    for lay, n in hypotheses:
        a = apply_layout(a_raw, lay, source).astype(np.float64)
        tilt = _tilt(a)
        if not stats_given and fixed is None and abs(tilt) < _NORMALISED_TILT:
            normalised.append((lay, tilt))
        evidences += [_evaluate(a, c, lay) for c in cands if c.n_mels == n]

    if fixed is not None:
        ev = evidences[0] if len(evidences) == 1 else None
        if ev is None:  # several layouts fit the fixed preset: keep the plausible one
            ok = [e for e in evidences if not e.rejected] or evidences
            if len(ok) > 1:
                raise AmbiguousMelError(
                    f"{source}: shape {shape} fits {fixed.preset} in several layouts; "
                    f"set --input-layout"
                )
            ev = ok[0]
        note = f"given as {fixed.preset}"
        if ev.rejected:
            log.warning("%s: the values do not look like %s (%s); converting anyway as asked",
                        source, fixed.preset, ev.rejected)
            note += f" (values look unlike it: {ev.rejected})"
        return Detection(fixed, ev.layout, shape, note)

    if normalised and len(normalised) == len(hypotheses):
        raise NormalisedMelError(
            f"{source}: layout {LAYOUT_SHAPES[normalised[0][0]]}; every mel bin has about the "
            f"same mean (spectral tilt "
            f"{normalised[0][1]:.2f} std), as in features normalised per bin with statistics "
            f"(ESPnet, ParallelWaveGAN); pass --stats <stats.h5|stats.npy|feats_stats.npz> "
            f"(Python: stats=...) or --input-preset"
        )
    alive = [e for e in evidences if not e.rejected]
    rejected = [e for e in evidences if e.rejected]
    reason = ""
    floored = [e for e in alive if e.floor_mass >= _MIN_FLOOR_MASS]
    if floored:
        alive, reason = floored, "floor"
    else:
        lo, hi = _DR_RANGE_DB
        plausible = [e for e in alive if lo <= e.dynamic_db <= hi]
        if plausible:
            alive, reason = plausible, "range"
    if not alive:
        raise AmbiguousMelError(
            f"{source}: shape {shape} fits no known mel convention ("
            + "; ".join(f"{e.name}: {e.rejected}" for e in rejected[:7])
            + "); set --input-preset, or use a model trained on this convention"
        )
    # presets with identical values (hifigan, tacotron2) are one group: pick by layout
    groups: list[list[Evidence]] = []
    for e in alive:
        for g in groups:
            if same_values(g[0].preset, e.preset) and g[0].layout == e.layout:
                g.append(e)
                break
        else:
            groups.append([e])
    if len(groups) > 1 and reason == "range":
        groups.sort(key=lambda g: abs(math.log(g[0].dynamic_db / _TYPICAL_DR_DB)))
        best, second = (abs(math.log(g[0].dynamic_db / _TYPICAL_DR_DB)) for g in groups[:2])
        if second - best > 0.25:
            groups = groups[:1]
    if len(groups) > 1:
        names = [f"{g[0].name} {LAYOUT_SHAPES[g[0].layout]}" for g in groups]
        raise AmbiguousMelError(
            f"{source}: shape {shape} could be any of: {', '.join(names)}; "
            f"set --input-preset ({'/'.join(dict.fromkeys(g[0].name for g in groups))}) "
            f"and, if needed, --input-layout (Python: input_preset=..., layout=...)"
        )
    group = groups[0]
    chosen = group[0]
    tie = ""
    if len(group) > 1:
        typical = [e for e in group if e.layout in TYPICAL_LAYOUTS.get(e.name, ())]
        own = [e for e in group if prefer is not None
               and e.preset.to_dict() == prefer.to_dict()]
        chosen = own[0] if own else typical[0] if typical else group[0]
        others = [e.name for e in group if e is not chosen]
        tie = (f"; {'/'.join(others)} has the same values (differs by padding only), "
               + (f"the model's own {chosen.name} kept (set --input-preset {others[0]} to "
                  f"drop its extra frame)" if own else f"{chosen.name} chosen by the layout"))
    lo_v, hi_v = float(np.min(a_raw)), float(np.max(a_raw))
    if reason == "floor":
        why = (f"{100 * chosen.floor_mass:.2g}% of values exactly at its floor "
               f"{chosen.preset.floor:.4g}")
    elif reason == "range":
        why = f"level span {chosen.dynamic_db:.0f} dB as speech (no value at a floor)"
    else:
        why = "the only convention in range"
    ruled_out = ", ".join(f"{e.name} ({e.rejected})" for e in rejected
                          if e.layout == chosen.layout)[:300]
    evidence = (f"{chosen.preset.n_mels} bins; values {lo_v:.4g}..{hi_v:.4g}; {why}{tie}"
                + (f"; ruled out: {ruled_out}" if ruled_out else ""))
    alternatives = [e.name for e in alive if e is not chosen]
    return Detection(chosen.preset, chosen.layout, shape, evidence, alternatives)


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
        self.source_stats = _check_stats(source_stats, self.source, "source")
        self.target_stats = _check_stats(target_stats, self.target, "target")
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
        if same_values(s, t) and s.padding == t.padding and not (source_stats or target_stats):
            self.kind = "identity"
        elif filterbank_same:
            self.kind = "exact"
        else:
            self.kind = "approximate"
            self.notes.append(f"filterbank {_describe_band(s)} -> {_describe_band(t)}")
        if s.compression != t.compression or s.norm_mean != t.norm_mean or (
                s.norm_std != t.norm_std or s.ref_level_db != t.ref_level_db):
            self.notes.append(f"values {_describe_values(s)} -> {_describe_values(t)}")
        if s.stft_normalized != t.stft_normalized:
            self.notes.append("STFT window normalisation (a constant gain)")
        if self.source_stats is not None:
            self.notes.append("per-bin statistics removed")
        if self.target_stats is not None:
            self.notes.append("per-bin statistics applied")
        if s.padding != t.padding:
            self.notes.append(
                "frames: " + ("last frame dropped (len//hop+1 -> len//hop)" if s.padding == "center"
                              else "last frame repeated (len//hop -> len//hop+1)")
                + f"; the frame grid moves by half a hop ({s.hop_length // 2} samples)")
        self._expected: Optional[ErrorStats] = None
        self._pinv: Optional[np.ndarray] = None
        self._basis_t: Optional[np.ndarray] = None

    @property
    def exact(self) -> bool:
        return self.kind != "approximate"

    # ------------------------------------------------------------------ core
    def __call__(self, mel: Any) -> np.ndarray:
        """``(n_mels_src, T)`` (numpy or tensor) -> float32 ``(n_mels_dst, T')``."""
        x = _as_float64(mel)
        s, t = self.source, self.target
        if x.ndim != 2 or x.shape[0] != s.n_mels:
            raise MelError(f"expected a {s.preset} mel of shape ({s.n_mels}, T), got {x.shape}")
        if self.kind == "identity":
            return x.astype(np.float32)
        if self.source_stats is not None:
            x = x * self.source_stats[1][:, None] + self.source_stats[0][:, None]
        if self.kind == "exact":
            y = self._convert_values(x)
        else:
            y = self._convert_spectrum(x)
        y = self._fix_frames(y)
        if self.target_stats is not None:
            y = (y - self.target_stats[0][:, None]) / self.target_stats[1][:, None]
        return y.astype(np.float32)

    def _gain(self) -> float:
        """Linear factor from source to target magnitudes from STFT normalisation alone."""
        g = 1.0
        if self.source.stft_normalized:
            g *= _window_sums(self.source)[1]
        if self.target.stft_normalized:
            g /= _window_sums(self.target)[1]
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
            basis_s = _basis(s)
            self._pinv = np.linalg.pinv(basis_s)
            covered = np.nonzero(basis_s.sum(axis=0) > 0)[0]
            self._edges = (int(covered[0]), int(covered[-1]))
            self._basis_t = _basis(t)
        lin = decompress(s, x)
        at_floor = np.abs(x - s.floor) <= max(1e-4, 1e-6 * abs(s.floor))
        lin[at_floor] *= 10 ** (-FLOOR_GAP_DB / 20)  # a floor value means "this or lower"
        if s.stft_normalized:
            lin = lin * _window_sums(s)[1]
        spec = np.maximum(self._pinv @ lin, 0.0)  # (n_fft_s // 2 + 1, T)
        lo, hi = self._edges
        spec[:lo] = spec[lo]
        spec[hi + 1:] = spec[hi]
        if s.n_fft != t.n_fft or s.win_length != t.win_length:
            f_s = np.arange(spec.shape[0]) * s.sample_rate / s.n_fft
            f_t = np.arange(t.n_fft // 2 + 1) * t.sample_rate / t.n_fft
            spec = np.stack([np.interp(f_t, f_s, col) for col in spec.T], axis=1)
            spec *= _window_sums(t)[0] / _window_sums(s)[0]
        lin_t = self._basis_t @ spec
        if t.stft_normalized:
            lin_t = lin_t / _window_sums(t)[1]
        return compress(t, lin_t)

    def _fix_frames(self, y: np.ndarray) -> np.ndarray:
        s, t = self.source, self.target
        if s.padding == t.padding:
            return y
        if s.padding == "center":
            if y.shape[1] < 2:
                raise MelError(f"a {s.preset} mel of {y.shape[1]} frame is too short to convert")
            return y[:, :-1]
        return np.concatenate([y, y[:, -1:]], axis=1)

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
        return (f"approximate conversion {s} -> {t} through the linear spectrum "
                f"(filterbank pseudo-inverse): {what}; expected error on speech-like audio "
                f"in {t} units: {self.expected_error()}")


def _as_float64(mel: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(mel, torch.Tensor):
            return mel.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(mel, dtype=np.float64)


def _check_stats(stats: Optional[Stats], cfg: MelConfig, what: str) -> Optional[Stats]:
    if stats is None:
        return None
    mean, scale = (np.asarray(v, dtype=np.float64).reshape(-1) for v in stats)
    if mean.size != cfg.n_mels or scale.size != cfg.n_mels:
        raise MelError(f"{what} stats have {mean.size} bins but the {cfg.preset} mel has "
                       f"{cfg.n_mels}; check --stats")
    if (scale <= 0).any():
        raise MelError(f"{what} stats hold non-positive scales; check --stats")
    return mean, scale


# ---------------------------------------------------------------------- one call
@dataclass
class Prepared:
    """A mel ready for a model: ``mel`` ``(n_mels, T)`` float32 in the model's convention."""

    mel: np.ndarray
    detection: Detection
    converter: MelConverter


class MelPreparer:
    """Detects and converts many mels for one model, reusing converters per source preset.

    ``input_preset``: ``"auto"`` (detect), a preset name or a :class:`MelConfig`.
    ``stats``: per-bin ``(mean, scale)`` the input features were normalised with.
    """

    def __init__(self, target: MelConfig, input_preset: Optional[PresetLike] = "auto", *,
                 stats: Optional[Stats] = None, layout: Optional[str] = None) -> None:
        self.target = target
        self.input_preset = "auto" if input_preset is None else input_preset
        if isinstance(self.input_preset, str) and self.input_preset != "auto":
            self.input_preset = get_preset(self.input_preset)
        self.stats = stats
        self.layout = layout
        self._converters: dict[str, MelConverter] = {}
        self.counts: dict[str, int] = {}

    def converter_for(self, source: MelConfig) -> MelConverter:
        key = repr(sorted(source.to_dict().items()))
        if key not in self._converters:
            conv = MelConverter(source, self.target)
            self._converters[key] = conv
            if conv.kind == "approximate":
                log.warning("%s", conv.describe())
            elif conv.kind == "exact":
                log.info("%s", conv.describe())
        return self._converters[key]

    def __call__(self, array: Any, source: str = "mel", known: Optional[MelConfig] = None,
                 num_samples: Optional[int] = None) -> Prepared:
        """Detect and convert one stored mel. ``known``: the convention the file states.

        ``num_samples``: the length of the recording the mel belongs to (GTA pairs), which
        decides between conventions that differ only by padding (frame count).
        """
        a = _as_float64(array)
        if self.stats is not None:
            a = self._denormalise(a, source)
        preset = known if known is not None and self.input_preset == "auto" else (
            None if self.input_preset == "auto" else self.input_preset)
        det = detect(a, source=source, layout=self.layout, preset=preset,
                     extra=(self.target,), stats_given=self.stats is not None,
                     prefer=self.target)
        if known is not None and self.input_preset == "auto":
            det.evidence = "convention stated by the file's audio.yaml"
        mel = apply_layout(a, det.layout, source)
        if num_samples is not None and preset is None:
            self._by_frame_count(det, mel.shape[-1], num_samples)
        conv = self.converter_for(det.preset)
        out = conv(mel)
        name = det.preset.preset
        self.counts[name] = self.counts.get(name, 0) + 1
        return Prepared(out, det, conv)

    @staticmethod
    def _by_frame_count(det: Detection, frames: int, num_samples: int) -> None:
        """Among presets with the same values, keep the one whose frame rule fits."""
        if det.preset.num_frames(num_samples) == frames:
            return
        for name in det.alternatives:
            if name not in PRESET_NAMES:
                continue
            other = get_preset(name)
            if same_values(other, det.preset) and other.num_frames(num_samples) == frames:
                det.evidence += (f"; {frames} frames for {num_samples} samples is {name}'s "
                                 f"frame rule, so {name}")
                det.alternatives = [det.preset.preset] + [n for n in det.alternatives if n != name]
                det.preset = other
                return

    def _denormalise(self, a: np.ndarray, source: str) -> np.ndarray:
        mean, scale = self.stats
        n = mean.size
        hyps = possible_layouts(a.shape, [n])
        if self.layout is not None:
            hyps = [h for h in hyps if h[0] == self.layout]
        if len(hyps) != 1:
            raise AmbiguousMelError(
                f"{source}: shape {a.shape} {'has no axis of' if not hyps else 'has several axes of'} "
                f"{n} bins (the size of the stats); set --input-layout")
        lay = hyps[0][0]
        mel = apply_layout(a, lay, source).astype(np.float64)
        raw = mel * scale[:, None] + mean[:, None]
        # back to the stored layout, so that detection sees the array as it was written
        if lay == "frames-mels":
            return raw.T
        if lay == "1-mels-frames":
            return raw[None]
        return raw

    def summary(self) -> str:
        """``"tacotron2 x10 (exact), espnet x2 (approximate)"``: what was converted."""
        parts = []
        for name, n in self.counts.items():
            kinds = {c.kind for c in self._converters.values() if c.source.preset == name}
            parts.append(f"{name} x{n} ({'/'.join(sorted(kinds))})")
        return ", ".join(parts)


def prepare_mel(array: Any, target: MelConfig, input_preset: Optional[PresetLike] = "auto", *,
                stats: Optional[Stats] = None, layout: Optional[str] = None,
                source: str = "mel") -> Prepared:
    """Detect (``input_preset="auto"``) and convert one stored mel to ``target``."""
    return MelPreparer(target, input_preset, stats=stats, layout=layout)(array, source)


def _stats_arg(stats: Any, n_mels: Optional[int] = None) -> Optional[Stats]:
    """``stats`` given as a path (stats.h5/.npy, feats_stats.npz) or as ``(mean, scale)``."""
    if stats is None:
        return None
    if isinstance(stats, (str, bytes)) or hasattr(stats, "__fspath__"):
        from wavediff.audio.formats import read_stats

        return read_stats(stats, n_mels)
    mean, scale = stats
    return np.asarray(mean, np.float64).reshape(-1), np.asarray(scale, np.float64).reshape(-1)


def convert_each(mels: Sequence[Any], target: MelConfig,
                 input_preset: Optional[PresetLike] = "auto", *, stats: Any = None,
                 layout: Optional[str] = None) -> list[np.ndarray]:
    """Convert stored mels (any layout each) to float32 ``(n_mels, T)`` of ``target``."""
    prep = MelPreparer(target, input_preset, stats=_stats_arg(stats), layout=layout)
    out = []
    for i, m in enumerate(mels):
        p = prep(m, source=f"mel {i}" if len(mels) > 1 else "mel")
        log.info("%s", p.detection.describe(f"mel {i}" if len(mels) > 1 else "mel"))
        out.append(p.mel)
    return out


def convert_batch(mel: Any, target: MelConfig, input_preset: Optional[PresetLike] = "auto", *,
                  stats: Any = None, layout: Optional[str] = None) -> Any:
    """What :meth:`Vocoder.decode` calls: a batch ``(B, n_mels_in, F)`` or one stored mel
    (any layout) -> float32 tensor ``(B, n_mels, F')`` or ``(n_mels, F')`` of ``target``."""
    import torch

    device = mel.device if isinstance(mel, torch.Tensor) else torch.device("cpu")
    a = _as_float64(mel)
    if a.ndim == 3 and a.shape[0] > 1:
        items = convert_each(list(a), target, input_preset, stats=stats, layout="mels-frames")
        return torch.from_numpy(np.stack(items)).to(device)
    single = convert_each([a], target, input_preset, stats=stats, layout=layout)[0]
    out = torch.from_numpy(single).to(device)
    return out.unsqueeze(0) if a.ndim == 3 else out
