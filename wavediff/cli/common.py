"""Helpers shared by the subcommands: logging, progress and failure summaries."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Optional


log = logging.getLogger("wavediff")


def setup_logging(verbose: int = 0) -> None:
    """Log to stderr; lines carry a timestamp when stderr is not a terminal (a log file)."""
    level = logging.DEBUG if verbose > 0 else logging.INFO if verbose == 0 else logging.WARNING
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not _isatty(sys.stderr):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level, format=fmt, datefmt="%Y-%m-%d %H:%M:%S",
                        stream=sys.stderr, force=True)
    # each command starts from the root's level (an earlier command in the same process,
    # e.g. a quiet training run, may have left wavediff's own logger at another)
    logging.getLogger("wavediff").setLevel(logging.NOTSET)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_wanted(quiet: bool) -> bool:
    """Progress bars only on a terminal (a log file gets plain lines instead)."""
    return not quiet and _isatty(sys.stderr)


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


def check_output_file(path: Optional[str], option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder at its
    place, a parent that is a file, or a folder without write permission."""
    from wavediff.errors import WavediffError

    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise WavediffError(f"{option} {p}: a folder is there; give a file name")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise WavediffError(f"{option} {p}: {ancestor} is a file, not a folder; choose "
                            f"another place")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise WavediffError(f"{option} {p}: {ancestor} is not writable; choose another place")
