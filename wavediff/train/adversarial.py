"""Discriminators and losses of the adversarial fine-tune (training only).

A few-step decode trained with a mel-spectrogram loss alone comes out smooth: the mel loss
fixes the envelope, not the fine structure that makes speech sound natural. As HiFi-GAN
(Kong et al. 2020), WaveFit (Koizumi et al. 2022) and PeriodWave-Turbo (Lee et al. 2024) do,
discriminators judge the decoded waveform:

* :class:`PeriodDiscriminator` (HiFi-GAN's multi-period discriminator): the waveform folded
  into ``(T / p, p)`` columns for a prime period ``p``, 2-D convolutions along time, so
  each one sees the samples ``p`` apart (the periodic structure of voiced speech);
* :class:`ResolutionDiscriminator` (UnivNet's and Vocos' multi-resolution discriminator):
  2-D convolutions over one STFT magnitude (frequency x time).

Least-squares GAN losses (Mao et al. 2017) and feature matching (L1 between the
discriminators' hidden activations of real and decoded audio), as HiFi-GAN. The channel
widths are a fraction of HiFi-GAN's (its discriminators hold ~70 M parameters): small
enough to train beside a 12 x 32 DiffWave on a CPU.

Nothing in inference imports this module.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

PERIODS = (2, 3, 5, 7, 11)
RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))  # n_fft, hop, win
SLOPE = 0.1  # leaky ReLU slope of HiFi-GAN's discriminators

Judgement = tuple[Tensor, list[Tensor]]  # (logits, hidden activations)


def _judge(layers: nn.ModuleList, post: nn.Module, h: Tensor) -> Judgement:
    """The convolution stack of a discriminator: leaky ReLU after each layer, every
    activation kept for feature matching, the last layer's output as the logits."""
    features = []
    for layer in layers:
        h = F.leaky_relu(layer(h), SLOPE)
        features.append(h)
    h = post(h)
    features.append(h)
    return h.flatten(1), features


class PeriodDiscriminator(nn.Module):
    """``(B, T) -> (logits, features)`` on the waveform folded by ``period``."""

    def __init__(self, period: int, channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.period = period
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            stride = 3 if i < len(channels) - 1 else 1
            layers.append(weight_norm(nn.Conv2d(c_in, c, (5, 1), (stride, 1), padding=(2, 0))))
            c_in = c
        self.layers = nn.ModuleList(layers)
        self.post = weight_norm(nn.Conv2d(c_in, 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: Tensor) -> Judgement:
        b, t = wav.shape
        if t % self.period:  # reflect-pad to a whole number of periods, as HiFi-GAN
            wav = F.pad(wav[:, None], (0, self.period - t % self.period), mode="reflect")[:, 0]
        return _judge(self.layers, self.post, wav.reshape(b, 1, -1, self.period))


class ResolutionDiscriminator(nn.Module):
    """``(B, T) -> (logits, features)`` on the STFT magnitude at one resolution."""

    def __init__(self, n_fft: int, hop: int, win: int, channels: int = 16) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop, win
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        c = channels
        self.layers = nn.ModuleList([
            weight_norm(nn.Conv2d(1, c, (7, 5), (2, 2), padding=(3, 2))),
            weight_norm(nn.Conv2d(c, c, (5, 3), (2, 1), padding=(2, 1))),
            weight_norm(nn.Conv2d(c, c, (5, 3), (2, 1), padding=(2, 1))),
            weight_norm(nn.Conv2d(c, c, 3, padding=1)),
        ])
        self.post = weight_norm(nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, wav: Tensor) -> Judgement:
        spec = torch.stft(wav.float(), self.n_fft, self.hop, self.win, window=self.window,
                          center=True, return_complex=True)
        # |z| with a finite gradient at 0, compressed as Vocos' discriminator input
        h = (spec.real.square() + spec.imag.square()).clamp(min=1e-10).sqrt()
        return _judge(self.layers, self.post, torch.log1p(h)[:, None])  # (B, 1, freq, frames)


class Discriminators(nn.Module):
    """The multi-period and multi-resolution discriminators together:
    ``(B, T) -> [(logits, features), ...]``, one judgement per discriminator."""

    def __init__(self, periods: Sequence[int] = PERIODS,
                 resolutions: Sequence[tuple[int, int, int]] = RESOLUTIONS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [PeriodDiscriminator(p) for p in periods]
            + [ResolutionDiscriminator(*r) for r in resolutions])

    def forward(self, wav: Tensor) -> list[Judgement]:
        return [d(wav) for d in self.discriminators]


def discriminator_loss(real: list[Judgement], fake: list[Judgement]) -> Tensor:
    """LSGAN: ``mean((1 - D(real))^2) + mean(D(fake)^2)``, summed over discriminators."""
    return torch.stack([(1.0 - r).square().mean() + f.square().mean()
                        for (r, _), (f, _) in zip(real, fake)]).sum()


def generator_loss(fake: list[Judgement]) -> Tensor:
    """LSGAN for the generator: ``mean((1 - D(fake))^2)``, summed over discriminators."""
    return torch.stack([(1.0 - f).square().mean() for f, _ in fake]).sum()


def feature_matching_loss(real: list[Judgement], fake: list[Judgement]) -> Tensor:
    """Mean L1 between the hidden activations of real and decoded audio, averaged per
    layer and summed over discriminators (HiFi-GAN's feature matching)."""
    return torch.stack([torch.stack([(r.detach() - f).abs().mean() for r, f in zip(rf, ff)]).mean()
                        for (_, rf), (_, ff) in zip(real, fake)]).sum()
