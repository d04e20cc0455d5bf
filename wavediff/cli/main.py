"""``wavediff <subcommand>``: the entry point of the console script and ``python -m wavediff``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from wavediff.version import __version__

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "preprocess": ("wavediff.cli.preprocess", "compute waveform+mel records of a corpus"),
    "compute-statistics": ("wavediff.cli.statistics", "per-bin mean and scale of dumped mels"),
    "train": ("wavediff.cli.train", "train a DiffWave vocoder"),
    "vocode": ("wavediff.cli.vocode", "turn mel files (or audio, by copy-synthesis) into audio"),
    "stream": ("wavediff.cli.stream", "vocode a mel as it arrives (stdin or a growing file)"),
    "evaluate": ("wavediff.cli.evaluate", "score generated audio against references; HTML report"),
    "import-lmnt": ("wavediff.cli.import_lmnt", "convert an lmnt-com/diffwave checkpoint"),
    "export": ("wavediff.cli.export", "write a model as config.yaml + model.safetensors"),
    "models": ("wavediff.cli.models", "list the models shipped with wavediff"),
    "tune-schedule": ("wavediff.cli.tune_schedule", "search an N-step inference schedule"),
    "toy-corpus": ("wavediff.cli.toy_corpus", "write a small synthetic speech-like corpus"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavediff",
        description="wavediff: diffusion vocoders for speech. "
        "Run 'wavediff <subcommand> --help' for the options of each step.",
    )
    parser.add_argument("--version", action="version", version=f"wavediff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, (module, help_text) in SUBCOMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
        p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from wavediff.cli.common import setup_logging
    from wavediff.errors import WavediffError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging(-1 if args.quiet else args.verbose)
    from wavediff.hardware import keep_freed_memory

    keep_freed_memory()  # large activations: reuse freed memory instead of page-faulting
    try:
        return int(args._run(args) or 0)
    except WavediffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # a file-system refusal the command did not foresee (a folder where a file goes,
        # a full or read-only disk...): one line naming the path, no traceback
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def describe_os_error(e: OSError) -> str:
    """``e`` as one line: what failed on which path, and what to do about it."""
    import errno

    path = e.filename if e.filename is not None else ""
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    target = e.filename2
    if target is not None and e.errno in (errno.EISDIR, errno.EEXIST, errno.ENOTDIR):
        path = target  # a rename onto a folder: the folder is what the user named
    hint = {
        errno.ENOSPC: "the disk is full; free space and run the command again",
        errno.EDQUOT: "the disk quota is used up; free space and run the command again",
        errno.EROFS: "the file system is read-only; choose another output location",
        errno.EACCES: "permission denied; choose a location you can write to",
        errno.EPERM: "permission denied; choose a location you can write to",
        errno.EISDIR: "a folder is there; give a file name",
        errno.EEXIST: "a file is there; give a folder name that is not an existing file",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.ENAMETOOLONG: "the name is too long for the file system; use a shorter one",
        errno.ENOENT: "no such file or folder",
        errno.ELOOP: "too many symbolic links (a link loop?)",
    }.get(e.errno, e.strerror or type(e).__name__)
    return f"{path}: {hint}" if path else hint


if __name__ == "__main__":
    sys.exit(main())
