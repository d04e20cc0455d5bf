"""Per-bin mean and scale (population standard deviation) of the mels of dump directories.

--out decides the format by its name: .npy writes a (2, n_mels) float32 array
[mean; scale]; .h5 writes HDF5 with float32 datasets 'mean' and 'scale' (ParallelWaveGAN's
stats.h5). Either way `(mel - mean) / scale` normalises features, and `wavediff vocode
--stats` reads both. Other names are refused.

example:
  wavediff compute-statistics --dumpdir dump/train --out dump/train/stats.npy
  wavediff compute-statistics --dumpdir dump/train --out dump/train/stats.h5
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dumpdir", required=True, nargs="+", help="dump directories to pool")
    p.add_argument("--out", required=True, help="output file: stats.npy or stats.h5")


def compute_statistics(dumpdirs: list[str]):
    """``(mean, scale)`` float64 arrays over every frame of every record."""
    import numpy as np
    from tqdm import tqdm

    from wavediff.audio.dump import list_records, load_record

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

    from wavediff._files import atomic_write
    from wavediff.errors import WavediffError

    out = Path(args.out)
    kind = out.suffix.lower()
    if kind not in (".npy", ".h5", ".hdf5"):
        raise WavediffError(f"--out {out}: name it .npy (a [mean; scale] array) or .h5 "
                            f"(HDF5 datasets mean and scale)")
    if out.is_dir():
        raise WavediffError(f"--out {out} is a folder; give a file name such as {out}/stats.npy")
    mean, scale = compute_statistics(args.dumpdir)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        if kind == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, np.stack([mean, scale]).astype(np.float32))
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                f.create_dataset("mean", data=mean.astype(np.float32))
                f.create_dataset("scale", data=scale.astype(np.float32))

    atomic_write(out, write)
    print(f"wrote {out}: mean of means {mean.mean():.4f}, mean scale {scale.mean():.4f}")
    return 0
