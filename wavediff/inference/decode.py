"""One decoding path for the facade (:class:`wavediff.Vocoder`) and the trainer's dev
decodes: the denoiser chosen for a mel (the readable model, the engine whole, or the engine
in chunks) and the sampler run over a :class:`~wavediff.diffusion.schedule.SamplingPlan`,
with the optional spectral-consistency projection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from wavediff.audio.phase import SpectralProjector, consistency_projector, phase_vocoder_start
from wavediff.audio.presets import MelConfig
from wavediff.diffusion import GaussianDiffusion, get_sampler
from wavediff.diffusion.noise import GL_START, PositionalNoise
from wavediff.diffusion.process import randn
from wavediff.diffusion.schedule import GRIFFIN_LIM, SamplingPlan
from wavediff.config import GL_INITS
from wavediff.errors import ConfigError
from wavediff.inference.denoisers import ChunkedDenoiser, EngineDenoiser
from wavediff.inference.engine import InferenceEngine
from wavediff.model import DiffWave


class ConditionedDenoiser:
    """The readable model as a denoiser, everything that depends only on the mel computed
    once. Callable with the samplers' signature ``(x_t, steps, mel) -> eps``; the mel
    argument is ignored after construction (it must be the mel given here)."""

    def __init__(self, model: DiffWave, mel: Tensor, wave: Optional[Tensor] = None) -> None:
        self.model = model
        self.hop_length = model.hop_length
        self.conds = model.conditioning(mel, wave)

    def __call__(self, x: Tensor, steps: Tensor, mel: Tensor) -> Tensor:
        if steps.dim() == 0:
            steps = steps.expand(x.shape[0])
        return self.model.denoise(x, steps, self.conds)


class WaveConditioned:
    """A model with ``model.gl_condition`` (or its DistributedDataParallel wrapper) as a
    denoiser with the samplers' and the losses' signature ``(x_t, steps, mel)``: ``wave``
    (the batch's Griffin-Lim waveform, ``(B, F * hop)``) is passed to every call. Keeps the
    autograd graph (training)."""

    def __init__(self, model: Callable[..., Tensor], wave: Tensor) -> None:
        self.model, self.wave = model, wave
        self.hop_length = getattr(getattr(model, "module", model), "hop_length")

    def __call__(self, x: Tensor, steps: Tensor, mel: Tensor) -> Tensor:
        return self.model(x, steps, mel, wave=self.wave)


def select_denoiser(model: DiffWave, engine: Optional[InferenceEngine], mel: Tensor,
                    plan: SamplingPlan, *, chunk_samples: Optional[int] = None,
                    cuda_graphs: bool = False, wave: Optional[Tensor] = None):
    """The denoiser for ``mel`` ``(B, n_mels, F)``: the model itself when ``engine`` is None
    (``engine="reference"``); else the engine over the whole utterance,
    or in chunks of ``chunk_samples`` when the utterance (or the batch) is longer than that
    — memory then stays bounded by the chunk. Step biases of ``plan`` are precomputed.
    ``wave``: the mel's Griffin-Lim waveform for a model with ``model.gl_condition``
    (:attr:`ChainInputs.wave`)."""
    if engine is None:
        return ConditionedDenoiser(model, mel, wave)
    steps = plan.network_steps
    if chunk_samples:
        # memory bound: the per-layer conditioning of chunk_samples of audio
        budget = engine.num_layers * 2 * engine.channels * 4 * (chunk_samples // engine.bands)
        chunked = ChunkedDenoiser(engine, mel, chunk=chunk_samples, steps=steps,
                                  cache_bytes=budget, wave=wave)
        samples = mel.shape[-1] * engine.hop_length
        if ((len(chunked.cores) > 1 and samples > chunk_samples + 2 * chunked.overlap)
                or mel.shape[0] * samples > chunk_samples):
            return chunked  # long, or a batch too large to hold its conditioning
    return EngineDenoiser(engine, mel, steps=steps, graphs=cuda_graphs, wave=wave)


@dataclass
class ChainInputs:
    """What a decode of one mel batch needs besides the network, made before the denoiser
    (whose conditioning may need ``wave``) by :func:`chain_inputs`.

    Attributes:
        draws: the positional noise of every item.
        projector: the mel's spectral projector (None when nothing projects).
        init: the Griffin-Lim start of the chain (``diffusion.start_iters``), or None.
        wave: the Griffin-Lim waveform the network is conditioned on
            (``model.gl_condition``), or None.
    """

    draws: PositionalNoise
    projector: Optional[SpectralProjector]
    init: Optional[Tensor]
    wave: Optional[Tensor]


def require_one_griffin_lim(start_iters: int, gl_condition: int, what: str,
                            instead: str = "") -> None:
    """Refuse a plan whose Griffin-Lim start and conditioning are two different waveforms
    (``diffusion.start_iters`` neither 0 nor ``model.gl_condition``) where ``what`` (a
    stream, the exported decoder) computes only one; ``instead`` ends the message."""
    if gl_condition and start_iters not in (0, gl_condition):
        raise ConfigError(
            f"{what} conditions on and starts from one Griffin-Lim waveform: set "
            f"diffusion.start_iters to 0 or to model.gl_condition ({gl_condition}), not "
            f"{start_iters}{instead}")


def chain_inputs(mel: Tensor, *, generator: torch.Generator, audio: MelConfig,
                 consistency: int = 0, start_iters: int = 0,
                 condition_iters: int = 0, gl_init: str = "noise") -> ChainInputs:
    """The noise, projector, Griffin-Lim start (``start_iters`` projections) and Griffin-Lim
    conditioning waveform (``condition_iters``) of a decode of ``mel``. Both Griffin-Lim
    waveforms begin at the same place (``gl_init``: the positional noise of the
    ``GL_START`` stream, or the phase-vocoder phase), so with equal counts they are one
    computation."""
    draws = PositionalNoise.from_generator(generator, mel.shape[0])
    needs = consistency > 0 or start_iters > 0 or condition_iters > 0
    # one magnitude estimate (the NNLS solve) for the start, the conditioning and the chain:
    # in float64 where the phase vocoder needs it (the projector's are those rounded)
    precise = gl_init == "phase-vocoder" and (start_iters > 0 or condition_iters > 0)
    projector = SpectralProjector(audio, mel, precise=precise) if needs else None
    made: dict[int, Tensor] = {}

    def gl(iters: int) -> Optional[Tensor]:
        if iters <= 0:
            return None
        if iters not in made:
            made[iters] = griffin_lim(audio, mel, iters, generator=generator,
                                      projector=projector, draws=draws, init=gl_init)
        return made[iters]

    return ChainInputs(draws, projector, gl(start_iters), gl(condition_iters))


def run_sampler(denoiser, diffusion: GaussianDiffusion, mel: Tensor, plan: SamplingPlan, *,
                generator: torch.Generator, audio: MelConfig, consistency: int = 0,
                callback: Optional[Callable[[int, int, Tensor], None]] = None,
                start_iters: int = 0, inputs: Optional[ChainInputs] = None,
                gl_init: str = "noise") -> Tensor:
    """The waveform ``(B, F * hop)`` of ``mel`` under ``plan``; ``consistency`` Griffin-Lim
    projections of each step's clean estimate onto the mel's magnitudes (0 = off). The
    :data:`~wavediff.diffusion.schedule.GRIFFIN_LIM` plan runs no network: ``consistency``
    projections of standard normal noise (drawn from ``generator``), Griffin-Lim alone.
    ``start_iters`` > 0 (``diffusion.start_iters``): the chain starts around the Griffin-Lim
    decode of that many projections. Every noise is positional
    (:class:`~wavediff.diffusion.noise.PositionalNoise`, one key per item drawn from
    ``generator``), so a streamed decode (:mod:`wavediff.inference.stream`) adds the same.
    ``inputs``: made by :func:`chain_inputs` before the denoiser (needed when the network is
    conditioned on Griffin-Lim's waveform); then ``start_iters`` and ``gl_init`` (where
    every Griffin-Lim decode starts, :func:`griffin_lim`'s ``init``) are theirs."""
    if plan.sampler == GRIFFIN_LIM:
        draws = PositionalNoise.from_generator(generator, mel.shape[0])
        return griffin_lim(audio, mel, consistency, generator=generator, draws=draws,
                           init=gl_init)
    if inputs is None:
        inputs = chain_inputs(mel, generator=generator, audio=audio, consistency=consistency,
                              start_iters=start_iters, gl_init=gl_init)
    project = consistency_projector(audio, mel, consistency, inputs.projector)
    return get_sampler(plan.sampler)(denoiser, diffusion, mel, schedule=plan,
                                     generator=generator, callback=callback, project=project,
                                     init=inputs.init, draws=inputs.draws)


def griffin_lim(audio: MelConfig, mel: Tensor, iters: int, *,
                generator: Optional[torch.Generator],
                projector: Optional[SpectralProjector] = None,
                draws: Optional[PositionalNoise] = None, init: str = "noise") -> Tensor:
    """The waveform ``(B, F * hop)`` of ``mel`` by ``iters`` Griffin-Lim projections
    (:class:`~wavediff.audio.phase.SpectralProjector`, ``projector`` when given: it must
    be ``mel``'s), no network: the baseline every trained model must beat. ``init``: where
    the projections start (:data:`~wavediff.audio.phase.GL_INITS`): standard normal noise
    (``draws``' ``GL_START`` stream when given, else from ``generator``), or the phase a
    phase-locked vocoder gives the mel's magnitudes (no noise).
    Clamped to [-1, 1]."""
    if iters < 1:
        raise ConfigError("Griffin-Lim decoding (steps=0, no network) needs at least one "
                          "projection: set consistency to e.g. 32 (--consistency 32)")
    if init not in GL_INITS:
        raise ConfigError(f"gl_init must be one of {', '.join(GL_INITS)}, got {init!r}")
    projector = projector or SpectralProjector(audio, mel, precise=init == "phase-vocoder")
    if init == "phase-vocoder":
        start = phase_vocoder_start(audio, mel, projector).to(mel.dtype)
    else:
        shape = (mel.shape[0], mel.shape[-1] * audio.hop_length)
        if draws is not None:
            start = draws.draw(GL_START, 0, shape[1], device=mel.device, dtype=mel.dtype)
        else:
            start = randn(shape, generator, mel.device, mel.dtype)
    return projector.griffin_lim(start, iters).clamp(-1.0, 1.0)


def decode_mel(model: DiffWave, diffusion: GaussianDiffusion, mel: Tensor, plan: SamplingPlan,
               *, generator: torch.Generator, audio: MelConfig,
               chunk_samples: Optional[int] = None, consistency: int = 0,
               start_iters: int = 0, gl_init: str = "noise") -> Tensor:
    """Decode ``mel`` with ``model`` in one call (the trainer's dev decodes), through the
    engine built from the model."""
    engine = InferenceEngine(model)
    if plan.sampler == GRIFFIN_LIM:
        return run_sampler(None, diffusion, mel, plan, generator=generator, audio=audio,
                           consistency=consistency, gl_init=gl_init)
    inputs = chain_inputs(mel, generator=generator, audio=audio, consistency=consistency,
                          start_iters=start_iters, condition_iters=model.config.gl_condition,
                          gl_init=gl_init)
    denoiser = select_denoiser(model, engine, mel, plan, chunk_samples=chunk_samples,
                               wave=inputs.wave)
    return run_sampler(denoiser, diffusion, mel, plan, generator=generator, audio=audio,
                       consistency=consistency, inputs=inputs)
