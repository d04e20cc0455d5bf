#!/usr/bin/env python3
"""Write data/{train_nodev,dev,eval}/wav.scp for an unpacked LJSpeech-layout corpus.

    python local/data_prep.py --db-root DIR --datadir data [--n-dev 250] [--n-eval 250]

DIR holds metadata.csv (`ID|text|normalized text`) and wavs/<ID>.wav (or .flac). The split
is ESPnet's and ParallelWaveGAN's: IDs sorted, the last N_EVAL -> eval, the N_DEV before
them -> dev, the rest -> train_nodev. `--held-out head` takes the held-out sets from the
start instead (the first N_EVAL -> eval, the next N_DEV -> dev); `--n-eval 0` makes the
dev set the eval set too (small corpora). Lines are `<utt_id> <absolute path>`. A file
whose content would not change is not rewritten, so a rerun leaves everything untouched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db-root", required=True, type=Path)
    p.add_argument("--datadir", required=True, type=Path)
    p.add_argument("--n-dev", type=int, default=250)
    p.add_argument("--n-eval", type=int, default=250, help="0: evaluate on the dev set")
    p.add_argument("--held-out", choices=("tail", "head"), default="tail",
                   help="take dev/eval from the end (LJSpeech convention) or the start")
    args = p.parse_args()

    root = args.db_root.resolve()
    meta = root / "metadata.csv"
    if not meta.is_file():
        fail(f"{meta} not found: --db-root must point at an unpacked LJSpeech-1.1 folder")
    ids = sorted({line.split("|", 1)[0].strip() for line in meta.read_text(encoding="utf-8").splitlines()
                  if line.strip()})
    entries, missing = [], []
    for utt in ids:
        found = [root / "wavs" / f"{utt}{ext}" for ext in (".wav", ".flac")]
        found = [f for f in found if f.is_file()]
        if found:
            entries.append((utt, found[0]))
        else:
            missing.append(utt)
    if missing:
        fail(f"{len(missing)} utterances of {meta} have no wavs/<ID>.wav or .flac "
             f"(e.g. {', '.join(missing[:3])}); is the corpus complete?")
    if args.n_dev < 1 or args.n_eval < 0 or args.n_dev + args.n_eval >= len(entries):
        fail(f"cannot split {len(entries)} utterances into dev {args.n_dev} and eval "
             f"{args.n_eval} with training data left; change --n-dev/--n-eval")
    if args.held_out == "head":
        entries = entries[::-1]  # the same rule from the other end, then back in order
    n_train = len(entries) - args.n_dev - args.n_eval
    sets = {"train_nodev": entries[:n_train], "dev": entries[n_train:n_train + args.n_dev],
            "eval": entries[n_train + args.n_dev:] if args.n_eval else
            entries[n_train:n_train + args.n_dev]}
    sets = {name: sorted(rows) for name, rows in sets.items()}
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
