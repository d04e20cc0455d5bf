"""Noise keyed by position: the same standard normal value at the same sample of the same
draw, however the signal is cut into pieces.

A decode draws several full-length noise signals (Griffin-Lim's start, ``x_T``, one per
step that adds noise). :class:`PositionalNoise` makes each of them a pure function of
``(item key, stream, sample index)``: the signal is cut into blocks of :data:`BLOCK`
samples and each block is drawn from its own generator, seeded from a hash of the three.
Decoding a whole mel and decoding it piece by piece as it streams in
(:mod:`wavediff.inference.stream`) therefore add exactly the same noise.

Streams: ``GL_START`` (0) the Griffin-Lim start's noise, ``X_T`` (1) the chain's first
noise, ``step_stream(i)`` = 2 + i the draw after the ``i``-th network evaluation (in the
order of sampling).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

BLOCK = 4096  # samples drawn from one seeded generator
GL_START, X_T = 0, 1
_MASK = (1 << 64) - 1


def step_stream(i: int) -> int:
    """The stream of the draw after network evaluation ``i`` (0-based, order of sampling)."""
    return 2 + int(i)


def _mix(z: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit hash of a 64-bit integer."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class PositionalNoise:
    """Standard normal noise for a batch, each item's a function of its key, the stream and
    the absolute sample position.

    ``keys``: one integer per batch item (:meth:`from_generator` draws them from a seeded
    generator, so a seed still decides the audio).
    """

    def __init__(self, keys: Sequence[int], block: int = BLOCK) -> None:
        self.keys = [int(k) & _MASK for k in keys]
        if not self.keys:
            raise ValueError("PositionalNoise needs at least one key")
        self.block = int(block)
        self._gen = torch.Generator()
        self._cache: dict[tuple[int, int, int], Tensor] = {}

    @classmethod
    def from_generator(cls, generator: Optional[torch.Generator], batch: int) -> "PositionalNoise":
        """Keys for ``batch`` items drawn from ``generator`` (a fresh random one if None)."""
        if generator is None:
            keys = torch.randint(0, 2**62, (batch,))
        else:
            keys = torch.randint(0, 2**62, (batch,), generator=generator, device=generator.device)
        return cls(keys.cpu().tolist())

    @property
    def batch(self) -> int:
        return len(self.keys)

    def _block(self, item: int, stream: int, index: int) -> Tensor:
        key = (item, stream, index)
        out = self._cache.get(key)
        if out is None:
            seed = _mix(_mix(_mix(self.keys[item]) ^ stream) ^ index) >> 1
            self._gen.manual_seed(seed)
            out = torch.randn(self.block, generator=self._gen)
            if len(self._cache) > 256:  # the blocks in use stay; a long stream does not grow
                self._cache.clear()
            self._cache[key] = out
        return out

    def draw(self, stream: int, start: int, stop: int, *, device: Optional[torch.device] = None,
             dtype: torch.dtype = torch.float32) -> Tensor:
        """Samples ``[start, stop)`` of ``stream`` for every item: ``(B, stop - start)``."""
        if stop < start or start < 0:
            raise ValueError(f"bad sample range [{start}, {stop})")
        rows = []
        first, last = start // self.block, max(start, stop - 1) // self.block
        for item in range(self.batch):
            blocks = [self._block(item, stream, j) for j in range(first, last + 1)]
            row = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
            rows.append(row[start - first * self.block: stop - first * self.block])
        return torch.stack(rows).to(device=device, dtype=dtype)

    def full(self, stream: int, like: Tensor) -> Tensor:
        """The whole of ``stream`` for a signal shaped and typed as ``like`` ``(B, T)``."""
        return self.draw(stream, 0, like.shape[-1], device=like.device, dtype=like.dtype)
