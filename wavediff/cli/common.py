"""Helpers shared by the subcommands: logging, device choice, scp files, failure summaries."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

from wavediff.errors import WavediffError

log = logging.getLogger("wavediff")


def setup_logging(verbose: int = 0) -> None:
    """Log to stderr; lines carry a timestamp when stderr is not a terminal (a log file)."""
    level = logging.DEBUG if verbose > 0 else logging.INFO if verbose == 0 else logging.WARNING
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not _isatty(sys.stderr):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level, format=fmt, datefmt="%Y-%m-%d %H:%M:%S",
                        stream=sys.stderr, force=True)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_wanted(quiet: bool) -> bool:
    """Progress bars only on a terminal (a log file gets plain lines instead)."""
    return not quiet and _isatty(sys.stderr)


def pick_device(name: Optional[str]) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WavediffError(f"--device {name} was asked for but CUDA is not available; use --device cpu")
    return name


def read_scp(path: str) -> list[tuple[str, str]]:
    """``<utt_id> <path>`` lines (blank lines and ``#`` comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise WavediffError(f"scp file {p} does not exist")
    entries, seen = [], set()
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise WavediffError(f"{p}:{lineno}: expected '<utt_id> <path>', got {line!r}")
        utt, target = parts
        if target.endswith("|"):
            raise WavediffError(
                f"{p}:{lineno}: command pipes are not supported; give a file path for {utt}"
            )
        why = unsafe_id(utt)
        if why:
            raise WavediffError(
                f"{p}:{lineno}: utterance id {utt[:80]!r} {why}; ids become file names in the "
                f"output folder, so use a plain name (letters, digits, '-', '_', '.')")
        if utt in seen:
            raise WavediffError(f"{p}:{lineno}: utterance id {utt} appears twice")
        seen.add(utt)
        entries.append((utt, target))
    if not entries:
        raise WavediffError(f"scp file {p} lists no utterances")
    return entries


def unsafe_id(utt: str) -> Optional[str]:
    """Why ``utt`` cannot be used as a file name inside an output folder, or None.

    An id is a name, never a path: no separators, not ``.``/``..``, no leading ``-`` (it
    would read as an option), no control characters, at most 200 characters.
    """
    if utt in (".", ".."):
        return "is a directory reference"
    if "/" in utt or "\\" in utt or os.sep in utt:
        return "contains a path separator"
    if utt.startswith("-"):
        return "starts with '-'"
    if any(ord(c) < 32 or ord(c) == 127 for c in utt):
        return "contains control characters"
    if len(utt) > 200:
        return f"is {len(utt)} characters long (at most 200)"
    return None


def report_failures(failures: Iterable[tuple[str, str]], total: int, what: str) -> int:
    """Print one line per failure and a summary; returns the exit status."""
    failures = list(failures)
    for name, msg in failures:
        print(f"error: {msg}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {total} {what} failed: {', '.join(n for n, _ in failures[:10])}"
              f"{' ...' if len(failures) > 10 else ''}", file=sys.stderr)
        return 1
    return 0
