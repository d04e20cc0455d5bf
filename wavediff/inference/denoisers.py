"""Denoisers for the samplers, built on :class:`InferenceEngine`.

Both are callables with the samplers' signature ``(x_t (B, T), steps (B,), mel) -> eps``
(the mel argument is the one given at construction) and carry ``hop_length``:

* :class:`EngineDenoiser` decodes the whole utterance at once: the conditioning is computed
  once, the step vectors once per distinct step.
* :class:`ChunkedDenoiser` evaluates the network over time chunks with overlapping context,
  so memory does not grow with the length (only ``x`` and the noise, 8 bytes per sample,
  are whole). Each step runs the chunks in turn on the same full-length ``x``, so the
  sampler, its random draws and its update are exactly those of whole decoding. A chunk's
  window reaches ``overlap`` samples beyond its core on each side; where that covers the
  network's receptive field (:func:`receptive_field`) plus the crossfade, the chunk's
  output equals the whole-utterance output there, and the linear crossfade between
  neighbours (weights summing to one) changes nothing beyond float rounding.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from wavediff.errors import ConfigError
from wavediff.inference.engine import Conditioning, InferenceEngine, StepBias

# Mel frames of context around a window: the two transposed convolutions of the upsampler
# reach about one frame each way.
MEL_MARGIN_FRAMES = 2
DEFAULT_CROSSFADE = 256  # samples on each side of a chunk boundary


def receptive_field(engine_or_model) -> int:
    """Waveform samples on each side that one network evaluation sees:
    ``sum(dilation * (k // 2))`` at the layers' rate, times the sub-bands (plus the rest of
    a sub-band block).

    DiffWave BASE: 3 cycles of dilations 1..512 with kernel 3 -> 3069 samples.
    """
    bands = int(getattr(engine_or_model, "bands", getattr(engine_or_model, "subbands", 1)))
    if isinstance(engine_or_model, InferenceEngine):
        dilations, k = engine_or_model.dilations, engine_or_model.kernel_size
    else:
        dilations = [layer.dilated_conv.dilation[0] for layer in engine_or_model.residual_layers]
        k = engine_or_model.config.kernel_size
    return sum(dilations) * (k // 2) * bands + (bands - 1)


class _StepCache:
    """:meth:`InferenceEngine.step_bias` per distinct step tensor value."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine
        self.table: dict[tuple[float, ...], StepBias] = {}

    def __call__(self, steps: Tensor) -> StepBias:
        values = steps.detach().to("cpu", torch.float64).reshape(-1).tolist()
        key = (values[0],) if len(set(values)) == 1 else tuple(values)
        if key not in self.table:
            self.table[key] = self.engine.step_bias(torch.tensor(key, dtype=torch.float64))
        return self.table[key]

    def precompute(self, steps: list[float]) -> None:
        for t in steps:
            self(torch.tensor([float(t)]))


class EngineDenoiser:
    """The whole utterance at once, with the mel's conditioning computed here, once.

    ``graphs``: replay each step from a CUDA graph (CUDA only; see
    :class:`wavediff.inference.graphs.GraphedNetwork`).
    """

    def __init__(self, engine: InferenceEngine, mel: Tensor, *,
                 steps: Optional[list[float]] = None, graphs: bool = False,
                 wave: Optional[Tensor] = None) -> None:
        self.engine = engine
        self.hop_length = engine.hop_length
        self.cond: Conditioning = engine.conditioning(mel, wave=wave)
        self.step_cache = _StepCache(engine)
        if steps:
            self.step_cache.precompute(steps)
        self.graph = None
        if graphs and engine.device.type == "cuda":
            from wavediff.inference.graphs import GraphedNetwork

            self.graph = GraphedNetwork(engine, self.cond, mel.shape[0])

    def __call__(self, x: Tensor, steps: Tensor, mel: Tensor) -> Tensor:
        sb = self.step_cache(steps)
        if self.graph is not None:
            return self.graph(x, sb)
        return self.engine.denoise(x, sb, self.cond)


class ChunkedDenoiser:
    """The network over chunks of ``chunk`` samples, each with ``overlap`` samples of
    context on both sides; memory is bounded by the chunk size, not the length.

    Args:
        engine: the inference engine.
        mel: ``(B, n_mels, F)``.
        chunk: core samples per chunk (rounded up to whole mel frames).
        overlap: context samples on each side of a core (default: the receptive field
            plus the crossfade, which makes the result match whole decoding).
        crossfade: samples on each side of a boundary over which neighbours are blended
            linearly; at most ``overlap`` (default: 256, at most a quarter of the chunk).
        cache_bytes: the full conditioning of the first chunks is kept across steps up to
            this many bytes; the other chunks keep only their upsampled mel and project it
            in every evaluation (memory bounded by one chunk).
        wave: the mel's Griffin-Lim waveform ``(B, F * hop)`` for a model with
            ``model.gl_condition`` (sliced with the mel), else None.
    """

    def __init__(self, engine: InferenceEngine, mel: Tensor, *, chunk: int,
                 overlap: Optional[int] = None, crossfade: Optional[int] = None,
                 cache_bytes: int = 0, steps: Optional[list[float]] = None,
                 wave: Optional[Tensor] = None) -> None:
        engine.check_mel(mel)
        hop = engine.hop_length
        self.engine, self.mel, self.hop_length = engine, mel, hop
        self.wave = wave  # the mel's Griffin-Lim waveform (model.gl_condition), or None
        if chunk < 1:
            raise ConfigError(f"chunk must be at least one sample, got {chunk}")
        if crossfade is None:
            crossfade = min(DEFAULT_CROSSFADE, math.ceil(chunk / hop) * hop // 4)
        self.crossfade = max(0, int(crossfade))
        self.overlap = (receptive_field(engine) + self.crossfade
                        if overlap is None else int(overlap))
        if self.overlap < self.crossfade:
            raise ConfigError(f"overlap ({self.overlap} samples) must be at least the "
                              f"crossfade ({self.crossfade})")
        frames = mel.shape[-1]
        self.chunk_frames = max(1, math.ceil(chunk / hop))
        self.overlap_frames = math.ceil(self.overlap / hop)
        if self.chunk_frames * hop < 2 * self.crossfade:
            raise ConfigError(f"chunk ({self.chunk_frames * hop} samples) must be at least "
                              f"twice the crossfade ({self.crossfade})")
        self.cores = [(a, min(a + self.chunk_frames, frames))
                      for a in range(0, frames, self.chunk_frames)]
        if len(self.cores) > 1 and (self.cores[-1][1] - self.cores[-1][0]) * hop < 2 * self.crossfade:
            self.cores[-2:] = [(self.cores[-2][0], frames)]  # too short to fade into
        self.step_cache = _StepCache(engine)
        if steps:
            self.step_cache.precompute(steps)
        self.cache: dict[int, Conditioning] = {}
        self.cached_bytes = 0
        self.cache_bytes = cache_bytes
        self.on_chunk: Optional[Callable[[], None]] = None  # called after each chunk (progress)

    def window(self, i: int) -> tuple[int, int]:
        """Frames ``[start, end)`` of chunk ``i``'s window (core plus context)."""
        a, b = self.cores[i]
        return max(0, a - self.overlap_frames), min(self.mel.shape[-1], b + self.overlap_frames)

    def _conditioning(self, i: int) -> Conditioning:
        if i in self.cache:
            return self.cache[i]
        wa, wb = self.window(i)
        frames = self.mel.shape[-1]
        ca, cb = max(0, wa - MEL_MARGIN_FRAMES), min(frames, wb + MEL_MARGIN_FRAMES)
        hop = self.engine.layer_hop
        wave = None if self.wave is None else self.wave[..., ca * self.hop_length:cb * self.hop_length]
        mel_up = self.engine.upsample(self.mel[..., ca:cb], wave)[..., (wa - ca) * hop:(wb - ca) * hop]
        need = (self.engine.num_layers * 2 * self.engine.channels * mel_up.shape[0]
                * mel_up.shape[-1] * 4)
        if self.cached_bytes + need <= self.cache_bytes:
            self.cache[i] = self.engine.conditioning(mel_up=mel_up)
            self.cached_bytes += need
            return self.cache[i]
        return self.engine.conditioning(mel_up=mel_up, lazy=True)

    def __call__(self, x: Tensor, steps: Tensor, mel: Tensor) -> Tensor:
        sb = self.step_cache(steps)
        hop, w = self.hop_length, self.crossfade
        eps = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
        last = len(self.cores) - 1
        for i, (a, b) in enumerate(self.cores):
            wa, wb = self.window(i)
            out = self.engine.denoise(x[:, wa * hop:wb * hop], sb, self._conditioning(i))
            # this chunk's span: its core, widened by the crossfade at inner boundaries
            lo = a * hop - (w if i > 0 else 0)
            hi = b * hop + (w if i < last else 0)
            weight = torch.ones(hi - lo, device=x.device)
            if i > 0 and w:
                weight[:2 * w] = _ramp(2 * w, x.device)
            if i < last and w:
                weight[-2 * w:] = 1.0 - _ramp(2 * w, x.device)
            eps[:, lo:hi] += weight * out[:, lo - wa * hop:hi - wa * hop]
            if self.on_chunk is not None:
                self.on_chunk()
        return eps


def _ramp(n: int, device: torch.device) -> Tensor:
    """``n`` weights rising linearly from near 0 to near 1, symmetric: r + flip(r) = 1."""
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n
