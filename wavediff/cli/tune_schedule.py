"""Search an N-step inference schedule for a trained model and store it under a name.

Copy-synthesis of a few dev utterances (their recordings against the audio decoded from
their mels) is scored by log-mel L1 for each candidate fast schedule: first a grid of
geometric schedules, then coordinate descent on each beta (WaveGrad found its 6-step
schedules by such a search). Every candidate decodes with the same noise. The winner goes
into schedules.yaml beside the model (experiment folder or pretrained folder) under --name
(default: searched-<N>); `wavediff vocode --schedule NAME` and
`Vocoder.decode(mel, schedule=NAME)` use it.

example:
  wavediff tune-schedule --checkpoint exp/joe --dev-dumpdir dump/dev --steps 4
  wavediff vocode --checkpoint exp/joe --schedule searched-4 --outdir out/ mels/
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("wavediff.tune")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="experiment dir, checkpoint file or pretrained folder (written to)")
    p.add_argument("--dev-dumpdir", required=True, help="dev records (wavediff preprocess)")
    p.add_argument("--steps", type=int, required=True, help="schedule length, 1..12 typical")
    p.add_argument("--name", default=None, help="stored name (default: searched-<steps>)")
    p.add_argument("--utterances", type=int, default=4, help="dev utterances scored (default 4)")
    p.add_argument("--seconds", type=float, default=2.0,
                   help="seconds taken from each utterance (default 2; 0: whole)")
    p.add_argument("--grid", type=int, default=6, help="grid points per axis (default 6)")
    p.add_argument("--rounds", type=int, default=2, help="refinement passes (default 2)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import time

    from wavediff.errors import WavediffError
    from wavediff.inference.schedule_search import (
        log_mel_objective, search_schedule, write_schedule)
    from wavediff.audio.dump import list_records, load_record
    from wavediff.vocoder import Vocoder

    if args.steps < 1 or args.utterances < 1:
        raise WavediffError("--steps and --utterances must be at least 1")
    voc = Vocoder.from_pretrained(args.checkpoint)
    waves = []
    for path in list_records(args.dev_dumpdir)[: args.utterances]:
        wave, _ = load_record(path)
        if args.seconds > 0:
            wave = wave[: int(args.seconds * voc.sample_rate)]
        waves.append(wave)
    objective = log_mel_objective(voc, waves, seed=args.seed)
    default = list(voc.config.diffusion.fast_schedule)
    t0 = time.perf_counter()
    betas, err = search_schedule(objective, voc.diffusion.betas.tolist(), args.steps,
                                 grid=args.grid, rounds=args.rounds, progress=log.info)
    name = args.name or f"searched-{args.steps}"
    path = write_schedule(voc.source or args.checkpoint, name, betas)
    base = objective(default)
    print(f"{name}: {', '.join(f'{b:.4g}' for b in betas)}; dev log-mel L1 {err:.4f} "
          f"(the model's {len(default)}-step schedule: {base:.4f}); "
          f"{time.perf_counter() - t0:.0f} s; stored in {path}")
    return 0
