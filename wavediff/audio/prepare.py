"""Stored mel arrays made ready for a model: detection, de-normalisation and conversion,
one file at a time (:class:`MelPreparer`) or as a batch (:func:`convert_batch`, what
:meth:`wavediff.Vocoder.decode` calls)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from wavediff.audio.convert import MelConverter, as_float64
from wavediff.audio.detect import (
    AmbiguousMelError, Detection, PresetLike, Stats, check_array, detect, same_values,
)
from wavediff.audio.formats import apply_layout, possible_layouts
from wavediff.audio.presets import PRESET_NAMES, MelConfig, get_preset

log = logging.getLogger("wavediff.convert")


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
        self._ties_said: set[str] = set()

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
        check_array(array, source)
        a = as_float64(array)
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
        if det.details:
            log.debug("%s: %s", source, det.details)
        if det.tie and det.tie not in self._ties_said:  # once per run, not once per file
            self._ties_said.add(det.tie)
            log.info("%s", det.tie)
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
                det.tie = ""
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


def stats_arg(stats: Any, n_mels: Optional[int] = None) -> Optional[Stats]:
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
    prep = MelPreparer(target, input_preset, stats=stats_arg(stats), layout=layout)
    out = []
    for i, m in enumerate(mels):
        p = prep(m, source=f"mel {i}" if len(mels) > 1 else "mel")
        log.info("%s", p.detection.describe(f"mel {i}" if len(mels) > 1 else "mel"))
        out.append(p.mel)
    return out


def convert_batch(mel: Any, target: MelConfig, input_preset: Optional[PresetLike] = "auto", *,
                  stats: Any = None, layout: Optional[str] = None) -> tuple[Any, list[int]]:
    """What :meth:`Vocoder.decode` calls: a batch ``(B, n_mels_in, F)`` or one stored mel
    (any layout) -> ``(mel, frames)``: a float32 tensor ``(B, n_mels, F')`` or
    ``(n_mels, F')`` of ``target`` and each item's frame count after conversion.

    A conversion may add or drop a frame (another padding convention), and items of one
    batch may be detected differently; shorter items are then padded with ``target``'s
    silence to the longest, and ``frames`` tells how long each really is.
    """
    import torch

    device = mel.device if isinstance(mel, torch.Tensor) else torch.device("cpu")
    a = as_float64(mel)
    if a.ndim == 3 and a.shape[0] > 1:
        items = convert_each(list(a), target, input_preset, stats=stats, layout="mels-frames")
        frames = [m.shape[-1] for m in items]
        batch = np.full((len(items), target.n_mels, max(frames)), target.floor, dtype=np.float32)
        for i, m in enumerate(items):
            batch[i, :, : m.shape[-1]] = m
        return torch.from_numpy(batch).to(device), frames
    single = convert_each([a], target, input_preset, stats=stats, layout=layout)[0]
    out = torch.from_numpy(single).to(device)
    return (out.unsqueeze(0) if a.ndim == 3 else out), [single.shape[-1]]


def model_mel(mel: Any, target: MelConfig, input_preset: Optional[PresetLike] = "auto", *,
              stats: Any = None, lengths: Optional[Sequence[int]] = None,
              ) -> tuple[Any, Optional[list[int]], bool]:
    """What :meth:`wavediff.Vocoder.decode` decodes: ``mel`` (a batch ``(B, n_mels, F)`` or
    one mel, numpy or torch) converted to ``target`` unless ``input_preset`` and ``stats``
    are None, and checked. Returns ``(mel (B, n_mels, F) float32 tensor, lengths, single)``:
    ``lengths`` follows a conversion that added or dropped frames; ``single`` tells that one
    mel ``(n_mels, F)`` was given. Raises :class:`MelError` for a wrong shape or NaN/Inf."""
    import torch

    from wavediff.errors import MelError

    if input_preset is not None or stats is not None:
        given = int(mel.shape[-1]) if getattr(mel, "ndim", 0) == 3 else None
        mel, frames = convert_batch(mel, target, input_preset, stats=stats)
        if given is not None:  # a conversion that added or dropped frames moves each end
            lengths = ([int(n) + f - given for n, f in zip(lengths, frames)]
                       if lengths is not None else frames)
    mel = torch.as_tensor(mel, dtype=torch.float32)
    single = mel.dim() == 2
    if single:
        mel = mel.unsqueeze(0)
    if mel.dim() != 3 or mel.shape[1] != target.n_mels or mel.shape[-1] == 0:
        raise MelError(f"expected a mel of shape (batch, {target.n_mels}, frames) with "
                       f"frames > 0, got {tuple(mel.shape)}")
    if not bool(torch.isfinite(mel).all()):
        raise MelError("the mel holds NaN or Inf values; fix the input before vocoding")
    return mel, (list(lengths) if lengths is not None else None), single
