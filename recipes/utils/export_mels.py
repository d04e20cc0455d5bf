#!/usr/bin/env python3
"""Export the mels of a dump directory as .npy files plus an scp for `wavediff vocode`.

    python export_mels.py --dumpdir dump/eval --outdir dump/eval/mel_npy --scp dump/eval/mel.scp \
        [--only data/eval/wav.scp]

Each record <utt>.npz becomes <outdir>/<utt>.npy ((n_mels, frames), the model's convention);
files already exported are kept. The scp lists `<utt> <path to .npy>`; with --only, just the
utterances of that scp (in its order).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dumpdir", required=True, type=Path)
    p.add_argument("--outdir", required=True, type=Path)
    p.add_argument("--scp", required=True, type=Path)
    p.add_argument("--only", type=Path, default=None, help="scp whose utterance ids to export")
    args = p.parse_args()

    if args.only is not None:
        utts = [line.split()[0] for line in args.only.read_text().splitlines() if line.strip()]
    else:
        utts = sorted(r.stem for r in args.dumpdir.glob("*.npz"))
    args.outdir.mkdir(parents=True, exist_ok=True)
    lines, written = [], 0
    for utt in utts:
        rec, out = args.dumpdir / f"{utt}.npz", args.outdir.resolve() / f"{utt}.npy"
        if not out.exists():
            if not rec.is_file():
                print(f"error: {rec} missing; run the features stage first", file=sys.stderr)
                sys.exit(1)
            with np.load(rec) as data:
                tmp = out.with_name(f".{out.name}.tmp")
                with open(tmp, "wb") as f:
                    np.save(f, data["mel"])
                tmp.replace(out)
            written += 1
        lines.append(f"{utt} {out}\n")
    text = "".join(lines)
    if not (args.scp.is_file() and args.scp.read_text() == text):
        args.scp.write_text(text)
    print(f"{args.scp}: {len(lines)} mels ({written} newly exported to {args.outdir})")


if __name__ == "__main__":
    main()
