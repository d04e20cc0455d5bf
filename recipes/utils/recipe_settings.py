#!/usr/bin/env python3
"""Print the recipe section of a config for the recipe scripts.

    python recipe_settings.py CONF

Prints one line, `<max utterances per set> <eval metrics>` (recipe.max_utterances, 0: all;
recipe.eval_metrics, checked against wavediff's metric names), or an error on stderr and
exit status 1 when the config or a metric name is wrong.
"""

from __future__ import annotations

import sys

from wavediff.config import Config
from wavediff.errors import ConfigError
from wavediff.evaluation.metrics import select_metrics


def main() -> None:
    try:
        recipe = Config.load(sys.argv[1]).recipe
        select_metrics(recipe.eval_metrics)
    except ConfigError as err:
        print(f"error: {sys.argv[1]}: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"{recipe.max_utterances} {recipe.eval_metrics.replace(' ', '')}")


if __name__ == "__main__":
    main()
