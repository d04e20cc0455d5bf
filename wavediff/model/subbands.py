"""Orthonormal sub-band splits of the waveform: the Haar wavelet packet (FreGrad's Haar DWT
and its multi-level versions).

A depth-``L`` Haar wavelet packet of ``n = 2**L`` bands acts on consecutive blocks of ``n``
samples with the ``n x n`` Walsh matrix (the Hadamard matrix with its rows in sequency
order, scaled by ``1/sqrt(n)``): band ``k`` at sample ``m`` is
``sum_j W[k, j] x[m n + j]``. The matrix is orthonormal, so

* the split is perfectly reconstructed by its transpose, and
* white Gaussian noise of variance ``s^2`` stays white Gaussian noise of variance ``s^2``
  in every band: the forward and reverse chains over the bands are the same chains as over
  the waveform, which is why a sub-band denoiser can be trained and sampled with the
  waveform's schedule and prior.

Band 0 is the low band (block means); the others hold the detail, in increasing sequency.
The arithmetic is elementwise (no matmul), so autocast leaves it in the input's precision.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

SUBBAND_CHOICES = (1, 2, 4, 8)


@lru_cache(maxsize=None)
def _walsh(n: int) -> tuple:
    # plain numbers, not a tensor: a cached tensor made while torch.export or torch.compile
    # traces would be a fake one, left behind for every later call
    if n not in SUBBAND_CHOICES:
        raise ValueError(f"sub-bands must be one of {SUBBAND_CHOICES}, got {n}")
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    sign_changes = (h[:, 1:] != h[:, :-1]).sum(1)
    return tuple(map(tuple, (h[np.argsort(sign_changes, kind="stable")] / math.sqrt(n)).tolist()))


def walsh_matrix(n: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> Tensor:
    """The ``(n, n)`` orthonormal analysis matrix of ``n`` bands (rows: bands)."""
    return torch.tensor(_walsh(n), dtype=dtype, device=device)


def analysis(x: Tensor, bands: int) -> Tensor:
    """``(..., T)`` -> ``(..., bands, T / bands)``; ``T`` must be a multiple of ``bands``."""
    if bands == 1:
        return x.unsqueeze(-2)
    if x.shape[-1] % bands:
        raise ValueError(f"{x.shape[-1]} samples do not split into {bands} bands")
    w = walsh_matrix(bands, x.dtype, x.device)
    blocks = x.reshape(*x.shape[:-1], x.shape[-1] // bands, 1, bands)  # (..., M, 1, n)
    return (blocks * w).sum(-1).transpose(-1, -2)  # (..., M, n) -> (..., n, M)


def synthesis(z: Tensor) -> Tensor:
    """The inverse of :func:`analysis`: ``(..., bands, M)`` -> ``(..., bands * M)``."""
    bands = z.shape[-2]
    if bands == 1:
        return z.squeeze(-2)
    w = walsh_matrix(bands, z.dtype, z.device)
    rows = z.transpose(-1, -2).unsqueeze(-1)  # (..., M, n, 1)
    return (rows * w).sum(-2).reshape(*z.shape[:-2], -1)
