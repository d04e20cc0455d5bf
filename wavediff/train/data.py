"""Feature dump directories and the training dataset of aligned (waveform, mel) crops.

A dump directory, written by ``wavediff preprocess``, holds one ``<utt_id>.npz`` per
utterance with ``wave`` (float32, ``frames * hop`` samples) and ``mel`` (float32,
``(n_mels, frames)``), and ``audio.yaml``: the mel convention they were computed with.
"""

from __future__ import annotations

import math
import os
import random
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset, Sampler

from wavediff.audio.presets import MelConfig
from wavediff.errors import ConfigError, WavediffError

AUDIO_CONFIG_NAME = "audio.yaml"
PathLike = Union[str, os.PathLike]


class DumpError(WavediffError):
    """A dump directory or one of its records is missing or inconsistent."""


def save_record(path: PathLike, wave: np.ndarray, mel: np.ndarray) -> None:
    """Write one utterance record atomically (``wave`` (N,), ``mel`` (n_mels, F))."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, wave=wave.astype(np.float32), mel=mel.astype(np.float32))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DumpError(f"cannot write {path}: {e.strerror or e}") from None


def load_record(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(wave (N,), mel (n_mels, F))`` of one record; pickled content is refused."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["wave"], data["mel"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DumpError(f"{path} is not a readable feature record ({e}); rerun preprocess") from None


def write_audio_config(dumpdir: PathLike, config: MelConfig) -> None:
    Path(dumpdir, AUDIO_CONFIG_NAME).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


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
            for key in ("wave", "mel"):
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


class CropDataset(Dataset):
    """Aligned random crops of ``crop_frames`` mel frames and ``crop_frames * hop`` samples.

    Items are addressed as ``(record_index, u)`` with ``u`` in [0, 1) choosing the crop's
    start, so the sampler alone decides the randomness (and a resumed run repeats it).
    Utterances shorter than a crop are padded: zeros in the waveform, ``pad_value`` (the
    mel of silence) in the mel.
    """

    def __init__(self, records: list[Path], crop_frames: int, hop_length: int,
                 pad_value: float, cache: bool = False) -> None:
        self.records = records
        self.crop_frames = crop_frames
        self.hop_length = hop_length
        self.pad_value = pad_value
        self._cache: Optional[dict[int, tuple[np.ndarray, np.ndarray]]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        wave, mel = load_record(self.records[index])
        if len(wave) != mel.shape[-1] * self.hop_length:
            raise DumpError(
                f"{self.records[index]}: {len(wave)} samples != {mel.shape[-1]} frames x hop "
                f"{self.hop_length}; rerun preprocess"
            )
        for key, value in (("mel", mel), ("wave", wave)):
            if not np.isfinite(value).all():
                raise DumpError(
                    f"{self.records[index]}: '{key}' holds {int((~np.isfinite(value)).sum())} "
                    f"NaN/Inf values; delete the record and rerun wavediff preprocess, then "
                    f"continue with --resume"
                )
        if self._cache is not None:
            self._cache[index] = (wave, mel)
        return wave, mel

    def __getitem__(self, item: tuple[int, float]) -> tuple[torch.Tensor, torch.Tensor]:
        index, u = item
        wave, mel = self._load(index)
        frames, hop, n = mel.shape[-1], self.hop_length, self.crop_frames
        if frames >= n:
            start = min(int(u * (frames - n + 1)), frames - n)
            mel_c = mel[:, start:start + n]
            wave_c = wave[start * hop:(start + n) * hop]
        else:
            mel_c = np.full((mel.shape[0], n), self.pad_value, dtype=np.float32)
            mel_c[:, :frames] = mel
            wave_c = np.zeros(n * hop, dtype=np.float32)
            wave_c[:len(wave)] = wave
        return torch.from_numpy(np.ascontiguousarray(wave_c)), torch.from_numpy(
            np.ascontiguousarray(mel_c))


class StepBatchSampler(Sampler):
    """Batches of ``(record_index, u)`` that are a pure function of ``(seed, step)``.

    Record order is a fresh permutation per epoch; ``u`` picks the crop offset. Starting at
    ``start_step`` yields exactly what an uninterrupted run would have from that step on.
    """

    def __init__(self, num_records: int, batch_size: int, seed: int, start_step: int = 0,
                 max_steps: Optional[int] = None) -> None:
        self.n = num_records
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.max_steps = max_steps

    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def batch(self, step: int) -> list[tuple[int, float]]:
        items = []
        perm_epoch, perm = -1, []
        for k in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch = k // self.n
            if epoch != perm_epoch:
                perm_epoch, perm = epoch, self._perm(epoch)
            u = random.Random(self.seed * 7_919 + k).random()
            items.append((perm[k % self.n], u))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, float]]]:
        step = self.start_step
        while self.max_steps is None or step < self.max_steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.max_steps is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.max_steps - self.start_step)


def crop_frames_for(crop_samples: int, hop_length: int) -> int:
    """Whole mel frames in a crop of ``crop_samples`` samples (at least one)."""
    return max(1, math.floor(crop_samples / hop_length))
