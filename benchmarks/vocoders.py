"""Vocoders side by side on one dev set, in one run: every figure beside its baselines.

Each system is a label, a model (a shipped name, a pretrained folder or a checkpoint) and
the `wavediff vocode` options it decodes with. The dev set is decoded by copy-synthesis
(seed 0) and scored with `wavediff evaluate`; the markdown table and the JSON name the CPU
and its thread count. Griffin-Lim with wavediff's projector and no network
(`--steps 0`, 32 projections, from noise and from the phase-vocoder phase) and the shipped
model's default decode are the baselines every other row is read against, so they are
always measured unless --no-baselines is given.

example:
  python benchmarks/vocoders.py --dev-scp recipes/joe/data/dev/wav.scp \\
      --workdir /tmp/vocoders \\
      --system "finetuned" recipes/joe/exp/joe_finetune "" \\
      --system "finetuned, network alone" recipes/joe/exp/joe_finetune "--consistency 0"
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

METRICS = "pesq,stoi,mcd,log_mel_l1,mr_stft,vuv_f1,dnsmos_p808"
COLUMNS = ("dnsmos_p808", "pesq", "stoi", "mcd", "log_mel_l1", "mr_stft", "vuv_f1", "rtf")
HEADERS = ("DNSMOS", "PESQ-wb", "STOI", "MCD dB", "log-mel L1", "MR-STFT", "V/UV F1", "RTF")
BASELINES = [("Griffin-Lim, 32 projections of noise, no network", "joe",
              "--steps 0 --consistency 32 --gl-init noise"),
             ("Griffin-Lim, 32 projections from the phase-vocoder phase, no network", "joe",
              "--steps 0 --consistency 32 --gl-init phase-vocoder"),
             ("joe (shipped), default decode", "joe", ""),
             ("joe (shipped), network alone", "joe", "--consistency 0")]


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")[:80]


def run(cmd: list, log: Path) -> int:
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + shlex.join(map(str, cmd)) + "\n")
        f.flush()
        return subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT).returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev-scp", type=Path, required=True, help="<id> <audio path> lines")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--system", nargs=3, action="append", default=[],
                   metavar=("LABEL", "MODEL", "OPTIONS"),
                   help="a row: its label, the model, and vocode options ('' for none)")
    p.add_argument("--no-baselines", action="store_true",
                   help="leave out Griffin-Lim and the shipped model")
    p.add_argument("--metrics", default=METRICS)
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = args.workdir / "log.txt"
    systems = ([] if args.no_baselines else BASELINES) + [tuple(s) for s in args.system]
    import torch

    from wavediff.hardware import cpu_name

    env_note = f"{cpu_name()}, {torch.get_num_threads()} threads"
    rows = []
    for label, model, opts in systems:
        out = args.workdir / slug(label)
        t0 = time.perf_counter()
        rc = run([sys.executable, "-m", "wavediff", "vocode", "--checkpoint", model,
                  "--outdir", out, "--scp", args.dev_scp, "--seed", "0", "-q",
                  *shlex.split(opts)], log)
        row = {"label": label, "model": model, "options": opts,
               "decode_wall_s": round(time.perf_counter() - t0, 1)}
        if rc != 0:
            row["error"] = f"vocode exit {rc} (see {log})"
            rows.append(row)
            print(label, row, flush=True)
            continue
        scores = out.with_suffix(".json")
        run([sys.executable, "-m", "wavediff", "evaluate", "--ref-scp", args.dev_scp,
             "--gen-dir", out, "--json", scores, "--metrics", args.metrics + ",rtf",
             "--nj", "2", "-q"], log)
        data = json.loads(scores.read_text())["systems"][0]
        summary = data["summary"]
        row.update({k: summary[k]["mean"] for k in summary
                    if isinstance(summary[k], dict) and summary[k].get("mean") is not None})
        if data.get("rtf_overall") is not None:
            row["rtf"] = data["rtf_overall"]
        rows.append(row)
        print(label, {k: row.get(k) for k in COLUMNS}, flush=True)
    result = {"machine": env_note, "dev_scp": str(args.dev_scp), "rows": rows}
    (args.workdir / "results.json").write_text(json.dumps(result, indent=1))
    lines = [f"Copy-synthesis of {args.dev_scp} (seed 0); {env_note}.", "",
             "| system | " + " | ".join(HEADERS) + " |",
             "|---|" + "---|" * len(HEADERS)]
    for row in rows:
        cells = []
        for k in COLUMNS:
            v = row.get(k)
            cells.append("" if v is None else (f"{v:.3f}" if k in ("stoi", "log_mel_l1", "vuv_f1")
                                                else f"{v:.2f}"))
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    (args.workdir / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
