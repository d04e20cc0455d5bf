"""Streaming against whole decoding, side by side on this machine, in one run.

A long utterance (the mels of the dev clips of an scp, end to end, cut to --seconds) is
fed to the streaming decoder in --chunk-frames chunks as fast as they are taken (a TTS
model ahead of real time), and decoded whole with the same model, options and seed.
Reported for each case:

* first audio: wall seconds of the push() call that returned the first audio (the
  computation left once the lookahead's worth of mel has arrived), and from the first
  chunk to the first audio (all the work before it, with every chunk there at once);
* piece latency: the median and largest wall seconds of the push() calls that returned
  audio (chunk to chunk);
* sustained real-time factor: wall seconds of the whole stream over seconds of audio;
* peak memory: the case's process maximum RSS less its RSS before decoding (each case
  runs in a fresh subprocess);
* max |streamed - whole|, and the log-mel L1 between them (for shortened lookaheads).

The exported ONNX decoder (onnxruntime + numpy, `wavediff export --format onnx`) is
measured the same way, whole and streamed, against its own whole decode.

    python benchmarks/streaming.py --wav-scp recipes/joe/data/dev/wav.scp \\
        --out benchmarks/results/streaming-<machine>.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def feed(dec, mel, k: int, out: dict, base: float) -> list:
    """Push ``mel`` into a streaming decoder (torch's or the exported one) ``k`` frames at a
    time, then finish; the pieces, with the timings and peak memory in ``out``."""
    pieces, calls, first_total = [], [], None
    t0 = time.perf_counter()
    for i in range(0, mel.shape[-1] + k, k):
        t = time.perf_counter()
        piece = dec.push(mel[:, i:i + k]) if i < mel.shape[-1] else dec.finish()
        if len(piece):
            calls.append(time.perf_counter() - t)
            pieces.append(piece)
            if first_total is None:
                first_total = time.perf_counter() - t0
    out["wall"] = time.perf_counter() - t0
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    out["first_push_s"], out["first_total_s"] = calls[0], first_total
    out["piece_median_s"] = statistics.median(calls[1:-1] or calls)
    out["piece_max_s"] = max(calls[1:-1] or calls)
    return pieces


def long_mel(voc, scp: Path, seconds: float):
    import torch

    from wavediff.audio.io import load_audio

    mels, frames = [], int(seconds * voc.sample_rate / voc.hop_length)
    lines = [line.split(maxsplit=1) for line in scp.read_text().splitlines() if line.strip()]
    while sum(m.shape[-1] for m in mels) < frames:
        for _, path in lines:
            wav, _ = load_audio(path, voc.sample_rate)
            mels.append(voc.mel(torch.as_tensor(wav)))
    return torch.cat(mels, dim=-1)[:, :frames]


def case(args) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from wavediff.vocoder import Vocoder

    torch.set_num_threads(args.threads)
    voc = Vocoder.from_pretrained(args.model, precision=args.precision)
    mel = long_mel(voc, args.wav_scp, args.seconds)
    voc.decode(mel[:, :50], seed=0, input_preset=None)  # warm-up: precision, threads
    seconds = mel.shape[-1] * voc.hop_length / voc.sample_rate
    base = rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"case": args.case, "seconds": seconds, "precision": voc.precision}
    if args.case.startswith("onnx"):
        return onnx_case(args, voc, mel, seconds, out)
    if args.case == "whole":
        t = time.perf_counter()
        wav = voc.decode(mel, seed=0, input_preset=None)
        out["wall"] = time.perf_counter() - t
        torch.save(wav, args.tmp / "whole.pt")
    else:
        lookahead = None if args.lookahead_ms is None else int(
            args.lookahead_ms * voc.sample_rate / 1000)
        block = None if args.block_frames is None else args.block_frames * voc.hop_length
        dec = voc.streaming_decoder(seed=0, lookahead=lookahead, block=block)
        out["lookahead_s"] = dec.lookahead / voc.sample_rate
        out["lookahead_exact_s"] = dec.lookahead_exact / voc.sample_rate
        pieces = feed(dec, mel, args.chunk_frames, out, base)
        wav = torch.cat(pieces)[None]
        whole = torch.load(args.tmp / "whole.pt")
        out["max_abs_diff"] = float((wav - whole).abs().max())
        fn = voc.mel
        out["log_mel_l1_to_whole"] = float((fn(wav) - fn(whole)).abs().mean())
    out["rtf"] = out["wall"] / seconds
    if "peak_mb" not in out:  # the whole decode: measured after it
        out["peak_mb"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                             peak_before) - base
    return out


def onnx_case(args, voc, mel, seconds: float, out: dict) -> dict:
    """The exported decoder (onnxruntime + numpy): whole, or streamed and compared with
    its own whole decode of the same seed."""
    import numpy as np

    from wavediff.inference.onnx_export import export_onnx
    from wavediff.onnx_decoder import OnnxVocoder

    folder = args.tmp / "onnx"
    if not folder.exists():
        export_onnx(voc, folder)
    onnx = OnnxVocoder(folder, threads=args.threads)
    mel = mel.numpy()
    onnx.decode(mel[:, :50], seed=0)  # warm-up
    base = rss_mb()
    if args.case == "onnx whole":
        t = time.perf_counter()
        wav = onnx.decode(mel, seed=0)
        out["wall"] = time.perf_counter() - t
        np.save(args.tmp / "onnx_whole.npy", wav)
    else:
        dec = onnx.streaming_decoder(seed=0)
        out["lookahead_s"] = out["lookahead_exact_s"] = dec.lookahead / voc.sample_rate
        pieces = feed(dec, mel, args.chunk_frames, out, base)
        wav = np.concatenate(pieces)
        whole = np.load(args.tmp / "onnx_whole.npy")
        out["max_abs_diff"] = float(np.abs(wav - whole).max())
        fn = voc.mel
        out["log_mel_l1_to_whole"] = float((fn(wav) - fn(whole)).abs().mean())
    out["rtf"] = out["wall"] / seconds
    out.setdefault("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    return out


CASES = [  # name, extra options
    ("whole", []),
    ("stream", []),  # the default: blocks of 16 frames
    ("stream, block 1 frame", ["--block-frames", "1"]),
    ("stream, block 64 frames", ["--block-frames", "64"]),
    ("stream, lookahead 500 ms", ["--lookahead-ms", "500"]),
    ("stream, lookahead 250 ms", ["--lookahead-ms", "250"]),
    ("onnx whole", []),
    ("onnx stream", []),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wav-scp", type=Path, required=True)
    p.add_argument("--model", default="joe")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--short-seconds", type=float, default=15.0,
                   help="a shorter utterance too: streaming memory must not grow with length")
    p.add_argument("--chunk-frames", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", default=None,
                   help="comma-separated case names to run (e.g. 'whole,onnx whole,onnx "
                        "stream'); default: all, and the short utterance's whole and stream")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--block-frames", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--lookahead-ms", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tmp", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args)))
        return
    import tempfile

    from wavediff.hardware import machine_summary

    tmp = Path(tempfile.mkdtemp())
    common = ["--wav-scp", str(args.wav_scp), "--model", args.model, "--chunk-frames",
              str(args.chunk_frames), "--threads", str(args.threads), "--precision",
              args.precision, "--tmp", str(tmp)]
    rows = []
    # each length's whole decode first: the streamed cases after it compare with it
    runs = [(name, opts, args.seconds) for name, opts in CASES]
    runs += [(f"{name}, {args.short_seconds:g} s utterance", opts, args.short_seconds)
             for name, opts in CASES[:2]]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        unknown = set(wanted) - {name for name, _ in CASES}
        if unknown:
            sys.exit(f"--only: unknown case(s) {sorted(unknown)}; the cases: "
                     f"{', '.join(name for name, _ in CASES)}")
        runs = [r for r in runs if r[0] in wanted]
    for name, opts, seconds in runs:
        case_name = name.split(",")[0]
        r = subprocess.run([sys.executable, __file__, "--case", case_name,
                            "--seconds", str(seconds), *common, *opts],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{name} failed:\n{r.stderr[-2000:]}")
        row = json.loads(r.stdout.strip().splitlines()[-1])
        row["name"] = name
        rows.append(row)
        print(json.dumps(row), flush=True)
    machine = machine_summary()
    print(f"\nmachine: {machine['cpu']}, {args.threads} threads; model {args.model}, "
          f"precision {rows[0]['precision']}; {args.chunk_frames}-frame chunks")
    print("| decode | lookahead (s) | first audio: last push (s) | first audio: from start (s) "
          "| piece latency median / max (s) | RTF | peak memory (MB) | max abs diff to whole "
          "| log-mel L1 to whole |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["case"] in ("whole", "onnx whole"):
            print(f"| {r['name']} ({r['seconds']:.0f} s) | – | – | – | – | {r['rtf']:.2f} | "
                  f"{r['peak_mb']:.0f} | – | – |")
        else:
            print(f"| {r['name']} | {r['lookahead_s']:.2f} | {r['first_push_s']:.3f} | "
                  f"{r['first_total_s']:.2f} | {r['piece_median_s']:.3f} / "
                  f"{r['piece_max_s']:.3f} | {r['rtf']:.2f} | {r['peak_mb']:.0f} | "
                  f"{r['max_abs_diff']:.1e} | {r['log_mel_l1_to_whole']:.4f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine, "threads": args.threads,
                                        "model": args.model,
                                        "command": " ".join(["python", *sys.argv]),
                                        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
