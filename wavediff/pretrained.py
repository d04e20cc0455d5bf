"""Pretrained models: the ``config.yaml`` + ``model.safetensors`` layout and the named models
shipped inside the package.

A pretrained model is a folder holding

* ``config.yaml``: the full resolved config (model, diffusion and its prior statistics,
  the mel convention) the weights were trained with;
* ``model.safetensors``: the (EMA) weights, float32 or float16, no pickle; its metadata
  carries the format marker, the training step and the storage dtype;
* ``card.json`` (optional): what the model is, for people: training data, dev set,
  measured quality, limits, status.

It is the layout users of Vocos and Hugging Face models expect; :func:`save_pretrained`
writes it and :func:`load_pretrained` reads it (``Vocoder.from_pretrained`` accepts such a
folder, a named model, or a training checkpoint). Named models live in
``wavediff/pretrained_models/<name>/`` and are listed by :func:`list_models` and
``wavediff models``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import yaml

from wavediff.config import Config
from wavediff.errors import CheckpointError, ConfigError

PathLike = Union[str, os.PathLike]
CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "card.json"
FORMAT = "wavediff-pretrained"
DEFAULT_MODEL = "joe"
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# A weight file larger than this is not a wavediff vocoder: refuse before reading it.
MAX_WEIGHTS_BYTES = 2 << 30


def models_root() -> Path:
    """The folder of the models shipped in the package."""
    return Path(__file__).resolve().parent / "pretrained_models"


@dataclass
class ModelInfo:
    """One shipped model, as ``wavediff models`` lists it."""

    name: str
    path: Path
    card: dict[str, Any]
    config: Config
    size_bytes: int

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def preset(self) -> str:
        return self.config.audio.preset


def list_models() -> list[ModelInfo]:
    """Every named model shipped in the package, sorted by name."""
    root = models_root()
    found = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / WEIGHTS_NAME).is_file() and (d / CONFIG_NAME).is_file():
                found.append(model_info(d.name))
    return found


def model_info(name: str) -> ModelInfo:
    """The shipped model ``name`` (its card, config and size)."""
    path = resolve_named(name)
    if path is None:
        known = ", ".join(m.name for m in list_models()) or "none"
        raise CheckpointError(f"no shipped model is called {name!r}; known: {known}")
    card = read_card(path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return ModelInfo(name, path, card, read_config(path), size)


def choose_model(sample_rate: Optional[int], *, resample: bool = False) -> tuple[str, str]:
    """The shipped model for inputs at ``sample_rate`` (None: unknown), and why in words.

    A model at that rate (the default model first, else the first by name); with an
    unknown rate the default model. No model at the rate: the default model when the
    inputs are audio that may be resampled (``resample``), else :class:`CheckpointError`
    naming the shipped rates and what to do.
    """
    models = list_models()
    if not models:
        raise CheckpointError("no models are shipped with this installation; pass --checkpoint")
    by_name = {m.name: m for m in models}
    default = by_name.get(DEFAULT_MODEL, models[0])
    if sample_rate is None:
        return default.name, (f"the inputs state no sample rate (--sample-rate chooses by "
                              f"it): the default model, {default.sample_rate} Hz")
    fit = [m for m in models if m.sample_rate == int(sample_rate)]
    if fit:
        chosen = default if default in fit else fit[0]
        return chosen.name, f"the inputs are at {int(sample_rate)} Hz, {chosen.name}'s rate"
    shipped = ", ".join(f"{m.name} ({m.sample_rate} Hz)" for m in models)
    if resample:
        return default.name, (f"no shipped model runs at {int(sample_rate)} Hz (shipped: "
                              f"{shipped}): the default, the audio resampled to "
                              f"{default.sample_rate} Hz (--resample)")
    raise CheckpointError(
        f"no shipped model runs at {int(sample_rate)} Hz, the inputs' rate (shipped: {shipped}); "
        f"pass --checkpoint with a model trained at {int(sample_rate)} Hz, or for audio "
        f"inputs --resample")


def resolve_named(name: str) -> Optional[Path]:
    """The folder of shipped model ``name``, or None (names are plain words, never paths)."""
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
        return None
    path = models_root() / name
    return path if (path / WEIGHTS_NAME).is_file() else None


def is_pretrained_dir(path: PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / WEIGHTS_NAME).is_file() and (p / CONFIG_NAME).is_file()


def read_card(path: PathLike) -> dict[str, Any]:
    card = Path(path) / CARD_NAME
    if not card.is_file():
        return {}
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{card} is not readable JSON ({e}); restore the file") from None
    return data if isinstance(data, dict) else {}


def read_config(path: PathLike) -> Config:
    try:
        return Config.load(Path(path) / CONFIG_NAME)
    except ConfigError as e:
        raise CheckpointError(f"pretrained model {path}: {e}") from None


def save_pretrained(directory: PathLike, model: torch.nn.Module, config: Config, *,
                    step: Optional[int] = None, dtype: str = "fp32",
                    card: Optional[dict[str, Any]] = None) -> Path:
    """Write ``config.yaml``, ``model.safetensors`` (weights in ``dtype``: fp32 or fp16)
    and, when given, ``card.json`` into ``directory`` (created). Returns the folder.

    Each file is written to a temporary name and renamed, so an interrupted export never
    leaves a file that looks complete.
    """
    from safetensors.torch import save_file

    from wavediff._files import atomic_write, atomic_write_text

    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", STORAGE_DTYPES[dtype]).contiguous()
               for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "step": str(step if step is not None else -1), "dtype": dtype}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    atomic_write_text(out / CONFIG_NAME, yaml.safe_dump(config.to_dict(), sort_keys=False))
    if card is not None:
        atomic_write_text(out / CARD_NAME, json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    return out


def load_pretrained(path: PathLike) -> tuple[dict[str, torch.Tensor], Config, dict[str, Any]]:
    """``(float32 state dict, config, metadata)`` of a pretrained folder (never unpickles)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    weights = p / WEIGHTS_NAME
    size = weights.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{weights} is {size / 2**30:.1f} GiB, far larger than any wavediff "
                              f"vocoder; it is not one")
    config = read_config(p)
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e}); "
                              f"export the model again") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{weights} is not a wavediff model (no '{FORMAT}' marker in its "
                              f"metadata); export it with wavediff export")
    state = {k: v.float() for k, v in state.items()}
    return state, config, meta
