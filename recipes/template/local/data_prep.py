#!/usr/bin/env python3
"""Write data/{train_nodev,dev,eval}/wav.scp for a folder of audio files (one speaker).

    python local/data_prep.py --db-root DIR --datadir data [--n-dev 100] [--n-eval 100]

Every audio file under DIR (searched recursively) is one utterance; its id is the file
name without the extension, so ids must be unique. Transcripts, if any, are not needed by
a vocoder and are ignored. The split: ids sorted, the last N_EVAL -> eval, the N_DEV before
them -> dev, the rest -> train_nodev. Change this file if your corpus needs another rule
(a list of files to leave out, a fixed eval list, ids that include the folder name ...).
A file whose content would not change is not rewritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db-root", required=True, type=Path)
    p.add_argument("--datadir", required=True, type=Path)
    p.add_argument("--n-dev", type=int, default=100)
    p.add_argument("--n-eval", type=int, default=100)
    args = p.parse_args()

    root = args.db_root.resolve()
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        fail(f"{root} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    by_id: dict[str, Path] = {}
    for f in files:
        if f.stem in by_id:
            fail(f"two files share the id {f.stem}: {by_id[f.stem]} and {f}; rename one")
        by_id[f.stem] = f
    entries = sorted(by_id.items())
    if args.n_dev < 1 or args.n_eval < 1 or args.n_dev + args.n_eval >= len(entries):
        fail(f"cannot split {len(entries)} utterances into dev {args.n_dev} and eval "
             f"{args.n_eval} with training data left; change --n-dev/--n-eval")
    n_train = len(entries) - args.n_dev - args.n_eval
    sets = {"train_nodev": entries[:n_train], "dev": entries[n_train:n_train + args.n_dev],
            "eval": entries[n_train + args.n_dev:]}
    for name, rows in sets.items():
        out = args.datadir / name / "wav.scp"
        text = "".join(f"{utt} {path}\n" for utt, path in rows)
        if out.is_file() and out.read_text() == text:
            print(f"{out}: {len(rows)} utterances, up to date (skipped)")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".wav.scp.tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"{out}: {len(rows)} utterances")


if __name__ == "__main__":
    main()
