"""wavediff against lmnt's diffwave 0.1.7, side by side on this machine.

Both run DiffWave BASE with the same random weights (lmnt's network, converted with
wavediff's lmnt importer) and the same 6-step fast schedule (lmnt's
``inference_noise_schedule``). For each case it reports:

* vocoding: the real-time factor (compute seconds per second of audio, lower is faster;
  the median of ``--runs`` runs after a warm-up) and the peak memory (the case's process
  max RSS minus its RSS before decoding; on GPU ``torch.cuda.max_memory_allocated``) for
  1 s, 10 s and 60 s of audio at batch 1 and for a batch of 16 one-second mels;
* training: samples per second of a training step (forward, L1 loss, backward, Adam)
  at the same batch and crop (16 x 16000 samples by default).

Every case runs in a fresh subprocess, so peak memory belongs to that case alone. lmnt at
long lengths is slow (minutes per run on a small CPU): it runs once there and not at all
beyond ``--lmnt-max-seconds`` (said so in the table). Prints a table with the
wavediff/lmnt ratios and writes benchmarks/results/<machine>.json.

    python benchmarks/speed.py                       # full CPU run (about 15 min on 2 cores)
    python benchmarks/speed.py --quick               # 1 s and a batch of 4, one run each
    python benchmarks/speed.py --device cuda --precision bf16 --cuda-graphs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from wavediff.precision import PRECISIONS

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 0


# ---------------------------------------------------------------------- the two systems
def lmnt_checkpoint(path: Path) -> Path:
    """A random lmnt BASE checkpoint (output layer non-zero), written once to ``path``."""
    import torch
    from diffwave.model import DiffWave as LmntDiffWave
    from diffwave.params import AttrDict, params

    if not path.exists():
        torch.manual_seed(SEED)
        model = LmntDiffWave(AttrDict(params))
        with torch.no_grad():
            model.output_projection.weight.normal_(0.0, 0.01)
        torch.save({"step": 0, "model": model.state_dict(), "params": dict(params)}, path)
    return path


def load_systems(ckpt: Path, device: str, which: str, args: argparse.Namespace):
    import torch

    if which == "lmnt":
        from diffwave.model import DiffWave as LmntDiffWave
        from diffwave.params import AttrDict, params

        model = LmntDiffWave(AttrDict(params)).to(device)
        model.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True)["model"])
        return model.eval()
    from wavediff.model import build_model
    from wavediff.importers.lmnt import convert_lmnt_state, read_lmnt_checkpoint
    from wavediff.vocoder import Vocoder

    config, weights = convert_lmnt_state(read_lmnt_checkpoint(ckpt))
    model = build_model(config)
    model.load_state_dict(weights)
    if args.case_kind == "train":
        return model.to(device), config
    return Vocoder(model, config, device, precision=args.precision,
                   cuda_graphs=args.cuda_graphs, chunk_seconds=args.chunk_seconds or None)


def lmnt_decode(mel, ckpt: Path, device: str):
    """lmnt's own fast sampling (diffwave.inference.predict)."""
    import torch
    from diffwave.inference import predict

    audio, _ = predict(mel, model_dir=str(ckpt), device=torch.device(device), fast_sampling=True)
    return audio


# ---------------------------------------------------------------------- one case
def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rss_mb() -> float:
    """The current resident set size in MiB (Linux /proc; max RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in this process; returns its figures."""
    import torch

    torch.manual_seed(SEED)
    device = args.device
    if args.system == "wavediff" and not args.default_allocator:  # as `wavediff` does
        from wavediff.hardware import keep_freed_memory

        keep_freed_memory()
    system = load_systems(Path(args.ckpt), device, args.system, args)
    if args.case_kind == "train":
        return train_case(system, args)
    frames = int(round(args.seconds * 22050 / 256))
    mel = torch.rand(args.batch, 80, frames, generator=torch.Generator().manual_seed(1))
    warm = mel[:1, :, : min(frames, 87)]  # one item, at most 1 s

    def decode(m):
        if args.system == "lmnt":
            return lmnt_decode(m, Path(args.ckpt), device)
        return system.decode(m.to(device), seed=0)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base_rss = rss_mb()
    with torch.inference_mode():
        decode(warm)
        sync(device)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            decode(mel)
            sync(device)
            times.append(time.perf_counter() - t0)
    audio_seconds = args.batch * frames * 256 / 22050
    out = {"rtf": statistics.median(times) / audio_seconds, "runs": len(times),
           "peak_mb": peak_rss_mb() - base_rss}
    if args.system == "wavediff":
        out["precision"] = system.precision
    if device.startswith("cuda"):
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def train_case(system, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device, b, crop = args.device, args.batch, args.crop
    frames = crop // 256
    audio = (torch.rand(b, frames * 256, device=device) * 2 - 1) * 0.5
    mel = torch.rand(b, 80, frames, device=device)
    if args.system == "lmnt":
        from diffwave.learner import DiffWaveLearner
        from diffwave.params import AttrDict, params

        model = system
        opt = torch.optim.Adam(model.parameters(), lr=2e-4)
        learner = DiffWaveLearner(tempfile.mkdtemp(), model, None, opt, AttrDict(params),
                                  fp16=args.precision == "fp16")

        def step():
            learner.train_step({"audio": audio, "spectrogram": mel})
    else:
        from wavediff.diffusion import GaussianDiffusion

        from wavediff.hardware import resolve_precision

        model, config = system
        diffusion = GaussianDiffusion.from_config(config.diffusion)
        opt = torch.optim.Adam(model.parameters(), lr=2e-4)
        gen = torch.Generator(device).manual_seed(0)
        amp, _ = resolve_precision(args.train_precision, device)  # as train.amp does

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.split(":")[0], dtype=amp or torch.float32,
                                enabled=amp is not None):
                loss = diffusion.loss(model, audio, mel, generator=gen)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    model.train()
    step()
    sync(device)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    out = {"samples_per_s": b * frames * 256 / statistics.median(times), "runs": len(times)}
    if args.system == "wavediff":
        out["precision"] = {None: "fp32"}.get(amp, str(amp).replace("torch.", ""))
    return out


