"""Reading and writing audio files.

:func:`load_audio` returns float32 mono samples (int PCM scaled as soundfile does, e.g.
``/ 32768`` for 16-bit) and refuses, with one-line messages, anything a vocoder should not
be trained or evaluated on silently: unreadable files, empty or multi-channel audio,
non-finite samples and unexpected sample rates. :func:`save_audio` writes atomically, so a
failed write never leaves a partial file under the target name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import soundfile as sf

from wavediff._files import atomic_write, path_problem
from wavediff.errors import AudioError

__all__ = ["load_audio", "save_audio", "quality_problem"]

PathLike = Union[str, "os.PathLike[str]"]
# Extensions read as audio by the commands (libsndfile formats).
# what the installed libsndfile reads (MP3 from libsndfile 1.1 on)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au", ".w64") + (
    (".mp3",) if "MP3" in sf.available_formats() else ())

def load_audio(
    path: PathLike,
    sample_rate: int | None = None,
    *,
    resample: bool = False,
    to_mono: bool = False,
) -> tuple[np.ndarray, int]:
    """Read an audio file as ``(samples, sample_rate)``; ``samples`` is float32, shape ``(T,)``.

    Any format soundfile reads (wav, flac, ogg, ...). ``sample_rate``: the rate the caller
    needs; a file at another rate is an error unless ``resample`` is true, in which case it
    is resampled with soxr (VHQ) and the returned rate is ``sample_rate``. ``to_mono``
    averages the channels of a multi-channel file instead of refusing it. Float files are
    returned as stored (not rescaled).
    """
    p = Path(path)
    problem = path_problem(p, "audio file")
    if problem:
        raise AudioError(problem)
    if p.stat().st_size == 0:
        raise AudioError(
            f"{p}: is an empty file (0 bytes); re-export it or remove it from the list"
        )
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, EOFError) as err:
        reason = _reason(err)
        raise AudioError(
            f"{p}: cannot read audio ({reason}); the file is corrupt, truncated or not an "
            "audio format soundfile knows; re-export it as WAV or FLAC"
        ) from None
    except OSError as err:
        raise AudioError(f"{p}: cannot read audio ({err.strerror or err})") from None

    n_samples, n_channels = data.shape
    if n_samples == 0:
        raise AudioError(f"{p}: contains no samples; remove it from the data set")
    if n_channels > 1:
        if not to_mono:
            raise AudioError(
                f"{p}: has {n_channels} channels, expected mono; pass --to-mono to average "
                f"them, or convert it with: sox {p} -c 1 mono.wav"
            )
        data = data.mean(axis=1, dtype=np.float32, keepdims=True)
    x = np.ascontiguousarray(data[:, 0], dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioError(
            f"{p}: contains {bad} NaN or infinite sample(s); re-export or drop this file"
        )

    if sample_rate is not None and rate != sample_rate:
        if not resample:
            raise AudioError(
                f"{p}: sample rate is {rate} Hz but {sample_rate} Hz is expected; pass "
                f"--resample to convert it, or fix the configured sample rate"
            )
        x = _resample(x, rate, sample_rate)
        rate = sample_rate
    return x, int(rate)

# Thresholds of quality_problem: a peak below -60 dBFS is silence; clipping is a run of at
# least 3 samples at >= 0.999 full scale, and a file is refused when clipped runs hold at
# least 0.1% of its samples.
SILENCE_PEAK = 1e-3
CLIP_LEVEL = 0.999
CLIP_FRACTION = 1e-3

def quality_problem(path: PathLike, samples: np.ndarray) -> str | None:
    """Why an audio file makes poor vocoder training data (one line), or None.

    ``samples``: its float samples ``(T,)`` as :func:`load_audio` returns them. Flags silent
    files, clipped files and 8-bit PCM, which a vocoder would learn to reproduce.
    """
    p = Path(path)
    keep = "or pass --allow-low-quality to keep it"
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak < SILENCE_PEAK:
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.0f}"
        return f"{p}: is silent (peak {level} dBFS); remove it from the data set, {keep}"
    clipped = _clipped_samples(samples)
    if clipped >= max(3, CLIP_FRACTION * samples.size):
        return (f"{p}: is clipped ({clipped} samples, {100 * clipped / samples.size:.1f}%, in runs "
                f"at full scale); use an unclipped source or drop the file, {keep}")
    try:
        subtype = sf.info(str(p)).subtype
    except (sf.SoundFileError, RuntimeError):
        subtype = ""
    if subtype in ("PCM_S8", "PCM_U8"):
        return (f"{p}: is 8-bit PCM (about 48 dB of dynamic range), whose quantisation noise a "
                f"vocoder learns; use a 16- or 24-bit source, {keep}")
    return None

def _clipped_samples(x: np.ndarray) -> int:
    """Samples in runs of 3 or more consecutive samples at ``>= CLIP_LEVEL`` (same sign)."""
    total = 0
    for sign in (1.0, -1.0):
        hit = np.concatenate([[0], (sign * x >= CLIP_LEVEL).astype(np.int8), [0]])
        edges = np.diff(hit)
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        runs = ends - starts
        total += int(runs[runs >= 3].sum())
    return total

def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` (float32, ``(T,)``) from ``rate`` to ``target`` Hz, ``(round(T*target/rate),)``."""
    import soxr

    y = soxr.resample(x, rate, target, quality="VHQ")
    return np.ascontiguousarray(y, dtype=np.float32)

