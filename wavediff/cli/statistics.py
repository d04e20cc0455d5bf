"""Per-bin mean and scale (population standard deviation) of the mels of dump directories.

Writes a (2, n_mels) float32 .npy file, [mean; scale], the layout ParallelWaveGAN and
ESPnet use, so `(mel - mean) / scale` normalises features.

example:
  wavediff compute-statistics --dumpdir dump/train --out dump/train/stats.npy
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dumpdir", required=True, nargs="+", help="dump directories to pool")
    p.add_argument("--out", required=True, help="output .npy path")


def compute_statistics(dumpdirs: list[str]):
    """``(mean, scale)`` float64 arrays over every frame of every record."""
    import numpy as np
    from tqdm import tqdm

    from wavediff.train.data import list_records, load_record

    total, s1, s2 = 0, None, None
    records = [r for d in dumpdirs for r in list_records(d)]
    for path in tqdm(records, desc="statistics", unit="utt"):
        _, mel = load_record(path)
        m = mel.astype(np.float64)
        if s1 is None:
            s1, s2 = np.zeros(m.shape[0]), np.zeros(m.shape[0])
        s1 += m.sum(axis=1)
        s2 += (m * m).sum(axis=1)
        total += m.shape[1]
    mean = s1 / total
    var = np.maximum(s2 / total - mean * mean, 0.0)
    return mean, np.sqrt(var)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    mean, scale = compute_statistics(args.dumpdir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.stack([mean, scale]).astype(np.float32))
    tmp.replace(out)
    print(f"wrote {out}: mean of means {mean.mean():.4f}, mean scale {scale.mean():.4f}")
    return 0
