"""Building blocks of the DiffWave denoiser: step embedding, mel upsampler, residual block."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavediff.errors import ConfigError

MAX_UPSAMPLE_FACTOR = 32


def sinusoidal_embedding(steps: Tensor, dim: int) -> Tensor:
    """DiffWave's step encoding, ``[sin(t * 10^(4j/(d/2-1))), cos(...)]`` for j < d/2.

    Args:
        steps: ``(B,)`` integer-valued steps (any float dtype).
        dim: embedding size (even).
    Returns:
        ``(B, dim)`` float32.
    """
    half = dim // 2
    j = torch.arange(half, device=steps.device, dtype=torch.float32)
    table = steps.float().unsqueeze(1) * 10.0 ** (j * 4.0 / (half - 1)).unsqueeze(0)
    return torch.cat([torch.sin(table), torch.cos(table)], dim=1)


class StepEmbedding(nn.Module):
    """Diffusion-step embedding: sinusoid -> FC + swish -> FC + swish.

    A fractional step ``t`` (fast sampling) interpolates linearly between the encodings of
    ``floor(t)`` and ``ceil(t)``, as DiffWave does.
    """

    def __init__(self, embedding_dim: int = 128, hidden_dim: int = 512) -> None:
        super().__init__()
        if embedding_dim % 2 or embedding_dim < 4:
            raise ConfigError(f"model.step_embedding_dim must be even and >= 4, got {embedding_dim}")
        self.embedding_dim = embedding_dim
        self.projection1 = nn.Linear(embedding_dim, hidden_dim)
        self.projection2 = nn.Linear(hidden_dim, hidden_dim)

    def encode(self, steps: Tensor) -> Tensor:
        """``(B,)`` possibly fractional steps -> ``(B, embedding_dim)`` encodings."""
        low = torch.floor(steps)
        frac = (steps - low).float().unsqueeze(1)
        low_enc = sinusoidal_embedding(low, self.embedding_dim)
        high_enc = sinusoidal_embedding(low + 1, self.embedding_dim)
        return low_enc + (high_enc - low_enc) * frac

    def forward(self, steps: Tensor) -> Tensor:
        """``(B,)`` steps -> ``(B, hidden_dim)``."""
        x = self.encode(steps).to(self.projection1.weight.dtype)
        x = F.silu(self.projection1(x))
        return F.silu(self.projection2(x))


def upsample_factors_for(hop_length: int, factors: Optional[Sequence[int]] = None) -> list[int]:
    """Factors of the mel upsampler: the given ones checked, or two chosen from the hop.

    The hop is split into two factors as close to its square root as possible
    (256 -> 16 x 16, 300 -> 15 x 20, 128 -> 8 x 16); each must lie in
    [1, MAX_UPSAMPLE_FACTOR].
    """
    if factors:
        factors = [int(f) for f in factors]
        if math.prod(factors) != hop_length or any(f < 1 for f in factors):
            raise ConfigError(
                f"model.upsample_factors {factors} multiply to {math.prod(factors)}, "
                f"but the hop is {hop_length}; give positive factors whose product is the hop"
            )
        return factors
    best = None
    for a in range(1, int(math.isqrt(hop_length)) + 1):
        if hop_length % a == 0:
            best = (a, hop_length // a)
    assert best is not None
    if best[1] > MAX_UPSAMPLE_FACTOR:
        raise ConfigError(
            f"hop_length {hop_length} cannot be split into two upsampling factors of at most "
            f"{MAX_UPSAMPLE_FACTOR} (best is {best[0]} x {best[1]}); use a hop with small "
            f"prime factors (e.g. 256 or 300) or set model.upsample_factors explicitly"
        )
    return [f for f in best if f > 1] or [1]


class MelUpsampler(nn.Module):
    """Stretches a mel ``(B, n_mels, F)`` to ``(B, n_mels, F * hop)``.

    One transposed 2-D convolution per factor s (kernel ``(3, 2s)``, stride ``(1, s)``),
    each followed by a leaky ReLU (slope 0.4), as in DiffWave.
    """

    def __init__(self, factors: Sequence[int]) -> None:
        super().__init__()
        self.factors = list(factors)
        self.convs = nn.ModuleList(
            nn.ConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2))
            for s in self.factors
        )

    def forward(self, mel: Tensor) -> Tensor:
        x = mel.unsqueeze(1)
        for s, conv in zip(self.factors, self.convs):
            frames = x.shape[-1]
            x = F.leaky_relu(conv(x), 0.4)[..., : frames * s]
        return x.squeeze(1)


class ResidualBlock(nn.Module):
    """Gated dilated-conv block: ``y = conv(x + step) + cond(mel)``, tanh * sigmoid gate.

    Returns ``((x + residual) / sqrt(2), skip)``. ``n_mels``: the channels of the
    conditioning input (the mel's bins, and the Griffin-Lim waveform's sub-bands with
    ``model.gl_condition``).
    """

    def __init__(self, n_mels: int, channels: int, dilation: int, kernel_size: int = 3,
                 step_dim: int = 512) -> None:
        super().__init__()
        self.dilated_conv = nn.Conv1d(
            channels, 2 * channels, kernel_size, padding=dilation * (kernel_size // 2),
            dilation=dilation,
        )
        self.diffusion_projection = nn.Linear(step_dim, channels)
        self.conditioner_projection = nn.Conv1d(n_mels, 2 * channels, 1)
        self.output_projection = nn.Conv1d(channels, 2 * channels, 1)
        nn.init.kaiming_normal_(self.dilated_conv.weight)
        nn.init.kaiming_normal_(self.conditioner_projection.weight)
        nn.init.kaiming_normal_(self.output_projection.weight)

    def condition(self, mel_up: Tensor) -> Tensor:
        """Per-layer projection of the upsampled mel ``(B, n_mels, T) -> (B, 2C, T)`` (see
        :meth:`DiffWave.condition_input`).

        It depends only on the mel, so inference computes it once per utterance.
        """
        return self.conditioner_projection(mel_up)

    def forward(self, x: Tensor, step: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, C, T)``, ``step`` ``(B, step_dim)``, ``cond`` ``(B, 2C, T)``."""
        y = x + self.diffusion_projection(step).unsqueeze(-1)
        y = self.dilated_conv(y) + cond
        gate, filt = torch.chunk(y, 2, dim=1)
        y = torch.sigmoid(gate) * torch.tanh(filt)
        residual, skip = torch.chunk(self.output_projection(y), 2, dim=1)
        return (x + residual) * (1.0 / math.sqrt(2.0)), skip
