"""Length bucketing: group utterances of similar length so batches carry little padding."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from wavediff.errors import ConfigError


def pad_batch(mels: Sequence[np.ndarray], fill: float) -> tuple[np.ndarray, list[int]]:
    """Mels ``(n_mels, F_i)`` as one float32 batch ``(B, n_mels, max F_i)``, padded with
    ``fill`` (the convention's silence), and each item's frame count."""
    frames = [int(m.shape[-1]) for m in mels]
    batch = np.full((len(mels), mels[0].shape[0], max(frames)), fill, dtype=np.float32)
    for i, m in enumerate(mels):
        batch[i, :, : frames[i]] = m
    return batch, frames


def length_buckets(lengths: Sequence[int], batch_size: int, *,
                   max_padding: float = 0.25) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of at most ``batch_size``.

    Items are sorted by length (longest first); a batch is closed when it is full or when
    the next item would leave more than ``max_padding`` of the batch's samples as padding
    (``1 - sum(len) / (n * max(len))``). Every index appears exactly once.

    >>> length_buckets([10, 200, 12, 190, 11], 4)
    [[1, 3], [2, 4, 0]]
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if not 0.0 <= max_padding < 1.0:
        raise ConfigError(f"max_padding must be in [0, 1), got {max_padding}")
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        n = int(lengths[i])
        if current:
            longest = int(lengths[current[0]])
            padding = 1.0 - (total + n) / ((len(current) + 1) * longest)
            if len(current) >= batch_size or padding > max_padding:
                batches.append(current)
                current, total = [], 0
        current.append(i)
        total += n
    if current:
        batches.append(current)
    return batches
