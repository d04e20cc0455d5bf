"""Loading a model to decode with: a shipped model by name, a pretrained folder, a training
checkpoint or an experiment directory, always rebuilt from its stored config."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from wavediff import pretrained
from wavediff.checkpoint import check_finite_weights, load_checkpoint, resolve_checkpoint
from wavediff.config import Config
from wavediff.errors import CheckpointError
from wavediff.inference.schedule_search import read_schedules
from wavediff.model import DiffWave, build_model

PathLike = Union[str, os.PathLike]


@dataclass
class LoadedModel:
    """A frozen network with what came with it."""

    model: DiffWave
    config: Config
    step: int              # the training step of the weights (-1: unknown)
    source: str            # the folder or checkpoint it was read from
    schedules: dict[str, list[float]] = field(default_factory=dict)  # named fast schedules


def load_model(path_or_name: PathLike, use_ema: bool = True) -> LoadedModel:
    """Read a model: a shipped model's name (``"joe"``), a pretrained folder
    (``config.yaml`` + ``model.safetensors``), a checkpoint file, or the newest checkpoint
    of an experiment directory (its EMA weights when present and ``use_ema``). Weights
    holding NaN or Inf, or not fitting the stored config, are refused in one line."""
    named = None if os.path.exists(path_or_name) else pretrained.resolve_named(str(path_or_name))
    folder = named or (Path(path_or_name) if pretrained.is_pretrained_dir(path_or_name) else None)
    if folder is not None:
        weights, config, meta = pretrained.load_pretrained(folder)
        step = int(meta.get("step", -1))
    else:
        state = load_checkpoint(path_or_name, map_location="cpu")
        config = state["config"]
        weights = state["ema"] if use_ema and state.get("ema") else state["model"]
        step = int(state["step"])
    source = str(folder or path_or_name)
    check_finite_weights(weights, source)
    model = build_model(config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path_or_name}: its weights do not fit the model its config describes "
            f"({str(e).splitlines()[0][:160]}); the files are damaged or mismatched"
        ) from None
    model.eval().requires_grad_(False)  # ours alone: frozen for inference
    schedules = read_schedules(folder or resolve_checkpoint(path_or_name))
    return LoadedModel(model, config, step, source, schedules)
