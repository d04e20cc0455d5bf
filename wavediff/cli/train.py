"""Train a DiffWave vocoder on dump directories made by `wavediff preprocess`.

The experiment directory receives config.yaml, checkpoint-<N>steps.pt files and
TensorBoard logs (logs/: losses, learning rate, gradient norm, dev loss, decoded dev
audio and mel images). --resume continues from the newest checkpoint exactly.

example:
  wavediff train --config conf/base.yaml --train-dumpdir dump/train --dev-dumpdir dump/dev \
      --outdir exp/diffwave_base
  tensorboard --logdir exp/diffwave_base/logs
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("wavediff.train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default: DiffWave BASE with the hifigan preset)")
    p.add_argument("--train-dumpdir", required=True, help="training records")
    p.add_argument("--dev-dumpdir", help="dev records (dev loss and decoded samples)")
    p.add_argument("--outdir", required=True, help="experiment directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=1000 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from wavediff.cli.common import pick_device
    from wavediff.config import Config
    from wavediff.train.trainer import Trainer

    config = Config.load(args.config) if args.config else Config()
    if args.overrides:
        config = config.override(args.overrides)
    trainer = Trainer(config, args.train_dumpdir, args.dev_dumpdir, args.outdir,
                      resume=args.resume, device=pick_device(args.device),
                      progress=not args.quiet)
    last = trainer.run()
    print(f"trained to step {trainer.step}; checkpoint: {last}")
    if trainer.nonfinite_total:
        print(f"{trainer.nonfinite_total} non-finite steps were skipped")
    return 0
