"""Searched inference schedules: find an N-step fast schedule for a trained model, store it
by name beside the model, use it by name.

WaveGrad (Chen et al. 2021) found its 6-step schedules by a grid search on a log-mel error;
here the search is two-stage and cheap enough for a CPU: a grid over geometric schedules
``beta_i = beta_1 * r^(i-1)`` (first beta x last beta, log-spaced), then coordinate descent
that scales one beta at a time by ``2^{+-1}``, ``2^{+-1/2}`` ..., keeping a change when the
error drops. The error is the mean log-mel L1 (in the model's mel convention) between the
recordings of a few dev utterances and their copy-synthesis with the candidate schedule,
every candidate decoded with the same noise. A candidate that leaves the noise range the
training steps cover is skipped.

Schedules are stored in ``schedules.yaml`` (``name: [betas]``) in the experiment or
pretrained folder; ``Vocoder.from_pretrained`` reads it and ``decode(schedule=NAME)`` /
``wavediff vocode --schedule NAME`` use it.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import yaml

from wavediff.diffusion.schedule import align_fast_schedule
from wavediff.errors import ConfigError

log = logging.getLogger("wavediff.inference")
SCHEDULES_NAME = "schedules.yaml"
PathLike = Union[str, os.PathLike]
# Error of one schedule: betas -> mean log-mel L1 over the dev utterances.
Objective = Callable[[list[float]], float]


def schedules_file(model_path: PathLike) -> Path:
    """Where the schedules of a model live: beside its checkpoint, in its folder."""
    p = Path(model_path)
    return (p if p.is_dir() else p.parent) / SCHEDULES_NAME


def read_schedules(model_path: PathLike) -> dict[str, list[float]]:
    """The named schedules stored with a model (empty when there are none)."""
    path = schedules_file(model_path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path} is not a readable schedule file ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must map schedule names to lists of betas")
    out = {}
    for name, betas in data.items():
        if (not isinstance(betas, list) or not betas
                or not all(isinstance(b, (int, float)) and 0 < b < 1 for b in betas)):
            raise ConfigError(f"{path}: schedule {name!r} must be a list of betas in (0, 1)")
        out[str(name)] = [float(b) for b in betas]
    return out


def write_schedule(model_path: PathLike, name: str, betas: Sequence[float]) -> Path:
    """Add (or replace) schedule ``name`` in the model's ``schedules.yaml``."""
    from wavediff._files import atomic_write_text

    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"a schedule name is a plain word (letters, digits, - and _), "
                          f"got {name!r}")
    data = read_schedules(model_path)
    data[name] = [float(f"{b:.6g}") for b in betas]
    path = schedules_file(model_path)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=True, default_flow_style=None))
    return path


def valid(train_betas: Sequence[float], betas: Sequence[float]) -> bool:
    """Whether ``betas`` lie within the noise range the training steps cover."""
    if any(not 0.0 < b < 1.0 for b in betas):
        return False
    try:
        align_fast_schedule(train_betas, betas)
    except ConfigError:
        return False
    return True


def geometric(first: float, last: float, n: int) -> list[float]:
    """``n`` betas from ``first`` to ``last``, evenly spaced in log."""
    if n == 1:
        return [last]
    return [float(v) for v in np.geomspace(first, last, n)]


def search_schedule(objective: Objective, train_betas: Sequence[float], steps: int, *,
                    grid: int = 6, rounds: int = 2,
                    progress: Optional[Callable[[str], None]] = None) -> tuple[list[float], float]:
    """The ``steps``-beta schedule with the lowest ``objective`` found, and its error.

    Stage 1: ``grid x grid`` geometric schedules (first beta from the first training beta
    to 0.1, last beta from 0.1 to 0.9, log-spaced). Stage 2: ``rounds`` passes of coordinate
    descent over the betas with multiplicative steps 2, sqrt(2), 2^(1/4)...
    """
    if not 1 <= steps <= 50:
        raise ConfigError(f"steps must be between 1 and 50, got {steps}")
    t0 = float(train_betas[0])
    firsts = np.geomspace(max(t0, 1e-6), 0.1, grid)
    lasts = np.geomspace(0.1, 0.9, grid)
    best, best_err = None, math.inf
    tried = 0
    for first in firsts:
        for last in lasts:
            if steps > 1 and last <= first:
                continue
            cand = geometric(float(first), float(last), steps)
            if not valid(train_betas, cand):
                continue
            err = objective(cand)
            tried += 1
            if err < best_err:
                best, best_err = cand, err
    if best is None:
        raise ConfigError("no schedule of the grid fits the training noise range")
    if progress:
        progress(f"grid: {tried} schedules, best log-mel L1 {best_err:.4f}")
    for r in range(rounds):
        factor = 2.0 ** (1.0 / 2 ** r)
        improved = False
        for i in range(steps):
            for f in (factor, 1.0 / factor):
                cand = list(best)
                cand[i] = min(cand[i] * f, 0.999)
                if not valid(train_betas, cand):
                    continue
                err = objective(cand)
                if err < best_err:
                    best, best_err, improved = cand, err, True
        if progress:
            progress(f"refinement {r + 1}: best log-mel L1 {best_err:.4f}")
        if not improved and r > 0:
            break
    return best, best_err


def log_mel_objective(voc, waves: Sequence[np.ndarray], seed: int = 0) -> Objective:
    """Mean log-mel L1 between ``waves`` and their copy-synthesis by ``voc`` with a
    candidate fast schedule, each utterance decoded with the same noise for every
    candidate (``seed``)."""
    mels = [voc.mel(w) for w in waves]  # also the references the decodes are scored against

    def objective(betas: list[float]) -> float:
        errs = []
        for i, mel in enumerate(mels):
            wav = voc.decode(mel, sampler="fast", schedule=betas, seed=seed + i,
                             input_preset=None)
            got = voc.mel(wav)[..., : mel.shape[-1]]
            errs.append(float((got - mel[..., : got.shape[-1]]).abs().mean()))
        return float(np.mean(errs))

    return objective
