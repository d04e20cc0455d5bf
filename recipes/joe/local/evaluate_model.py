#!/usr/bin/env python3
"""Measure a joe model on its dev set: quality at several step counts, searched schedules,
mels of other TTS conventions, and decoding speed; one JSON and a markdown table.

    python local/evaluate_model.py --model exp/joe/pretrained --dev-scp data/dev/wav.scp \
        --workdir exp/joe/measure [--refdir shared/reference_mels] [--steps 2,4,6,12]

For each step count the dev set is decoded by copy-synthesis with `wavediff vocode` (seed 0)
and scored with `wavediff evaluate`: the fast sampler's default 6-step schedule, evenly
subsampled training steps for the other counts, and every schedule stored with the model
(`wavediff tune-schedule`). With --refdir (a reference_mels folder: <system>/<id>.npy|h5 of
the same clips, written by the systems' own code) each system's files are vocoded with
--input-preset auto and scored against the recordings and against the decode of the native
hifigan mel (log-mel distance, same seed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

METRICS = ("pesq", "stoi", "mcd", "f0_rmse", "vuv_error", "vuv_f1", "periodicity",
           "log_mel_l1", "mr_stft", "dnsmos_p808")
SYSTEMS = ("hifigan", "tacotron2", "matcha", "espnet", "espnet_norm", "diffwave-lmnt", "coqui",
           "vocos")


def sh(cmd: list, log: Path) -> int:
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        return subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT).returncode


def wavediff(*args) -> list:
    return [sys.executable, "-m", "wavediff", *args]


def summary(path: Path) -> dict:
    data = json.loads(path.read_text())
    s = data["systems"][0]["summary"]
    out = {k: s[k]["mean"] for k in METRICS if k in s and s[k].get("mean") is not None}
    if data["systems"][0].get("rtf_overall") is not None:
        out["rtf"] = data["systems"][0]["rtf_overall"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--dev-scp", type=Path, required=True)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--refdir", type=Path)
    p.add_argument("--steps", default="2,4,6,12")
    p.add_argument("--consistency", default="0",
                   help="other numbers of consistency projections per step to score at 6 steps "
                        "besides the model's own default (comma-separated; 0 = the network alone)")
    p.add_argument("--metrics", default=",".join(METRICS))
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = args.workdir / "log.txt"
    results: dict = {"model": args.model, "decodes": {}, "conventions": {}}

    from wavediff.vocoder import Vocoder

    model = Vocoder.from_pretrained(args.model)
    schedules, own = model.schedules, model.config.diffusion.consistency_iters
    plans = [(f"{n} steps", ["--steps", n]) for n in args.steps.split(",")]
    plans += [(f"6 steps, consistency {c}", ["--steps", "6", "--consistency", c])
              for c in args.consistency.split(",") if c and int(c) != own]
    plans += [(f"schedule {name} ({len(b)} steps)", ["--schedule", name])
              for name, b in sorted(schedules.items())]
    for label, opts in plans:
        out = args.workdir / label.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        rc = sh(wavediff("vocode", "--checkpoint", args.model, "--outdir", out, "--scp",
                         args.dev_scp, "--seed", "0", "-q", *opts), log)
        if rc != 0:
            results["decodes"][label] = {"error": f"vocode failed ({rc}), see {log}"}
            continue
        scores = out.with_suffix(".json")
        sh(wavediff("evaluate", "--ref-scp", args.dev_scp, "--gen-dir", out, "--json", scores,
                    "--metrics", args.metrics + ",rtf", "--nj", "2", "-q"), log)
        results["decodes"][label] = summary(scores)
        print(label, results["decodes"][label], flush=True)

    if args.refdir:
        ids = [line.split()[0] for line in args.dev_scp.read_text().splitlines() if line.strip()]
        refs = {line.split()[0]: line.split()[1] for line in args.dev_scp.read_text().splitlines()
                if line.strip()}
        native_dir = None
        for system in SYSTEMS:
            src = args.refdir / system
            if not src.is_dir():
                continue
            by_id: dict = {}  # one file per clip: .npy when both .npy and .h5 exist
            for f in sorted(src.iterdir(), key=lambda f: (f.stem, f.suffix != ".npy")):
                if f.stem in ids and f.suffix in (".npy", ".h5"):
                    by_id.setdefault(f.stem, f)
            files = [by_id[k] for k in sorted(by_id)]
            if not files:
                continue
            out = args.workdir / f"conv_{system}"
            extra = []
            stats = src / "stats.h5"
            if stats.exists():
                extra = ["--stats", stats]
            rc = sh(wavediff("vocode", "--checkpoint", args.model, "--outdir", out, "--seed", "0",
                             "-q", *extra, *files), log)
            scp = args.workdir / f"conv_{system}.scp"
            scp.write_text("".join(f"{f.stem} {refs[f.stem]}\n" for f in files))
            entry: dict = {"files": len(files), "exit": rc}
            if any(out.glob("*.wav")):
                scores = args.workdir / f"conv_{system}.json"
                sh(wavediff("evaluate", "--ref-scp", scp, "--gen-dir", out, "--json", scores,
                            "--metrics", "log_mel_l1,stoi,pesq", "--nj", "2", "-q"), log)
                if scores.exists():
                    entry.update(summary(scores))
                if system == "hifigan":
                    native_dir = out
                elif native_dir is not None:
                    entry["log_mel_vs_native"] = _distance(native_dir, out)
            results["conventions"][system] = entry
            print(system, entry, flush=True)
    (args.workdir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {args.workdir / 'results.json'}")


def _distance(native: Path, other: Path) -> float:
    """Mean log-mel L1 (hifigan) between two folders' decodes of the same clips."""
    import numpy as np
    import soundfile as sf
    import torch

    from wavediff.audio.mel import MelSpectrogram

    mel = MelSpectrogram.from_preset("hifigan")
    dists = []
    for a in sorted(native.glob("*.wav")):
        b = other / a.name
        if not b.exists():
            continue
        x, _ = sf.read(a, dtype="float32")
        y, _ = sf.read(b, dtype="float32")
        n = min(len(x), len(y))
        dists.append(float((mel(torch.from_numpy(x[:n])) - mel(torch.from_numpy(y[:n]))).abs().mean()))
    return float(np.mean(dists)) if dists else float("nan")


if __name__ == "__main__":
    main()
