"""The registered denoiser architectures and the one factory that builds them.

``model.architecture`` in a config names the class; :func:`build_model` is the only place a
model is built from a config (training, loading, importing, cards), so a new architecture
is one class and one line in :data:`ARCHITECTURES`.

What the samplers, the inference engine and the trainer rely on is
:class:`DenoiserModel`: every architecture is a dilated-convolution (WaveNet-style)
denoiser of the waveform (or of its sub-bands, split and merged inside the model) that
predicts the noise of ``x_t`` at a (fractional) training step, conditioned on a mel (or,
with ``diffusion.prediction: residual``, the residual of the clean waveform; the model is
the same either way, the chain reads its output).
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from torch import Tensor, nn

from wavediff.config import ARCHITECTURE_NAMES, Config
from wavediff.model.diffwave import DiffWave


@runtime_checkable
class DenoiserModel(Protocol):
    """The model protocol.

    Attributes:
        n_mels: mel bins of the conditioning spectrogram.
        hop_length: waveform samples per mel frame; inputs are ``F * hop_length`` long.
        subbands: bands the layers run on (1: the waveform itself). The model splits and
            merges them itself: its input and output are always waveforms.
    """

    n_mels: int
    hop_length: int
    subbands: int

    def conditioning(self, mel: Tensor, wave: Optional[Tensor] = None) -> list[Tensor]:
        """Everything that depends on the mel ``(B, n_mels, F)`` alone (and, for a model
        with ``model.gl_condition``, on the mel's Griffin-Lim waveform ``wave``
        ``(B, F * hop)``), computed once per utterance and passed to every :meth:`denoise`
        call."""

    def condition_input(self, mel: Tensor, wave: Optional[Tensor] = None) -> Tensor:
        """What every layer's conditioning projects, at the layers' rate: the upsampled mel
        (and the waveform's sub-bands); the engine projects it itself."""

    def denoise(self, x: Tensor, steps: Tensor, conds: list[Tensor]) -> Tensor:
        """``x`` ``(B, T)``, ``steps`` ``(B,)`` -> predicted noise (or residual) ``(B, T)``."""

    def forward(self, x: Tensor, steps: Tensor, mel: Tensor,
                wave: Optional[Tensor] = None) -> Tensor:
        """``denoise(x, steps, conditioning(mel, wave))`` with the shapes checked."""


ARCHITECTURES: dict[str, type] = {"diffwave": DiffWave}
assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES


def build_model(config: Config) -> nn.Module:
    """The untrained model ``config.model.architecture`` names, sized by ``config``."""
    return ARCHITECTURES[config.model.architecture].from_config(config)
