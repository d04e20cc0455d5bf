"""Turn mel files into audio with a trained model (audio files: copy-synthesis).

Each INPUT is a mel file (formats and conventions below), an
audio file (wav, flac, ...: its mel is computed and decoded back, to hear the vocoder's
ceiling), or a directory of them; --scp reads '<utt_id> <path>' lines. Every output is
<name>.wav at the model's sample rate, written atomically. A file that fails is reported
on one line and the others are still written; the exit status is 1 if any failed.
With --seed, each file's noise derives from the seed and its name (with --batch-size 1),
so its audio does not depend on the other inputs or on the number of processes.
Under torchrun the inputs are shared out across the processes (one per GPU), each writing
its own outputs; rank 0 prints the failures of all of them.
Mel files: .npy, .npz, .pt (tensors only), .h5 (dataset 'feats'), in the layouts
(n_mels, T), (1, n_mels, T) or (T, n_mels); scp lines may name '<id> <file.h5:feats>'.
--input-preset auto (the default) decides each file's layout and mel convention (HiFi-GAN,
Tacotron 2, Matcha, ESPnet, lmnt DiffWave, Coqui, Vocos) from its values, logs the decision
with the evidence, and converts it to the model's convention: exactly where conventions
differ by log base, scaling or normalisation, approximately (with the expected error
logged) where the frame grid (padding) or the filterbank differs. Ambiguous files are
refused with the candidates; a file that states another sample rate or hop is refused.
Normalised ESPnet/ParallelWaveGAN features need --stats (a stats.h5 or stats.npy beside
the files is used when the values show per-bin normalisation).

examples:
  wavediff vocode --outdir out/ tts_mels/          # the shipped model 'joe'
  wavediff vocode --checkpoint exp/diffwave --outdir out/ tts_mels/
  wavediff vocode --checkpoint exp/diffwave/checkpoint-1000000steps.pt --outdir out/ \\
      --steps 6 --seed 0 --scp dump/eval/feats.scp
  wavediff vocode --checkpoint exp/diffwave --outdir out/ --input-preset espnet \\
      --stats dump/train/stats.h5 --scp espnet_feats.scp
  torchrun --nproc_per_node 4 -m wavediff vocode --checkpoint exp/diffwave --outdir out/ \\
      --seed 0 --scp dump/eval/feats.scp
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Optional

from wavediff.audio.formats import MEL_SUFFIXES
from wavediff.audio.io import AUDIO_SUFFIXES
from wavediff.config import GL_INITS, SAMPLER_NAMES
from wavediff.precision import PRECISIONS, canonical

log = logging.getLogger("wavediff.vocode")
STATS_NAMES = ("stats.h5", "stats.npy", "feats_stats.npz")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="mel/audio files or directories")
    p.add_argument("--scp", help="'<utt_id> <path>' list of inputs")
    p.add_argument("--checkpoint", default=None,
                   help="a shipped model's name (see wavediff models), a pretrained folder, a "
                        "checkpoint file or an experiment directory (default: the shipped "
                        "model 'joe')")
    p.add_argument("--outdir", required=True, help="directory for the .wav outputs")
    p.add_argument("--name-suffix", default="", metavar="SUFFIX",
                   help="appended to each output name: <name><SUFFIX>.wav (e.g. _gen, as "
                        "ParallelWaveGAN writes; wavediff evaluate pairs both)")
    p.add_argument("--steps", type=int, default=None,
                   help="inference steps (default: the model's schedule, 6 for the fast "
                        "sampler); 0: no network, Griffin-Lim alone (--consistency "
                        "projections of noise, default 32), the no-network baseline")
    p.add_argument("--schedule", default=None,
                   help="a fast schedule stored with the model by name (wavediff "
                        "tune-schedule), e.g. searched-4; replaces --steps")
    p.add_argument("--consistency", type=int, default=None, metavar="N",
                   help="Griffin-Lim projections of each step's clean estimate onto the mel's "
                        "magnitudes (GLA-Grad); default: the model's "
                        "diffusion.consistency_iters, 0 = off")
    p.add_argument("--gl-init", choices=GL_INITS, default=None,
                   help="where Griffin-Lim (alone with --steps 0, or the chain's start or "
                        "conditioning) takes its first phase: noise from the seed, or "
                        "phase-vocoder (a phase-locked vocoder's phase of the mel's "
                        "magnitudes: voiced speech stays periodic); default: the model's "
                        "diffusion.gl_init")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=None,
                   help="default: the model's (fast)")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: random)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="mels decoded together (sorted by length to limit padding)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--chunk-seconds", type=float, default=4.0,
                   help="decode longer mels in chunks of this length, memory bounded by the "
                        "chunk, same audio (default: 4; 0: never)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="decoding precision (default: auto: bf16 on GPUs with bf16, float32 on "
                        "CPUs, where bf16 costs MCD above the mel's fmax; bf16 to trade that for "
                        "speed; fp16: CUDA only)")
    p.add_argument("--autocast", choices=("none", "bf16", "fp16"), default=None,
                   help=argparse.SUPPRESS)  # the older spelling of --precision (deprecated)
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay each step from a CUDA graph (CUDA only)")
    p.add_argument("--resample", action="store_true",
                   help="resample copy-synthesis audio whose rate differs from the model's")
    from wavediff.audio.formats import LAYOUTS
    from wavediff.audio.presets import PRESET_NAMES

    p.add_argument("--input-preset", choices=("auto",) + PRESET_NAMES, default="auto",
                   help="mel convention of the input files (default: auto, detected per file "
                        "and converted to the model's)")
    p.add_argument("--input-layout", choices=LAYOUTS, default=None,
                   help="array layout of the input files (default: decided from the shape)")
    p.add_argument("--stats", default=None,
                   help="per-bin statistics the input features were normalised with "
                        "(stats.h5, stats.npy or ESPnet feats_stats.npz)")
    from wavediff.audio.formats import DEFAULT_MAX_FRAMES

    p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                   help="refuse mel files declaring more frames than this, before reading them "
                        f"(default {DEFAULT_MAX_FRAMES}, about an hour at hop 256 and 22.05 kHz)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="the rate the input mels were made at, for files that state none: "
                        "checked against the model's, and without --checkpoint it picks the "
                        "shipped model of that rate")
    p.add_argument("--to-mono", action="store_true",
                   help="average the channels of multi-channel copy-synthesis audio")


def collect(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """``(name, path)`` of every input; missing paths are kept and fail when read."""
    from wavediff._files import read_scp
    from wavediff.errors import WavediffError

    items: list[tuple[str, Path]] = []
    if args.scp:
        items += [(utt, Path(p)) for utt, p in read_scp(args.scp)]
    for raw in args.inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.suffix.lower() in MEL_SUFFIXES + AUDIO_SUFFIXES
                           and f.name not in STATS_NAMES)
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
    from wavediff import distributed as distrib

    check_options(args)
    all_items = collect(args)
    dist = distrib.init_distributed(args.device)
    try:
        return _decode(args, all_items, dist)
    finally:
        distrib.cleanup(dist)


def check_options(args: argparse.Namespace) -> None:
    """Refuse option values that cannot work, once and before anything is loaded."""
    import math

    from wavediff._files import unsafe_id
    from wavediff.errors import WavediffError

    if args.batch_size < 1:
        raise WavediffError("--batch-size must be at least 1")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise WavediffError(f"--seed must be an integer in 0..2**63-1, got {args.seed}")
    if args.chunk_seconds is not None and not (math.isfinite(args.chunk_seconds)
                                               and args.chunk_seconds >= 0):
        raise WavediffError(f"--chunk-seconds must be a number of seconds >= 0 (0: never "
                            f"chunk), got {args.chunk_seconds}")
    if args.steps is not None and args.steps < 0:
        raise WavediffError(f"--steps must be at least 1 (or 0: Griffin-Lim alone, no "
                            f"network), got {args.steps}")
    if args.steps == 0 and args.consistency == 0:
        raise WavediffError("--steps 0 decodes with Griffin-Lim alone and needs projections: "
                            "give --consistency 32 (or leave it out)")
    if args.consistency is not None and not 0 <= args.consistency <= 100:
        raise WavediffError(f"--consistency must be 0..100 projections per step, "
                            f"got {args.consistency}")
    if args.name_suffix and unsafe_id(f"x{args.name_suffix}"):
        raise WavediffError(f"--name-suffix {args.name_suffix!r} {unsafe_id('x' + args.name_suffix)}; "
                            f"use letters, digits, '-', '_' or '.'")


def _precision(args: argparse.Namespace) -> str:
    """--precision, or the deprecated --autocast when given (with a warning)."""
    if args.autocast is None:
        return args.precision
    log.warning("--autocast is deprecated; use --precision %s", canonical(args.autocast))
    return canonical(args.autocast)


def _decode(args: argparse.Namespace, all_items: list[tuple[str, Path]], dist: Any) -> int:
    """Decode this process's share of ``all_items``; returns the exit status."""
    import torch
    from tqdm import tqdm

    from wavediff.audio.io import save_audio
    from wavediff.cli.common import progress_wanted, report_failures
    from wavediff.diffusion.schedule import GRIFFIN_LIM
    from wavediff.errors import WavediffError
    from wavediff import distributed as distrib
    from wavediff.vocoder import Vocoder

    if not dist.is_main:  # rank 0 alone reports progress
        logging.getLogger("wavediff").setLevel(logging.WARNING)
    items = distrib.shard(all_items, dist)
    peeked: dict = {}  # mel files read to choose the model, not read again
    if args.checkpoint is None:
        from wavediff.pretrained import choose_model, model_info

        name, why = choose_model(_input_rate(args, items, peeked), resample=args.resample)
        card = model_info(name).card
        log.info("no --checkpoint: using the shipped model '%s'%s (%s): %s", name,
                 f" [{card['status']}]" if card.get("status") else "",
                 card.get("description", ""), why)
        args.checkpoint = name
    voc = Vocoder.from_pretrained(args.checkpoint, device=dist.device, use_ema=not args.no_ema,
                                  chunk_seconds=args.chunk_seconds or None,
                                  precision=_precision(args),
                                  cuda_graphs=args.cuda_graphs)
    # the schedule is checked here, once, before any file is read
    if args.schedule and args.sampler not in (None, "fast"):
        raise WavediffError(f"--schedule is a fast-sampler schedule; drop --sampler {args.sampler}")
    sampler = "fast" if args.schedule else (args.sampler or voc.config.diffusion.sampler)
    chosen = voc.plan(sampler, args.steps, args.schedule)
    n_steps = len(chosen.network_steps)
    consistency = voc.consistency_for(chosen, args.consistency)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    gl_init = voc.runner.gl_init(args.gl_init)
    if chosen.sampler == GRIFFIN_LIM:
        decoding = (f"no network: Griffin-Lim alone, {consistency} projections of "
                    + ("noise" if gl_init == "noise" else "the phase-vocoder phase"))
    else:
        decoding = f"sampler {sampler}, {n_steps} steps" + (
            f", {consistency} consistency projection(s) per step" if consistency else "")
        d, gl_cond = voc.config.diffusion, voc.config.model.gl_condition
        if d.start_iters or gl_cond:
            decoding += (f", the {d.start_iters or gl_cond}-projection Griffin-Lim "
                         f"{'start' if d.start_iters else 'conditioning'} from "
                         + ("noise" if gl_init == "noise" else "the phase-vocoder phase"))
    log.info("model: step %s, %s mel (%d bins, hop %d, %d Hz), %s", voc.step,
             voc.preset.preset, voc.n_mels, voc.hop_length, voc.sample_rate, decoding)

    jobs, failures, preparers = _read_inputs(args, items, voc, outdir, peeked)
    jobs.sort(key=lambda j: j[1].shape[-1])
    batches = [[jobs[i] for i in group]
               for group in voc.batches([mel for _, mel, _ in jobs], args.batch_size)]
    shared = torch.Generator(voc.device)  # without --seed: one random stream for all
    shared.seed()
    audio_seconds, written, t0 = 0.0, 0, time.perf_counter()
    timings: dict[str, tuple[float, float]] = {}  # name -> (audio seconds, decode seconds)
    with tqdm(total=len(jobs), desc="vocode", unit="file",
              disable=not progress_wanted(args.quiet) or not dist.is_main) as bar:
        for batch in batches:
            # --seed: each batch's noise from the seed and its first file's name, so a
            # file's audio depends neither on the order nor on the number of processes
            noise = ({"seed": distrib.file_seed(args.seed, batch[0][0])}
                     if args.seed is not None else {"generator": shared})
            t_batch = time.perf_counter()
            seconds = max(m.shape[-1] for _, m, _ in batch) * voc.hop_length / voc.sample_rate
            within = _progress_within(batch[0][0], seconds, bar=not bar.disable,
                                      quiet=args.quiet or not dist.is_main)
            try:
                wavs = voc.decode_batch([m for _, m, _ in batch], input_preset=None,
                                        steps=args.steps, sampler=args.sampler,
                                        schedule=args.schedule, consistency=consistency,
                                        progress=within, gl_init=gl_init, **noise)
            except WavediffError as e:
                failures += [(name, f"{name}: {e}") for name, _, _ in batch]
                bar.update(len(batch))
                continue
            finally:
                if within is not None:
                    within.close()
            if voc.device.type == "cuda":
                torch.cuda.synchronize(voc.device)
            t_batch = time.perf_counter() - t_batch
            batch_samples = sum(w.shape[-1] for w in wavs)
            for (name, _, length), wav in zip(batch, wavs):
                if length is not None:
                    wav = torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))[:length]
                try:
                    save_audio(outdir / f"{name}{args.name_suffix}.wav", wav.cpu().numpy(),
                               voc.sample_rate)
                    audio_seconds += wav.shape[-1] / voc.sample_rate
                    timings[name] = (wav.shape[-1] / voc.sample_rate,
                                     t_batch * wav.shape[-1] / max(batch_samples, 1))
                    written += 1
                except WavediffError as e:
                    failures.append((name, str(e)))
                bar.update(1)
    elapsed = time.perf_counter() - t0
    if timings:
        _write_decode_stats(outdir, timings, dist.rank if dist.enabled else None,
                            {"device": str(voc.device), "checkpoint_step": voc.step,
                             "sampler": args.sampler or voc.config.diffusion.sampler,
                             "steps": n_steps, "schedule": args.schedule,
                             "consistency": consistency, "gl_init": gl_init,
                             "batch_size": args.batch_size})
    if dist.enabled:
        gathered = distrib.gather_objects(dist, (failures, written, audio_seconds))
        failures = sorted((f for g in gathered for f in g[0]), key=lambda f: f[0])
        written = sum(g[1] for g in gathered)
        audio_seconds = sum(g[2] for g in gathered)
    if audio_seconds:
        log.info("wrote %d file%s to %s: %.1f s of audio in %.1f s (real-time factor %.3f%s)",
                 written, "" if written == 1 else "s", outdir, audio_seconds, elapsed, elapsed / audio_seconds,
                 f", {dist.world_size} processes" if dist.enabled else "")
    if not dist.is_main:
        return 1 if failures else 0
    summary = ", ".join(p.summary() for p in preparers if p.counts)
    if summary:
        log.info("input conventions: %s -> %s", summary, voc.preset.preset)
    return report_failures(failures, len(all_items), "inputs")


