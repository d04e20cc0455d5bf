"""Which mel convention and layout a stored array is in, decided from the array alone.

:func:`detect` decides the layout and the convention (one of the presets of
:mod:`wavediff.audio.presets`, or the model's own config) of a stored mel array from its
number of bins, value range (floor, clip edges, the largest value full-scale audio can
give), how many values sit exactly at a floor, the dynamic range and the spectral tilt of
the per-bin means. It returns its decision with the evidence, or raises
:class:`AmbiguousMelError` listing the candidates and the option to set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from wavediff.audio.formats import (
    LAYOUT_SHAPES, LAYOUTS, apply_layout, check_array, possible_layouts,
)
from wavediff.audio.mel import compress_mel, decompress_mel, mel_filterbank
from wavediff.audio.presets import PRESET_NAMES, MelConfig, get_preset
from wavediff.errors import MelError

log = logging.getLogger("wavediff.convert")

Stats = tuple[np.ndarray, np.ndarray]
PresetLike = Union[str, MelConfig]

# layouts the systems of each preset write their mel files in (see the presets); used only
# to choose between presets whose values are identical (hifigan and tacotron2)
TYPICAL_LAYOUTS = {
    "hifigan": ("1-mels-frames", "frames-mels"),
    "tacotron2": ("mels-frames",),
    "matcha": ("mels-frames",),
    "espnet": ("frames-mels",),
    "espnet-16k": ("frames-mels",),
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


def window_sums(cfg: MelConfig) -> tuple[float, float]:
    """``(sum(w), sqrt(sum(w^2)))`` of the periodic Hann window of ``cfg``."""
    n = cfg.win_length
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    return float(w.sum()), float(np.sqrt((w * w).sum()))


def filterbank64(cfg: MelConfig) -> np.ndarray:
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
    """Convention values -> linear mel (float64): :func:`~wavediff.audio.mel.decompress_mel`."""
    return decompress_mel(cfg, torch.from_numpy(np.array(y, dtype=np.float64))).numpy()


def ceiling(cfg: MelConfig) -> float:
    """The largest value audio in [-1, 1] can reach in ``cfg`` (every bin at sum(window))."""
    wsum, wnorm = window_sums(cfg)
    top = wsum * float(filterbank64(cfg).sum(axis=1).max())
    if cfg.stft_normalized:
        top /= wnorm
    return float(compress(cfg, np.array(top)))


def same_values(a: MelConfig, b: MelConfig, *, any_rate: bool = False) -> bool:
    """Whether ``a`` and ``b`` give identical values for the same frame (padding may differ).

    ``any_rate``: also when only the sample rate differs (the same convention at 16 kHz and
    22,050 Hz: the values alone cannot tell the two apart).
    """
    keys = ("n_fft", "win_length", "hop_length", "n_mels", "fmin", "mel_scale", "mel_norm",
            "stft_normalized", "compression", "clamp_min", "ref_level_db", "norm_mean",
            "norm_std", "clip") + (() if any_rate else ("sample_rate",))
    return all(getattr(a, k) == getattr(b, k) for k in keys) and (
        a.max_frequency == b.max_frequency)


def describe_band(cfg: MelConfig) -> str:
    return (f"{cfg.n_mels} bins {cfg.fmin:g}-{cfg.max_frequency:g} Hz, {cfg.mel_scale} scale"
            f"{', slaney norm' if cfg.mel_norm else ', no norm'}")


def describe_values(cfg: MelConfig) -> str:
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
    tie: str = ""      # presets with the same values the array cannot tell apart, and the choice
    details: str = ""  # the conventions ruled out and why (for -v)

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


def _normalised_magnitude(a: np.ndarray) -> bool:
    """Values of the size per-bin normalised features have (mean near 0, std near 1)."""
    std = float(a.std())
    return abs(float(a.mean())) < 3.0 and 0.05 < std < 10.0


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
    check_array(array, source)
    a_raw = np.asarray(array)
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
    lo_v, hi_v = float(np.min(a_raw)), float(np.max(a_raw))
    constant = hi_v - lo_v <= 1e-6 * max(1.0, abs(lo_v))
    for lay, n in hypotheses:
        a = apply_layout(a_raw, lay, source).astype(np.float64)
        tilt = _tilt(a)
        if not stats_given and not constant and abs(tilt) < _NORMALISED_TILT and (
                _normalised_magnitude(a)):
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
        looks_normalised = [t for lay, t in normalised if lay == ev.layout]
        if looks_normalised:
            tilt = looks_normalised[0]
            log.warning("%s: the values look normalised per bin (every bin has about the same "
                        "mean: spectral tilt %.2f std, mean %.2f, std %.2f), not like raw %s "
                        "mels; pass the statistics the TTS features were normalised with "
                        "(--stats, Python: stats=...) or the audio will be noise",
                        source, tilt, float(a_raw.mean()), float(a_raw.std()), fixed.preset)
            note += " (values look normalised per bin: pass --stats)"
        elif ev.rejected:
            log.warning("%s: the values do not look like %s (%s); converting anyway as asked",
                        source, fixed.preset, ev.rejected)
            note += f" (values look unlike it: {ev.rejected})"
        return Detection(fixed, ev.layout, shape, note)

    if normalised and len(normalised) == len(hypotheses):
        raise NormalisedMelError(
            f"{source}: layout {LAYOUT_SHAPES[normalised[0][0]]}; every mel bin has about the "
            f"same mean (spectral tilt {normalised[0][1]:.2f} std, values "
            f"{lo_v:.3g}..{hi_v:.3g}), as in features normalised per bin with statistics "
            f"(ESPnet, ParallelWaveGAN); pass the statistics with --stats "
            f"<stats.h5|stats.npy|feats_stats.npz> (Python: stats=...)"
        )
    if constant and not any(e.floor_mass >= _MIN_FLOOR_MASS for e in evidences):
        floors: dict[float, str] = {}  # one name per floor value (hifigan and tacotron2 share)
        for c in cands:
            floors.setdefault(round(c.floor, 4), c.preset)
        raise MelError(
            f"{source}: every value is {lo_v:.6g}: a constant mel carries no sound and is the "
            f"floor of no known convention (silence is the floor: "
            + ", ".join(f"{fl:.4g} for {name}" for fl, name in list(floors.items())[:3])
            + "); check what the TTS model wrote"
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
    # presets with identical values (hifigan, tacotron2; espnet at 22,050 Hz and at 16 kHz)
    # are one group: pick by the model's convention, then by layout
    groups: list[list[Evidence]] = []
    for e in alive:
        for g in groups:
            if same_values(g[0].preset, e.preset, any_rate=True) and g[0].layout == e.layout:
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
        own = [e for e in group if prefer is not None
               and e.preset.to_dict() == prefer.to_dict()]
        # the model's sample rate first; without a model, the first listed (22,050 Hz)
        pool = [e for e in group if prefer is None
                or e.preset.sample_rate == prefer.sample_rate] or group
        typical = [e for e in pool if e.layout in TYPICAL_LAYOUTS.get(e.name, ())]
        chosen = own[0] if own else typical[0] if typical else pool[0]
        padded = [e.name for e in group if e is not chosen
                  and e.preset.sample_rate == chosen.preset.sample_rate]
        rated = [e for e in group if e is not chosen
                 and e.preset.sample_rate != chosen.preset.sample_rate]
        notes = []
        if padded:
            notes.append(
                f"{'/'.join(padded)} mels have the same values as {chosen.name} and differ only "
                f"in padding (one frame more per utterance, the frame grid half a hop later); "
                + (f"they are read as the model's own {chosen.name}: if the files come from "
                   f"{padded[0]}, pass --input-preset {padded[0]} (Python: input_preset=...)"
                   if own else f"{chosen.name} was chosen by the file layout "
                   f"{LAYOUT_SHAPES[chosen.layout]}; pass --input-preset to choose"))
        if rated:
            why_rate = ("the model's rate" if prefer is not None
                        and chosen.preset.sample_rate == prefer.sample_rate else "the usual rate")
            notes.append(
                f"{'/'.join(e.name for e in rated)} mels have the same values at "
                f"{'/'.join(f'{e.preset.sample_rate:,} Hz' for e in rated)}; read as "
                f"{chosen.name} at {chosen.preset.sample_rate:,} Hz ({why_rate}): if the files "
                f"come from a {rated[0].preset.sample_rate:,} Hz system, pass --input-preset "
                f"{rated[0].name} (Python: input_preset=...)")
        tie = "; ".join(notes)
    if reason == "floor":
        why = (f"{100 * chosen.floor_mass:.3g}% of values exactly at its floor "
               f"{chosen.preset.floor:.4g}")
    elif reason == "range":
        why = f"level span {chosen.dynamic_db:.0f} dB as speech (no value at a floor)"
    else:
        why = "the only convention in range"
    ruled_out = ", ".join(f"{e.name} ({e.rejected})" for e in rejected
                          if e.layout == chosen.layout)
    evidence = f"values {lo_v:.4g}..{hi_v:.4g}; {why}"
    alternatives = [e.name for e in alive if e is not chosen]
    return Detection(chosen.preset, chosen.layout, shape, evidence, alternatives, tie=tie,
                     details=f"ruled out: {ruled_out}" if ruled_out else "")


