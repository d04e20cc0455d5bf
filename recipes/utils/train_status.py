#!/usr/bin/env python3
"""Print the training state of an experiment directory for a recipe.

    python train_status.py CONF EXPDIR

Prints one line, `<state> <newest step> <max steps> <newest checkpoint name>`, where state is
`none` (no checkpoint), `partial` (checkpoints short of train.max_steps) or `done`.
"""

from __future__ import annotations

import sys

from wavediff.config import Config
from wavediff.train.checkpoint import list_checkpoints


def main() -> None:
    conf, expdir = sys.argv[1:3]
    max_steps = Config.load(conf).train.max_steps
    found = list_checkpoints(expdir)
    if not found:
        print(f"none 0 {max_steps} -")
        return
    step, path = found[-1]
    print(f"{'done' if step >= max_steps else 'partial'} {step} {max_steps} {path.stem}")


if __name__ == "__main__":
    main()
