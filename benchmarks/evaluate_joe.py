"""Evaluation on real speech: the originals, white noise at 20 dB SNR, and a vocoder's output.

Takes the first N utterances (sorted IDs) of an LJSpeech-layout corpus (``wavs/*.flac`` or
``*.wav``), writes

* ``ref/`` and ``originals/``: the originals (links; the second is scored against the first);
* ``noisy20/``: each original plus white Gaussian noise at 20 dB SNR (fixed seed);
* ``vocoded/``: copy-synthesis with a wavediff checkpoint (``wavediff vocode``, seed 0),
  when ``--checkpoint`` is given (or ``--vocoded DIR`` names audio made elsewhere);

then times ``wavediff evaluate`` of each against the originals, and one ``--compare`` run
of all three with the HTML report. Every metric must order them as expected: the originals
are perfect, a vocoder that does not yet match 20 dB noise scores below it (the script
says, metric by metric, whether the ordering holds). Results go to ``--workdir``.

example:
  python benchmarks/evaluate_joe.py --corpus /data/joe --utts 20 \\
      --checkpoint exp/joe_small --workdir /tmp/evaluate_joe
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def sh(*args: str) -> tuple[float, float]:
    """Run ``args``; returns (wall seconds, CPU seconds of the children)."""
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run(list(args), check=True)
    wall = time.perf_counter() - t0
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="corpus in LJSpeech-1.1 layout (wavs/ folder)")
    p.add_argument("--utts", type=int, default=20)
    p.add_argument("--checkpoint", help="wavediff checkpoint (file or experiment dir) for copy-synthesis")
    p.add_argument("--vocoded", help="folder of vocoded audio made elsewhere (<id>.wav)")
    p.add_argument("--workdir", default="/tmp/evaluate_joe")
    p.add_argument("--nj", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args()

    import soundfile as sf

    from wavediff.audio.io import save_audio

    work = Path(args.workdir)
    files = sorted(f for f in (Path(args.corpus) / "wavs").iterdir()
                   if f.suffix in (".flac", ".wav"))[: args.utts]
    ref, originals, noisy = work / "ref", work / "originals", work / "noisy20"
    for d in (ref, originals, noisy):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for f in files:
        for folder in (ref, originals):
            link = folder / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
        x, sr = sf.read(str(f), dtype="float64")
        noise = rng.normal(0.0, math.sqrt(np.mean(x ** 2) / 10 ** (20 / 10)), x.shape)
        save_audio(noisy / f"{f.stem}.wav", np.clip(x + noise, -1, 1).astype(np.float32), sr)

    systems = {"originals": originals, "noisy20": noisy}
    if args.vocoded:
        systems["vocoded"] = Path(args.vocoded)
    elif args.checkpoint:
        vocoded = work / "vocoded"
        wall, _ = sh("wavediff", "vocode", "--checkpoint", args.checkpoint, "--outdir", str(vocoded),
                     "--seed", "0", "--device", "cpu", "-q", *map(str, files))
        print(f"copy-synthesis of {len(files)} utterances: {wall:.1f} s")
        systems["vocoded"] = vocoded

    timings = {}
    for name, gen in systems.items():
        wall, cpu = sh("wavediff", "evaluate", "--ref-dir", str(ref), "--gen-dir", str(gen),
                       "--json", str(work / f"{name}.json"), "--nj", str(args.nj), "-q")
        timings[name] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
        print(f"evaluate {name}: {wall:.1f} s wall, {cpu:.1f} s CPU")
    wall, cpu = sh("wavediff", "evaluate", "--ref-dir", str(ref), "--compare",
                   *map(str, systems.values()), "--json", str(work / "compare.json"),
                   "--report", str(work / "report.html"), "--nj", str(args.nj), "-q")
    timings["compare+report"] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    print(f"evaluate --compare (all, with the report): {wall:.1f} s wall, {cpu:.1f} s CPU")

    data = json.loads((work / "compare.json").read_text())
    names = [s["name"] for s in data["systems"]]
    print(f"\n{'metric':<16}" + "".join(f"{n:>20}" for n in names) + "  ordered as expected")
    ok_all = True
    for m in data["metrics"]:
        means = [s["summary"][m["name"]]["mean"] for s in data["systems"]]
        if m["name"] == "rtf" or any(v is None for v in means):
            continue
        cis = [s["summary"][m["name"]]["ci95"] or 0.0 for s in data["systems"]]
        sign = 1 if m["higher_is_better"] else -1
        # originals first, then noise, then the vocoder: each at least as good as the next
        ok = all(sign * (means[i] - means[i + 1]) >= 0 for i in range(len(means) - 1))
        ok_all &= ok
        print(f"{m['label']:<16}" + "".join(f"{v:>12.3f} ± {c:<5.2f}" for v, c in zip(means, cis))
              + f"  {'yes' if ok else 'NO'}")
    (work / "timings.json").write_text(json.dumps(timings, indent=1))
    print(f"\nreport: {work / 'report.html'}; every metric ordered as expected: {ok_all}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