PEEK_INPUTS = 16  # inputs looked at to choose the shipped model


def _load_mel(args: argparse.Namespace, path: Path) -> Any:
    """A mel file as stored; --sample-rate is the rate of one that states none."""
    from wavediff.audio.formats import load_mel_file

    f = load_mel_file(path, max_frames=args.max_frames)
    if f.stated_rate is None and args.sample_rate:
        f.sample_rate, f.stated_by = args.sample_rate, "--sample-rate"
    return f


def _input_rate(args: argparse.Namespace, items: list[tuple[str, Path]],
                peeked: dict) -> Optional[int]:
    """The sample rate of the inputs, to choose a shipped model by: the most common rate
    the first inputs state (audio: the file's; mel files: a stated rate or convention, or
    --sample-rate); None when none states one. The mel files read are kept in ``peeked``
    (path -> file) for :func:`_read_inputs`; unreadable inputs are skipped here (they fail,
    each with its reason, when read)."""
    import soundfile as sf

    from wavediff.errors import WavediffError

    rates: list[int] = []
    for _, path in items[:PEEK_INPUTS]:
        try:
            if path.suffix.lower() in AUDIO_SUFFIXES:
                rates.append(int(sf.info(str(path)).samplerate))
                continue
            peeked[path] = f = _load_mel(args, path)
        except (WavediffError, OSError, RuntimeError):
            continue
        if f.stated_rate is not None:
            rates.append(f.stated_rate)
    if not rates:
        return args.sample_rate
    return max(sorted(set(rates)), key=rates.count)


