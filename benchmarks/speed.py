"""Speed of wavediff on this machine: vocoding real-time factor and training throughput.

Measures DiffWave BASE (or LARGE) with random weights (speed does not depend on the
weights): the real-time factor (seconds of compute per second of audio; lower is faster) of
`Vocoder.decode` with the 6-step fast sampler for several audio lengths, the median of
several runs after a warm-up; and training steps and samples per second for a batch and crop.
Writes JSON to benchmarks/results/<machine>.json and prints a table.

    python benchmarks/speed.py                      # BASE, 1 s and 5 s, batch 16 x 16000 training
    python benchmarks/speed.py --seconds 1 10 60 --train-steps 5 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from wavediff.config import Config, large_config
from wavediff.diffusion import GaussianDiffusion
from wavediff.model import DiffWave, count_parameters
from wavediff.vocoder import Vocoder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def vocode_rtf(vocoder: Vocoder, seconds: float, runs: int, batch: int = 1) -> float:
    cfg = vocoder.config.audio
    frames = int(round(seconds * cfg.sample_rate / cfg.hop_length))
    mel = torch.randn(batch, cfg.n_mels, frames) - 5.0
    vocoder.decode(mel[..., : min(frames, 20)], seed=0)  # warm-up
    times = []
    for i in range(runs):
        _sync(vocoder.device)
        t0 = time.perf_counter()
        vocoder.decode(mel, seed=i)
        _sync(vocoder.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / (batch * frames * cfg.hop_length / cfg.sample_rate)


def train_speed(config: Config, device: torch.device, steps: int) -> tuple[float, float]:
    model = DiffWave.from_config(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    diffusion = GaussianDiffusion.from_config(config.diffusion)
    b, hop = config.train.batch_size, config.audio.hop_length
    frames = config.train.crop_samples // hop
    wave = torch.randn(b, frames * hop, device=device).clamp(-1, 1) * 0.3
    mel = torch.randn(b, config.audio.n_mels, frames, device=device) - 5
    gen = torch.Generator(device).manual_seed(0)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        diffusion.loss(model, wave, mel, generator=gen).backward()
        opt.step()

    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    sps = steps / (time.perf_counter() - t0)
    return sps, sps * b * frames * hop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("base", "large"), default="base")
    p.add_argument("--seconds", type=float, nargs="+", default=[1.0, 5.0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<machine>.json)")
    args = p.parse_args()

    device = torch.device(args.device)
    config = Config() if args.model == "base" else large_config()
    model = DiffWave.from_config(config)
    torch.nn.init.normal_(model.output_projection.weight, std=0.01)
    vocoder = Vocoder(model, config, device)
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    result = {"machine": machine, "torch": torch.__version__, "model": args.model,
              "parameters": count_parameters(model), "sampler": "fast, 6 steps", "rtf": {}}
    print(f"{args.model.upper()} ({result['parameters'] / 1e6:.2f}M parameters) on {machine}")
    for s in args.seconds:
        rtf = vocode_rtf(vocoder, s, args.runs)
        result["rtf"][f"{s:g}s"] = rtf
        print(f"  vocode {s:>5g} s of audio: real-time factor {rtf:.3f} ({1 / rtf:.2f}x real time)")
    if args.train_steps:
        sps, samples = train_speed(config, device, args.train_steps)
        result["train"] = {"batch": config.train.batch_size, "crop": config.train.crop_samples,
                           "steps_per_s": sps, "samples_per_s": samples}
        print(f"  train batch {config.train.batch_size} x {config.train.crop_samples}: "
              f"{sps:.3f} steps/s, {samples:,.0f} samples/s")
    out = Path(args.out or Path(__file__).parent / "results" /
               f"{platform.node() or 'machine'}-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
