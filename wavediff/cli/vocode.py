"""Turn mel files into audio with a trained model (audio files: copy-synthesis).

Each INPUT is a mel file (.npy or .pt; (n_mels, T), (1, n_mels, T) or (T, n_mels)), an
audio file (wav, flac, ...: its mel is computed and decoded back, to hear the vocoder's
ceiling), or a directory of them; --scp reads '<utt_id> <path>' lines. Every output is
<name>.wav at the model's sample rate, written atomically. A file that fails is reported
on one line and the others are still written; the exit status is 1 if any failed.
Mels must be in the model's convention (its mel preset, see `--help` of preprocess).

examples:
  wavediff vocode --checkpoint exp/diffwave --outdir out/ tts_mels/
  wavediff vocode --checkpoint exp/diffwave/checkpoint-1000000steps.pt --outdir out/ \
      --steps 6 --seed 0 --scp dump/eval/feats.scp
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from wavediff.cli.preprocess import AUDIO_SUFFIXES

log = logging.getLogger("wavediff.vocode")
MEL_SUFFIXES = (".npy", ".pt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="mel/audio files or directories")
    p.add_argument("--scp", help="'<utt_id> <path>' list of inputs")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or experiment directory")
    p.add_argument("--outdir", required=True, help="directory for the .wav outputs")
    p.add_argument("--steps", type=int, default=None,
                   help="inference steps (default: the model's schedule, 6 for the fast sampler)")
    p.add_argument("--sampler", choices=("fast", "ddim", "ddpm"), default=None,
                   help="default: the model's (fast)")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: random)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="mels decoded together (sorted by length to limit padding)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--resample", action="store_true",
                   help="resample copy-synthesis audio whose rate differs from the model's")


def collect(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """``(name, path)`` of every input; missing paths are kept and fail when read."""
    from wavediff.cli.common import read_scp
    from wavediff.errors import WavediffError

    items: list[tuple[str, Path]] = []
    if args.scp:
        items += [(utt, Path(p)) for utt, p in read_scp(args.scp)]
    for raw in args.inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.suffix.lower() in MEL_SUFFIXES + AUDIO_SUFFIXES)
            if not found:
                log.warning("%s holds no mel or audio files", p)
            items += [(f.stem, f) for f in found]
        else:
            items.append((p.stem, p))
    if not items:
        raise WavediffError("no inputs: give mel/audio files, directories, or --scp")
    names = [n for n, _ in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise WavediffError(f"several inputs would write the same output: {', '.join(dupes[:5])}")
    return items


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from wavediff.audio.formats import read_mel
    from wavediff.audio.io import load_audio, save_audio
    from wavediff.cli.common import pick_device, report_failures
    from wavediff.errors import WavediffError
    from wavediff.vocoder import Vocoder

    if args.batch_size < 1:
        raise WavediffError("--batch-size must be at least 1")
    items = collect(args)
    voc = Vocoder.from_pretrained(args.checkpoint, device=pick_device(args.device),
                                  use_ema=not args.no_ema)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    log.info("model: step %s, %s mel (%d bins, hop %d, %d Hz), sampler %s", voc.step,
             voc.preset.preset, voc.n_mels, voc.hop_length, voc.sample_rate,
             args.sampler or voc.config.diffusion.sampler)

    failures: list[tuple[str, str]] = []
    jobs = []  # (name, mel (n_mels, F), original length or None)
    for name, path in items:
        try:
            out = outdir / f"{name}.wav"
            if path.exists() and out.resolve() == path.resolve():
                raise WavediffError(f"{path}: the output would overwrite the input; use another --outdir")
            if path.suffix.lower() in AUDIO_SUFFIXES:
                wav, _ = load_audio(path, voc.sample_rate, resample=args.resample)
                mel = voc.mel(torch.from_numpy(wav)).cpu().numpy()
                jobs.append((name, mel, len(wav)))
            else:
                jobs.append((name, read_mel(path, voc.n_mels), None))
        except WavediffError as e:
            failures.append((name, str(e)))

    jobs.sort(key=lambda j: j[1].shape[-1])
    batches = [jobs[i:i + args.batch_size] for i in range(0, len(jobs), args.batch_size)]
    generator = torch.Generator(voc.device)
    if args.seed is None:
        generator.seed()
    else:
        generator.manual_seed(args.seed)
    audio_seconds, written, t0 = 0.0, 0, time.perf_counter()
    with tqdm(total=len(jobs), desc="vocode", unit="file", disable=args.quiet) as bar:
        for batch in batches:
            try:
                wavs = voc.decode_batch([m for _, m, _ in batch], steps=args.steps,
                                        sampler=args.sampler, generator=generator)
            except WavediffError as e:
                failures += [(name, f"{name}: {e}") for name, _, _ in batch]
                bar.update(len(batch))
                continue
            for (name, _, length), wav in zip(batch, wavs):
                if length is not None:
                    wav = torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))[:length]
                try:
                    save_audio(outdir / f"{name}.wav", wav.cpu().numpy(), voc.sample_rate)
                    audio_seconds += wav.shape[-1] / voc.sample_rate
                    written += 1
                except WavediffError as e:
                    failures.append((name, str(e)))
                bar.update(1)
    elapsed = time.perf_counter() - t0
    if audio_seconds:
        log.info("wrote %d files to %s: %.1f s of audio in %.1f s (real-time factor %.3f)",
                 written, outdir, audio_seconds, elapsed, elapsed / audio_seconds)
    return report_failures(failures, len(items), "inputs")
