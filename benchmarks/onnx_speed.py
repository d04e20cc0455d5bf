"""The ONNX and torch.export exports beside the torch decode: real-time factor of each on the
same mels, in one run, and how far apart their audio is given the same noise draws.

    python benchmarks/onnx_speed.py --model joe --wav-scp recipes/joe/data/dev/wav.scp \\
        --n 5 --threads 2 --out benchmarks/results/onnx-<machine>.json

Each clip's mel (copy-synthesis) is decoded by ``Vocoder.decode`` (the fused engine, the
model's default decode, float32 and the precision ``auto`` picks) and by the exported
folder's ``OnnxVocoder`` (onnxruntime with ``--threads`` intra-op threads, numpy for the
rest) and the same decoder on the ``--format torch-export`` folder (torch.export programs
with ``--threads`` torch threads), one warm-up decode first, then ``--runs`` timed decodes each (median). RTF: compute
seconds per audio second; lower is faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wavediff.audio.io import load_audio  # noqa: E402
from wavediff.diffusion.noise import GL_START, X_T, PositionalNoise, step_stream  # noqa: E402
from wavediff.hardware import machine_summary  # noqa: E402
from wavediff.inference.onnx_export import export_onnx, export_torch  # noqa: E402
from wavediff.onnx_decoder import OnnxVocoder  # noqa: E402
from wavediff.vocoder import Vocoder  # noqa: E402


def timed(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="joe")
    p.add_argument("--wav-scp", type=Path, required=True)
    p.add_argument("--n", type=int, default=5, help="clips of the scp to decode")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fp32 = Vocoder.from_pretrained(args.model, precision="fp32")
    auto = Vocoder.from_pretrained(args.model, precision="auto")
    folder = export_onnx(fp32, Path(tempfile.mkdtemp()) / "onnx")
    onnx = OnnxVocoder(folder, threads=args.threads)
    exported = OnnxVocoder(export_torch(fp32, Path(tempfile.mkdtemp()) / "pt2"),
                           threads=args.threads)
    rows = []
    lines = [line.split(maxsplit=1) for line in args.wav_scp.read_text().splitlines() if line]
    for utt, path in lines[:args.n]:
        wav, _ = load_audio(path, fp32.sample_rate)
        mel = fp32.mel(torch.as_tensor(wav))
        seconds = mel.shape[-1] * fp32.hop_length / fp32.sample_rate
        shape = (1, mel.shape[-1] * fp32.hop_length)
        # the torch decode's positional draws of seed 0, in the exported decoder's order
        noise = PositionalNoise.from_generator(torch.Generator().manual_seed(0), 1)
        streams = ([GL_START] if onnx.meta["start_iters"] else []) + [X_T] + [
            step_stream(i) for i in range(len(onnx.meta["plan"]["betas"]) - 1)]
        draws = [noise.draw(k, 0, shape[-1]).numpy() for k in streams]
        ref = fp32.decode(mel, seed=0, input_preset=None).numpy()
        got = onnx.decode(mel.numpy(), noises=draws)
        got_pt2 = exported.decode(mel.numpy(), noises=draws)
        row = {"utt": utt, "seconds": seconds,
               "max_abs_diff": float(np.abs(got - ref).max()),
               "max_abs_diff_torch_export": float(np.abs(got_pt2 - ref).max()),
               "rtf_torch_fp32": timed(lambda: fp32.decode(mel, seed=0, input_preset=None),
                                       args.runs) / seconds,
               "rtf_torch_auto": timed(lambda: auto.decode(mel, seed=0, input_preset=None),
                                       args.runs) / seconds,
               "rtf_onnxruntime": timed(lambda: onnx.decode(mel.numpy(), seed=0),
                                        args.runs) / seconds,
               "rtf_torch_export": timed(lambda: exported.decode(mel.numpy(), seed=0),
                                         args.runs) / seconds}
        rows.append(row)
        print(json.dumps(row))
    total = sum(r["seconds"] for r in rows)
    summary = {k: sum(r[k] * r["seconds"] for r in rows) / total
               for k in ("rtf_torch_fp32", "rtf_torch_auto", "rtf_onnxruntime",
                         "rtf_torch_export")}
    for k in ("max_abs_diff", "max_abs_diff_torch_export"):
        summary[k] = max(r[k] for r in rows)
    machine = machine_summary()
    print(f"machine: {machine['cpu']}, {args.threads} threads; torch precision auto = "
          f"{auto.precision}")
    print("| decoder | RTF (audio-weighted mean) | vs torch fp32 |")
    print("|---|---|---|")
    for k, name in (("rtf_torch_fp32", "torch, fused engine, fp32"),
                    ("rtf_torch_auto", f"torch, fused engine, auto ({auto.precision})"),
                    ("rtf_onnxruntime", "exported: onnxruntime + numpy"),
                    ("rtf_torch_export", "exported: torch.export programs + numpy")):
        print(f"| {name} | {summary[k]:.3f} | {summary['rtf_torch_fp32'] / summary[k]:.2f}x |")
    print(f"largest |onnx - torch| with the same noise draws: {summary['max_abs_diff']:.2e}; "
          f"|torch.export - torch|: {summary['max_abs_diff_torch_export']:.2e}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine, "threads": args.threads,
                                        "model": args.model, "auto": auto.precision,
                                        "command": " ".join(["python", *sys.argv]),
                                        "summary": summary, "clips": rows}, indent=1))


if __name__ == "__main__":
    main()