def save_audio(
    path: PathLike,
    wav: Any,
    sample_rate: int,
    subtype: str = "PCM_16",
) -> Path:
    """Write mono ``wav`` (numpy or torch, shape ``(T,)``) to ``path`` atomically; returns the path.

    Samples are clipped to [-1, 1]; non-finite samples are refused. The file is written to a
    hidden temporary file in the same directory and moved into place, so the target either
    appears complete or not at all. The format follows the extension (``.wav``, ``.flac``...).
    """
    p = Path(path)
    x = _as_mono_float(wav, p)
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, np.integer))
        or sample_rate <= 0
    ):
        raise AudioError(
            f"cannot write {p}: sample rate must be a positive integer, got {sample_rate!r}"
        )
    fmt = p.suffix[1:].upper()
    if fmt not in sf.available_formats():
        raise AudioError(
            f"cannot write {p}: unknown audio extension {p.suffix!r}; use .wav or .flac"
        )
    if not sf.check_format(fmt, subtype):
        raise AudioError(
            f"cannot write {p}: subtype {subtype!r} is not valid for {fmt}; "
            f"use one of {', '.join(sf.available_subtypes(fmt))}"
        )
    x = np.clip(x, -1.0, 1.0)

    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, lambda tmp: sf.write(str(tmp), x, int(sample_rate), subtype=subtype,
                                             format=fmt))
    except (OSError, sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"cannot write {p}: {_reason(err)}") from None
    return p

def _reason(err: Exception) -> str:
    """The short cause of ``err``: strerror for OSError, libsndfile's own text otherwise."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = getattr(err, "error_string", None) or str(err).strip()
    if "is not a regular file (possibly a pipe?)" in text:
        # libsndfile's words for any stream its decoders reject (the path was checked)
        return "no decoder accepted its contents"
    return text.splitlines()[-1] if text else type(err).__name__


def _as_mono_float(wav: Any, p: Path) -> np.ndarray:
    """``wav`` as a float numpy array of shape ``(T,)``, checked finite and non-empty."""
    if hasattr(wav, "detach") and hasattr(wav, "cpu"):
        wav = wav.detach().cpu().numpy()
    x = np.asarray(wav)
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(
            f"cannot write {p}: samples must be float in [-1, 1], got dtype {x.dtype}; "
            "for int16 PCM divide by 32768 first"
        )
    if x.ndim != 1:
        raise AudioError(
            f"cannot write {p}: expected mono samples of shape (T,), got {x.shape}"
        )
    if x.size == 0:
        raise AudioError(f"cannot write {p}: no samples")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioError(f"cannot write {p}: {bad} NaN or infinite sample(s)")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return x