# ---------------------------------------------------------------------- the plan
def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The cases: (system, kind, seconds, batch, runs)."""
    if args.quick:
        vocode = [(1.0, 1), (1.0, 4)]
    else:
        vocode = [(float(x), 1) for x in args.lengths.split(",") if x.strip()]
        if args.batch_case:
            vocode.append((1.0, args.batch_case))
    cases = []
    for seconds, batch in vocode:
        long = seconds * batch > 5
        for system in ("wavediff", "lmnt"):
            if system == "lmnt" and (args.no_lmnt or seconds > args.lmnt_max_seconds):
                cases.append({"system": system, "kind": "vocode", "seconds": seconds,
                              "batch": batch, "skipped": True})
                continue
            runs = 1 if args.quick else (1 if long and (system == "lmnt" or seconds >= 30)
                                         else args.runs)
            cases.append({"system": system, "kind": "vocode", "seconds": seconds,
                          "batch": batch, "runs": runs})
    if args.train_batch:
        for precision in args.train_precisions.split(","):
            cases.append({"system": "wavediff", "kind": "train", "batch": args.train_batch,
                          "crop": args.train_crop, "runs": args.train_runs,
                          "train_precision": precision})
        if args.allocator_case:  # the same step with glibc's default malloc thresholds
            cases.append({"system": "wavediff", "kind": "train", "batch": args.train_batch,
                          "crop": args.train_crop, "runs": args.train_runs,
                          "train_precision": "fp32", "default_allocator": True})
        if not args.no_lmnt:
            cases.append({"system": "lmnt", "kind": "train", "batch": args.train_batch,
                          "crop": args.train_crop, "runs": args.train_runs})
    return cases


def spawn(case: dict[str, Any], args: argparse.Namespace, ckpt: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_case", "--system", case["system"],
           "--device", args.device, "--ckpt", str(ckpt), "--runs", str(case["runs"]),
           "--batch", str(case["batch"]), "--case-kind", case["kind"],
           "--chunk-seconds", str(args.chunk_seconds)]
    if case["kind"] == "vocode":
        cmd += ["--seconds", str(case["seconds"])]
    else:
        cmd += ["--crop", str(case["crop"])]
        if case.get("train_precision"):
            cmd += ["--train-precision", case["train_precision"]]
        if case.get("default_allocator"):
            cmd += ["--default-allocator"]
    cmd += ["--precision", args.precision]
    if args.cuda_graphs:
        cmd += ["--cuda-graphs"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def machine_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| case | wavediff | lmnt | wavediff/lmnt |", "|---|---|---|---|"]
    by = {}
    for r in results:
        key = (r["kind"], r.get("seconds"), r["batch"],
               (r.get("train_precision") or "") + (", default malloc" if r.get("default_allocator")
                                                   else "") or None)
        by.setdefault(key, {})[r["system"]] = r
    lmnt_train = next((r for r in results if r["kind"] == "train" and r["system"] == "lmnt"), {})
    for (kind, _, _, precision), pair in by.items():
        if kind == "train" and precision and "lmnt" not in pair:
            pair["lmnt"] = lmnt_train
    for (kind, seconds, batch, precision), pair in by.items():
        if kind == "train" and not precision:
            continue  # lmnt's row: shown beside each wavediff precision
        w, l = pair.get("wavediff", {}), pair.get("lmnt", {})
        if kind == "vocode":
            name = f"vocode {seconds:g} s x {batch}"

            def fmt(r):
                if r.get("skipped"):
                    return "skipped"
                if "error" in r:
                    return f"error: {r['error'][:40]}"
                prec = f" ({r['precision']})" if r.get("precision") else ""
                return f"RTF {r['rtf']:.3f}, {r['peak_mb']:.0f} MB{prec}"

            ratio = ""
            if "rtf" in w and "rtf" in l:
                ratio = (f"{l['rtf'] / w['rtf']:.2f}x faster, "
                         f"{w['peak_mb'] / max(l['peak_mb'], 1e-9):.2f}x memory")
        else:
            name = (f"train {batch} x {pair['wavediff']['crop'] if 'wavediff' in pair else ''}"
                    f", train.amp {precision}")

            def fmt(r):
                if not r:
                    return "skipped"
                if "error" in r:
                    return f"error: {r['error'][:40]}"
                prec = f" ({r['precision']})" if r.get("precision") else ""
                return f"{r['samples_per_s']:,.0f} samples/s{prec}"

            ratio = (f"{w['samples_per_s'] / l['samples_per_s']:.2f}x"
                     if "samples_per_s" in w and "samples_per_s" in l else "")
        rows.append(f"| {name} | {fmt(w)} | {fmt(l)} | {ratio} |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quick", action="store_true", help="1 s and a batch of 4, one run each")
    p.add_argument("--runs", type=int, default=3, help="timed runs per short case (median)")
    p.add_argument("--lengths", default="1,10,60", help="seconds of the batch-1 vocode cases")
    p.add_argument("--batch-case", type=int, default=16,
                   help="batch size of the 1 s batch case (0: none)")
    p.add_argument("--lmnt-max-seconds", type=float, default=10.0,
                   help="skip lmnt beyond this length (default 10: lmnt at 60 s takes many "
                        "minutes on a small CPU)")
    p.add_argument("--no-lmnt", action="store_true", help="wavediff only")
    p.add_argument("--train-batch", type=int, default=16, help="0: no training case")
    p.add_argument("--train-crop", type=int, default=16000)
    p.add_argument("--train-runs", type=int, default=2, help="timed training steps (median)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="wavediff decoding precision (default auto, as wavediff vocode)")
    p.add_argument("--train-precisions", default="auto,fp32,bf16",
                   help="train.amp values of the wavediff training cases (comma list)")
    p.add_argument("--train-precision", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--allocator-case", action="store_true",
                   help="also time the fp32 training step with glibc's default malloc settings")
    p.add_argument("--default-allocator", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--chunk-seconds", type=float, default=4.0)
    p.add_argument("--out", default=None, help="JSON path (default results/<machine>.json)")
    # one case, in a subprocess
    p.add_argument("--_case", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--crop", type=int, help=argparse.SUPPRESS)
    p.add_argument("--case-kind", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args._case:
        print(json.dumps(run_case(args)))
        return 0

    cases = plan(args)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = lmnt_checkpoint(Path(tmp) / "lmnt_base.pt")
        for case in cases:
            label = (f"{case['system']} {case['kind']} "
                     + (f"{case['seconds']:g} s x {case['batch']}" if case["kind"] == "vocode"
                        else f"{case['batch']} x {case['crop']}"))
            if case.get("skipped"):
                print(f"{label}: skipped (longer than --lmnt-max-seconds)", flush=True)
                results.append(case)
                continue
            t0 = time.perf_counter()
            figures = spawn(case, args, ckpt)
            print(f"{label}: {figures} ({time.perf_counter() - t0:.0f} s)", flush=True)
            results.append({**case, **figures})
    from wavediff.hardware import machine_summary

    machine = machine_name(args.device)
    report = {"machine": machine, "machine_facts": machine_summary(), "device": args.device,
              "torch": torch.__version__,
              "threads": torch.get_num_threads(), "model": "DiffWave BASE (2.64M parameters)",
              "sampler": "fast, 6 steps (lmnt inference_noise_schedule)",
              "precision": args.precision, "cuda_graphs": args.cuda_graphs,
              "chunk_seconds": args.chunk_seconds,
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "cases": results}
    text = table(results)
    facts = report["machine_facts"]
    print(f"\n{machine}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU flags: {' '.join(facts['cpu_flags']) or 'none of note'}, native bf16: "
          f"{facts['native_bf16']}\n")
    print(text)
    slug = "".join(c if c.isalnum() else "-" for c in machine.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    out = Path(args.out) if args.out else RESULTS / f"{slug}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps({**report, "table": text}, indent=2))
    os.replace(tmp_out, out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
