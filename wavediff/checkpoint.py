"""Checkpoints: one ``.pt`` file with weights, EMA, optimizer, step, RNG states and config.

Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the
directory), so a crash, a SIGKILL or a full disk never leaves a half-written file under a
checkpoint's name; a temporary file left by a killed writer is never listed as a checkpoint
and :func:`remove_stale_temporaries` deletes it when training restarts. Loads use
``torch.load(weights_only=True)``: a file holding pickled code is refused, not run.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch

from wavediff._files import atomic_write, path_problem
from wavediff.config import Config
from wavediff.errors import CheckpointError, ConfigError
from wavediff.version import __version__

FORMAT = "wavediff-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d+)steps\.pt$")
_TMP_GLOB = ".checkpoint-*steps.pt.*.tmp"

PathLike = Union[str, os.PathLike]


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}steps.pt"


def list_checkpoints(expdir: PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in ``expdir``, oldest first."""
    found = []
    for p in Path(expdir).glob("checkpoint-*steps.pt"):
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(expdir: PathLike) -> Optional[Path]:
    found = list_checkpoints(expdir)
    return found[-1][1] if found else None


def resolve_checkpoint(path: PathLike) -> Path:
    """A checkpoint file, or the latest checkpoint of an experiment directory."""
    p = Path(path)
    if p.is_dir():
        latest = latest_checkpoint(p)
        if latest is None:
            raise CheckpointError(
                f"{p} holds no checkpoint-<N>steps.pt; train a model first or pass a .pt file"
            )
        return latest
    problem = path_problem(p, "checkpoint")
    if problem:
        raise CheckpointError(f"checkpoint {problem}")
    return p


def remove_stale_temporaries(expdir: PathLike) -> list[Path]:
    """Delete temporary files of checkpoint writes that never finished; returns them.

    Call it only when no other process writes checkpoints into ``expdir``.
    """
    removed = []
    for p in Path(expdir).glob(_TMP_GLOB):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format and version fields) to ``path`` atomically.

    On failure (e.g. a full disk) the temporary file is removed, any earlier file at
    ``path`` and all other checkpoints are left as they were, and a
    :class:`~wavediff.errors.CheckpointError` says so.
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "wavediff_version": __version__,
               **state}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: _save_to(payload, tmp), durable=True)
    except OSError as e:
        kept = [p.name for _, p in list_checkpoints(path.parent)]
        intact = (f"the newest intact checkpoint is {kept[-1]}" if kept
                  else "no earlier checkpoint exists")
        raise CheckpointError(
            f"could not write checkpoint {path}: {e.strerror or e}; its temporary file was "
            f"removed and {intact} (free disk space, then continue with --resume)"
        ) from None
    return path


def _save_to(payload: dict[str, Any], tmp: Path) -> None:
    with open(tmp, "wb") as f:
        torch.save(payload, f)


def safe_torch_load(path: PathLike, map_location: Union[str, torch.device] = "cpu", *,
                    refused: str, unreadable: str) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    A file holding pickled objects other than tensors and plain containers is refused
    without running them (the message ends with ``refused``, the fix); a truncated or
    corrupt file raises a :class:`CheckpointError` ending with ``unreadable``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy pickles before refusing
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} contains pickled objects other than tensors{what} and was refused "
            f"without running them; {refused}"
        ) from None
    except Exception as e:  # a corrupt file can make the unpickler fail in any way
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: "
            f"{_first_line(e)}); {unreadable}"
        ) from None

def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only) and check its format."""
    path = resolve_checkpoint(path)
    state = safe_torch_load(
        path, map_location,
        refused="only load checkpoints from sources you trust, and convert foreign ones "
                "with a wavediff import command",
        unreadable="use an earlier checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a wavediff checkpoint (no '{FORMAT}' marker); "
            f"lmnt DiffWave weights need converting first"
        )
    version = state.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, newer than this wavediff "
            f"understands ({FORMAT_VERSION}); upgrade wavediff"
        )
    for key in ("model", "config", "step"):
        if key not in state:
            raise CheckpointError(f"{path} lacks the '{key}' entry; the file is damaged")
    try:
        state["config"] = Config.from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path} holds an invalid config: {e}") from None
    state["path"] = path
    return state


def _first_line(e: BaseException) -> str:
    """The first line of ``e``'s message (at most 120 characters), or its type name."""
    lines = str(e).splitlines()
    return lines[0][:120] if lines and lines[0] else type(e).__name__


def prune_checkpoints(expdir: PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints; returns the deleted paths."""
    found = list_checkpoints(expdir)
    doomed = [p for _, p in found[:-keep]] if keep > 0 else []
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


# What trained weights depend on: the mel convention, the network and the training chain.
# The diffusion section's inference settings (sampler, schedules, consistency) may differ
# between a checkpoint and the run that loads it.
_INFERENCE_FIELDS = ("sampler", "fast_schedule", "ddim_steps", "ddim_eta", "consistency_iters",
                     "start_iters", "start_noise", "gl_init")


def incompatible_section(stored: Config, current: Config) -> Optional[str]:
    """The first of ``audio``, ``model``, ``diffusion`` in which the weights of a checkpoint
    made with ``stored`` would not fit a run configured as ``current``; None if they fit."""
    for section in ("audio", "model"):
        if getattr(stored, section) != getattr(current, section):
            return section
    a, b = stored.diffusion.__dict__, current.diffusion.__dict__
    if any(a[k] != b[k] for k in a if k not in _INFERENCE_FIELDS + ("prior_energy",)):
        return "diffusion"
    if b["prior_energy"] is not None and a["prior_energy"] != b["prior_energy"]:
        return "diffusion"  # not yet measured (None) is filled in from the checkpoint
    return None


def check_finite_weights(weights: dict[str, Any], source: str) -> None:
    """Refuse weights holding NaN or Inf (a diverged run saved them), naming the tensors."""
    bad = [name for name, t in weights.items()
           if isinstance(t, torch.Tensor) and t.is_floating_point()
           and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or infinite values "
            f"({', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}); the training diverged "
            f"before they were saved: use an earlier checkpoint, or resume from one with a "
            f"lower train.learning_rate")


def load_weights(state: dict[str, Any], model: torch.nn.Module,
                 ema: Optional[torch.nn.Module] = None) -> None:
    """The network weights of a checkpoint ``state`` into ``model``, and its EMA weights
    (the raw ones where it has none) into ``ema``."""
    source = str(state.get("path", "the checkpoint"))
    check_finite_weights(state["model"], source)
    try:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"] if state.get("ema") else state["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"{source}: its weights do not fit the model its config describes "
            f"({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}); "
            f"the file is damaged or from another model") from None
