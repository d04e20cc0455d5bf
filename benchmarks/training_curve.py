"""A model's training curve across warm-started runs: the trainer's dev log-mel against
CPU-hours, and the dev-set scores of each evaluation beside the baselines, as one figure.

    python benchmarks/training_curve.py \\
        --log recipes/joe/exp/joe_sb8/train.log \\
        --log recipes/joe/exp/joe_sb8_gl/train.log@72.0 ... \\
        --table 54.5=benchmarks/results/vocoders-joe-dev-...-sb8.json ... \\
        --model joe_sb8 --out benchmarks/results/joe-sb8-curve

``--log PATH[@MINUTES]``: a run's ``train.log``; ``MINUTES`` is the training time of the
stages before it that its own clock does not count (a fine-tune started with
``--init-checkpoint`` counts from 0; a ``--resume`` counts on). Every ``step N: ... dev/...``
line is a point. ``--table MINUTES=RESULTS.json``: a ``benchmarks/vocoders.py`` result
taken at that much training; its rows whose label starts with ``--model`` are the model's
(one line per decode, told by the row's options: default decode, network alone, N
projections per step), and the Griffin-Lim and
shipped-model rows of the last table are drawn as the baselines. Writes ``OUT.png`` and
``OUT.json`` (every point plotted).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

STEP_LINE = re.compile(r"step (\d+): (.*)")
FIELD = re.compile(r"([\w/]+) (-?[\d.]+(?:e-?\d+)?)")
METRICS = (("dnsmos_p808", "DNSMOS P.808"), ("pesq", "PESQ-wb"), ("stoi", "STOI"),
           ("mcd", "MCD dB"), ("log_mel_l1", "log-mel L1"))


def read_log(path: Path, offset: float) -> list[dict]:
    """The dev evaluations of a train.log: step, CPU-minutes (offset added) and every
    ``dev/*`` value."""
    points = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = STEP_LINE.search(line)
        if not m or "dev/" not in m.group(2):
            continue
        fields = {k: float(v) for k, v in FIELD.findall(m.group(2))}
        if "time/train_minutes" not in fields:
            continue
        points.append({"step": int(m.group(1)),
                       "minutes": offset + fields["time/train_minutes"],
                       **{k[4:]: v for k, v in fields.items() if k.startswith("dev/")}})
    return points


def decode_kind(options: str) -> str:
    """A row's decode from its ``wavediff vocode`` options."""
    m = re.search(r"--consistency (\d+)", options)
    if options.strip() == "":
        return "default decode"
    if m and options.strip() == m.group(0):
        n = int(m.group(1))
        return "network alone" if n == 0 else f"{n} projections per step"
    return options.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", action="append", default=[], metavar="PATH[@MINUTES]")
    p.add_argument("--table", action="append", default=[], metavar="MINUTES=RESULTS.json")
    p.add_argument("--model", required=True,
                   help="the label prefix of the model's rows in the tables (e.g. joe_sb8)")
    p.add_argument("--out", type=Path, required=True, help="OUT.png and OUT.json are written")
    args = p.parse_args()

    runs = []
    for spec in args.log:
        path, _, offset = spec.partition("@")
        runs.append({"run": Path(path).parent.name,
                     "points": read_log(Path(path), float(offset or 0.0))})
    tables, baselines = [], {}
    for spec in args.table:
        minutes, _, path = spec.partition("=")
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for row in data["rows"]:
            label = row["label"]
            if label.startswith(args.model):
                tables.append({"minutes": float(minutes), "decode": decode_kind(row.get("options", "")),
                               "label": label, "table": path,
                               **{k: row.get(k) for k, _ in METRICS}})
            elif label.startswith("Griffin-Lim") or label.startswith("joe (shipped), default"):
                baselines[label] = {k: row.get(k) for k, _ in METRICS}  # the last table's

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 7.5))
    grid = fig.add_gridspec(2, 3)
    ax = fig.add_subplot(grid[0, :])
    for run in runs:
        pts = [q for q in run["points"] if "log_mel_l1" in q]
        if pts:
            ax.plot([q["minutes"] / 60 for q in pts], [q["log_mel_l1"] for q in pts], ".-",
                    label=run["run"])
    ax.set_yscale("log")
    ax.set_xlabel("CPU-hours of training (2 cores)")
    ax.set_ylabel("trainer's dev log-mel L1\n(network alone, 3 clips)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=4)
    kinds = sorted({t["decode"] for t in tables})
    for i, (key, name) in enumerate(METRICS[:3]):
        axm = fig.add_subplot(grid[1, i])
        for kind in kinds:
            pts = sorted((t["minutes"] / 60, t[key]) for t in tables
                         if t["decode"] == kind and t[key] is not None)
            if pts:
                axm.plot(*zip(*pts), "o-", label=f"{args.model}, {kind}")
        for j, (label, scores) in enumerate(baselines.items()):
            if scores.get(key) is not None:
                axm.axhline(scores[key], ls="--", color=f"C{len(kinds) + j}", label=label)
        axm.set_xlabel("CPU-hours")
        axm.set_title(f"{name} (15 dev clips)", fontsize=10)
        axm.grid(True, alpha=0.3)
        if i == 0:
            axm.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out.with_suffix(".png"), dpi=90)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"model": args.model, "runs": runs, "tables": tables, "baselines": baselines},
        indent=1), encoding="utf-8")
    print(f"wrote {args.out.with_suffix('.png')} and .json: {sum(len(r['points']) for r in runs)} "
          f"trainer points, {len(tables)} table rows")


if __name__ == "__main__":
    main()
