"""Which half of a vocoder's output costs its quality: the magnitude or the phase?

For every clip of a dev set and every system (a folder of decoded clips, e.g. the rows of a
``benchmarks/vocoders.py`` workdir), the STFT of the output and of the recording are
swapped half for half and resynthesised (inverse STFT, Hann window, 1024/256 at 22.05 kHz,
the same sizes in time at other rates):

* ``as is``: the output;
* ``its magnitude, the recording's phase``: what the output's magnitudes are worth;
* ``the recording's magnitude, its phase``: what the output's phase is worth.

Each is scored with DNSMOS P.808 (no reference) and wide-band PESQ against the recording,
beside the recordings themselves and the phase-derivative distance to the recording
(``wavediff.evaluation.spectral.multi_resolution_phase_loss``, 0 for the recording's own
phase; the trainer's ``dev/phase``). A system whose magnitude scores near the recording but
whose phase does not needs a better phase, not a better mel fit.

example (after benchmarks/vocoders.py --workdir /tmp/vocoders ...):
  python benchmarks/phase_oracle.py --dev-scp recipes/joe/data/dev/wav.scp \\
      --system "Griffin-Lim, 32 projections" /tmp/vocoders/Griffin_Lim_32_projections_no_network \\
      --system "joe, default decode" /tmp/vocoders/joe_shipped_default_decode \\
      --out benchmarks/results/phase-oracle-joe-dev.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from wavediff.audio.io import load_audio
from wavediff.evaluation.metrics import Evaluator, available_metrics
from wavediff.evaluation.spectral import multi_resolution_phase_loss
from wavediff.hardware import cpu_name

METRICS = ["dnsmos_p808", "pesq"]
VARIANTS = ("as is", "its magnitude, the recording's phase", "the recording's magnitude, its phase")


def swap(ref: np.ndarray, gen: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
    """The three variants of ``gen`` (see the module's text), each as long as ``ref``."""
    n_fft = 1 << int(round(np.log2(1024 * sample_rate / 22050)))
    hop, window = n_fft // 4, torch.hann_window(n_fft, dtype=torch.float64)

    def stft(x: np.ndarray) -> torch.Tensor:
        return torch.stft(torch.from_numpy(x.astype(np.float64)), n_fft, hop, window=window,
                          return_complex=True)

    def istft(z: torch.Tensor) -> np.ndarray:
        return torch.istft(z, n_fft, hop, window=window, length=len(ref)).numpy().astype(np.float32)

    r, g = stft(ref), stft(gen)

    def phase(z: torch.Tensor) -> torch.Tensor:
        return z / z.abs().clamp(min=1e-12)

    return {VARIANTS[0]: gen, VARIANTS[1]: istft(g.abs() * phase(r)),
            VARIANTS[2]: istft(r.abs() * phase(g))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev-scp", type=Path, required=True, help="<id> <audio path> lines")
    p.add_argument("--system", nargs=2, action="append", default=[], metavar=("LABEL", "DIR"),
                   help="a system: its label and the folder of its <id>.wav outputs")
    p.add_argument("--out", type=Path, help="write the table as JSON here (and .md beside)")
    args = p.parse_args()
    missing = available_metrics(METRICS)[1]
    if missing:
        print(f"error: {', '.join(missing)} unavailable: pip install 'wavediff[eval]'",
              file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    lines = [line.split(maxsplit=1) for line in args.dev_scp.read_text().splitlines()
             if line.strip()]
    evaluator = None
    scores: dict[str, dict[str, list]] = {"recordings": {"dnsmos_p808": [], "pesq": []}}
    phase_distance: dict[str, list[float]] = {"recordings": [0.0]}  # its own phase
    for utt, path in lines:
        ref, sr = load_audio(path.strip())
        evaluator = evaluator or Evaluator(METRICS, sr, threads=2)
        ref_a = evaluator.analyse(ref)
        scores["recordings"]["dnsmos_p808"].append(ref_a.dnsmos["dnsmos_p808"])
        for label, folder in args.system:
            gen, gen_sr = load_audio(Path(folder) / f"{utt}.wav")
            if gen_sr != sr:
                print(f"error: {folder}/{utt}.wav is at {gen_sr} Hz, the recording at {sr} Hz",
                      file=sys.stderr)
                return 2
            gen = np.pad(gen, (0, max(0, len(ref) - len(gen))))[:len(ref)]
            phase_distance.setdefault(label, []).append(float(multi_resolution_phase_loss(
                torch.from_numpy(ref), torch.from_numpy(gen))))
            for variant, wav in swap(ref, gen, sr).items():
                values, _ = evaluator.score(ref_a, evaluator.analyse(wav))
                row = scores.setdefault(f"{label} | {variant}", {"dnsmos_p808": [], "pesq": []})
                row["dnsmos_p808"].append(values["dnsmos_p808"])
                row["pesq"].append(values["pesq"])
        print(f"{utt} done", file=sys.stderr, flush=True)
    machine = f"{cpu_name()}, 2 threads"
    rows = []
    for key, vals in scores.items():
        label, _, variant = key.partition(" | ")
        rows.append({"system": label, "variant": variant or "",
                     "dnsmos_p808": float(np.nanmean(vals["dnsmos_p808"])),
                     "pesq": float(np.nanmean(vals["pesq"])) if vals["pesq"] else None,
                     # a system's own phase: on its "as is" row only
                     "phase_distance": (float(np.mean(phase_distance[label]))
                                        if variant in ("", VARIANTS[0]) else None)})
    md = [f"{len(lines)} clips of {args.dev_scp}; {machine}.", "",
          "| system | STFT taken | DNSMOS | PESQ-wb | phase distance |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['system']} | {r['variant'] or 'as recorded'} | {r['dnsmos_p808']:.2f} | "
                  + ("" if r["pesq"] is None else f"{r['pesq']:.2f}") + " | "
                  + ("" if r["phase_distance"] is None else f"{r['phase_distance']:.3f}") + " |")
    print("\n".join(md))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = shlex.join(["python", *sys.argv])
        args.out.write_text(json.dumps({"machine": machine, "dev_scp": str(args.dev_scp),
                                        "command": command, "rows": rows}, indent=1))
        args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
