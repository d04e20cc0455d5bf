"""Helpers shared by the subcommands: logging, progress and failure summaries."""

from __future__ import annotations

import logging
import sys
from typing import Iterable


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
