"""The :class:`Vocoder` facade: load a checkpoint once, turn mels (or audio) into audio.

>>> voc = Vocoder.from_pretrained("exp/diffwave")        # file or experiment dir
>>> wav = voc.decode(mel, steps=6, seed=0)               # (B, n_mels, F) -> (B, F * hop)
>>> wav = voc.copy_synthesis(audio)                      # analysis-synthesis

Decoding runs on :class:`~wavediff.inference.InferenceEngine` (the mel-only work once per
utterance, a cache-blocked CPU kernel, optional autocast and CUDA graphs on GPU); long
utterances are decoded in overlapping chunks with bounded memory. ``engine="reference"``
runs the readable :class:`~wavediff.model.DiffWave` code instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.presets import MelConfig
from wavediff.config import Config
from wavediff.diffusion import GaussianDiffusion
from wavediff.distributed import pick_device
from wavediff.diffusion.schedule import SamplingPlan, plan
from wavediff.errors import CheckpointError, ConfigError, MelError, WavediffError
from wavediff.inference.batching import length_buckets
from wavediff.inference.calibrate import PRECISIONS, resolve_decode_precision
from wavediff.inference.decode import run_sampler, select_denoiser
from wavediff.inference.engine import InferenceEngine
from wavediff.model import DiffWave
from wavediff.pretrained import DEFAULT_MODEL
from wavediff.inference.schedules import read_schedules
from wavediff.checkpoint import check_finite_weights, load_checkpoint, resolve_checkpoint

log = logging.getLogger("wavediff.vocoder")
PathLike = Union[str, os.PathLike]
# Utterances longer than this (plus the context on both sides) are decoded in chunks.
DEFAULT_CHUNK_SECONDS = 4.0
ENGINES = ("fast", "reference")


class Vocoder:
    """A trained DiffWave with its diffusion schedule and mel convention.

    Args:
        model, config: the network and the config it was built from.
        device: where decoding runs.
        step: the training step of the weights (informative).
        engine: ``"fast"`` (:class:`~wavediff.inference.InferenceEngine`) or
            ``"reference"`` (the model's own code, slower, for comparison).
        precision: ``"auto"`` (bf16 where it is faster: on GPUs with bf16, and on CPUs
            with native bf16 when a one-time measurement, cached per machine, says so;
            float32 elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA).
        autocast: ``None``, ``"none"``, ``"bf16"`` or ``"fp16"``: the older spelling of
            ``precision``; when given it wins.
        cuda_graphs: replay each step from a CUDA graph (CUDA only).
        chunk_seconds: default of :meth:`decode`'s ``chunk_seconds``.
    """

    def __init__(self, model: DiffWave, config: Config, device: Union[str, torch.device] = "cpu",
                 step: Optional[int] = None, *, engine: str = "fast",
                 autocast: Optional[str] = None, cuda_graphs: bool = False,
                 chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                 precision: str = "auto") -> None:
        if engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if autocast not in (None, "none", "bf16", "fp16"):
            raise ConfigError(f"autocast must be none, bf16 or fp16, got {autocast!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {precision!r}")
        self.device = pick_device(device)
        # the caller's model keeps its mode and requires_grad flags (it may still be
        # training); decoding runs under inference_mode, and DiffWave has no layer that
        # behaves differently in training mode
        self.model = model.to(self.device)
        self.config = config
        self.step = step
        self.source: Optional[str] = None  # where from_pretrained loaded it
        self.schedules: dict[str, list[float]] = {}  # named fast schedules stored with it
        self.diffusion = GaussianDiffusion.from_config(config.diffusion, config.audio)
        self._mel: Optional[MelSpectrogram] = None
        if engine == "fast" and model.subbands != 1:
            engine = "reference"  # the blocked engine runs single-band models only
        self.engine_name = engine
        # an explicit autocast wins over precision (the older spelling of the same choice)
        if autocast is not None:
            precision = "fp32" if autocast == "none" else autocast
        self.precision = precision
        self._autocast: Optional[str] = None
        self.precision_reason: Optional[str] = None  # set when the engine is first built
        self.cuda_graphs = cuda_graphs
        self.chunk_seconds = chunk_seconds
        self._engine: Optional[InferenceEngine] = None
        self._engine_key: Optional[tuple] = None

    @classmethod
    def from_pretrained(cls, path_or_name: PathLike = DEFAULT_MODEL,
                        device: Union[str, torch.device] = "cpu",
                        use_ema: bool = True, **options) -> "Vocoder":
        """Load a shipped model by name (``"joe"``, see ``wavediff models``), a pretrained
        folder (``config.yaml`` + ``model.safetensors``, as :meth:`save_pretrained`
        writes), a checkpoint file, or the newest checkpoint of an experiment directory.

        The model is rebuilt from the stored config (never from code defaults); with a
        training checkpoint the EMA weights are used when present and ``use_ema``.
        ``device="auto"`` takes CUDA when available. ``options`` go to the constructor
        (``engine``, ``precision``, ``autocast``, ``cuda_graphs``, ``chunk_seconds``).
        """
        from wavediff import pretrained

        device = pick_device(device)
        named = None if os.path.exists(path_or_name) else pretrained.resolve_named(str(path_or_name))
        folder = named or (Path(path_or_name) if pretrained.is_pretrained_dir(path_or_name) else None)
        if folder is not None:
            weights, config, meta = pretrained.load_pretrained(folder)
            step = int(meta.get("step", -1))
        else:
            state = load_checkpoint(path_or_name, map_location="cpu")
            config = state["config"]
            weights = state["ema"] if use_ema and state.get("ema") else state["model"]
            step = int(state["step"])
        check_finite_weights(weights, str(folder or path_or_name))
        model = DiffWave.from_config(config)
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise CheckpointError(
                f"{path_or_name}: its weights do not fit the model its config describes "
                f"({str(e).splitlines()[0][:160]}); the files are damaged or mismatched"
            ) from None
        model.eval().requires_grad_(False)  # ours alone: frozen for inference
        voc = cls(model, config, device, step=step if step >= 0 else None, **options)
        voc.source = str(folder or path_or_name)
        voc.schedules = read_schedules(folder or resolve_checkpoint(path_or_name))
        return voc

    def named_schedule(self, name: str) -> list[float]:
        """The stored fast schedule ``name`` (see :attr:`schedules`)."""
        if name not in self.schedules:
            known = ", ".join(sorted(self.schedules)) or "none"
            raise ConfigError(f"this model has no schedule named {name!r} (stored: {known}); "
                              f"find one with wavediff tune-schedule")
        return list(self.schedules[name])

    def save_pretrained(self, directory: PathLike, *, dtype: str = "fp32",
                        card: Optional[dict] = None) -> Path:
        """Write this model as ``config.yaml`` + ``model.safetensors`` (weights stored in
        ``dtype``, fp32 or fp16) + ``card.json`` when given; :meth:`from_pretrained` reads
        the folder back."""
        from wavediff.inference.schedules import write_schedule
        from wavediff.pretrained import save_pretrained

        out = save_pretrained(directory, self.model, self.config, step=self.step, dtype=dtype,
                              card=card)
        for name, betas in self.schedules.items():
            write_schedule(out, name, betas)
        return out

    # ------------------------------------------------------------------ properties
    @property
    def preset(self) -> MelConfig:
        """The mel convention this model was trained on."""
        return self.config.audio

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.audio.hop_length

    @property
    def n_mels(self) -> int:
        return self.config.audio.n_mels

    def mel(self, wav: Union[Tensor, np.ndarray]) -> Tensor:
        """The model's mel of ``wav`` ``(B, T)`` or ``(T,)`` in [-1, 1]."""
        if self._mel is None:
            self._mel = MelSpectrogram(self.config.audio).to(self.device)
        wav = torch.as_tensor(wav, dtype=torch.float32, device=self.device)
        return self._mel(wav)

    # ------------------------------------------------------------------ decoding
    def plan(self, sampler: Optional[str] = None, steps: Optional[int] = None,
             schedule: Union[None, str, Sequence[float]] = None) -> SamplingPlan:
        """The :class:`~wavediff.diffusion.schedule.SamplingPlan` for ``sampler`` (default:
        the configured one) and ``steps``, or for ``schedule`` (fast-sampler betas, or the
        name of a stored schedule, see :attr:`schedules`)."""
        if schedule is not None:
            if sampler not in (None, "fast"):
                raise ConfigError(f"a schedule of betas is for the fast sampler, not {sampler!r}")
            betas = self.named_schedule(schedule) if isinstance(schedule, str) else schedule
            return plan("fast", self.config.diffusion, schedule=betas)
        return plan(sampler or self.config.diffusion.sampler, self.config.diffusion, steps)

    def schedule_for(self, sampler: str, steps: Optional[int]) -> Union[None, int, list[float]]:
        """The ``schedule`` argument of ``sampler`` for ``steps`` inference steps (see
        :func:`~wavediff.diffusion.schedule.plan`)."""
        return self.plan(sampler, steps).schedule

    @torch.inference_mode()
    def decode(self, mel: Union[Tensor, np.ndarray], *, steps: Optional[int] = None,
               sampler: Optional[str] = None, seed: Optional[int] = None,
               generator: Optional[torch.Generator] = None,
               lengths: Optional[Sequence[int]] = None,
               callback: Optional[Callable[[int, int, Tensor], None]] = None,
               input_preset: Optional[Union[str, MelConfig]] = "auto",
               stats: Optional[object] = None,
               chunk_seconds: Union[float, None, str] = "default",
               schedule: Union[None, str, Sequence[float]] = None,
               consistency: Optional[int] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> Tensor:
        """Mel ``(B, n_mels, F)`` or ``(n_mels, F)`` in the model's convention -> waveform.

        Returns ``(B, F * hop)`` (or ``(F * hop,)``) float32 in [-1, 1] on the vocoder's
        device. ``lengths`` (frames per item) marks padding of a batch of unequal mels.
        ``chunk_seconds``: mels longer than this (plus the network's context on both
        sides) are decoded in chunks of this length with memory bounded by the chunk; the
        result equals whole decoding to float rounding. None or 0: never chunk; default:
        the vocoder's ``chunk_seconds``.
        ``input_preset``: the mel convention of ``mel``. ``"auto"`` (the default, as the
        CLI's): detected from the values, and converted when it is another convention
        than the model's (a single mel may then be in any stored layout), with a clear
        error for values no convention explains (e.g. normalised features without
        ``stats``). A preset name or a MelConfig: converted from that convention, with a
        warning when the values contradict it. None: ``mel`` is already in the model's
        convention (what :meth:`mel` returns); nothing is checked or converted. ``stats``
        (a stats file or ``(mean, scale)``) de-normalises per-bin normalised features.
        ``schedule``: the fast sampler's betas, or the name of a schedule stored with the
        model (``schedules``, e.g. one found by ``wavediff tune-schedule``); it replaces
        ``steps``.
        ``consistency``: Griffin-Lim projections of each step's clean estimate onto the
        magnitudes the mel implies (GLA-Grad; default: the model's
        ``diffusion.consistency_iters``, 0 = off).
        ``progress(done, total)``: called after each network evaluation of each chunk
        (``total`` = steps x chunks), for progress within one long utterance.
        """
        if input_preset is not None or stats is not None:
            from wavediff.audio.prepare import convert_batch

            given = int(mel.shape[-1]) if getattr(mel, "ndim", 0) == 3 else None
            mel, frames = convert_batch(mel, self.preset, input_preset, stats=stats)
            if given is not None:
                # a conversion that added or dropped frames moves each item's end with it
                lengths = ([int(n) + f - given for n, f in zip(lengths, frames)]
                           if lengths is not None else frames)
        chosen = self.plan(sampler, steps, schedule)
        mel = torch.as_tensor(mel, dtype=torch.float32).to(self.device)
        single = mel.dim() == 2
        if single:
            mel = mel.unsqueeze(0)
        if mel.dim() != 3 or mel.shape[1] != self.n_mels or mel.shape[-1] == 0:
            raise MelError(
                f"expected a mel of shape (batch, {self.n_mels}, frames) with frames > 0, "
                f"got {tuple(mel.shape)}"
            )
        if not torch.isfinite(mel).all():
            raise MelError("the mel holds NaN or Inf values; fix the input before vocoding")
        if generator is None:
            generator = torch.Generator(self.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
        denoiser = self.denoiser_for(mel, chosen, chunk_seconds)
        if consistency is None:
            consistency = self.config.diffusion.consistency_iters
        if isinstance(consistency, bool) or not isinstance(consistency, int) or consistency < 0:
            raise ConfigError(f"consistency must be a non-negative number of projections, "
                              f"got {consistency!r}")
        if progress is not None:
            callback = self._with_progress(denoiser, chosen, progress, callback)
        wav = run_sampler(denoiser, self.diffusion, mel, chosen, generator=generator,
                          audio=self.preset, consistency=consistency, callback=callback)
        if not bool(torch.isfinite(wav).all()):
            raise WavediffError(
                f"the model produced {int((~torch.isfinite(wav)).sum())} NaN or infinite "
                f"samples from a finite mel (precision {self.autocast or 'fp32'}): its weights "
                f"overflow on this input; decode with precision='fp32' (--precision fp32), or "
                f"use an earlier checkpoint")
        if lengths is not None:
            for i, n in enumerate(lengths):
                wav[i, int(n) * self.hop_length:] = 0.0
        return wav[0] if single else wav

    @staticmethod
    def _with_progress(denoiser, chosen: SamplingPlan, progress: Callable[[int, int], None],
                       callback: Optional[Callable[[int, int, Tensor], None]]):
        """Wire ``progress(done, total)`` to the chunks of a chunked denoiser, or to the
        sampler's steps; returns the sampler callback to use."""
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

    # ------------------------------------------------------------------ engine
    @property
    def engine(self) -> InferenceEngine:
        """The inference engine of the current weights (rebuilt when they change)."""
        key = tuple((id(p), p._version) for p in self.model.parameters())
        if self._engine is None or key != self._engine_key:
            self._engine = InferenceEngine(self.model, autocast=self.autocast)
            self._engine_key = key
        return self._engine

    @property
    def autocast(self) -> Optional[str]:
        """The decoding precision in effect: None (float32), ``"bf16"`` or ``"fp16"``;
        ``precision="auto"`` is resolved (and logged) the first time it is needed."""
        if self.precision_reason is None:
            self._autocast, self.precision_reason = resolve_decode_precision(
                self.precision, self.model, self.device)
            log.info("decoding precision: %s", self.precision_reason)
        return self._autocast

    def denoiser_for(self, mel: Tensor, chosen: Optional[SamplingPlan] = None,
                     chunk_seconds: Union[float, None, str] = "default"):
        """The denoiser for ``mel`` ``(B, n_mels, F)`` under a sampling plan (default: the
        configured sampler's): whole or chunked, its step biases precomputed."""
        if chunk_seconds == "default":
            chunk_seconds = self.chunk_seconds
        chunk = int(round(chunk_seconds * self.sample_rate)) if chunk_seconds else None
        engine = None if self.engine_name == "reference" else self.engine
        return select_denoiser(self.model, engine, mel, chosen or self.plan(),
                               chunk_samples=chunk, cuda_graphs=self.cuda_graphs)

    def decode_many(self, mels: Sequence[np.ndarray], *, batch_size: int = 16,
                    max_padding: float = 0.25, **kwargs) -> list[Tensor]:
        """Decode many mels ``(n_mels, F_i)`` in batches of similar length.

        Mels are grouped by :func:`~wavediff.inference.batching.length_buckets` (at most
        ``batch_size`` per batch, at most ``max_padding`` of a batch's frames padding) and
        each group goes through :meth:`decode_batch`; ``kwargs`` go there too. Returns the
        waveforms in the order of ``mels``.
        """
        input_preset = kwargs.pop("input_preset", "auto")
        stats = kwargs.pop("stats", None)
        if input_preset is not None or stats is not None:  # convert first: lengths in frames
            from wavediff.audio.prepare import convert_each

            mels = convert_each(mels, self.preset, input_preset, stats=stats)
        out: list[Optional[Tensor]] = [None] * len(mels)
        for group in length_buckets([m.shape[-1] for m in mels], batch_size,
                                    max_padding=max_padding):
            for i, wav in zip(group, self.decode_batch([mels[i] for i in group],
                                                       input_preset=None, **kwargs)):
                out[i] = wav
        return out  # type: ignore[return-value]

    def decode_batch(self, mels: Sequence[np.ndarray], *,
                     input_preset: Optional[Union[str, MelConfig]] = "auto",
                     stats: Optional[object] = None, **kwargs) -> list[Tensor]:
        """Decode mels of unequal lengths in one batch (padded with the mel of silence).

        ``input_preset`` / ``stats``: as in :meth:`decode`, applied to each mel first.
        """
        if input_preset is not None or stats is not None:
            from wavediff.audio.prepare import convert_each

            mels = convert_each(mels, self.preset, input_preset, stats=stats)
        frames = [m.shape[-1] for m in mels]
        batch = np.full((len(mels), self.n_mels, max(frames)), self.config.audio.floor,
                        dtype=np.float32)
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[-1]] = m
        wav = self.decode(batch, lengths=frames, input_preset=None, **kwargs)
        return [wav[i, : n * self.hop_length] for i, n in enumerate(frames)]

    def copy_synthesis(self, wav: Union[Tensor, np.ndarray], **kwargs) -> Tensor:
        """Analysis-synthesis: the model's mel of ``wav`` decoded back, trimmed to its length.

        ``wav`` ``(T,)`` or ``(B, T)`` at the model's sample rate; ``kwargs`` go to
        :meth:`decode`.
        """
        wav = torch.as_tensor(wav, dtype=torch.float32)
        n = wav.shape[-1]
        out = self.decode(self.mel(wav), input_preset=None, **kwargs)
        if out.shape[-1] < n:
            out = torch.nn.functional.pad(out, (0, n - out.shape[-1]))
        return out[..., :n]