def _read_inputs(args: argparse.Namespace, items: list[tuple[str, Path]], voc: Any,
                 outdir: Path, peeked: dict) -> tuple[list[tuple[str, Any, Optional[int]]],
                                                      list[tuple[str, str]], list[Any]]:
    """Each input as the model's mel: ``(jobs, failures, preparers)``. A job is ``(name,
    mel (n_mels, F), original length in samples for audio inputs, else None)``; an input
    that cannot be read is a failure ``(name, why)`` and the others go on. ``preparers``
    (the mel converters used) count the conventions seen. ``peeked``: mel files already
    read (path -> file), not read again."""
    import torch

    from wavediff.audio.detect import NormalisedMelError
    from wavediff.audio.formats import read_stats
    from wavediff.audio.io import load_audio
    from wavediff.audio.prepare import MelPreparer
    from wavediff.errors import WavediffError

    prep = MelPreparer(voc.preset, args.input_preset, layout=args.input_layout,
                       stats=read_stats(args.stats) if args.stats else None)
    side_preps: dict = {}  # stats file found beside the inputs -> its preparer
    failures: list[tuple[str, str]] = []
    jobs = []  # (name, mel (n_mels, F), original length or None)
    unstated = 0  # mel files that state no sample rate: read at the model's
    for name, path in items:
        try:
            out = outdir / f"{name}{args.name_suffix}.wav"
            if path.exists() and out.resolve() == path.resolve():
                raise WavediffError(f"{path}: the output would overwrite the input; use another --outdir")
            if path.suffix.lower() in AUDIO_SUFFIXES:
                wav, _ = load_audio(path, voc.sample_rate, resample=args.resample,
                                    to_mono=args.to_mono)
                mel = voc.mel(torch.from_numpy(wav)).cpu().numpy()
                jobs.append((name, mel, len(wav)))
            else:
                f = peeked.pop(path, None) or _load_mel(args, path)
                f.check_rate(voc.sample_rate, voc.hop_length)
                unstated += f.stated_rate is None
                try:
                    ready = prep(f.array, f.source, known=f.known)
                except NormalisedMelError:
                    side = _stats_beside(Path(f.source.split(":")[0])) if not args.stats else None
                    if side is None:
                        raise
                    if side not in side_preps:
                        log.info("using the statistics %s found beside the inputs", side)
                        side_preps[side] = MelPreparer(voc.preset, args.input_preset,
                                                       layout=args.input_layout,
                                                       stats=read_stats(side))
                    ready = side_preps[side](f.array, f.source)
                log.info("%s", ready.detection.describe(f.source))
                jobs.append((name, ready.mel, None))
        except WavediffError as e:
            message = str(e)
            failures.append((name, message if str(path) in message else f"{path}: {message}"))

    if unstated:
        log.info("%d mel file%s state%s no sample rate: read at the model's %d Hz with hop %d "
                 "(%.2f frames per second); a mel made at another rate would play too fast or "
                 "too slow and sound pitched: check the TTS system's sampling rate and hop",
                 unstated, "" if unstated == 1 else "s", "s" if unstated == 1 else "",
                 voc.sample_rate, voc.hop_length, voc.sample_rate / voc.hop_length)
    return jobs, failures, [prep, *side_preps.values()]


