#!/usr/bin/env python3
"""Print the training state of an experiment directory for a recipe.

    python train_status.py CONF EXPDIR

Prints one line, `<state> <newest step> <max steps> <newest checkpoint name>`, where state is
`none` (no checkpoint), `partial` (checkpoints short of train.max_steps and of
train.max_minutes of training time) or `done`.
"""

from __future__ import annotations

import sys

from wavediff.config import Config
from wavediff.checkpoint import list_checkpoints, load_checkpoint


def main() -> None:
    conf, expdir = sys.argv[1:3]
    train = Config.load(conf).train
    max_steps = train.max_steps
    found = list_checkpoints(expdir)
    if not found:
        print(f"none 0 {max_steps} -")
        return
    step, path = found[-1]
    done = step >= max_steps
    if not done and train.max_minutes is not None:
        seconds = float(load_checkpoint(path).get("train_seconds", 0.0))
        done = seconds >= 60.0 * train.max_minutes
    print(f"{'done' if done else 'partial'} {step} {max_steps} {path.stem}")


if __name__ == "__main__":
    main()
