"""Mel spectrogram files written by wavediff or by TTS systems.

Reads ``.npy`` (never with pickles) in the layouts ``(n_mels, T)``, ``(1, n_mels, T)`` and
``(T, n_mels)``, and ``.pt`` files holding one tensor (loaded with ``weights_only=True``).
Every array is checked: not empty, the expected number of bins, finite.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Union

import numpy as np

from wavediff.errors import MelError

MEL_SUFFIXES = (".npy", ".pt")
PathLike = Union[str, os.PathLike]


def _load_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise MelError(
                    f"{path} holds pickled Python objects, which wavediff does not load; "
                    f"save the mel as a plain float array (np.save(path, mel.astype('float32')))"
                ) from None
            raise MelError(f"{path} is not a readable .npy file ({e})") from None
        except (OSError, EOFError) as e:
            raise MelError(f"{path} is not a readable .npy file ({e})") from None
    if path.suffix == ".pt":
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise MelError(
                f"{path} holds pickled objects other than tensors and was refused; "
                f"save the mel with torch.save(tensor) or np.save"
            ) from None
        except (RuntimeError, EOFError, OSError) as e:
            raise MelError(f"{path} is not a readable .pt file ({str(e).splitlines()[0]})") from None
        if not isinstance(obj, torch.Tensor):
            raise MelError(f"{path} holds a {type(obj).__name__}, not a single mel tensor")
        return obj.float().numpy()
    raise MelError(f"{path}: unsupported mel file type {path.suffix!r}; use .npy or .pt")


def to_mel_layout(array: np.ndarray, n_mels: int, source: str = "mel") -> np.ndarray:
    """``array`` as float32 ``(n_mels, frames)``, checking layout, size and values.

    Accepts ``(n_mels, T)``, ``(1, n_mels, T)`` and ``(T, n_mels)``; a square array is read
    as ``(n_mels, T)``.
    """
    a = np.asarray(array)
    if a.dtype.kind not in "fiu":
        raise MelError(f"{source}: mel must hold numbers, got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise MelError(
            f"{source}: expected a 2-D mel (n_mels, frames), got shape {tuple(array.shape)}"
        )
    if a.size == 0:
        raise MelError(f"{source}: the mel is empty (shape {tuple(array.shape)})")
    if a.shape[0] != n_mels:
        if a.shape[1] == n_mels:
            a = a.T
        else:
            raise MelError(
                f"{source}: mel of shape {tuple(array.shape)} has no axis of {n_mels} bins; "
                f"this model expects {n_mels} mel bins (check the TTS system's n_mels)"
            )
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        frames = np.unique(np.nonzero(bad)[1])
        raise MelError(
            f"{source}: mel holds {int(bad.sum())} NaN/Inf values (first at frame {frames[0]}); "
            f"fix the TTS output before vocoding"
        )
    return np.ascontiguousarray(a)


def read_mel(path: PathLike, n_mels: int) -> np.ndarray:
    """Read a mel file as float32 ``(n_mels, frames)``; raises :class:`MelError`."""
    path = Path(path)
    if not path.is_file():
        raise MelError(f"{path} does not exist; check the path")
    return to_mel_layout(_load_array(path), n_mels, str(path))