LONG_SECONDS = 60.0  # utterances at least this long show progress within them


def _progress_within(name: str, seconds: float, *, bar: bool,
                     quiet: bool) -> Optional["_WithinProgress"]:
    """Progress inside one long utterance, or None for short ones (and with -q)."""
    return None if seconds < LONG_SECONDS or quiet else _WithinProgress(name, seconds, bar=bar)


class _WithinProgress:
    """``Vocoder.decode(progress=...)`` for one long utterance: a second bar on a
    terminal, a plain log line every 10% otherwise."""

    def __init__(self, name: str, seconds: float, *, bar: bool) -> None:
        from tqdm import tqdm

        self.name, self.seconds, self.last = name, seconds, -1
        self.bar = tqdm(desc=f"{name} ({seconds:.0f} s)", unit="chunk-step", leave=False,
                        position=1) if bar else None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()
            return
        tenth = 10 * done // total
        if tenth > self.last:
            self.last = tenth
            log.info("%s (%.0f s of audio): %d%% (%d of %d chunk-steps)", self.name,
                     self.seconds, 10 * tenth, done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_decode_stats(outdir: Path, timings: dict[str, tuple[float, float]],
                        rank: Any, info: dict[str, Any]) -> None:
    """Merge the decoding time of each output into ``vocode_stats.json`` (atomically).

    ``wavediff evaluate`` reads it for the real-time factor. Under torchrun each process
    writes ``vocode_stats.rank<N>.json``. A file that cannot be written is only logged.
    """
    import json

    from wavediff._files import atomic_write_text

    path = outdir / ("vocode_stats.json" if rank is None else f"vocode_stats.rank{rank}.json")
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        entries = data.get("utterances", {}) if isinstance(data, dict) else {}
    except (OSError, ValueError):
        entries = {}
    entries.update({name: {"audio_seconds": round(a, 4), "decode_seconds": round(d, 4)}
                    for name, (a, d) in timings.items()})
    try:
        atomic_write_text(path, json.dumps({**info, "utterances": entries}, indent=1))
    except OSError as e:
        log.warning("could not write %s: %s", path, e.strerror or e)


def _stats_beside(path: Path):
    """A stats file in the folder of ``path`` or its parent, if there is one."""
    for folder in (path.parent, path.parent.parent):
        for name in STATS_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None
