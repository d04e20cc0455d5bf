"""Pairing generated audio with its reference by utterance ID, and aligning the pairs.

A generated file ``<id>.wav`` or ``<id>_gen.wav`` (the names ``wavediff vocode`` and the
recipes write) belongs to the reference ``<id>.<ext>`` of the reference folder or scp list.
Sample rates must agree (or be resampled on request) and lengths may differ by at most one
hop (a vocoder's output is a whole number of frames): the longer one is trimmed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from wavediff.audio.io import AUDIO_SUFFIXES
from wavediff.errors import AudioError, WavediffError

__all__ = [
    "AUDIO_SUFFIXES", "GEN_SUFFIX", "Utterance", "utterance_id", "list_audio",
    "reference_files", "pair_files", "load_pair", "read_decode_stats",
]

GEN_SUFFIX = "_gen"


@dataclass
class Utterance:
    """One utterance to evaluate: its reference and one generated file per system."""

    uid: str
    reference: Path
    generated: list[Path] = field(default_factory=list)


def utterance_id(path: Path) -> str:
    """The utterance ID of a generated file: its stem without a trailing ``_gen``."""
    stem = path.stem
    return stem[: -len(GEN_SUFFIX)] if stem.endswith(GEN_SUFFIX) and len(stem) > len(GEN_SUFFIX) else stem


def list_audio(directory: Path, *, generated: bool) -> dict[str, Path]:
    """``{utterance id: path}`` of the audio files directly in ``directory``.

    For ``generated`` folders a ``_gen`` suffix is dropped from the ID. Two files with one
    ID (``a.wav`` and ``a_gen.wav``, or ``a.wav`` and ``a.flac``) are refused.
    """
    d = Path(directory)
    if not d.is_dir():
        raise WavediffError(f"{d} is not a directory of audio files; check the path")
    found: dict[str, Path] = {}
    for f in sorted(d.iterdir()):
        if f.name.startswith(".") or f.suffix.lower() not in AUDIO_SUFFIXES or not f.is_file():
            continue
        uid = utterance_id(f) if generated else f.stem
        if uid in found:
            raise WavediffError(
                f"{found[uid]} and {f} both hold utterance {uid}; move one of them out of {d}"
            )
        found[uid] = f
    if not found:
        raise WavediffError(f"{d} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return found


def reference_files(ref_dir: Optional[str] = None, ref_scp: Optional[str] = None) -> dict[str, Path]:
    """``{utterance id: path}`` of the references, from a folder or a ``wav.scp``."""
    if ref_scp is not None:
        from wavediff._files import read_scp

        return {uid: Path(p) for uid, p in read_scp(ref_scp)}
    if ref_dir is None:
        raise WavediffError("give the references with --ref-dir or --ref-scp")
    return list_audio(Path(ref_dir), generated=False)


def pair_files(refs: dict[str, Path], systems: Sequence[dict[str, Path]], gen_dirs: Sequence[Path],
               ) -> tuple[list[Utterance], list[tuple[str, str]], list[str]]:
    """Match every system's files to the references by utterance ID.

    Returns ``(utterances, problems, notes)``: the utterances every system has, in ID order;
    ``(id, message)`` for each generated file without a reference and, when comparing, each
    utterance some system lacks; and notes (references nobody generated).
    """
    problems: list[tuple[str, str]] = []
    for gen_dir, files in zip(gen_dirs, systems):
        orphans = sorted(set(files) - set(refs))
        for uid in orphans:
            problems.append((uid, f"{files[uid]}: no reference for utterance {uid} (looked for "
                                  f"{uid}.<wav|flac|...> among the references); check the IDs or "
                                  f"remove the file"))
    common = set(refs)
    for files in systems:
        common &= set(files)
    if len(systems) > 1:
        anywhere = set().union(*systems) & set(refs)
        for uid in sorted(anywhere - common):
            lacking = [str(d) for d, files in zip(gen_dirs, systems) if uid not in files]
            problems.append((uid, f"utterance {uid} is missing from {', '.join(lacking)}; "
                                  "compared folders must hold the same utterances"))
    notes = []
    unused = sorted(set(refs) - set().union(*systems))
    if unused:
        notes.append(f"{len(unused)} reference utterance(s) have no generated audio and are not "
                     f"evaluated: {', '.join(unused[:10])}{' ...' if len(unused) > 10 else ''}")
    utterances = [Utterance(uid, refs[uid], [files[uid] for files in systems]) for uid in sorted(common)]
    return utterances, problems, notes


MIN_SECONDS = 0.25  # the shortest pair scored (PESQ refuses less)


def load_pair(ref_path: Path, gen_path: Path, *, max_length_diff: int, resample: bool = False,
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Read a reference and a generated file, checked and trimmed to one length.

    Returns ``(ref, gen, sample_rate)``, float32 ``(T,)`` each. The generated file must be at
    the reference's sample rate (``resample``: converted to it) and its length may differ by
    at most ``max_length_diff`` samples; anything else raises :class:`AudioError` naming both.
    """
    import soundfile as sf

    from wavediff.audio.io import load_audio

    ref, rate = load_audio(ref_path)
    try:
        gen_rate = sf.info(str(gen_path)).samplerate
    except (RuntimeError, sf.SoundFileError):
        gen_rate = rate  # load_audio below reports the unreadable file
    if gen_rate != rate and not resample:
        raise AudioError(
            f"{gen_path}: sample rate {gen_rate} Hz differs from its reference {ref_path} "
            f"({rate} Hz); pass --resample to resample the generated audio to {rate} Hz"
        )
    gen, _ = load_audio(gen_path, rate, resample=resample)
    diff = len(gen) - len(ref)
    if abs(diff) > max_length_diff:
        raise AudioError(
            f"{gen_path}: {len(gen)} samples but its reference {ref_path} has {len(ref)}; they "
            f"differ by {abs(diff)}, more than the {max_length_diff} allowed (one hop): not the "
            "same utterance, or made with another hop size (see --max-length-diff)"
        )
    n = min(len(ref), len(gen))
    if n < MIN_SECONDS * rate:
        short = gen_path if len(gen) <= len(ref) else ref_path
        raise AudioError(
            f"{short}: {n} samples ({n / rate:.3f} s); scoring needs at least {MIN_SECONDS} s "
            f"of audio in both files (PESQ's shortest input): decode or record it again")
    return ref[:n], gen[:n], rate


def read_decode_stats(gen_dir: Path) -> dict[str, tuple[float, float]]:
    """``{utterance id: (audio_seconds, decode_seconds)}`` from ``<gen_dir>/vocode_stats*.json``.

    ``wavediff vocode`` writes ``vocode_stats.json`` (``vocode_stats.rank<N>.json`` per
    process under torchrun). Empty when there is none: the real-time factor is then unknown.
    """
    out: dict[str, tuple[float, float]] = {}
    for p in sorted(Path(gen_dir).glob("vocode_stats*.json")):
        try:
            entries = json.loads(p.read_text())["utterances"]
            for name, entry in entries.items():
                audio_s, decode_s = float(entry["audio_seconds"]), float(entry["decode_seconds"])
                if audio_s > 0 and math.isfinite(decode_s) and decode_s >= 0:
                    out[utterance_id(Path(name + ".wav"))] = (audio_s, decode_s)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return out
