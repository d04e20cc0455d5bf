"""Convert an lmnt-com/diffwave checkpoint (the `diffwave` package) into a wavediff one.

The experiment directory receives checkpoint-<step>steps.pt (the weights, converted) and
config.yaml (the diffwave-lmnt mel preset, lmnt's layer sizes and its training and fast
inference schedules), ready for `wavediff vocode` and the Python API. The network computes
the same function as lmnt's; decode mels made by lmnt's preprocess (or convert others with
--input-preset). The file is read with weights_only=True: nothing in it is run.

example:
  wavediff import-lmnt diffwave-ljspeech-22kHz-20210508.pt --outdir exp/lmnt_ljspeech
  wavediff vocode --checkpoint exp/lmnt_ljspeech --outdir out/ mels/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("wavediff.import_lmnt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="lmnt weights .pt file (or a model directory with weights.pt)")
    p.add_argument("--outdir", required=True, help="experiment directory to write")
    p.add_argument("--force", action="store_true",
                   help="write into an OUTDIR that already holds an experiment")


def run(args: argparse.Namespace) -> int:
    from wavediff.errors import WavediffError
    from wavediff.model import build_model, count_parameters
    from wavediff.importers.lmnt import convert_lmnt_state, read_lmnt_checkpoint
    from wavediff.checkpoint import checkpoint_name, save_checkpoint

    state = read_lmnt_checkpoint(args.weights)
    config, weights = convert_lmnt_state(state, source=str(args.weights))
    model = build_model(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise WavediffError(
            f"{args.weights}: the weights do not fit the DiffWave they describe (missing: "
            f"{', '.join(missing[:3]) or '-'}; unexpected: {', '.join(unexpected[:3]) or '-'})"
        )
    step = int(state.get("step") or 0)
    outdir = Path(args.outdir)
    path = outdir / checkpoint_name(step)
    existing = [p.name for p in (path, outdir / "config.yaml") if p.exists()]
    if existing and not args.force:
        raise WavediffError(f"{outdir} already holds {', '.join(existing)}; choose another "
                            f"--outdir or pass --force to overwrite")
    outdir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"config": config.to_dict(), "step": step,
                           "model": model.state_dict(), "ema": None,
                           "imported_from": "lmnt-com/diffwave"})
    config.save(outdir / "config.yaml")
    log.info("wrote %s (%d layers x %d channels, %.2fM parameters, step %d) and config.yaml",
             path, config.model.residual_layers, config.model.residual_channels,
             count_parameters(model) / 1e6, step)
    return 0
