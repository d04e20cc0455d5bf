"""The training dataset of aligned (waveform, mel) crops of a feature dump
(:mod:`wavediff.audio.dump`) and its resumable batch sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass
import random
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from wavediff.audio.dump import DumpError, load_record
from wavediff.errors import WavediffError


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


@dataclass(frozen=True)
class RecordFailure:
    """A record that could not be read, passed from a loader worker as data (its one-line
    message intact) instead of as an exception wrapped in the worker's traceback."""

    message: str


def guarded(dataset: Dataset) -> Dataset:
    """``dataset`` whose items are :class:`RecordFailure` where a record fails to load."""
    return _Guarded(dataset)


class _Guarded(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item):
        try:
            return self.dataset[item]
        except WavediffError as e:
            return RecordFailure(str(e))


def collate_or_fail(batch: list) -> Any:
    """``default_collate`` of a batch, or its first :class:`RecordFailure`."""
    for b in batch:
        if isinstance(b, RecordFailure):
            return b
    return default_collate(batch)


UTT2SPK_MAX_BYTES = 64 << 20  # a utt2spk of a million utterances is ~40 MB


def read_utt2spk(path: Path, records: list[Path]) -> list[int]:
    """The speaker index of every record (``<utt> <speaker>`` lines; ``utt`` = record stem)."""
    if not path.is_file():
        raise WavediffError(f"{path} not found: train.balance_speakers needs the speaker of "
                            "every training utterance (the recipes copy data/<set>/utt2spk "
                            "there); write it, or set train.balance_speakers false")
    if path.stat().st_size > UTT2SPK_MAX_BYTES:
        raise WavediffError(f"{path}: {path.stat().st_size} bytes is not a utt2spk file "
                            f"(at most {UTT2SPK_MAX_BYTES >> 20} MB)")
    speaker_of: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise WavediffError(f"{path}:{n}: expected '<utt_id> <speaker>', got {line[:80]!r}")
        speaker_of[fields[0]] = fields[1]
    missing = [r.stem for r in records if r.stem not in speaker_of]
    if missing:
        raise WavediffError(f"{path} names no speaker for {len(missing)} training "
                            f"utterance(s), e.g. {missing[0]}; add them")
    names = sorted({speaker_of[r.stem] for r in records})
    index = {name: i for i, name in enumerate(names)}
    return [index[speaker_of[r.stem]] for r in records]


class StepBatchSampler(Sampler):
    """Batches of ``(record_index, u)`` that are a pure function of ``(seed, step)``.

    Record order is a fresh permutation per epoch; ``u`` picks the crop offset. Starting at
    ``start_step`` yields exactly what an uninterrupted run would have from that step on.
    With ``groups`` (a speaker index per record) every speaker is drawn equally often: an
    epoch holds each speaker's records in a fresh order, cycled to the largest speaker's
    count, all shuffled together (a small speaker's clips repeat within the epoch).
    """

    def __init__(self, num_records: int, batch_size: int, seed: int, start_step: int = 0,
                 max_steps: Optional[int] = None, groups: Optional[list[int]] = None) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.max_steps = max_steps
        self.members: Optional[list[list[int]]] = None
        self.n = num_records
        self._cached: tuple[int, list[int]] = (-1, [])
        if groups is not None:
            if len(groups) != num_records:
                raise ValueError(f"{len(groups)} speaker indices for {num_records} records")
            by_group: dict[int, list[int]] = {}
            for i, g in enumerate(groups):
                by_group.setdefault(g, []).append(i)
            self.members = [by_group[g] for g in sorted(by_group)]
            self.n = len(self.members) * max(len(m) for m in self.members)

    def _perm(self, epoch: int) -> list[int]:
        if self._cached[0] == epoch:  # one epoch spans many steps: build its order once
            return self._cached[1]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.members is None:
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            per = self.n // len(self.members)
            order = []
            for m in self.members:
                idx = torch.randperm(len(m), generator=g).tolist()
                order += [m[idx[k % len(m)]] for k in range(per)]
            perm = [order[i] for i in torch.randperm(self.n, generator=g).tolist()]
        self._cached = (epoch, perm)
        return perm

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
