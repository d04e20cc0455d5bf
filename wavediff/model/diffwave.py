"""The DiffWave denoiser (Kong et al., 2021): a non-causal WaveNet predicting the noise."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavediff.config import Config, ModelConfig
from wavediff.errors import ConfigError, MelError
from wavediff.model.layers import MelUpsampler, ResidualBlock, StepEmbedding, upsample_factors_for
from wavediff.model.subbands import SUBBAND_CHOICES, analysis, synthesis


def haar_analysis(x: Tensor) -> Tensor:
    """One level of the orthonormal Haar DWT: ``(B, T)`` -> ``(B, 2, T/2)`` (low, high band).

    ``low = (x[2k] + x[2k+1]) / sqrt(2)``, ``high = (x[2k] - x[2k+1]) / sqrt(2)``
    (:func:`wavediff.model.subbands.analysis` with 2 bands).
    """
    return analysis(x, 2)


def haar_synthesis(z: Tensor) -> Tensor:
    """The inverse of :func:`haar_analysis`: ``(B, 2, T/2)`` -> ``(B, T)``."""
    return synthesis(z)


# The gain on the Griffin-Lim waveform where it joins the mel's channels
# (model.gl_condition): speech at an RMS of 0.05-0.1 becomes about unit scale, as the log
# mel's variation is. At the waveform's own scale its columns of the conditioning
# projection, trained by Adam at the mel's step size, made a fiftieth of the mel's change
# per step (no gain after 290 steps: the dev log-mel of the mel alone).
WAVE_GAIN = 20.0


class DiffWave(nn.Module):
    """``forward(x_t, steps, mel) -> eps``: the network only; it knows no noise schedule.

    With ``subbands: 2`` (FreGrad, Nguyen et al. 2024) the waveform is split by a Haar DWT
    into two half-rate bands that the layers process together as two channels, and the
    prediction is put back together by the inverse DWT: the layers run at half the sample
    rate, so a step costs about half. ``subbands: 4`` or ``8`` split deeper (the Haar
    wavelet packet, :mod:`wavediff.model.subbands`): the layers run at a quarter or an
    eighth of the rate, which buys twice or about three times the channels at the cost of
    one band. Input and output stay waveforms either way; the split is orthonormal, so the
    noise of the chain is the same white noise in every band.

    Args (constructor):
        n_mels: mel bins of the conditioning spectrogram.
        hop_length: waveform samples per mel frame (the upsampler's factors follow it).
        config: layers, channels, dilation cycle, kernel and embedding sizes.
    """

    def __init__(self, n_mels: int, hop_length: int, config: Optional[ModelConfig] = None) -> None:
        super().__init__()
        config = config or ModelConfig()
        self.config = config
        self.n_mels = n_mels
        self.hop_length = hop_length
        channels = config.residual_channels
        bands = self.subbands = config.subbands
        if bands not in SUBBAND_CHOICES or hop_length % bands:
            raise ConfigError(f"model.subbands must be one of {', '.join(map(str, SUBBAND_CHOICES))} "
                              f"and divide the hop ({hop_length}), got {bands}")
        # model.gl_condition: the Griffin-Lim waveform's sub-bands join the mel's channels
        self.wave_channels = bands if config.gl_condition else 0
        self.input_projection = nn.Conv1d(bands, channels, 1)
        self.diffusion_embedding = StepEmbedding(config.step_embedding_dim, config.step_hidden_dim)
        self.spectrogram_upsampler = MelUpsampler(  # to the rate the layers run at
            upsample_factors_for(hop_length // bands, config.upsample_factors)
        )
        self.residual_layers = nn.ModuleList(
            ResidualBlock(n_mels + self.wave_channels, channels, 2 ** (i % config.dilation_cycle),
                          config.kernel_size, config.step_hidden_dim)
            for i in range(config.residual_layers)
        )
        self.skip_projection = nn.Conv1d(channels, channels, 1)
        self.output_projection = nn.Conv1d(channels, bands, 1)
        nn.init.kaiming_normal_(self.input_projection.weight)
        nn.init.kaiming_normal_(self.skip_projection.weight)
        nn.init.zeros_(self.output_projection.weight)
        nn.init.zeros_(self.output_projection.bias)

    @classmethod
    def from_config(cls, config: Config) -> "DiffWave":
        return cls(config.audio.n_mels, config.audio.hop_length, config.model)

    # ------------------------------------------------------------------ pieces
    def check_mel(self, mel: Tensor) -> None:
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise MelError(
                f"expected a mel of shape (batch, {self.n_mels}, frames), got {tuple(mel.shape)}"
            )

    def condition_input(self, mel: Tensor, wave: Optional[Tensor] = None) -> Tensor:
        """What every layer's conditioning projects: the upsampled mel ``(B, n_mels,
        F*hop/subbands)`` at the layers' rate, with ``model.gl_condition`` the sub-bands of
        ``wave`` ``(B, F*hop)`` (the mel's Griffin-Lim waveform) as further channels."""
        self.check_mel(mel)
        return self.with_wave(self.spectrogram_upsampler(mel), wave)

    def with_wave(self, mel_up: Tensor, wave: Optional[Tensor]) -> Tensor:
        """``mel_up`` with ``wave``'s sub-bands appended (``model.gl_condition``; times
        :data:`WAVE_GAIN`); checks
        that a waveform is given exactly when the model is conditioned on one."""
        if not self.wave_channels:
            if wave is not None:
                raise ConfigError("this model is conditioned on the mel alone "
                                  "(model.gl_condition: 0): pass no waveform")
            return mel_up
        if wave is None:
            raise ConfigError(
                f"this model is conditioned on the mel's Griffin-Lim waveform "
                f"(model.gl_condition: {self.config.gl_condition}); decode it through "
                f"wavediff.Vocoder or the samplers' decode path, which compute that waveform")
        want = (mel_up.shape[0], mel_up.shape[-1] * self.subbands)
        if tuple(wave.shape) != want:
            raise MelError(f"the conditioning waveform has shape {tuple(wave.shape)}, the mel "
                           f"needs {want}")
        bands = analysis(wave.to(mel_up.dtype), self.subbands) * WAVE_GAIN
        return torch.cat([mel_up, bands], dim=1)

    def conditioning(self, mel: Tensor, wave: Optional[Tensor] = None) -> list[Tensor]:
        """Everything that depends only on the mel (and, with ``model.gl_condition``, its
        Griffin-Lim waveform ``wave``): one ``(B, 2C, F*hop/subbands)`` tensor per layer."""
        cond_in = self.condition_input(mel, wave)
        return [layer.condition(cond_in) for layer in self.residual_layers]

    def denoise(self, x: Tensor, steps: Tensor, conds: list[Tensor]) -> Tensor:
        """One network evaluation with precomputed mel conditioning.

        Args:
            x: ``(B, T)`` noisy waveform.
            steps: ``(B,)`` training-step indices (fractional allowed).
            conds: :meth:`conditioning` of the mel, each ``(B, 2C, T)``.
        Returns:
            ``(B, T)`` predicted noise.
        """
        z = analysis(x, self.subbands)
        h = F.relu(self.input_projection(z))
        step = self.diffusion_embedding(steps)
        skip = None
        for layer, cond in zip(self.residual_layers, conds):
            h, s = layer(h, step, cond)
            skip = s if skip is None else skip + s
        h = skip * (1.0 / math.sqrt(len(self.residual_layers)))
        h = F.relu(self.skip_projection(h))
        out = self.output_projection(h)
        return synthesis(out)

    def forward(self, x: Tensor, steps: Tensor, mel: Tensor,
                wave: Optional[Tensor] = None) -> Tensor:
        """``x`` ``(B, F*hop)``, ``steps`` ``(B,)``, ``mel`` ``(B, n_mels, F)`` -> ``(B, F*hop)``;
        ``wave`` ``(B, F*hop)``: the mel's Griffin-Lim waveform, for (and only for) a model
        with ``model.gl_condition``."""
        self.check_mel(mel)
        if x.dim() != 2 or x.shape[-1] != mel.shape[-1] * self.hop_length:
            raise MelError(
                f"waveform of shape {tuple(x.shape)} does not match {mel.shape[-1]} mel frames "
                f"x hop {self.hop_length} = {mel.shape[-1] * self.hop_length} samples"
            )
        if steps.dim() == 0:
            steps = steps.expand(x.shape[0])
        return self.denoise(x, steps, self.conditioning(mel, wave))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
