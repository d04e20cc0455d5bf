"""Mel spectrogram files written by wavediff or by TTS systems.

Readers, all safe (no file can run code when it is read):

* ``.npy``: one array, loaded with ``allow_pickle=False`` (an object array is refused);
* ``.npz``: the array named ``mel``, ``feats``, ``spec`` or ``arr_0``, or the only one;
  wavediff feature records (``wave`` + ``mel``, with ``audio.yaml`` beside them) also
  carry their mel convention;
* ``.pt``: a tensor, or a dict holding one mel tensor, loaded with ``weights_only=True``;
* ``.h5`` / ``.hdf5``: the dataset ``feats`` (ParallelWaveGAN, ESPnet dumps), or another
  one named as ``file.h5:name``;
* Kaldi-style scp lists: ``<utt_id> <path>`` and ``<utt_id> <path.h5:feats>``.

Layouts (:data:`LAYOUTS`): ``mels-frames`` ``(n_mels, T)`` (Tacotron 2, Coqui, lmnt,
Matcha), ``1-mels-frames`` ``(1, n_mels, T)`` (HiFi-GAN, BigVGAN) and ``frames-mels``
``(T, n_mels)`` (ESPnet, ParallelWaveGAN, FastSpeech 2). Every mel leaves this module as
float32 ``(n_mels, T)``, checked: not empty, the expected number of bins, finite.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from wavediff.errors import MelError

MEL_SUFFIXES = (".npy", ".npz", ".pt", ".h5", ".hdf5")
H5_SUFFIXES = (".h5", ".hdf5")
LAYOUTS = ("mels-frames", "1-mels-frames", "frames-mels")
LAYOUT_SHAPES = {"mels-frames": "(n_mels, T)", "1-mels-frames": "(1, n_mels, T)",
                 "frames-mels": "(T, n_mels)"}
_NPZ_KEYS = ("mel", "feats", "spec", "arr_0")
_PT_KEYS = ("mel", "mels", "feats", "spec", "spectrogram", "mel_spectrogram")
PathLike = Union[str, os.PathLike]


@dataclass
class MelFile:
    """One mel array as stored: ``array`` in its file's layout, not yet checked.

    ``known`` is the mel convention (a :class:`~wavediff.audio.presets.MelConfig`) when
    the file states it (a wavediff feature record), else None.
    """

    array: np.ndarray
    source: str
    known: Optional[object] = None


# ---------------------------------------------------------------------- paths
def split_spec(spec: PathLike) -> tuple[Path, Optional[str]]:
    """``"dump/a.h5:feats"`` -> ``(Path("dump/a.h5"), "feats")``; other paths -> ``(path, None)``."""
    text = os.fspath(spec)
    head, sep, key = text.rpartition(":")
    if sep and key and Path(head).suffix.lower() in H5_SUFFIXES + (".npz",):
        return Path(head), key
    if sep and key.isdigit() and Path(head).suffix.lower() == ".ark":
        raise MelError(
            f"{text}: Kaldi .ark archives are not read; dump the features as .npy or .h5 "
            f"(e.g. copy-feats ark:{head} ark,t:- | ...) or write an scp of .h5 files"
        )
    return Path(text), None


def read_mel_scp(path: PathLike) -> list[tuple[str, str]]:
    """``(utt_id, spec)`` of a Kaldi-style mel scp (``<id> <path>`` or ``<id> <path.h5:feats>``).

    Relative paths are kept as written (they are relative to the working directory, as in
    Kaldi and ESPnet).
    """
    from wavediff.cli.common import read_scp
    from wavediff.errors import WavediffError

    try:
        entries = read_scp(os.fspath(path))
    except WavediffError as e:
        raise MelError(str(e)) from None
    for utt, target in entries:
        split_spec(target)  # refuses .ark offsets with a clear line
    return entries


# ---------------------------------------------------------------------- loading
def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise MelError(
                f"{path} holds pickled Python objects, which wavediff does not load; "
                f"save the mel as a plain float array (np.save(path, mel.astype('float32')))"
            ) from None
        raise MelError(f"{path} is not a readable .npy file ({e}); it is truncated or corrupt: "
                       f"write it again with np.save") from None
    except (OSError, EOFError) as e:
        raise MelError(f"{path} is not a readable .npy file ({e}); it is truncated or corrupt: "
                       f"write it again with np.save") from None



def _choose_key(path: Path, names: list[str], key: Optional[str], preferred: Sequence[str],
                what: str, none_found: str) -> str:
    """The array of a multi-array file to read: ``key`` if given, else the first of
    ``preferred`` present, else the only one; ``none_found`` completes the error otherwise."""
    if key is None:
        found = [k for k in preferred if k in names]
        if found:
            return found[0]
        if len(names) == 1:
            return names[0]
        raise MelError(f"{path} {none_found}")
    if key not in names:
        raise MelError(f"{path} has no {what} {key!r} (it has: {', '.join(names[:8])})")
    return key

def _load_npz(path: Path, key: Optional[str]) -> MelFile:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            key = _choose_key(path, names, key, _NPZ_KEYS, "array",
                              f"holds several arrays ({', '.join(names[:8])}) and none is "
                              f"called {'/'.join(_NPZ_KEYS)}; name one as {path}:<name>")
            array = data[key]
            is_record = key == "mel" and "wave" in names
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise MelError(
                f"{path} holds pickled Python objects, which wavediff does not load; "
                f"save plain float arrays with np.savez"
            ) from None
        raise MelError(f"{path} is not a readable .npz file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise MelError(f"{path} is not a readable .npz file ({e})") from None
    known = None
    if is_record and (path.parent / "audio.yaml").is_file():
        from wavediff.errors import WavediffError
        from wavediff.train.data import read_audio_config

        try:
            known = read_audio_config(path.parent)
        except WavediffError:
            known = None
    return MelFile(array, f"{path}:{key}" if key not in ("mel",) else str(path), known)


def _load_pt(path: Path) -> np.ndarray:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise MelError(
            f"{path} holds pickled objects other than tensors and was refused (not run); "
            f"save the mel with torch.save(tensor) or np.save"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MelError(f"{path} is not a readable .pt file ({msg})") from None
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        named = [k for k in _PT_KEYS if k in tensors]
        if named:
            obj = tensors[named[0]]
        elif len(tensors) == 1:
            obj = next(iter(tensors.values()))
        else:
            raise MelError(
                f"{path} holds a dict without one mel tensor (keys: "
                f"{', '.join(map(str, list(obj)[:8]))}); save the mel tensor alone"
            )
    if not isinstance(obj, torch.Tensor):
        raise MelError(f"{path} holds a {type(obj).__name__}, not a mel tensor")
    if not obj.is_floating_point():
        raise MelError(f"{path}: the tensor has dtype {obj.dtype}, not a float mel")
    return obj.detach().float().cpu().numpy()


def _load_h5(path: Path, key: Optional[str]) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names: list[str] = []
            f.visit(lambda n: names.append(n) if isinstance(f[n], h5py.Dataset) else None)
            key = _choose_key(path, names, key, ("feats",), "dataset",
                              f"has no 'feats' dataset (it has: {', '.join(names[:8])}); "
                              f"name one as {path}:<dataset>")
            data = f[key]
            if data.dtype.kind not in "fiu":
                raise MelError(f"{path}:{key} holds {data.dtype}, not numbers")
            return np.asarray(data[()])
    except OSError as e:
        raise MelError(f"{path} is not a readable HDF5 file ({e})") from None


def load_mel_file(spec: PathLike) -> MelFile:
    """Read a mel file as stored (any layout); ``spec`` may name an h5/npz entry as ``path:key``.

    Raises :class:`MelError` for missing, unreadable, unsafe (pickled) or unsupported files.
    """
    path, key = split_spec(spec)
    if not path.is_file():
        raise MelError(f"{path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return MelFile(_load_npy(path), str(path))
    if suffix == ".npz":
        return _load_npz(path, key)
    if suffix == ".pt":
        return MelFile(_load_pt(path), str(path))
    if suffix in H5_SUFFIXES:
        array = _load_h5(path, key)
        return MelFile(array, f"{path}:{key}" if key else str(path))
    raise MelError(
        f"{path}: unsupported mel file type {path.suffix!r}; use {', '.join(MEL_SUFFIXES)}"
    )


# ---------------------------------------------------------------------- layouts
def _as_numbers(array: np.ndarray, source: str) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype.kind not in "fiu":
        raise MelError(f"{source}: mel must hold numbers, got dtype {a.dtype}")
    if a.size == 0:
        raise MelError(f"{source}: the mel is empty (shape {tuple(a.shape)})")
    return a


def possible_layouts(shape: Sequence[int], n_mels_options: Sequence[int]) -> list[tuple[str, int]]:
    """``(layout, n_mels)`` pairs that ``shape`` can be read as, for the given bin counts."""
    shape = tuple(shape)
    found: list[tuple[str, int]] = []
    for n in sorted(set(n_mels_options)):
        if len(shape) == 3 and shape[0] == 1 and shape[1] == n:
            found.append(("1-mels-frames", n))
        if len(shape) == 2 and shape[0] == n:
            found.append(("mels-frames", n))
        if len(shape) == 2 and shape[1] == n:
            found.append(("frames-mels", n))
    return found


def apply_layout(array: np.ndarray, layout: str, source: str = "mel") -> np.ndarray:
    """``array`` stored in ``layout`` -> float32 ``(n_mels, T)``, checked to be finite."""
    a = _as_numbers(array, source)
    if layout not in LAYOUTS:
        raise MelError(f"unknown mel layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "1-mels-frames":
        if a.ndim != 3 or a.shape[0] != 1:
            raise MelError(f"{source}: shape {tuple(a.shape)} is not (1, n_mels, T)")
        a = a[0]
    elif a.ndim != 2:
        raise MelError(f"{source}: shape {tuple(a.shape)} is not {LAYOUT_SHAPES[layout]}")
    if layout == "frames-mels":
        a = a.T
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        frames = np.unique(np.nonzero(bad)[1])
        raise MelError(
            f"{source}: mel holds {int(bad.sum())} NaN/Inf values (first at frame {frames[0]}); "
            f"fix the TTS output before vocoding"
        )
    return np.ascontiguousarray(a)


def to_mel_layout(array: np.ndarray, n_mels: int, source: str = "mel",
                  layout: Optional[str] = None) -> np.ndarray:
    """``array`` as float32 ``(n_mels, frames)``, checking layout, size and values.

    Accepts ``(n_mels, T)``, ``(1, n_mels, T)`` and ``(T, n_mels)``; a square array is read
    as ``(n_mels, T)`` unless ``layout`` says otherwise.
    """
    a = _as_numbers(array, source)
    if layout is not None:
        out = apply_layout(a, layout, source)
        if out.shape[0] != n_mels:
            raise MelError(
                f"{source}: read as {LAYOUT_SHAPES[layout]}, shape {tuple(a.shape)} has "
                f"{out.shape[0]} bins but {n_mels} are expected"
            )
        return out
    if a.ndim == 3 and a.shape[0] == 1:
        return to_mel_layout(a, n_mels, source, "1-mels-frames")
    if a.ndim != 2:
        raise MelError(
            f"{source}: expected a 2-D mel (n_mels, frames), got shape {tuple(a.shape)}"
        )
    if a.shape[0] == n_mels:
        return apply_layout(a, "mels-frames", source)
    if a.shape[1] == n_mels:
        return apply_layout(a, "frames-mels", source)
    raise MelError(
        f"{source}: mel of shape {tuple(a.shape)} has no axis of {n_mels} bins; "
        f"this model expects {n_mels} mel bins (check the TTS system's n_mels)"
    )


def read_mel(path: PathLike, n_mels: int) -> np.ndarray:
    """Read a mel file as float32 ``(n_mels, frames)``; raises :class:`MelError`."""
    f = load_mel_file(path)
    return to_mel_layout(f.array, n_mels, f.source)


# ---------------------------------------------------------------------- statistics
def read_stats(path: PathLike, n_mels: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin ``(mean, scale)`` (float64, ``(n_mels,)`` each) of normalised features.

    Reads ParallelWaveGAN/wavediff ``stats.npy`` (``(2, n_mels)``: mean; scale),
    ``stats.h5`` (datasets ``mean`` and ``scale``) and ESPnet ``feats_stats.npz``
    (``count``, ``sum``, ``sum_square``; scale = sqrt(max(var, 1e-20)) as its GlobalMVN).
    Features were normalised as ``(raw - mean) / scale``.
    """
    p = Path(path)
    if not p.is_file():
        raise MelError(f"stats file {p} does not exist; check --stats")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        a = _load_npy(p)
        if a.ndim != 2 or a.shape[0] != 2:
            raise MelError(f"{p}: expected a (2, n_mels) array [mean; scale], got {a.shape}")
        mean, scale = a[0], a[1]
    elif suffix in H5_SUFFIXES:
        import h5py

        try:
            with h5py.File(p, "r") as f:
                if "mean" not in f or "scale" not in f:
                    raise MelError(f"{p}: needs datasets 'mean' and 'scale' (has {', '.join(f)})")
                mean, scale = np.asarray(f["mean"][()]), np.asarray(f["scale"][()])
        except OSError as e:
            raise MelError(f"{p} is not a readable HDF5 file ({e})") from None
    elif suffix == ".npz":
        with np.load(p, allow_pickle=False) as d:
            if {"count", "sum", "sum_square"} <= set(d.files):
                count = float(np.asarray(d["count"]).reshape(-1)[0])
                mean = d["sum"] / count
                var = d["sum_square"] / count - mean * mean
                scale = np.sqrt(np.maximum(var, 1e-20))
            elif {"mean", "scale"} <= set(d.files):
                mean, scale = d["mean"], d["scale"]
            else:
                raise MelError(f"{p}: expected count/sum/sum_square or mean/scale arrays")
    else:
        raise MelError(f"{p}: unsupported stats file type {p.suffix!r}; use .npy, .h5 or .npz")
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    if mean.shape != scale.shape:
        raise MelError(f"{p}: mean has {mean.size} bins but scale has {scale.size}")
    if n_mels is not None and mean.size != n_mels:
        raise MelError(f"{p}: stats have {mean.size} bins but the features have {n_mels}")
    if not (np.isfinite(mean).all() and np.isfinite(scale).all()) or (scale <= 0).any():
        raise MelError(f"{p}: stats hold NaN/Inf or non-positive scales")
    return mean, scale
