"""Streaming decoding: audio while the mel still arrives, equal to the whole decode.

Every operation of a decode is local in time: the network sees :func:`receptive_field`
samples on each side, a spectral-consistency projection the frames that overlap a sample
(one STFT window each way), SpecGrad's noise filter the same, PriorGrad's scaling and the
chain's updates only the sample itself, and the noise is positional
(:class:`~wavediff.diffusion.noise.PositionalNoise`). So the decode is cut into
**stages**, one per operation that reaches beyond the sample (each Griffin-Lim projection
of the start, each network evaluation, each projection inside a step, each coloured
draw), and each stage keeps its own state: the part of its input it still needs and how
far its output is final. When mel frames arrive, every stage computes its output from its
last final sample up to ``reach`` samples before the end of what its input has so far,
from a segment of its input that reaches ``reach`` samples beyond both ends, and passes
it on; only segments that touch the real start (or, once the stream has ended, the real
end) are computed up to their edges, exactly as the whole decode computes its edges. Each
sample is therefore computed from the same inputs as in the whole decode and the streamed
audio equals :meth:`wavediff.Vocoder.decode` of the whole mel to float rounding, for any
chunking.

The algorithmic lookahead (mel that must have arrived beyond a sample before it is final)
is the sum of the stages' reaches::

    start_iters x R_proj + R_prior + steps x (R_net + consistency x R_proj + R_prior)

(``model.gl_condition`` projections instead of ``start_iters`` for a model conditioned on
Griffin-Lim's waveform, which then travels with the chain as a further row),

with ``R_proj`` = one STFT window (``n_fft``), ``R_net`` = the network's receptive field
plus the upsampler's margin, ``R_prior`` = ``R_proj`` for SpecGrad (0 otherwise), all in
whole hops (:attr:`StreamingDecoder.lookahead`). ``lookahead=`` (samples) asks for less:
each stage then looks ahead only its share of it, and samples near the edge of what has
arrived are computed as if the mel ended there (measured in the README).

Memory is bounded by the reaches and the chunk: each stage keeps its reach of input behind
its final sample, and the mel is kept from the earliest sample any stage still needs.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

import torch
from torch import Tensor

from wavediff.audio.phase import PhaseVocoder, SpectralProjector, mel_to_magnitude
from wavediff.diffusion.noise import GL_START, X_T, PositionalNoise, step_stream
from wavediff.diffusion.prior import SpectralPrior
from wavediff.diffusion.process import step_dtype
from wavediff.diffusion.samplers import ChainStep
from wavediff.diffusion.schedule import GRIFFIN_LIM, SamplingPlan
from wavediff.errors import ConfigError, MelError
from wavediff.inference.decode import ConditionedDenoiser, require_one_griffin_lim
from wavediff.inference.denoisers import MEL_MARGIN_FRAMES, _StepCache, receptive_field
from wavediff.inference.engine import Conditioning
from wavediff.streaming_core import Segment, Stage, StagePipeline, whole_hops


# frames each stage waits for by default: on 2 Xeon cores the shipped model streams a 60 s
# utterance at RTF 0.63 with 16 (0.81 with 1), its first audio 0.14 s after the frames that
# complete the lookahead (benchmarks/streaming.py; README "Streaming")
DEFAULT_BLOCK_FRAMES = 16


class StreamingDecoder:
    """Decodes one mel that arrives in pieces (the lower-level API of
    :meth:`wavediff.Vocoder.stream`).

    ``push(frames)`` takes mel frames ``(n_mels, k)`` (``k`` may be 0) in the model's
    convention and returns the audio samples that became final, 1-D (possibly empty);
    ``finish()`` ends the stream and returns the rest. The concatenation of everything
    returned equals the whole decode of the concatenated mel (same plan, consistency and
    generator). ``lookahead``: samples of mel beyond a sample that must have arrived
    before it is emitted (default and maximum: :attr:`lookahead` for exact output).
    ``block``: a stage advances only when it can make at least this many new samples
    (default :data:`DEFAULT_BLOCK_FRAMES` frames; one hop for the lowest latency). Every
    computation recomputes its reach on both sides, so larger blocks cost less per second
    of audio and give audio later.
    """

    def __init__(self, runner, chosen: SamplingPlan, *, consistency: int,
                 generator: Optional[torch.Generator], lookahead: Optional[int] = None,
                 block: Optional[int] = None, converter=None,
                 gl_init: Optional[str] = None) -> None:
        cfg = runner.config
        self.gl_condition = 0 if chosen.sampler == GRIFFIN_LIM else int(cfg.model.gl_condition)
        start = int(cfg.diffusion.start_iters)
        require_one_griffin_lim(start, self.gl_condition, "a stream",
                                ", or decode the whole mel")
        self.converter = converter  # a StreamingConverter from the input's convention
        self.received = 0  # frames received (in the input's convention)
        self.runner, self.plan, self.audio = runner, chosen, cfg.audio
        self.hop = hop = cfg.audio.hop_length
        self.n_mels = cfg.audio.n_mels
        self.consistency = int(consistency)
        self.start_iters = 0 if chosen.sampler == GRIFFIN_LIM else int(cfg.diffusion.start_iters)
        self.draws = PositionalNoise.from_generator(generator, 1)
        self.diffusion = runner.diffusion
        self._needs_magnitude = self.consistency > 0 or self.start_iters > 0 or self.gl_condition > 0
        # Griffin-Lim from the phase vocoder's phase: computed frame by frame as frames
        # arrive (each frame's phase continues the previous frame's), kept with the mel
        uses_gl = chosen.sampler == GRIFFIN_LIM or self.start_iters > 0 or self.gl_condition > 0
        self._phase_vocoder = (PhaseVocoder(hop, cfg.audio.n_fft)
                               if uses_gl and runner.gl_init(gl_init) == "phase-vocoder"
                               else None)
        self._steps: Optional[_StepCache] = None
        self._cond: Optional[Tensor] = None  # conditioning of frames [_cond_f0, _cond_f1)
        self._cond_f0 = self._cond_f1 = self._cond_off = 0  # _cond_off: f0's buffer frame
        if lookahead is not None and lookahead < 0:
            raise ConfigError(f"lookahead must be >= 0 samples, got {lookahead}")
        self.pipeline = StagePipeline(self._build(), hop, lambda xs: torch.cat(xs, dim=-1),
                                      lookahead=lookahead,
                                      block=DEFAULT_BLOCK_FRAMES * hop if block is None else block,
                                      on_trim=self._trim_conditioning)

    stages = property(lambda self: self.pipeline.stages)
    lookahead = property(lambda self: self.pipeline.lookahead,
                         doc="Samples of mel beyond a sample that must have arrived before "
                             "it is final.")
    lookahead_exact = property(lambda self: self.pipeline.lookahead_exact,
                               doc="The lookahead for output equal to the whole decode.")
    frames = property(lambda self: self.pipeline.frames, doc="Frames received.")
    finished = property(lambda self: self.pipeline.finished)
    mel = property(lambda self: self.pipeline.frame_data.get("mel"),
                   doc="The mel frames kept (the earliest any stage can still need on).")
    mel_start = property(lambda self: self.pipeline.frame_start)

    # ------------------------------------------------------------------ the stages
    def _build(self) -> list[Stage]:
        cfg, hop = self.audio, self.hop
        # a projected sample comes from the frames that cover it, each from the samples it
        # covers: n_fft - 1 samples each way at most; likewise SpecGrad's filter
        r_proj = whole_hops(cfg.n_fft, hop)
        prior = self.diffusion.prior
        r_prior = r_proj if isinstance(prior, SpectralPrior) else 0  # PriorGrad's: pointwise
        stages: list[Stage] = []
        dtype = torch.float32

        def project(x: Tensor, seg: Segment, keep_uncovered: bool = False) -> Tensor:
            return SpectralProjector.from_magnitude(cfg, seg.magnitude)(x, keep_uncovered)

        def gl_source(x, a, b, seg):  # the start (noise, or the phase vocoder's), projected
            if self._phase_vocoder is not None:  # the frames' phase, found as they came
                z = SpectralProjector.from_magnitude(cfg, seg.magnitude).synthesize(seg.phase)
            else:
                z = self.draws.draw(GL_START, a, b, device=self.runner.device, dtype=dtype)
            return project(z, seg)

        # the phase vocoder's start is an overlap-add of the frames around a sample: a
        # projection's reach more
        r_source = 2 * r_proj if self._phase_vocoder is not None else r_proj

        if self.plan.sampler == GRIFFIN_LIM:  # no network: Griffin-Lim alone
            if self.consistency < 1:
                raise ConfigError("Griffin-Lim decoding (steps=0, no network) needs at least "
                                  "one projection: set consistency to e.g. 32")
            stages.append(Stage("griffin-lim 1", r_source, gl_source, source=True))
            for k in range(1, self.consistency):
                stages.append(Stage(f"griffin-lim {k + 1}", r_proj,
                                     lambda x, a, b, seg: project(x, seg)))
            return stages

        # Griffin-Lim's start and/or the network's Griffin-Lim conditioning: one waveform
        gl_iters = self.gl_condition or self.start_iters
        what = "griffin-lim" if self.gl_condition else "start projection"
        for k in range(gl_iters):
            if k == 0:
                stages.append(Stage(f"{what} 1", r_source, gl_source, source=True))
            else:
                stages.append(Stage(f"{what} {k + 1}", r_proj,
                                     lambda x, a, b, seg: project(x, seg)))
        abar_first = self.plan.alpha_bars[-1]

        def x_t(x, a, b, seg):
            z = self.draws.draw(X_T, a, b, device=self.runner.device, dtype=dtype)
            shaper = self.diffusion.noise_shaper(seg.mel, dtype)
            if shaper is not None:
                z = shaper.color(z)
            if x is None or self.start_iters == 0:
                return z
            return self.diffusion.start_around(x.clamp(-1.0, 1.0), z, abar_first)

        if self.gl_condition:
            # the Griffin-Lim waveform travels with the chain as its last row, each stage
            # passing it on; the network stages condition on it (_denoise)
            def carried(fn):
                def run(x, a, b, seg):
                    wave = x[-1:]
                    seg.data["wave"] = wave.clamp(-1.0, 1.0)
                    return torch.cat([fn(x[:-1], a, b, seg) if x.shape[0] > 1
                                      else fn(wave, a, b, seg), wave])
                return run
        else:
            def carried(fn):
                return fn

        stages.append(Stage("x_T", r_prior, carried(x_t), source=gl_iters == 0))
        r_net = whole_hops(receptive_field(self._network()) + MEL_MARGIN_FRAMES * hop, hop)
        n = len(self.plan.network_steps)
        for i in range(n):
            step = ChainStep(self.plan, i, self.diffusion.prediction)
            noisy = step.sigma > 0.0

            def add_noise(x, a, seg, step=step, i=i):
                z = self.draws.draw(step_stream(i), a, a + x.shape[-1], device=x.device,
                                    dtype=x.dtype)
                shaper = self.diffusion.noise_shaper(seg.mel, x.dtype)
                return x + step.sigma * (z if shaper is None else shaper.color(z))

            def eps_of(x, seg, step=step):
                t = torch.full((1,), step.network_step, dtype=step_dtype(x.dtype))
                return step.noise(self._denoise(x, t, seg).to(x.dtype))

            if self.consistency == 0:
                def net(x, a, b, seg, step=step, noisy=noisy, add_noise=add_noise,
                        eps_of=eps_of):
                    y = step.update(x, eps_of(x, seg))
                    return add_noise(y, a, seg) if noisy else y
                stages.append(Stage(f"step {i + 1}", r_net + (r_prior if noisy else 0),
                                     carried(net), network=True))
                continue

            def net(x, a, b, seg, step=step, eps_of=eps_of):  # rows: x, its clean estimate
                return torch.cat([x, step.clean(x, eps_of(x, seg))])
            stages.append(Stage(f"step {i + 1} network", r_net, carried(net), network=True))
            for k in range(self.consistency):
                def proj(x, a, b, seg):
                    return torch.cat([x[:1], project(x[1:], seg, keep_uncovered=True)])
                stages.append(Stage(f"step {i + 1} projection {k + 1}", r_proj, carried(proj)))

            def update(x, a, b, seg, step=step, noisy=noisy, add_noise=add_noise):
                y = step.update(x[:1], x[1:], x0=x[1:])
                return add_noise(y, a, seg) if noisy else y
            stages.append(Stage(f"step {i + 1} update", r_prior if noisy else 0,
                                 carried(update)))
        return stages

    def _network(self):
        """What runs the network: the readable model or the fused engine."""
        return self.runner.model if self.runner.engine_name == "reference" else self.runner.engine

    # ------------------------------------------------------------------ the network
    def _denoise(self, x: Tensor, t: Tensor, seg: Segment) -> Tensor:
        """The network's noise estimate on the segment: the fused engine with the
        conditioning of the stream's cache and step vectors computed once; the readable
        model (``engine="reference"``) on the segment's mel."""
        wave = seg.data.get("wave")  # the Griffin-Lim conditioning of [a, b) (model.gl_condition)
        if self.runner.engine_name == "reference":
            return ConditionedDenoiser(self.runner.model, seg.mel, wave)(x, t, seg.mel)
        engine = self._network()
        if self._steps is None or self._steps.engine is not engine:
            self._steps, self._cond = _StepCache(engine), None
        return engine.denoise(x, self._steps(t),
                              self._conditioning(engine, seg.a, seg.b, wave),
                              keep=(seg.lo - seg.a, seg.hi - seg.a))

    def _conditioning(self, engine, a: int, b: int,
                      wave: Optional[Tensor] = None) -> Conditioning:
        """The network's conditioning of samples ``[a, b)`` (``wave``: the Griffin-Lim
        waveform of those samples, final, for a model with ``model.gl_condition``). Frames
        whose upsampled mel no longer depends on frames still to come
        (``MEL_MARGIN_FRAMES`` before the last one, or all once the stream has ended) are
        computed once and kept in a buffer that grows by doubling; the rest is computed for
        this call only."""
        hop, lh, axis = self.hop, engine.layer_hop, 2 if engine.time_major else 3
        fa, fb = a // hop, b // hop
        exact_end = self.frames if self.finished else max(0, self.frames - MEL_MARGIN_FRAMES)

        def compute(f0: int, f1: int) -> Tensor:
            c0 = max(self.mel_start, f0 - MEL_MARGIN_FRAMES)
            c1 = min(self.frames, f1 + MEL_MARGIN_FRAMES)
            mel = self.mel[..., c0 - self.mel_start:c1 - self.mel_start]
            # the waveform over the mel's frames [c0, c1): pointwise in the conditioning, so
            # the mel's margins outside [a, b) may hold zeros (negative widths crop)
            w = None if wave is None else torch.nn.functional.pad(
                wave, (a - c0 * hop, c1 * hop - b))
            up = engine.upsample(mel, w)[..., (f0 - c0) * lh:(f1 - c0) * lh]
            return engine.conditioning(mel_up=up).cond

        if self._cond is None or not self._cond_f0 <= fa <= self._cond_f1:
            self._cond, self._cond_f0, self._cond_f1 = None, fa, fa
        if self._cond_f1 < min(fb, exact_end):  # extend what is kept
            new = compute(self._cond_f1, min(fb, exact_end))
            self._keep(new, axis, lh)
        parts = []
        if fa < self._cond_f1:
            hi = min(fb, self._cond_f1)
            parts.append(self._cond.narrow(axis, (fa - self._cond_f0 + self._cond_off) * lh,
                                           (hi - fa) * lh))
        if fb > self._cond_f1:  # frames near the edge of what has arrived: this call only
            parts.append(compute(max(fa, self._cond_f1), fb))
        cond = parts[0] if len(parts) == 1 else torch.cat(parts, dim=axis)
        # the CPU layout is read row by row per layer: a view of the buffer will do
        return Conditioning(cond if engine.time_major else cond.contiguous(), (fb - fa) * lh)

    def _keep(self, new: Tensor, axis: int, lh: int) -> None:
        """Append ``new`` (conditioning of the frames after ``_cond_f1``) to the buffer."""
        frames = new.shape[axis] // lh
        used = self._cond_off + (self._cond_f1 - self._cond_f0)  # frames in the buffer
        if self._cond is None or (used + frames) * lh > self._cond.shape[axis]:
            live = (self._cond_f1 - self._cond_f0) * lh
            size = list(new.shape)
            size[axis] = max(2 * (live + new.shape[axis]), 64 * lh)
            buf = new.new_empty(size)
            if live:
                buf.narrow(axis, 0, live).copy_(self._cond.narrow(axis, self._cond_off * lh, live))
            self._cond, self._cond_off = buf, 0
            used = self._cond_f1 - self._cond_f0
        self._cond.narrow(axis, used * lh, new.shape[axis]).copy_(new)
        self._cond_f1 += frames

    def set_lookahead(self, samples: int) -> None:
        """Look ahead ``samples`` (whole hops, at most the exact lookahead) instead of the
        exact lookahead: each stage's share in proportion to its reach."""
        if samples < 0:
            raise ConfigError(f"lookahead must be >= 0 samples, got {samples}")
        self.pipeline.set_lookahead(samples)

    # ------------------------------------------------------------------ streaming
    def push(self, frames) -> Tensor:
        """Add mel frames ``(n_mels, k)`` (or ``(1, n_mels, k)``); returns the samples that
        became final (1-D, float32, possibly empty)."""
        if self.pipeline.finished:
            raise MelError("the stream has ended (finish() was called); start a new one")
        mel = torch.as_tensor(frames, dtype=torch.float32)
        if mel.dim() == 3 and mel.shape[0] == 1:
            mel = mel[0]
        source = self.audio if self.converter is None else self.converter.converter.source
        if mel.dim() != 2 or mel.shape[0] != source.n_mels:
            raise MelError(f"mel chunk of shape {tuple(mel.shape)} after {self.received} "
                           f"frames; the stream takes ({source.n_mels}, frames) chunks of "
                           f"{source.preset} mels: check the TTS system's n_mels")
        if mel.shape[-1] == 0:
            return torch.zeros(0)
        bad = ~torch.isfinite(mel)
        if bool(bad.any()):
            first = int(bad.any(dim=0).nonzero()[0, 0])
            raise MelError(f"mel chunk holds {int(bad.sum())} NaN/Inf values (first at frame "
                           f"{self.received + first} of the stream); fix the TTS output before "
                           f"vocoding")
        self.received += mel.shape[-1]
        if self.converter is not None:
            mel = torch.from_numpy(self.converter.push(mel.cpu().numpy()))
        return self._add(mel)

    def _add(self, mel: Tensor) -> Tensor:
        """Frames in the model's convention into the pipeline; the audio now final."""
        if mel.shape[-1] == 0:
            return torch.zeros(0)
        mel = mel.to(self.runner.device)[None]
        data = {"mel": mel}
        # frames are solved independently: once, as they come; in float64 where the phase
        # vocoder needs them (phase_vocoder_start), the projector's magnitudes those rounded
        if self._phase_vocoder is not None:
            magnitude = mel_to_magnitude(self.audio, mel, dtype=torch.float64)
            data["phase"] = self._phase_vocoder.advance(magnitude)
            if self._needs_magnitude:
                data["magnitude"] = magnitude.to(torch.float32)
        elif self._needs_magnitude:
            data["magnitude"] = mel_to_magnitude(self.audio, mel)
        with torch.inference_mode():
            return self._audio(self.pipeline.add_frames(mel.shape[-1], **data))

    def finish(self) -> Tensor:
        """End the stream: the remaining samples (1-D)."""
        if self.pipeline.finished:
            return torch.zeros(0)
        head = torch.zeros(0)
        if self.converter is not None:  # the frames a differing grid held back
            head = self._add(torch.from_numpy(self.converter.finish()))
        with torch.inference_mode():
            return torch.cat([head, self._audio(self.pipeline.finish())])

    @staticmethod
    def _audio(out: Optional[Tensor]) -> Tensor:
        if out is None:
            return torch.zeros(0)
        return out[0].clamp(-1.0, 1.0).float().cpu()

    def _trim_conditioning(self, pipeline: StagePipeline) -> None:
        """Drop the kept conditioning no network stage can need any more."""
        need = pipeline.network_need_from()
        if self._cond is not None and need is not None and need // self.hop > self._cond_f0:
            cut = min(need // self.hop, self._cond_f1) - self._cond_f0
            self._cond_off += cut
            self._cond_f0 += cut


def stream_chunks(decoder: StreamingDecoder, chunks: Iterable) -> Iterator[Tensor]:
    """Feed ``chunks`` to ``decoder``; yield each non-empty piece of audio as it is final."""
    for chunk in chunks:
        piece = decoder.push(chunk)
        if piece.numel():
            yield piece
    piece = decoder.finish()
    if piece.numel():
        yield piece
