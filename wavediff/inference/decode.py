"""One decoding path for the facade (:class:`wavediff.Vocoder`) and the trainer's dev
decodes: the denoiser chosen for a mel (the readable model, the engine whole, or the engine
in chunks) and the sampler run over a :class:`~wavediff.diffusion.schedule.SamplingPlan`,
with the optional spectral-consistency projection."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from wavediff.audio.phase import SpectralProjector, consistency_projector
from wavediff.audio.presets import MelConfig
from wavediff.diffusion import GaussianDiffusion, get_sampler
from wavediff.diffusion.noise import GL_START, PositionalNoise
from wavediff.diffusion.process import randn
from wavediff.diffusion.schedule import GRIFFIN_LIM, SamplingPlan
from wavediff.errors import ConfigError
from wavediff.inference.denoisers import ChunkedDenoiser, EngineDenoiser
from wavediff.inference.engine import InferenceEngine
from wavediff.model import DiffWave


class ConditionedDenoiser:
    """The readable model as a denoiser, everything that depends only on the mel computed
    once. Callable with the samplers' signature ``(x_t, steps, mel) -> eps``; the mel
    argument is ignored after construction (it must be the mel given here)."""

    def __init__(self, model: DiffWave, mel: Tensor) -> None:
        self.model = model
        self.hop_length = model.hop_length
        self.conds = model.conditioning(mel)

    def __call__(self, x: Tensor, steps: Tensor, mel: Tensor) -> Tensor:
        if steps.dim() == 0:
            steps = steps.expand(x.shape[0])
        return self.model.denoise(x, steps, self.conds)


def select_denoiser(model: DiffWave, engine: Optional[InferenceEngine], mel: Tensor,
                    plan: SamplingPlan, *, chunk_samples: Optional[int] = None,
                    cuda_graphs: bool = False):
    """The denoiser for ``mel`` ``(B, n_mels, F)``: the model itself when ``engine`` is None
    (``engine="reference"``); else the engine over the whole utterance,
    or in chunks of ``chunk_samples`` when the utterance (or the batch) is longer than that
    — memory then stays bounded by the chunk. Step biases of ``plan`` are precomputed."""
    if engine is None:
        return ConditionedDenoiser(model, mel)
    steps = plan.network_steps
    if chunk_samples:
        # memory bound: the per-layer conditioning of chunk_samples of audio
        budget = engine.num_layers * 2 * engine.channels * 4 * (chunk_samples // engine.bands)
        chunked = ChunkedDenoiser(engine, mel, chunk=chunk_samples, steps=steps,
                                  cache_bytes=budget)
        samples = mel.shape[-1] * engine.hop_length
        if ((len(chunked.cores) > 1 and samples > chunk_samples + 2 * chunked.overlap)
                or mel.shape[0] * samples > chunk_samples):
            return chunked  # long, or a batch too large to hold its conditioning
    return EngineDenoiser(engine, mel, steps=steps, graphs=cuda_graphs)


def run_sampler(denoiser, diffusion: GaussianDiffusion, mel: Tensor, plan: SamplingPlan, *,
                generator: torch.Generator, audio: MelConfig, consistency: int = 0,
                callback: Optional[Callable[[int, int, Tensor], None]] = None,
                start_iters: int = 0) -> Tensor:
    """The waveform ``(B, F * hop)`` of ``mel`` under ``plan``; ``consistency`` Griffin-Lim
    projections of each step's clean estimate onto the mel's magnitudes (0 = off). The
    :data:`~wavediff.diffusion.schedule.GRIFFIN_LIM` plan runs no network: ``consistency``
    projections of standard normal noise (drawn from ``generator``), Griffin-Lim alone.
    ``start_iters`` > 0 (``diffusion.start_iters``): the chain starts around the Griffin-Lim
    decode of that many projections. Every noise is positional
    (:class:`~wavediff.diffusion.noise.PositionalNoise`, one key per item drawn from
    ``generator``), so a streamed decode (:mod:`wavediff.inference.stream`) adds the same."""
    draws = PositionalNoise.from_generator(generator, mel.shape[0])
    if plan.sampler == GRIFFIN_LIM:
        return griffin_lim(audio, mel, consistency, generator=generator, draws=draws)
    # one magnitude estimate (the NNLS solve) for the start and the projections of the chain
    projector = SpectralProjector(audio, mel) if consistency > 0 or start_iters > 0 else None
    project = consistency_projector(audio, mel, consistency, projector)
    init = (griffin_lim(audio, mel, start_iters, generator=generator, projector=projector,
                        draws=draws)
            if start_iters > 0 else None)
    return get_sampler(plan.sampler)(denoiser, diffusion, mel, schedule=plan,
                                     generator=generator, callback=callback, project=project,
                                     init=init, draws=draws)


def griffin_lim(audio: MelConfig, mel: Tensor, iters: int, *,
                generator: Optional[torch.Generator],
                projector: Optional[SpectralProjector] = None,
                draws: Optional[PositionalNoise] = None) -> Tensor:
    """The waveform ``(B, F * hop)`` of ``mel`` by ``iters`` Griffin-Lim projections
    (:class:`~wavediff.audio.phase.SpectralProjector`, ``projector`` when given: it must
    be ``mel``'s) from standard normal noise (``draws``' ``GL_START`` stream when given,
    else from ``generator``), no network: the baseline every trained model must beat.
    Clamped to [-1, 1]."""
    if iters < 1:
        raise ConfigError("Griffin-Lim decoding (steps=0, no network) needs at least one "
                          "projection: set consistency to e.g. 32 (--consistency 32)")
    shape = (mel.shape[0], mel.shape[-1] * audio.hop_length)
    if draws is not None:
        noise = draws.draw(GL_START, 0, shape[1], device=mel.device, dtype=mel.dtype)
    else:
        noise = randn(shape, generator, mel.device, mel.dtype)
    projector = projector or SpectralProjector(audio, mel)
    return projector.griffin_lim(noise, iters).clamp(-1.0, 1.0)


def decode_mel(model: DiffWave, diffusion: GaussianDiffusion, mel: Tensor, plan: SamplingPlan,
               *, generator: torch.Generator, audio: MelConfig,
               chunk_samples: Optional[int] = None, consistency: int = 0,
               start_iters: int = 0) -> Tensor:
    """Decode ``mel`` with ``model`` in one call (the trainer's dev decodes), through the
    engine built from the model."""
    engine = InferenceEngine(model)
    denoiser = select_denoiser(model, engine, mel, plan, chunk_samples=chunk_samples)
    return run_sampler(denoiser, diffusion, mel, plan, generator=generator, audio=audio,
                       consistency=consistency, start_iters=start_iters)
