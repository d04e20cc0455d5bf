"""What decoding needs beside the model's owner: the engine built from the weights (rebuilt
when they change), the decoding precision (resolved on first use), the choice between whole
and chunked decoding, CUDA graphs, progress within an utterance, and the check that the
audio came out finite. :class:`wavediff.Vocoder` holds one :class:`DecodeRunner`."""

from __future__ import annotations

import logging
import warnings
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from wavediff.config import GL_INITS, Config
from wavediff.diffusion import GaussianDiffusion
from wavediff.diffusion.schedule import GRIFFIN_LIM, SamplingPlan
from wavediff.errors import ConfigError, WavediffError
from wavediff.inference.calibrate import resolve_decode_precision
from wavediff.inference.decode import chain_inputs, run_sampler, select_denoiser
from wavediff.inference.engine import InferenceEngine
from wavediff.model import DiffWave
from wavediff.precision import canonical

log = logging.getLogger("wavediff.vocoder")
# Utterances longer than this (plus the context on both sides) are decoded in chunks.
DEFAULT_CHUNK_SECONDS = 4.0
# "fused": the InferenceEngine (the network rearranged for decoding); "reference": the
# model's own readable forward. "fast" is the older name of "fused".
ENGINES = ("fused", "reference")
Progress = Callable[[int, int], None]
StepCallback = Callable[[int, int, Tensor], None]


class DecodeRunner:
    """Decodes mels of ``config``'s convention with ``model`` on ``device``.

    ``engine``: ``"fused"`` (:class:`~wavediff.inference.InferenceEngine`) or
    ``"reference"`` (the model's own code), for every sub-band split.
    ``precision``: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``
    (:mod:`wavediff.precision`). ``chunk_seconds``: the default chunk length.
    """

    def __init__(self, model: DiffWave, config: Config, device: torch.device, *,
                 engine: str = "fused", precision: str = "auto", cuda_graphs: bool = False,
                 chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS) -> None:
        if engine == "fast":
            warnings.warn("engine='fast' is deprecated (it is unrelated to the fast sampler); "
                          "use engine='fused'", DeprecationWarning, stacklevel=3)
            engine = "fused"
        if engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.model, self.config, self.device = model, config, device
        self.diffusion = GaussianDiffusion.from_config(config.diffusion, config.audio)
        self.engine_name = engine
        self.requested_precision = canonical(precision)
        self.precision_reason: Optional[str] = None  # set when first resolved
        self._precision = "fp32"
        self.cuda_graphs = cuda_graphs
        self.chunk_seconds = chunk_seconds
        self._engine: Optional[InferenceEngine] = None
        self._engine_key: Optional[tuple] = None

    @property
    def precision(self) -> str:
        """The decoding precision in effect: ``"fp32"``, ``"bf16"`` or ``"fp16"``;
        ``precision="auto"`` is resolved (and logged) the first time it is needed."""
        if self.precision_reason is None:
            self._precision, self.precision_reason = resolve_decode_precision(
                self.requested_precision, self.model, self.device)
            log.info("decoding precision: %s", self.precision_reason)
        return self._precision

    @property
    def engine(self) -> InferenceEngine:
        """The inference engine of the current weights (rebuilt when they change)."""
        key = tuple((id(p), p._version) for p in self.model.parameters())
        if self._engine is None or key != self._engine_key:
            self._engine = InferenceEngine(self.model, precision=self.precision)
            self._engine_key = key
        return self._engine

    def denoiser_for(self, mel: Tensor, chosen: SamplingPlan,
                     chunk_seconds: Union[float, None, str] = "default",
                     wave: Optional[Tensor] = None):
        """The denoiser for ``mel`` ``(B, n_mels, F)`` under ``chosen``: whole or chunked
        (``chunk_seconds``; ``"default"``: the runner's), step biases precomputed; ``wave``:
        the Griffin-Lim conditioning of a model with ``model.gl_condition``."""
        if chunk_seconds == "default":
            chunk_seconds = self.chunk_seconds
        chunk = int(round(chunk_seconds * self.config.audio.sample_rate)) if chunk_seconds else None
        engine = None if self.engine_name == "reference" else self.engine
        return select_denoiser(self.model, engine, mel, chosen, chunk_samples=chunk,
                               cuda_graphs=self.cuda_graphs, wave=wave)

    def gl_init(self, gl_init: Optional[str] = None) -> str:
        """``gl_init`` checked (:data:`~wavediff.config.GL_INITS`), or the model's
        ``diffusion.gl_init`` when None."""
        gl_init = self.config.diffusion.gl_init if gl_init is None else gl_init
        if gl_init not in GL_INITS:
            raise ConfigError(f"gl_init must be one of {', '.join(GL_INITS)}, got {gl_init!r}")
        return gl_init

    def run(self, mel: Tensor, chosen: SamplingPlan, *, generator: torch.Generator,
            consistency: int, chunk_seconds: Union[float, None, str] = "default",
            callback: Optional[StepCallback] = None,
            progress: Optional[Progress] = None, gl_init: Optional[str] = None) -> Tensor:
        """The waveform ``(B, F * hop)`` of a checked mel ``(B, n_mels, F)`` on the device;
        ``gl_init``: where its Griffin-Lim decodes start (default the model's
        ``diffusion.gl_init``)."""
        if isinstance(consistency, bool) or not isinstance(consistency, int) or consistency < 0:
            raise ConfigError(f"consistency must be a non-negative number of projections, "
                              f"got {consistency!r}")
        gl_init = self.gl_init(gl_init)
        if chosen.sampler == GRIFFIN_LIM:  # no network: nothing to build
            return run_sampler(None, self.diffusion, mel, chosen, generator=generator,
                               audio=self.config.audio, consistency=consistency,
                               gl_init=gl_init)
        inputs = chain_inputs(mel, generator=generator, audio=self.config.audio,
                              consistency=consistency,
                              start_iters=self.config.diffusion.start_iters,
                              condition_iters=self.config.model.gl_condition, gl_init=gl_init)
        denoiser = self.denoiser_for(mel, chosen, chunk_seconds, wave=inputs.wave)
        if progress is not None:
            callback = with_progress(denoiser, chosen, progress, callback)
        wav = run_sampler(denoiser, self.diffusion, mel, chosen, generator=generator,
                          audio=self.config.audio, consistency=consistency, callback=callback,
                          inputs=inputs)
        if not bool(torch.isfinite(wav).all()):
            raise WavediffError(
                f"the model produced {int((~torch.isfinite(wav)).sum())} NaN or infinite "
                f"samples from a finite mel (precision {self.precision}): its weights "
                f"overflow on this input; decode with precision='fp32' (--precision fp32), or "
                f"use an earlier checkpoint")
        return wav


def with_progress(denoiser, chosen: SamplingPlan, progress: Progress,
                  callback: Optional[StepCallback]) -> Optional[StepCallback]:
    """Wire ``progress(done, total)`` to the chunks of a chunked denoiser (``total`` =
    network evaluations x chunks), or to the sampler's steps; returns the sampler
    callback to use."""
    chunks = len(getattr(denoiser, "cores", ())) or 1
    total = len(chosen.network_steps) * chunks
    done = [0]

    def tick() -> None:
        done[0] += 1
        progress(min(done[0], total), total)

    if chunks > 1:
        denoiser.on_chunk = tick
        return callback

    def per_step(i: int, n: int, x: Tensor) -> None:
        tick()
        if callback is not None:
            callback(i, n, x)
    return per_step
