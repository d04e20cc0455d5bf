"""Train a DiffWave vocoder on dump directories made by `wavediff preprocess`.

The experiment directory receives config.yaml, checkpoint-<N>steps.pt files and
TensorBoard logs (logs/: losses, learning rate, gradient norm, dev loss, decoded dev
audio and mel images). --resume continues from the newest checkpoint exactly.

Several GPUs or nodes: start it with torchrun (DistributedDataParallel, NCCL on GPUs, gloo
on CPUs). train.batch_size is the global batch of all processes together; rank 0 alone
logs and writes checkpoints. SIGTERM (preemption) writes a checkpoint, then exits with
status 143; --resume continues from it.

example:
  wavediff train --config conf/base.yaml --train-dumpdir dump/train --dev-dumpdir dump/dev \\
      --outdir exp/diffwave_base
  tensorboard --logdir exp/diffwave_base/logs
  torchrun --nproc_per_node 4 -m wavediff train --config conf/base.yaml \\
      --train-dumpdir dump/train --dev-dumpdir dump/dev --outdir exp/diffwave_base --resume

GTA fine-tuning: mels a TTS model predicted with teacher forcing (--train-feats-scp, any
format and convention wavediff reads; converted to the model's) paired by utterance id
with the real recordings (--train-wav-scp). frames x hop must match the waveform length to
within one frame (trimmed or padded, counted in the log); larger differences are refused
with the ids. --init-checkpoint starts from a trained model (its config unless --config).
  wavediff train --init-checkpoint exp/diffwave_base --train-feats-scp tts/gta/feats.scp \\
      --train-wav-scp data/train/wav.scp --outdir exp/diffwave_gta --set train.max_steps=20000
"""

from __future__ import annotations

import argparse
import gc
import logging

log = logging.getLogger("wavediff.train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default: DiffWave BASE with the hifigan preset)")
    p.add_argument("--train-dumpdir", help="training records (or GTA: the two scp options)")
    p.add_argument("--train-feats-scp", help="GTA: '<id> <mel file>' list of predicted mels")
    p.add_argument("--train-wav-scp", help="GTA: '<id> <audio file>' list of the recordings")
    p.add_argument("--input-preset", default="auto",
                   help="GTA: mel convention of the predicted mels (default: auto)")
    p.add_argument("--stats", help="GTA: per-bin statistics the predicted mels are normalised with")
    p.add_argument("--gta-dumpdir", help="GTA: where the paired records go (default: OUTDIR/dump_gta)")
    p.add_argument("--init-checkpoint",
                   help="start from these weights: a checkpoint file, an experiment dir, a "
                        "pretrained folder or a shipped model's name (e.g. joe: warm start)")
    p.add_argument("--dev-dumpdir", help="dev records (dev loss and decoded samples)")
    p.add_argument("--outdir", required=True, help="experiment directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=1000 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from wavediff.cli.common import progress_wanted
    from wavediff.config import Config
    from wavediff import distributed as distrib
    from wavediff.train.trainer import Trainer

    from wavediff.errors import WavediffError

    init_state = None
    if args.init_checkpoint:
        from wavediff.train.gta import load_init_checkpoint

        init_state = load_init_checkpoint(args.init_checkpoint)
    config = (Config.load(args.config) if args.config
              else init_state["config"] if init_state else Config())
    if args.overrides:
        config = config.override(args.overrides)
    if bool(args.train_feats_scp) != bool(args.train_wav_scp):
        raise WavediffError("GTA training needs both --train-feats-scp and --train-wav-scp")
    if bool(args.train_dumpdir) == bool(args.train_feats_scp):
        raise WavediffError("give either --train-dumpdir or --train-feats-scp with --train-wav-scp")
    dist = distrib.init_distributed(args.device)
    finished = False
    try:
        if not dist.is_main:  # rank 0 alone reports progress
            logging.getLogger("wavediff").setLevel(logging.WARNING)
        if args.train_feats_scp:
            args.train_dumpdir = _gta_dump(args, config, dist)
        trainer = Trainer(config, args.train_dumpdir, args.dev_dumpdir, args.outdir,
                          resume=args.resume, device=dist.device,
                          progress=progress_wanted(args.quiet), dist=dist)
        if init_state is not None and trainer.step == 0:
            from wavediff.train.gta import apply_init_checkpoint

            apply_init_checkpoint(trainer, init_state, args.init_checkpoint)
        last = trainer.run()
        step, stopped, nonfinite = trainer.step, trainer.stopped_by_signal, trainer.nonfinite_total
        finished = True
    finally:
        # the DistributedDataParallel wrapper holds the process group and gloo's pending
        # work: it goes first, so that the group is torn down here and not at interpreter
        # exit (where gloo's threads abort the process: "terminate called without an
        # active exception")
        trainer = None
        gc.collect()
        distrib.cleanup(dist, finished)
    if not dist.is_main:
        return 143 if stopped else 0
    if nonfinite:
        print(f"{nonfinite} non-finite steps were skipped")
    if stopped:
        print(f"stopped by SIGTERM at step {step}; checkpoint: {last}; continue with --resume")
        return 143
    print(f"trained to step {step}; checkpoint: {last}")
    return 0


def _gta_dump(args: argparse.Namespace, config, dist) -> str:
    """Pair the GTA mels with their recordings into a dump (rank 0 writes it, the others
    wait); returns the dump directory."""
    from pathlib import Path

    from wavediff.cli.common import progress_wanted
    from wavediff.errors import WavediffError
    from wavediff import distributed as distrib
    from wavediff.train.gta import build_gta_dump

    gta_dir = args.gta_dumpdir or str(Path(args.outdir) / "dump_gta")
    ok = False
    try:
        if dist.is_main:
            build_gta_dump(args.train_feats_scp, args.train_wav_scp, gta_dir, config.audio,
                           input_preset=args.input_preset, stats=args.stats,
                           progress=progress_wanted(args.quiet))
        ok = True
    finally:
        if not distrib.all_agree(dist, ok) and ok:
            raise WavediffError("building the GTA dump failed on rank 0 (see its error)")
    return gta_dir
