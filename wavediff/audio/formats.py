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

from wavediff._files import path_problem
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
    sample_rate: Optional[int] = None  # what the file states (an HDF5 attribute, a scalar
    hop_length: Optional[int] = None   # entry of an .npz or a .pt dict), else None
    stated_by: str = ""                # where it says so, for messages

    @property
    def stated_rate(self) -> Optional[int]:
        """The sample rate the file states (directly or by its convention), else None."""
        rate = self.sample_rate if self.sample_rate is not None else getattr(
            self.known, "sample_rate", None)
        return None if rate is None else int(rate)

    def check_rate(self, sample_rate: int, hop_length: int) -> None:
        """Refuse a file that states another sample rate or hop than the model's."""
        rate = self.stated_rate
        hop = self.hop_length if self.hop_length is not None else getattr(
            self.known, "hop_length", None)
        by = self.stated_by or "its audio.yaml"
        if rate is not None and int(rate) != int(sample_rate):
            raise MelError(
                f"{self.source}: the file states {int(rate)} Hz ({by}) but the model runs at "
                f"{sample_rate} Hz: vocoded as it is, the audio would last "
                f"{rate / sample_rate:.2f}x as long and sound pitched; use a model trained at "
                f"{int(rate)} Hz, or compute the mels from audio resampled to {sample_rate} Hz")
        if hop is not None and int(hop) != int(hop_length):
            raise MelError(
                f"{self.source}: the file states a hop of {int(hop)} samples ({by}) but the "
                f"model's is {hop_length}; use a model with hop {int(hop)}, or compute the "
                f"mels with hop {hop_length}")


RATE_NAMES = ("sampling_rate", "sample_rate", "sr", "fs")
HOP_NAMES = ("hop_length", "hop_size")


def _stated(values: dict, source: str) -> dict:
    """``sample_rate``/``hop_length``/``stated_by`` of MelFile from scalar entries a file
    carries beside its mel (attributes, small arrays); anything else is ignored."""
    out: dict = {}
    for field_name, names in (("sample_rate", RATE_NAMES), ("hop_length", HOP_NAMES)):
        for name in names:
            if name not in values:
                continue
            try:
                v = np.asarray(values[name])
                if v.size != 1 or v.dtype.kind not in "fiu":
                    continue
                number = float(v.reshape(-1)[0])
            except (TypeError, ValueError):
                continue
            if not (0 < number < 10_000_000) or number != int(number):
                continue
            out[field_name] = int(number)
            out["stated_by"] = (out.get("stated_by", "") + ", " if out.get("stated_by") else "") + (
                f"{name} = {int(number)} in {source}")
            break
    return out


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
    from wavediff._files import read_scp
    from wavediff.errors import WavediffError

    try:
        entries = read_scp(os.fspath(path))
    except WavediffError as e:
        raise MelError(str(e)) from None
    for utt, target in entries:
        split_spec(target)  # refuses .ark offsets with a clear line
    return entries


# ---------------------------------------------------------------------- size limits
# The longest mel read by default: a bit over an hour of frames at 22,050 Hz and hop 256
# (or 40 minutes at 24 kHz, hop 256 ... ), far beyond any TTS utterance; larger declared
# sizes are refused before anything is allocated.
DEFAULT_MAX_FRAMES = 320_000
MAX_BINS = 512  # no mel convention has more bins; bounds the elements of an array


def check_declared_shape(source: str, shape: Sequence[int], itemsize: int = 4,
                         max_frames: int = DEFAULT_MAX_FRAMES) -> None:
    """Refuse an array whose declared shape is out of bounds, before reading its data."""
    shape = tuple(int(n) for n in shape)
    if len(shape) > 4:
        raise MelError(f"{source}: a {len(shape)}-D array is not a mel spectrogram")
    frames = max(shape, default=0)
    elements = int(np.prod(shape, dtype=np.float64)) if shape else 1
    if frames > max_frames or elements > max_frames * MAX_BINS:
        raise MelError(
            f"{source}: declared shape {shape} ({elements * itemsize / 2**30:.1f} GiB) is beyond "
            f"the limit of {max_frames} frames (about {max_frames * 256 / 22050 / 60:.0f} min); "
            f"split the utterance or raise --max-frames"
        )


