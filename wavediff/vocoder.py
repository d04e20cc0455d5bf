"""The :class:`Vocoder` facade: load a checkpoint once, turn mels (or audio) into audio.

>>> voc = Vocoder.from_pretrained("exp/diffwave")        # file or experiment dir
>>> wav = voc.decode(mel, steps=6, seed=0)               # (B, n_mels, F) -> (B, F * hop)
>>> wav = voc.copy_synthesis(audio)                      # analysis-synthesis

The work is done below it: loading in :mod:`wavediff.inference.load`, the engine,
precision, chunking and progress in :mod:`wavediff.inference.decode_runner`, mel detection
and conversion in :mod:`wavediff.audio.prepare`, sampling plans in
:mod:`wavediff.diffusion.schedule`. ``engine="reference"`` runs the readable
:class:`~wavediff.model.DiffWave` code instead of the fused inference engine.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.prepare import convert_each, model_mel
from wavediff.audio.presets import MelConfig
from wavediff.config import Config
from wavediff.diffusion.schedule import GRIFFIN_LIM, GRIFFIN_LIM_ITERS, SamplingPlan, plan
from wavediff.hardware import pick_device
from wavediff.errors import ConfigError
from wavediff.inference.batching import length_buckets, pad_batch
from wavediff.inference.load import load_model
from wavediff.inference.decode_runner import DEFAULT_CHUNK_SECONDS, ENGINES, DecodeRunner
from wavediff.inference.stream import StreamingDecoder, stream_chunks
from wavediff.model import DiffWave
from wavediff.precision import canonical
from wavediff.pretrained import DEFAULT_MODEL

PathLike = Union[str, os.PathLike]
InputPreset = Optional[Union[str, MelConfig]]
__all__ = ["DEFAULT_CHUNK_SECONDS", "ENGINES", "Vocoder"]


class Vocoder:
    """A trained DiffWave with its diffusion schedule and mel convention.

    Args:
        model, config: the network and the config it was built from (the caller's model
            keeps its mode and flags: decoding runs under inference_mode).
        device: where decoding runs (``"auto"``: CUDA when available).
        step: the training step of the weights (informative).
        engine, precision, cuda_graphs, chunk_seconds: see
            :class:`~wavediff.inference.decode_runner.DecodeRunner` (``precision="auto"``: bf16
            where it is measured faster, float32 elsewhere).
        autocast: the older name of ``precision`` (deprecated; ``"none"`` means fp32).
    """

    def __init__(self, model: DiffWave, config: Config, device: Union[str, torch.device] = "cpu",
                 step: Optional[int] = None, *, engine: str = "fused",
                 autocast: Optional[str] = None, cuda_graphs: bool = False,
                 chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                 precision: str = "auto") -> None:
        if autocast is not None:
            warnings.warn("Vocoder(autocast=...) is deprecated; pass precision='fp32', 'bf16' "
                          "or 'fp16'", DeprecationWarning, stacklevel=2)
            precision = canonical(autocast, "autocast")
        self.device = pick_device(device)
        self.model = model.to(self.device)
        self.config = config
        self.step = step
        self.source: Optional[str] = None  # where from_pretrained loaded it
        self.schedules: dict[str, list[float]] = {}  # named fast schedules stored with it
        self.runner = DecodeRunner(self.model, config, self.device, engine=engine,
                                   precision=precision,
                                   cuda_graphs=cuda_graphs, chunk_seconds=chunk_seconds)
        self.diffusion = self.runner.diffusion
        self._mel: Optional[MelSpectrogram] = None

    @classmethod
    def from_pretrained(cls, path_or_name: PathLike = DEFAULT_MODEL,
                        device: Union[str, torch.device] = "cpu",
                        use_ema: bool = True, **options) -> "Vocoder":
        """Load a shipped model by name (``"joe"``, see ``wavediff models``), a pretrained
        folder (``config.yaml`` + ``model.safetensors``, as :meth:`save_pretrained`
        writes), a checkpoint file, or the newest checkpoint of an experiment directory
        (see :func:`~wavediff.inference.load.load_model`). ``options`` go to the
        constructor (``engine``, ``precision``, ``cuda_graphs``, ``chunk_seconds``)."""
        loaded = load_model(path_or_name, use_ema)
        voc = cls(loaded.model, loaded.config, device,
                  step=loaded.step if loaded.step >= 0 else None, **options)
        voc.source, voc.schedules = loaded.source, loaded.schedules
        return voc

    def save_pretrained(self, directory: PathLike, *, dtype: str = "fp32",
                        card: Optional[dict] = None) -> Path:
        """Write ``config.yaml`` + ``model.safetensors`` (weights in ``dtype``, fp32 or
        fp16) + ``card.json`` when given, and the stored schedules."""
        from wavediff.inference.schedule_search import write_schedule
        from wavediff.pretrained import save_pretrained

        out = save_pretrained(directory, self.model, self.config, step=self.step, dtype=dtype,
                              card=card)
        for name, betas in self.schedules.items():
            write_schedule(out, name, betas)
        return out

    # ------------------------------------------------------------------ what it is
    @property
    def preset(self) -> MelConfig:
        """The mel convention this model was trained on."""
        return self.config.audio

    sample_rate = property(lambda self: self.config.audio.sample_rate)
    hop_length = property(lambda self: self.config.audio.hop_length)
    n_mels = property(lambda self: self.config.audio.n_mels)
    engine = property(lambda self: self.runner.engine_name,
                      doc="The decoding engine's name: 'fused' or 'reference'.")
    inference_engine = property(lambda self: self.runner.engine,
                                doc="The fused InferenceEngine of the current weights.")
    precision = property(lambda self: self.runner.precision,
                         doc="The decoding precision in effect: fp32, bf16 or fp16.")
    precision_reason = property(lambda self: self.runner.precision_reason)
    chunk_seconds = property(lambda self: self.runner.chunk_seconds)

    def mel(self, wav: Union[Tensor, np.ndarray]) -> Tensor:
        """The model's mel of ``wav`` ``(B, T)`` or ``(T,)`` in [-1, 1]."""
        if self._mel is None:
            self._mel = MelSpectrogram(self.config.audio).to(self.device)
        return self._mel(torch.as_tensor(wav, dtype=torch.float32, device=self.device))

    def plan(self, sampler: Optional[str] = None, steps: Optional[int] = None,
             schedule: Union[None, str, Sequence[float]] = None) -> SamplingPlan:
        """The :class:`~wavediff.diffusion.schedule.SamplingPlan` for ``sampler`` (default:
        the configured one) and ``steps``, or for ``schedule`` (fast-sampler betas, or the
        name of a stored schedule, see :attr:`schedules`)."""
        if schedule is None:
            return plan(sampler or self.config.diffusion.sampler, self.config.diffusion, steps)
        if sampler not in (None, "fast"):
            raise ConfigError(f"a schedule of betas is for the fast sampler, not {sampler!r}")
        if isinstance(schedule, str) and schedule not in self.schedules:
            known = ", ".join(sorted(self.schedules)) or "none"
            raise ConfigError(f"this model has no schedule named {schedule!r} (stored: "
                              f"{known}); find one with wavediff tune-schedule")
        betas = self.schedules[schedule] if isinstance(schedule, str) else schedule
        return plan("fast", self.config.diffusion, schedule=list(betas))

    def consistency_for(self, chosen: SamplingPlan, consistency: Optional[int] = None) -> int:
        """The projections per step a decode under ``chosen`` makes: ``consistency`` when
        given; else 32 for Griffin-Lim alone, the model's ``diffusion.consistency_iters``
        otherwise."""
        if consistency is not None:
            return consistency
        return (GRIFFIN_LIM_ITERS if chosen.sampler == GRIFFIN_LIM
                else self.config.diffusion.consistency_iters)

    def schedule_for(self, sampler: str, steps: Optional[int]) -> Union[None, int, list[float]]:
        """What ``steps`` asks of ``sampler`` as :meth:`plan` records it (fast: its betas;
        ddim: the step count or indices; ddpm: None). The samplers take the plan itself."""
        return self.plan(sampler, steps).schedule

    def denoiser_for(self, mel: Tensor, chosen: Optional[SamplingPlan] = None,
                     chunk_seconds: Union[float, None, str] = "default",
                     wave: Optional[Tensor] = None):
        """The denoiser for ``mel`` ``(B, n_mels, F)`` under a plan (default: the
        configured sampler's), whole or chunked; ``wave``: the mel's Griffin-Lim waveform,
        for a model with ``model.gl_condition``."""
        return self.runner.denoiser_for(mel, chosen or self.plan(), chunk_seconds, wave)

    # ------------------------------------------------------------------ decoding
    @torch.inference_mode()
    def decode(self, mel: Union[Tensor, np.ndarray], *, steps: Optional[int] = None,
               sampler: Optional[str] = None, seed: Optional[int] = None,
               generator: Optional[torch.Generator] = None,
               lengths: Optional[Sequence[int]] = None,
               callback: Optional[Callable[[int, int, Tensor], None]] = None,
               input_preset: InputPreset = "auto", stats: Optional[object] = None,
               chunk_seconds: Union[float, None, str] = "default",
               schedule: Union[None, str, Sequence[float]] = None,
               consistency: Optional[int] = None,
               progress: Optional[Callable[[int, int], None]] = None,
               gl_init: Optional[str] = None) -> Tensor:
        """Mel ``(B, n_mels, F)`` or ``(n_mels, F)`` -> waveform ``(B, F * hop)`` (or
        ``(F * hop,)``), float32 in [-1, 1] on the vocoder's device.

        ``input_preset``: the mel's convention. ``"auto"`` (the default, as the CLI's):
        detected from the values and converted when it is not the model's (a single mel
        may then be in any stored layout); values no convention explains (e.g. normalised
        features without ``stats``) are refused. A preset name or MelConfig: converted
        from it, with a warning when the values contradict it. None: already the model's
        convention (what :meth:`mel` returns), unchecked. ``stats`` (a stats file or
        ``(mean, scale)``) de-normalises per-bin normalised features.
        ``lengths`` (frames per item) marks the padding of a batch of unequal mels.
        ``chunk_seconds``: longer mels are decoded in chunks with memory bounded by the
        chunk, equal to whole decoding to float rounding (None or 0: never chunk).
        ``schedule``: fast-sampler betas or the name of a stored schedule; replaces
        ``steps``. ``consistency``: Griffin-Lim projections of each step's clean estimate
        onto the mel's magnitudes (GLA-Grad; default: ``diffusion.consistency_iters``).
        ``steps=0`` runs no network: Griffin-Lim alone, ``consistency`` projections (default
        32) of noise drawn from the seed, the no-network baseline. ``gl_init``: where every
        Griffin-Lim decode of the mel (the chain's start or conditioning, Griffin-Lim alone)
        takes its first phase: ``"noise"`` (from the seed) or ``"phase-vocoder"`` (a
        phase-locked vocoder's phase, frame-to-frame coherent, deterministic); default the
        model's ``diffusion.gl_init``.
        ``callback(i, n, x)`` after each step; ``progress(done, total)`` after each
        network evaluation of each chunk, for progress within one long utterance.
        """
        mel, lengths, single = model_mel(mel, self.preset, input_preset, stats=stats,
                                         lengths=lengths)
        chosen = self.plan(sampler, steps, schedule)
        mel = mel.to(self.device)
        generator = self._generator(seed, generator)
        wav = self.runner.run(mel, chosen, generator=generator, chunk_seconds=chunk_seconds,
                              consistency=self.consistency_for(chosen, consistency),
                              callback=callback, progress=progress, gl_init=gl_init)
        for i, n in enumerate(lengths or ()):
            wav[i, int(n) * self.hop_length:] = 0.0
        return wav[0] if single else wav

    def stream(self, chunks: Iterable, *, steps: Optional[int] = None,
               sampler: Optional[str] = None, seed: Optional[int] = None,
               generator: Optional[torch.Generator] = None,
               schedule: Union[None, str, Sequence[float]] = None,
               consistency: Optional[int] = None, input_preset: InputPreset = None,
               stats: Optional[object] = None, lookahead: Optional[int] = None,
               block: Optional[int] = None, gl_init: Optional[str] = None) -> Iterator[Tensor]:
        """Decode a mel that arrives in pieces: ``chunks`` yields ``(n_mels, k)`` frames
        (any ``k``, 0 included) as a TTS model makes them; yields 1-D float32 audio pieces
        as soon as they are final. Their concatenation equals :meth:`decode` of the whole
        mel with the same options (``seed`` included) to float rounding, for any chunking
        (:mod:`wavediff.inference.stream`). ``lookahead``: samples of mel that must have
        arrived beyond a sample before it is yielded (default: the exact lookahead,
        :meth:`streaming_decoder`'s ``.lookahead``; less trades exactness for latency).
        ``input_preset``: None (the default) for the model's own convention, or the
        convention's name (``"tacotron2"``, ``"espnet"``, ...; ``stats`` for normalised
        features): each piece is converted as the whole file would be (two frames held back
        where the frame grids differ by half a hop). ``"auto"`` is refused: detection
        needs the whole file.
        A bad chunk (NaN/Inf, wrong n_mels) raises :class:`~wavediff.errors.MelError`
        after the audio already yielded."""
        decoder = self.streaming_decoder(steps=steps, sampler=sampler, seed=seed,
                                         generator=generator, schedule=schedule,
                                         consistency=consistency, input_preset=input_preset,
                                         stats=stats, lookahead=lookahead, block=block,
                                         gl_init=gl_init)
        return stream_chunks(decoder, chunks)

    def streaming_decoder(self, *, steps: Optional[int] = None, sampler: Optional[str] = None,
                          seed: Optional[int] = None,
                          generator: Optional[torch.Generator] = None,
                          schedule: Union[None, str, Sequence[float]] = None,
                          consistency: Optional[int] = None,
                          input_preset: InputPreset = None, stats: Optional[object] = None,
                          lookahead: Optional[int] = None,
                          block: Optional[int] = None,
                          gl_init: Optional[str] = None) -> StreamingDecoder:
        """The :class:`~wavediff.inference.stream.StreamingDecoder` :meth:`stream` feeds
        (``push(frames) -> audio``, ``finish() -> audio``, ``lookahead`` in samples)."""
        converter = None
        if input_preset == "auto":
            raise ConfigError("a stream's mel convention cannot be detected from its first "
                              "frames; name it (input_preset='tacotron2', --input-preset), or "
                              "None for the model's own")
        if input_preset is not None or stats is not None:
            from wavediff.audio.convert import MelConverter
            from wavediff.audio.prepare import stats_arg

            source = self.preset if input_preset is None else input_preset
            conv = MelConverter(source, self.preset, source_stats=stats_arg(stats))
            if conv.kind != "identity":
                converter = conv.streaming()
        chosen = self.plan(sampler, steps, schedule)
        generator = self._generator(seed, generator)
        return StreamingDecoder(self.runner, chosen,
                                consistency=self.consistency_for(chosen, consistency),
                                generator=generator, lookahead=lookahead, block=block,
                                converter=converter, gl_init=gl_init)

    def _generator(self, seed: Optional[int],
                   generator: Optional[torch.Generator]) -> torch.Generator:
        """``generator``, else one on the vocoder's device seeded with ``seed`` (random
        when None)."""
        if generator is None:
            generator = torch.Generator(self.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
        return generator

    def decode_many(self, mels: Sequence[np.ndarray], *, batch_size: int = 16,
                    max_padding: float = 0.25, input_preset: InputPreset = "auto",
                    stats: Optional[object] = None, **kwargs) -> list[Tensor]:
        """Decode many mels in batches of similar length (at most ``batch_size`` each, at
        most ``max_padding`` of a batch's frames padding, see
        :func:`~wavediff.inference.batching.length_buckets`); ``kwargs`` as
        :meth:`decode`. Returns the waveforms in the order of ``mels``."""
        if input_preset is not None or stats is not None:  # first: lengths in model frames
            mels = convert_each(mels, self.preset, input_preset, stats=stats)
        out: list[Optional[Tensor]] = [None] * len(mels)
        for group in self.batches(mels, batch_size, max_padding=max_padding):
            for i, wav in zip(group, self.decode_batch([mels[i] for i in group],
                                                       input_preset=None, **kwargs)):
                out[i] = wav
        return out  # type: ignore[return-value]

    @staticmethod
    def batches(mels: Sequence[np.ndarray], batch_size: int = 16, *,
                max_padding: float = 0.25) -> list[list[int]]:
        """How :meth:`decode_many` groups ``mels`` (model frames last): indices of at most
        ``batch_size`` mels of similar length each, longest first, at most ``max_padding``
        of a batch's frames padding (:func:`~wavediff.inference.batching.length_buckets`).
        Decode each group with :meth:`decode_batch` to handle batches one by one."""
        return length_buckets([int(m.shape[-1]) for m in mels], batch_size,
                              max_padding=max_padding)

    def decode_batch(self, mels: Sequence[np.ndarray], *, input_preset: InputPreset = "auto",
                     stats: Optional[object] = None, **kwargs) -> list[Tensor]:
        """Decode mels of unequal lengths (any stored layout with ``input_preset``) in one
        batch, padded with the model's silence; each waveform trimmed to its mel."""
        if input_preset is not None or stats is not None:
            mels = convert_each(mels, self.preset, input_preset, stats=stats)
        batch, frames = pad_batch(mels, self.config.audio.floor)
        wav = self.decode(batch, lengths=frames, input_preset=None, **kwargs)
        return [wav[i, : n * self.hop_length] for i, n in enumerate(frames)]

    def copy_synthesis(self, wav: Union[Tensor, np.ndarray], **kwargs) -> Tensor:
        """Analysis-synthesis: the model's mel of ``wav`` ``(T,)`` or ``(B, T)`` decoded back
        (``kwargs`` as :meth:`decode`), as long as ``wav``."""
        wav = torch.as_tensor(wav, dtype=torch.float32)
        n = wav.shape[-1]
        out = self.decode(self.mel(wav), input_preset=None, **kwargs)
        if out.shape[-1] < n:
            out = torch.nn.functional.pad(out, (0, n - out.shape[-1]))
        return out[..., :n]
