"""Convergence per CPU-minute: which training switches make wavediff sound like speech soonest.

Trains each configuration for the same budget of training time (evaluation excluded) on a
corpus in LJSpeech layout minus a held-out dev set, decodes the dev set by copy-synthesis
at 6 steps, scores it with ``wavediff evaluate`` and prints one table of score against
CPU-minutes, with each run's curve of dev log-mel L1 (the trainer's dev evaluation every
``--eval-minutes``), beside two baselines scored in the same call: Griffin-Lim alone (no
network) and the shipped model ``joe`` (default decode, network alone). Results:
``benchmarks/results/convergence-<machine>.json``.

    python benchmarks/convergence.py --corpus ../shared/corpora/joe --workdir /tmp/conv \\
        --minutes 10 --runs plain,priorgrad,aux,noise_level,subbands,all

A run directory that already holds a checkpoint continues (``--resume``) until the budget,
so a longer budget extends earlier runs, and a finished run whose scores are newer than its
checkpoint (with every metric asked for) is not decoded again. Runs are merged by name into the result JSON, so the table can be built in parts. The dev set is the first ``--n-dev`` utterance IDs
in sorted order (JOE001-0001 .. JOE001-0015 for joe), the split of ``recipes/joe``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wavediff.hardware import machine_summary  # noqa: E402

# A small model that trains at useful speed on two CPU cores: 12 layers of 32 channels with
# dilations 1..512 (receptive field 2,053 samples, longer than a pitch period at 85 Hz).
BASE = {
    "audio": {"preset": "hifigan"},
    "model": {"residual_layers": 12, "residual_channels": 32, "dilation_cycle": 10},
    "train": {"batch_size": 16, "crop_samples": 4096, "learning_rate": 1.0e-3,
              "max_steps": 1_000_000, "log_interval": 50, "save_interval": 500,
              "num_dev_utterances": 3, "dev_crop_samples": 22050, "num_workers": 0},
}
FEW_STEP = ["train.objective=few_step", "train.mel_loss_weight=45", "train.adversarial_weight=1",
            "train.feature_matching_weight=2", "train.diffusion_loss_weight=1",
            "train.batch_size=8", "train.crop_samples=8192", "train.learning_rate=2.0e-4",
            "train.adam_betas=[0.8, 0.99]", "diffusion.fast_schedule=[0.0001, 0.1]"]
# Each run: config overrides on BASE (``section.key=value``, as ``--set``).
RUNS = {
    "plain": [],
    "priorgrad": ["diffusion.prior=priorgrad"],
    "aux": ["train.aux_loss_weight=0.1"],
    "noise_level": ["diffusion.conditioning=noise_level"],
    "subbands": ["model.subbands=2"],
    "priorgrad+aux": ["diffusion.prior=priorgrad", "train.aux_loss_weight=0.1"],
    "priorgrad+noise_level": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level"],
    "priorgrad+noise_level+subbands": ["diffusion.prior=priorgrad",
                                       "diffusion.conditioning=noise_level", "model.subbands=2"],
    "all": ["diffusion.prior=priorgrad", "train.aux_loss_weight=0.1",
            "diffusion.conditioning=noise_level"],
    # the best small combination at twice the channels (about the cost per step of the
    # full-rate small model): the "larger size, for longer" run
    "priorgrad+noise_level+subbands@12x64": [
        "diffusion.prior=priorgrad", "diffusion.conditioning=noise_level", "model.subbands=2",
        "model.residual_channels=64"],
    # SpecGrad: PriorGrad's level with the mel's spectral envelope as the noise's shape
    "specgrad+noise_level": ["diffusion.prior=specgrad", "diffusion.conditioning=noise_level"],
    # deeper wavelet-packet splits with the channels the saved compute buys: the layers run
    # at 1/4 (1/8) of the rate, so 64 (96) channels cost about what 32 cost at full rate
    "subbands4@12x64": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level",
                        "model.subbands=4", "model.residual_channels=64"],
    "subbands8@12x96": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level",
                        "model.subbands=8", "model.residual_channels=96"],
    # the two winners together
    "subbands8@12x96+specgrad": ["diffusion.prior=specgrad", "diffusion.conditioning=noise_level",
                                 "model.subbands=8", "model.residual_channels=96"],
    # rebalanced: of 12 x 32's 0.69M parameters about 0.53M are the step embedding's MLP and
    # the per-layer step projections; a small embedding buys 48 channels at about the same size
    "rebalanced": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level",
                   "model.step_embedding_dim=32", "model.step_hidden_dim=128",
                   "model.residual_channels=48"],
    # trained through the 2-step decode it is used with (InferGrad-style), full-band log-mel
    # L1 and HiFi-GAN's discriminators (the shipped model's fine-tune, here from scratch)
    "few_step": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level",
                 *FEW_STEP],
    # ... and with the chain started around the Griffin-Lim decode (diffusion.start_iters)
    "few_step+gl_start": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level",
                          *FEW_STEP, "diffusion.start_iters=16",
                          "diffusion.fast_schedule=[0.0001, 0.02]"],
    # ... trained through (and decoded in) one step from around Griffin-Lim: the network
    # as a one-step refiner, what distillation to one step aims at
    "few_step+gl_start@1step": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level",
                                *FEW_STEP, "diffusion.start_iters=16",
                                "diffusion.fast_schedule=[0.02]"],
    # the network predicting the residual of the clean waveform (diffusion.prediction:
    # residual) instead of the noise: its reach does not shrink with the level
    "priorgrad+noise_level+residual": ["diffusion.prior=priorgrad",
                                       "diffusion.conditioning=noise_level",
                                       "diffusion.prediction=residual"],
    "few_step+gl_start+residual": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level",
                                   *FEW_STEP, "diffusion.start_iters=16",
                                   "diffusion.fast_schedule=[0.0001, 0.02]",
                                   "diffusion.prediction=residual"],
    # every layer also conditioned on the waveform of 16 Griffin-Lim projections of the mel
    # (model.gl_condition), the chain started from noise: the network sees Griffin-Lim's
    # estimate and keeps the reach of a full chain
    "priorgrad+noise_level+gl_cond": ["diffusion.prior=priorgrad",
                                      "diffusion.conditioning=noise_level",
                                      "model.gl_condition=16"],
    "few_step+gl_cond": ["diffusion.prior=priorgrad", "diffusion.conditioning=noise_level",
                         *FEW_STEP, "model.gl_condition=16"],
}
# Runs decoded with their own schedule (the one they were trained through), not 6 steps.
OWN_SCHEDULE = ("few_step", "few_step+gl_start", "few_step+gl_start@1step",
                "few_step+gl_start+residual", "few_step+gl_cond")
EVAL_LINE = re.compile(r"step (\d+): (.*)$")


def sh(cmd: list[str], log: Path) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"command failed ({rc}); see {log}: {' '.join(cmd)}")


def prepare(corpus: Path, work: Path, n_dev: int) -> tuple[Path, Path, Path]:
    """data/{train,dev}/wav.scp and dump/{train,dev} (skipped when present)."""
    wavs = sorted((corpus / "wavs").glob("*.*"))
    if not wavs:
        raise SystemExit(f"{corpus}/wavs holds no audio")
    data = work / "data"
    for name, items in (("dev", wavs[:n_dev]), ("train", wavs[n_dev:])):
        (data / name).mkdir(parents=True, exist_ok=True)
        (data / name / "wav.scp").write_text("".join(f"{p.stem} {p}\n" for p in items))
    conf = work / "audio.yaml"
    conf.write_text(yaml.safe_dump({"audio": BASE["audio"]}))
    for name in ("train", "dev"):
        dump = work / "dump" / name
        if not (dump / "audio.yaml").exists() or len(list(dump.glob("*.npz"))) < 2:
            sh([sys.executable, "-m", "wavediff", "preprocess", "--config", str(conf), "--scp",
                str(data / name / "wav.scp"), "--dumpdir", str(dump), "--nj", "2", "-q"],
               work / "prepare.log")
    return data / "dev" / "wav.scp", work / "dump" / "train", work / "dump" / "dev"


def curve(train_log: Path) -> list[dict]:
    """The dev evaluations of a run: step, training minutes, dev metrics."""
    points = []
    if not train_log.exists():
        return points
    for line in train_log.read_text().splitlines():
        m = EVAL_LINE.search(line)
        if not m or "dev/" not in m.group(2):
            continue
        point = {"step": int(m.group(1))}
        for part in m.group(2).split(", "):
            key, _, value = part.rpartition(" ")
            try:
                point[key] = float(value)
            except ValueError:
                pass
        points.append(point)
    return points


def decode_and_score(model: str, options: list[str], out: Path, scores: Path, dev_scp: Path,
                     metrics: str, log: Path) -> None:
    """Copy-synthesis of the dev set with ``model`` (seed 0) into ``out``, scored into
    ``scores`` by ``wavediff evaluate``."""
    sh([sys.executable, "-m", "wavediff", "vocode", "--checkpoint", model, "--outdir", str(out),
        "--scp", str(dev_scp), *options, "--seed", "0", "-q"], log)
    sh([sys.executable, "-m", "wavediff", "evaluate", "--ref-scp", str(dev_scp), "--gen-dir",
        str(out), "--json", str(scores), "--metrics", metrics, "--nj", "2", "-q"], log)


def run_one(name: str, overrides: list[str], args: argparse.Namespace, dumps: tuple) -> dict:
    dev_scp, train_dump, dev_dump = dumps
    exp = args.workdir / "exp" / name
    conf = args.workdir / "base.yaml"
    conf.write_text(yaml.safe_dump(BASE, sort_keys=False))
    log = args.workdir / f"{name}.log"
    eval_steps = max(50, int(args.eval_minutes * 60 * args.steps_per_second_guess))
    sets = [*overrides, f"train.max_minutes={args.minutes}", f"train.eval_interval={eval_steps}"]
    cmd = [sys.executable, "-m", "wavediff", "train", "--config", str(conf), "--train-dumpdir",
           str(train_dump), "--dev-dumpdir", str(dev_dump), "--outdir", str(exp), "--resume", "-q"]
    for item in sets:
        cmd += ["--set", item]
    t0 = time.time()
    sh(cmd, log)
    wall = time.time() - t0
    out = args.workdir / "decoded" / name
    scores = args.workdir / "decoded" / f"{name}.json"
    if not _scores_current(scores, exp, args.metrics):
        steps = [] if name in OWN_SCHEDULE else ["--steps", "6"]
        decode_and_score(str(exp), steps, out, scores, dev_scp, args.metrics, log)
    summary = json.loads(scores.read_text())
    points = curve(exp / "train.log")
    return {"name": name, "overrides": overrides, "wall_seconds": wall,
            "curve": points, "scores": summary["systems"][0]["summary"]}


def griffin_lim_row(args: argparse.Namespace, dumps: tuple) -> dict:
    """The no-network baseline every run must beat: Griffin-Lim alone (32 projections of
    wavediff's SpectralProjector from noise, ``--steps 0``), nothing trained. It decodes
    through the shipped model's folder only for its mel convention (BASE's, hifigan)."""
    dev_scp = dumps[0]
    log = args.workdir / "griffin-lim.log"
    out = args.workdir / "decoded" / "griffin-lim"
    scores = args.workdir / "decoded" / "griffin-lim.json"
    if not scores.exists():
        decode_and_score("joe", ["--steps", "0"], out, scores, dev_scp, args.metrics, log)
    summary = json.loads(scores.read_text())
    return {"name": "griffin-lim (no network)", "overrides": [], "wall_seconds": 0.0,
            "curve": [], "scores": summary["systems"][0]["summary"]}


def shipped_rows(args: argparse.Namespace, dumps: tuple) -> list[dict]:
    """The shipped model ``joe`` beside the runs: its default decode and its network alone
    (``--consistency 0``), the second baseline every figure stands beside."""
    rows = []
    for label, options in (("joe (shipped), default decode", []),
                           ("joe (shipped), network alone", ["--consistency", "0"])):
        slug = re.sub(r"[^a-z0-9]+", "-", label).strip("-")
        out = args.workdir / "decoded" / slug
        scores = args.workdir / "decoded" / f"{slug}.json"
        if not scores.exists():
            decode_and_score("joe", options, out, scores, dumps[0], args.metrics,
                             args.workdir / f"{slug}.log")
        summary = json.loads(scores.read_text())
        rows.append({"name": label, "overrides": options, "wall_seconds": 0.0, "curve": [],
                     "scores": summary["systems"][0]["summary"]})
    return rows


def earlier_runs(out: Path, minutes: float) -> list[dict]:
    """Runs of an earlier call with the same budget (others are not comparable)."""
    if not out.exists():
        return []
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError):
        return []
    if data.get("minutes") != minutes or data.get("base") != BASE:
        return []
    return list(data.get("runs", []))


def _scores_current(scores: Path, exp: Path, metrics: str) -> bool:
    """The scores of a run are newer than its newest checkpoint and hold every metric asked
    for: decoding and scoring again would give the same (seed 0)."""
    ckpts = list(exp.glob("checkpoint-*steps.pt"))
    if not scores.exists() or not ckpts:
        return False
    if scores.stat().st_mtime < max(p.stat().st_mtime for p in ckpts):
        return False
    try:
        names = {m["name"] for m in json.loads(scores.read_text())["metrics"]}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return set(metrics.split(",")) <= names


def mean_of(scores: dict, key: str) -> float:
    value = scores.get(key) or {}
    mean = value.get("mean") if isinstance(value, dict) else value
    return float("nan") if mean is None else float(mean)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="LJSpeech-layout corpus folder")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=10.0, help="training minutes per run")
    p.add_argument("--runs", default="plain,priorgrad,aux,noise_level,subbands,all",
                   help=f"comma list of: {', '.join(RUNS)}")
    p.add_argument("--n-dev", type=int, default=15)
    p.add_argument("--eval-minutes", type=float, default=2.0, help="minutes between dev points")
    p.add_argument("--steps-per-second-guess", type=float, default=0.8,
                   help="to turn --eval-minutes into a step interval")
    p.add_argument("--metrics",
                   default="log_mel_l1,mr_stft,pesq,stoi,f0_rmse,vuv_f1,periodicity,dnsmos_p808")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: results/)")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    unknown = [r for r in args.runs.split(",") if r not in RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    dumps = prepare(args.corpus, args.workdir, args.n_dev)
    results = [run_one(r, RUNS[r], args, dumps) for r in args.runs.split(",")]
    machine = machine_summary()
    slug = re.sub(r"[^a-z0-9]+", "-", machine["cpu"].lower()).strip("-")
    out = args.out or REPO / "benchmarks" / "results" / f"convergence-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = {r["name"]: r for r in earlier_runs(out, args.minutes)}
    merged.update({r["name"]: r for r in results})
    order = [name for name in RUNS if name in merged]
    baselines = [griffin_lim_row(args, dumps), *shipped_rows(args, dumps)]
    out.write_text(json.dumps({"machine": machine, "base": BASE, "minutes": args.minutes,
                               "command": " ".join(["python", *sys.argv]),
                               "baselines": baselines,
                               "runs": [merged[name] for name in order]}, indent=1))
    results = baselines + [merged[name] for name in order]
    print(f"machine: {machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}")
    cols = ["log_mel_l1", "mr_stft", "pesq", "stoi", "f0_rmse", "vuv_f1", "periodicity",
            "dnsmos_p808"]
    print("| run | steps | train min | " + " | ".join(cols) + " | dev log-mel L1 curve (min: value) |")
    print("|" + "---|" * (len(cols) + 4))
    for r in results:
        c = r["curve"]
        steps = c[-1]["step"] if c else 0
        minutes = c[-1].get("time/train_minutes", float("nan")) if c else float("nan")
        trend = ", ".join(f"{pt.get('time/train_minutes', 0):.0f}: {pt.get('dev/log_mel_l1', 0):.2f}"
                          for pt in c)
        vals = " | ".join(f"{mean_of(r['scores'], k):.3f}" for k in cols)
        print(f"| {r['name']} | {steps} | {minutes:.1f} | {vals} | {trend} |")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
