"""The feature dump format, written by ``wavediff preprocess`` and read by training.

A dump directory holds one ``<utt_id>.npz`` per utterance with ``wave`` (float32,
``frames * hop`` samples) and ``mel`` (float32, ``(n_mels, frames)``), and ``audio.yaml``:
the mel convention they were computed with.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import yaml

from wavediff._files import atomic_write, atomic_write_text
from wavediff.audio.presets import MelConfig
from wavediff.errors import ConfigError, WavediffError

AUDIO_CONFIG_NAME = "audio.yaml"
log = logging.getLogger("wavediff.train")
PathLike = Union[str, os.PathLike]
RECORD_KEYS = ("wave", "mel")


class DumpError(WavediffError):
    """A dump directory or one of its records is missing or inconsistent."""


def save_record(path: PathLike, wave: np.ndarray, mel: np.ndarray) -> None:
    """Write one utterance record atomically (``wave`` (N,), ``mel`` (n_mels, F))."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, wave=wave.astype(np.float32), mel=mel.astype(np.float32))

    try:
        atomic_write(path, write)
    except OSError as e:
        raise DumpError(f"cannot write {path}: {e.strerror or e}") from None


def load_record(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(wave (N,), mel (n_mels, F))`` of one record; pickled content is refused."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["wave"], data["mel"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DumpError(f"{path} is not a readable feature record ({e}); rerun preprocess") from None


def write_audio_config(dumpdir: PathLike, config: MelConfig) -> None:
    atomic_write_text(Path(dumpdir, AUDIO_CONFIG_NAME),
                      yaml.safe_dump(config.to_dict(), sort_keys=False))


def read_audio_config(dumpdir: PathLike) -> MelConfig:
    path = Path(dumpdir, AUDIO_CONFIG_NAME)
    if not path.exists():
        raise DumpError(f"{dumpdir} has no {AUDIO_CONFIG_NAME}; is it a wavediff preprocess dump?")
    try:
        return MelConfig.from_dict(yaml.safe_load(path.read_text()))
    except (ConfigError, yaml.YAMLError) as e:
        raise DumpError(f"{path}: {e}") from None


def list_records(dumpdir: PathLike) -> list[Path]:
    dumpdir = Path(dumpdir)
    if not dumpdir.is_dir():
        raise DumpError(f"dump directory {dumpdir} does not exist; run wavediff preprocess")
    records = sorted(dumpdir.glob("*.npz"))
    if not records:
        raise DumpError(f"{dumpdir} holds no .npz records; run wavediff preprocess first")
    return records


def inspect_record(path: PathLike, n_mels: int, hop_length: int) -> Optional[str]:
    """Why record ``path`` cannot be trained on (one line naming it and the fix), or None.

    Reads only the zip directory and the array headers, so a dump of thousands of records
    is checked in seconds; values (NaN) are checked when a record is loaded.
    """
    fix = "delete it and rerun wavediff preprocess"
    shapes = {}
    try:
        with zipfile.ZipFile(path) as z:
            for key in RECORD_KEYS:
                with z.open(f"{key}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                if dtype.hasobject:
                    return f"{path}: '{key}' holds pickled Python objects, which are not loaded; {fix}"
                if dtype.kind != "f":
                    return f"{path}: '{key}' has dtype {dtype}, expected float32; {fix}"
                shapes[key] = shape
    except KeyError as e:
        return f"{path}: no {e} array in the record; {fix}"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        return f"{path}: not a readable feature record ({e}); {fix}"
    wave, mel = shapes["wave"], shapes["mel"]
    if len(mel) != 2 or mel[0] != n_mels or len(wave) != 1:
        return (f"{path}: mel of shape {mel} and wave of shape {wave}, expected ({n_mels}, frames) "
                f"and (frames * {hop_length},); {fix}")
    if mel[1] == 0 or wave[0] != mel[1] * hop_length:
        return (f"{path}: {wave[0]} samples for {mel[1]} frames x hop {hop_length}; {fix}")
    return None


def check_dump_matches(dumpdir: PathLike, expected: MelConfig) -> None:
    """Refuse a dump whose mel convention differs from the model's."""
    found = read_audio_config(dumpdir)
    if found.to_dict() != expected.to_dict():
        diffs = [
            f"{k}: dump {v!r} vs config {expected.to_dict()[k]!r}"
            for k, v in found.to_dict().items() if expected.to_dict()[k] != v
        ]
        raise DumpError(
            f"{dumpdir} was made with another mel convention ({'; '.join(diffs)}); "
            f"rerun preprocess with this config"
        )


def open_dump(dumpdir: PathLike, audio: MelConfig, *, inspect: bool = True) -> list[Path]:
    """The records of a dump made with mel convention ``audio``, sorted; with ``inspect``
    every record's header is checked first and a dump holding any unusable record is
    refused (one log line per record, then one error)."""
    check_dump_matches(dumpdir, audio)
    records = list_records(dumpdir)
    if inspect:
        bad = [msg for msg in (inspect_record(p, audio.n_mels, audio.hop_length)
                               for p in records) if msg]
        if bad:
            if len(bad) > 1:
                for msg in bad:
                    log.error("%s", msg)
            raise DumpError(
                f"{len(bad)} of {len(records)} records in {dumpdir} cannot be trained on "
                f"({'listed above' if len(bad) > 1 else bad[0]}); rerun wavediff preprocess "
                f"for them or delete them"
            )
    return records