MAX_NPY_HEADER = 65536  # bytes; numpy writes a few hundred


def check_declared_bytes(source: str, shape: Sequence[int], dtype: np.dtype,
                         available: int) -> None:
    """Refuse a header that declares more data than the file holds, before any allocation
    (a few bytes of header must not make wavediff allocate gigabytes)."""
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize if dtype.itemsize else 0
    if declared > available:
        raise MelError(f"{source}: its header declares {declared} bytes of data (shape "
                       f"{tuple(shape)}, {dtype}) but the file holds {max(available, 0)}; it is "
                       f"truncated or corrupt: write it again")


def _npy_header(fp, source: str) -> tuple[tuple[int, ...], np.dtype]:
    """The declared ``(shape, dtype)`` of an open .npy stream (the header only)."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fp)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown .npy format version {version[0]}.{version[1]}")
        # the header's declared length, checked before it is read (a read of a declared
        # length allocates it, however short the file)
        start = fp.tell()
        size_bytes = fp.read(2 if version == (1, 0) else 4)
        if int.from_bytes(size_bytes, "little") > MAX_NPY_HEADER:
            raise ValueError(f"a header of {int.from_bytes(size_bytes, 'little')} bytes")
        fp.seek(start)
        read = npformat.read_array_header_1_0 if version == (1, 0) else \
            npformat.read_array_header_2_0
        shape, _, dtype = read(fp)
    except Exception as e:  # noqa: BLE001 - numpy's header parser fails in many ways on garbage
        raise MelError(f"{source} is not a readable .npy file ({str(e)[:120]}); it is truncated "
                       f"or corrupt: write it again with np.save") from None
    if dtype.hasobject:
        raise MelError(
            f"{source} holds pickled Python objects, which wavediff does not load; "
            f"save the mel as a plain float array (np.save(path, mel.astype('float32')))"
        )
    return shape, dtype


# ---------------------------------------------------------------------- loading
def _load_npy(path: Path, max_frames: int = DEFAULT_MAX_FRAMES) -> np.ndarray:
    try:
        with open(path, "rb") as fp:
            shape, dtype = _npy_header(fp, str(path))
            offset = fp.tell()
        check_declared_shape(str(path), shape, dtype.itemsize, max_frames)
        check_declared_bytes(str(path), shape, dtype, path.stat().st_size - offset)
        return np.load(path, allow_pickle=False)
    except MelError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise _unreadable(path, ".npy", e, "save the mel as a plain float array "
                          "(np.save(path, mel.astype('float32')))",
                          "; it is truncated or corrupt: write it again with np.save") from None


def _unreadable(path: Path, kind: str, e: BaseException, pickle_fix: str,
                tail: str = "") -> MelError:
    """The one-line error for a mel file numpy could not read: pickled content is named
    as such (it is never loaded), anything else is unreadable."""
    if isinstance(e, ValueError) and "pickle" in str(e).lower():
        return MelError(f"{path} holds pickled Python objects, which wavediff does not load; "
                        f"{pickle_fix}")
    return MelError(f"{path} is not a readable {kind} file ({e}){tail}")



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

def _load_npz(path: Path, key: Optional[str], max_frames: int = DEFAULT_MAX_FRAMES) -> MelFile:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            key = _choose_key(path, names, key, _NPZ_KEYS, "array",
                              f"holds several arrays ({', '.join(names[:8])}) and none is "
                              f"called {'/'.join(_NPZ_KEYS)}; name one as {path}:<name>")
            # the declared sizes first: a small compressed file may expand to gigabytes
            info = data.zip.getinfo(f"{key}.npy")
            limit = max_frames * MAX_BINS * 8 + 65536  # float64 values and a header
            if info.file_size > limit:
                raise MelError(
                    f"{path}:{key} expands to {info.file_size / 2**30:.1f} GiB, beyond the "
                    f"limit of {max_frames} frames; split the utterance or raise --max-frames")
            with data.zip.open(info) as member:
                shape, dtype = _npy_header(member, f"{path}:{key}")
                offset = member.tell()
            check_declared_shape(f"{path}:{key}", shape, dtype.itemsize, max_frames)
            check_declared_bytes(f"{path}:{key}", shape, dtype, info.file_size - offset)
            array = data[key]
            is_record = key == "mel" and "wave" in names
            small = {}
            for name in set(names) & set(RATE_NAMES + HOP_NAMES):
                member_info = data.zip.getinfo(f"{name}.npy")
                if member_info.file_size <= 1024:  # a scalar, never a large array
                    small[name] = data[name]
            stated = _stated(small, str(path))
    except MelError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(path, ".npz", e, "save plain float arrays with np.savez") from None
    known = None
    if is_record and (path.parent / "audio.yaml").is_file():
        from wavediff.errors import WavediffError
        from wavediff.audio.dump import read_audio_config

        try:
            known = read_audio_config(path.parent)
        except WavediffError:
            known = None
    return MelFile(array, f"{path}:{key}" if key not in ("mel",) else str(path), known, **stated)


def _load_pt(path: Path) -> MelFile:
    import torch

    import zipfile

    limit = DEFAULT_MAX_FRAMES * MAX_BINS * 8 + 2**20
    if path.stat().st_size > limit:
        raise MelError(f"{path} is {path.stat().st_size / 2**30:.1f} GiB, far beyond any mel; "
                       f"split the utterance")
    try:
        is_zip = zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        is_zip = False
    if not is_zip:
        raise MelError(f"{path} is not a .pt file of torch.save's zip format (PyTorch 1.6 "
                       f"and later); save the mel again with torch.save or np.save")
    try:
        # mmap: a storage's declared size cannot make torch allocate beyond the file itself
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise MelError(
            f"{path} holds pickled objects other than tensors and was refused (not run); "
            f"save the mel with torch.save(tensor) or np.save"
        ) from None
    except Exception as e:  # noqa: BLE001 - a corrupt file can make the unpickler fail any way
        msg = str(e).splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise MelError(f"{path} is not a readable .pt file ({msg}); write it again with "
                       f"torch.save") from None
    stated: dict = {}
    if isinstance(obj, dict):
        stated = _stated({k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
                          for k, v in obj.items() if k in RATE_NAMES + HOP_NAMES}, str(path))
        obj = {k: v for k, v in obj.items() if k not in RATE_NAMES + HOP_NAMES}
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
    return MelFile(obj.detach().to(torch.float32, copy=True).numpy(), str(path), **stated)


def _check_h5_storage(data, source: str) -> None:
    """Only data stored inside the file itself is read: external raw storage and virtual
    datasets (which make HDF5 read other files) are refused."""
    import h5py

    if data.is_virtual:
        raise MelError(f"{source} is a virtual dataset that maps other files; wavediff reads "
                       f"only data stored in the file itself")
    if data.external:
        raise MelError(f"{source} keeps its data in external files ({len(data.external)}); "
                       f"wavediff reads only data stored in the file itself")
    layout = data.id.get_create_plist().get_layout()
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        raise MelError(f"{source} has an unsupported storage layout; rewrite it with h5py")


def _load_h5(path: Path, key: Optional[str], max_frames: int = DEFAULT_MAX_FRAMES) -> MelFile:
    import h5py

    given_key = key
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
            _check_h5_storage(data, f"{path}:{key}")
            check_declared_shape(f"{path}:{key}", data.shape, data.dtype.itemsize, max_frames)
            array = np.asarray(data[()])
            attrs = {}
            for holder, where in ((data, f"the attributes of {path}:{key}"),
                                  (f, f"the attributes of {path}")):
                for name in RATE_NAMES + HOP_NAMES:
                    if name in holder.attrs and name not in attrs:
                        attrs[name] = holder.attrs[name]
                if attrs:
                    stated = _stated(attrs, where)
                    break
            else:
                stated = {}
            return MelFile(array, f"{path}:{key}" if given_key else str(path), **stated)
    except MelError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
        # h5py reports damaged files with any of these
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise MelError(f"{path} is not a readable HDF5 file ({reason}); write it again") from None


def load_mel_file(spec: PathLike, max_frames: int = DEFAULT_MAX_FRAMES) -> MelFile:
    """Read a mel file as stored (any layout); ``spec`` may name an h5/npz entry as ``path:key``.

    Declared sizes are checked against ``max_frames`` before any data is read. Raises
    :class:`MelError` for missing, unreadable, unsafe (pickled), oversized or unsupported
    files, and for HDF5 datasets whose data lives in other files.
    """
    path, key = split_spec(spec)
    problem = path_problem(path, "mel file")
    if problem:
        raise MelError(problem)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return MelFile(_load_npy(path, max_frames), str(path))
    if suffix == ".npz":
        return _load_npz(path, key, max_frames)
    if suffix == ".pt":
        return _load_pt(path)
    if suffix in H5_SUFFIXES:
        return _load_h5(path, key, max_frames)
    from wavediff.audio.io import AUDIO_SUFFIXES

    audio_like = suffix in (".mp3", ".m4a", ".aac", ".opus", ".wma", ".webm", ".mp4")
    audio_like = audio_like and suffix not in AUDIO_SUFFIXES
    raise MelError(
        f"{path}: {'an audio format wavediff does not read' if audio_like else 'unsupported file type'} "
        f"{path.suffix!r}; mel files are {', '.join(MEL_SUFFIXES)} and audio files (for "
        f"copy-synthesis) {', '.join(AUDIO_SUFFIXES)}"
        + (f" (e.g. ffmpeg -i {path.name} {path.stem}.wav)" if audio_like else "")
    )


# ---------------------------------------------------------------------- layouts
def check_array(array: object, source: str = "mel") -> None:
    """Refuse what is not a mel before any conversion: a non-real dtype (complex, bool,
    strings, objects) or an empty array; the message names the dtype as stored."""
    import torch

    if isinstance(array, torch.Tensor):
        dtype, kind, size = str(array.dtype).replace("torch.", ""), (
            "c" if array.is_complex() else "b" if array.dtype == torch.bool
            else "f" if array.is_floating_point() else "i"), array.numel()
        shape = tuple(array.shape)
    else:
        a = np.asarray(array)
        dtype, kind, size, shape = str(a.dtype), a.dtype.kind, a.size, tuple(a.shape)
    if kind not in "fiu":
        what = {"c": "complex", "b": "boolean"}.get(kind, "not numeric")
        raise MelError(f"{source}: a {what} array (dtype {dtype}, shape {shape}) is not a mel; "
                       "write the log-mel magnitudes as a real float array")
    if size == 0:
        raise MelError(f"{source}: an empty array (dtype {dtype}, shape {shape}); write the mel "
                       "with at least one frame")


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
    check_array(array, source)
    a = np.asarray(array)
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


def read_mel(path: PathLike, n_mels: int, layout: Optional[str] = None) -> np.ndarray:
    """Read a mel file as float32 ``(n_mels, frames)`` (values as stored, no conversion);
    the layout is the one :func:`possible_layouts` allows (``(n_mels, T)`` first for a
    square array) unless ``layout`` names it. Raises :class:`MelError`."""
    f = load_mel_file(path)
    if layout is None:
        found = possible_layouts(np.shape(f.array), [n_mels])
        if not found:
            raise MelError(
                f"{f.source}: mel of shape {tuple(np.shape(f.array))} has no axis of {n_mels} "
                f"bins; this model expects {n_mels} mel bins (check the TTS system's n_mels)")
        layout = found[0][0]
    out = apply_layout(f.array, layout, f.source)
    if out.shape[0] != n_mels:
        raise MelError(f"{f.source}: read as {LAYOUT_SHAPES[layout]}, it has {out.shape[0]} "
                       f"bins but {n_mels} are expected")
    return out


# ---------------------------------------------------------------------- statistics
def read_stats(path: PathLike, n_mels: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin ``(mean, scale)`` (float64, ``(n_mels,)`` each) of normalised features.

    Reads ParallelWaveGAN/wavediff ``stats.npy`` (``(2, n_mels)``: mean; scale),
    ``stats.h5`` (datasets ``mean`` and ``scale``) and ESPnet ``feats_stats.npz``
    (``count``, ``sum``, ``sum_square``; scale = sqrt(max(var, 1e-20)) as its GlobalMVN).
    Features were normalised as ``(raw - mean) / scale``.
    """
    p = Path(path)
    problem = path_problem(p, "stats file")
    if problem:
        raise MelError(f"{problem} (--stats)")
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
