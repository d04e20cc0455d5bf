"""A standalone decoder of a wavediff model exported to ONNX: numpy and onnxruntime only.

``wavediff export --format onnx`` writes a folder with the network as two ONNX graphs
(``conditioning.onnx``: mel -> per-layer conditioning; ``denoiser.onnx``: one network
evaluation), ``decoder.json`` (the mel convention, the sampling plan, the prior, the
Griffin-Lim settings) and ``filterbank.npy``, and a copy of this file as ``decode_onnx.py``.
This file imports nothing of wavediff or torch, so the folder runs wherever numpy,
onnxruntime (and soundfile, to write WAV files) are installed. ``wavediff export --format
torch-export`` writes the same folder with the two graphs as ``torch.export`` programs
(``conditioning.pt2``, ``denoiser.pt2``; ``decoder.json`` says which): then torch takes
onnxruntime's place, and wavediff is still not needed::

    python decode_onnx.py FOLDER mel.npy out.wav [--seed 0] [--threads 2]

The mel is ``(n_mels, frames)`` (or ``(B, n_mels, frames)``) in the model's convention
(``decoder.json`` names it), as ``wavediff`` writes them or :meth:`Vocoder.mel` returns.
The arithmetic is that of ``wavediff``'s fast sampler: the chain started around the
Griffin-Lim decode when the model was trained so, the prior's noise (PriorGrad's scale or
SpecGrad's filter), and the
spectral-consistency projections of every step's clean estimate. Random numbers come from
numpy (positional: each sample's draw from a generator seeded with the seed, the draw and
its block), so the audio of a seed differs from the torch decode's; given the same noise
draws (``noises=``) the two agree to float32 rounding. ``OnnxVocoder.stream`` and
``streaming_decoder`` decode a mel that arrives in pieces, equal to the whole decode, with
the scheduler in ``streaming_core.py`` (copied beside this file).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

if __package__:  # wavediff.onnx_decoder
    from .phase_vocoder import PhaseVocoder
    from .streaming_core import Stage, StagePipeline, whole_hops
else:  # decode_onnx.py in an exported folder: the copies of the scheduler and the phase
    # vocoder beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from phase_vocoder import PhaseVocoder
    from streaming_core import Stage, StagePipeline, whole_hops

FORMAT = "wavediff-onnx-1"
NNLS_ITERS = 50
NOISE_BLOCK = 4096  # samples drawn from one seeded generator (positional noise)
GL_START, X_T = 0, 1  # noise streams; the draw after network evaluation i is 2 + i
MEL_MARGIN_FRAMES = 2  # the upsampler's reach, in frames, for the network's reach
# a longer mel is decoded through the streaming scheduler this many frames at a time: the
# same audio, with memory flat in the length (onnxruntime holds every intermediate tensor
# of a graph run: about 6 MB per frame of joe; a whole 20 s decode peaked at 6.5 GB, 256-
# frame pieces at 1.5 GB whatever the length)
CHUNK_FRAMES = 256


class OnnxDecoderError(Exception):
    """A folder or an input the decoder cannot use; the message says what to do."""


# ---------------------------------------------------------------------- mel convention
def decompress(audio: dict, mel: np.ndarray) -> np.ndarray:
    """The model's mel values -> linear mel (float64)."""
    y = mel.astype(np.float64)
    if audio["norm_mean"] != 0.0 or audio["norm_std"] != 1.0:
        y = y * audio["norm_std"] + audio["norm_mean"]
    if audio["compression"] == "ln":
        return np.exp(y)
    if audio["compression"] == "log10":
        return np.power(10.0, y)
    return np.power(10.0, (y + audio["ref_level_db"]) / 20.0)


def hann(win: int, n_fft: int) -> np.ndarray:
    """The periodic Hann window of ``win`` samples, centred in ``n_fft`` (float64)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)
    left = (n_fft - win) // 2
    return np.pad(w, (left, n_fft - win - left))


_PINV: dict = {}


def pseudo_inverse(basis: np.ndarray) -> tuple:
    """``(pinv, step)`` of a filterbank: its pseudo-inverse (float64) and the NNLS step
    ``1 / ||basis||^2``; computed once per filterbank (an SVD: tens of milliseconds)."""
    key = (basis.shape, basis.dtype.str, basis.tobytes())
    hit = _PINV.get(key)
    if hit is None:
        b64 = basis.astype(np.float64)
        hit = (np.linalg.pinv(b64), 1.0 / float(np.linalg.norm(b64, 2)) ** 2)
        if len(_PINV) >= 8:
            _PINV.clear()
        _PINV[key] = hit
    return hit


def frames_as_columns(x: np.ndarray) -> np.ndarray:
    """``(B, M, F)`` -> ``(M, B * F)``: one matrix product for a batch (numpy's broadcast
    ``(K, M) @ (B, M, F)`` leaves BLAS for a loop a hundred times slower)."""
    return x.transpose(1, 0, 2).reshape(x.shape[1], -1)


def columns_as_frames(y: np.ndarray, batch: int) -> np.ndarray:
    """The inverse of :func:`frames_as_columns`: ``(K, B * F)`` -> ``(B, K, F)``."""
    return np.ascontiguousarray(y.reshape(y.shape[0], batch, -1).transpose(1, 0, 2))


def mel_to_magnitude(audio: dict, basis: np.ndarray, mel: np.ndarray,
                     iters: int = NNLS_ITERS, float64: bool = False) -> np.ndarray:
    """``(B, n_mels, F)`` -> ``(B, n_fft // 2 + 1, F)`` non-negative linear magnitudes whose
    mel is closest to ``mel``: FISTA from the clipped pseudo-inverse.

    Computed in float64 and returned in float32: each frame's magnitudes are then the same
    bits whichever frames share its matrix product (a BLAS product rounds a column in
    float32 differently with the number of columns), so a mel decoded in pieces of any
    size projects onto the magnitudes of the whole decode. In float32 the last-bit
    differences (~1e-8 relative) were enough for Griffin-Lim's phase, wherever a bin's
    STFT nearly cancels, to move a streamed decode 1.3e-4 off the whole one.
    """
    pinv, step = pseudo_inverse(basis)
    linear = decompress(audio, mel)
    if audio["stft_normalized"]:
        linear = linear * np.sqrt(np.square(hann(audio["win_length"], audio["win_length"])).sum())
    a = nnls(basis.astype(np.float64), frames_as_columns(linear), pinv, step, iters)
    return columns_as_frames(a if float64 else a.astype(np.float32), mel.shape[0])


def nnls(basis: np.ndarray, y: np.ndarray, pinv: Optional[np.ndarray] = None,
         step: Optional[float] = None, iters: int = NNLS_ITERS) -> np.ndarray:
    """Non-negative ``a`` ``(K, T)`` with ``basis @ a`` closest to ``y`` ``(M, T)`` (least
    squares): accelerated projected gradient (FISTA, Beck & Teboulle 2009) from the clipped
    pseudo-inverse (``pinv``, computed when not given), step ``1 / ||basis||^2``
    (``step``, likewise); columns (frames) are independent. Also wavediff's mel
    conversion's solver (:mod:`wavediff.audio.convert`)."""
    pinv = np.linalg.pinv(basis) if pinv is None else pinv
    step = 1.0 / float(np.linalg.norm(basis, 2)) ** 2 if step is None else step
    a = np.maximum(pinv @ y, 0.0)
    z, t = a, 1.0
    for _ in range(iters):
        nxt = np.maximum(z - step * (basis.T @ (basis @ z - y)), 0.0)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = nxt + ((t - 1.0) / t_next) * (nxt - a)
        a, t = nxt, t_next
    return a


class Projector:
    """Projects waveforms ``(B, F * hop)`` onto the magnitudes of a mel: the STFT of the
    mel's framing keeps its phase and takes the magnitudes, then windowed overlap-add
    (one Griffin-Lim iteration), in float32. With ``keep_uncovered`` the bins no mel band
    covers keep the input's STFT (the projections inside the chain)."""

    def __init__(self, audio: dict, basis: np.ndarray, mel: Optional[np.ndarray],
                 magnitude: Optional[np.ndarray] = None) -> None:
        self.n_fft, self.hop = audio["n_fft"], audio["hop_length"]
        self.magnitude = (mel_to_magnitude(audio, basis, mel) if magnitude is None
                          else magnitude)
        self.frames = self.magnitude.shape[-1]
        self.window = hann(audio["win_length"], self.n_fft).astype(np.float32)
        self.pad = self.n_fft // 2 if audio["padding"] == "center" else (self.n_fft - self.hop) // 2
        self.uncovered = basis.sum(axis=0) <= 0.0  # (K,): the bins no mel band covers
        self._norm: Optional[np.ndarray] = None

    def __call__(self, wav: np.ndarray, keep_uncovered: bool = False) -> np.ndarray:
        n_fft, hop, pad = self.n_fft, self.hop, self.pad
        n = wav.shape[-1]
        x = np.pad(wav.astype(np.float32), ((0, 0), (pad, pad)), mode="reflect")
        total = (n + 2 * pad - n_fft) // hop + 1
        frames = min(total, self.frames)
        x = x[:, :(total - 1) * hop + n_fft]
        windows = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop][:, :frames]
        spec = np.fft.rfft(windows * self.window, axis=-1)  # (B, frames, K)
        phase = spec / np.maximum(np.abs(spec), 1e-12)
        target = self.magnitude[:, :, :frames].transpose(0, 2, 1) * phase
        spec = np.where(self.uncovered, spec, target) if keep_uncovered else target
        chunks = np.fft.irfft(spec, n=n_fft, axis=-1).astype(np.float32) * self.window
        length = (frames - 1) * hop + n_fft
        out = np.zeros((x.shape[0], length), dtype=np.float32)
        for k in range(frames):
            out[:, k * hop:k * hop + n_fft] += chunks[:, k]
        if self._norm is None or self._norm.shape[-1] != length:
            norm = np.zeros(length, dtype=np.float32)
            w2 = np.square(self.window)
            for k in range(frames):
                norm[k * hop:k * hop + n_fft] += w2
            self._norm = norm
        norm = self._norm
        out = np.where(norm > 1e-8, out / np.maximum(norm, 1e-8), x[:, :length])
        out = np.concatenate([out, x[:, length:]], axis=1)
        return out[:, pad:pad + n]

    def griffin_lim(self, wav: np.ndarray, iters: int, keep_uncovered: bool = False) -> np.ndarray:
        for _ in range(iters):
            wav = self(wav, keep_uncovered)
        return wav

    def synthesize(self, phase: np.ndarray) -> np.ndarray:
        """The waveform ``(B, F * hop)`` of the magnitudes with ``phase`` ``(B, K, F)``:
        windowed overlap-add, normalised by the overlap-added squared window (0 where no
        frame reaches), framed as the projection frames."""
        n_fft, hop, pad = self.n_fft, self.hop, self.pad
        spec = self.magnitude.astype(np.float32) * np.exp(1j * phase.astype(np.float32))
        chunks = np.fft.irfft(spec, n=n_fft, axis=1).astype(np.float32) * self.window[:, None]
        length = (self.frames - 1) * hop + n_fft
        out = np.zeros((spec.shape[0], length), dtype=np.float32)
        norm = np.zeros(length, dtype=np.float32)
        w2 = np.square(self.window)
        for k in range(self.frames):
            out[:, k * hop:k * hop + n_fft] += chunks[:, :, k]
            norm[k * hop:k * hop + n_fft] += w2
        out = np.where(norm > 1e-8, out / np.maximum(norm, 1e-8), 0.0).astype(np.float32)
        return out[:, pad:pad + self.frames * hop]


class SpectralFilter:
    """SpecGrad's noise: white noise filtered frame by frame by the mel's smoothed spectral
    envelope at PriorGrad's level, in the STFT of the mel's geometry (centred frames,
    zero padding, periodic Hann window; overlap-add normalised by the window's squares)."""

    def __init__(self, audio: dict, basis: np.ndarray, mel: np.ndarray, frame_std: np.ndarray,
                 prior: dict) -> None:
        n_fft, lifter, floor = audio["n_fft"], prior["lifter"], prior["shape_floor"]
        self.n_fft, self.hop = n_fft, audio["hop_length"]
        # float64, as mel_to_magnitude: the same bits for a frame in any piece
        linear = decompress(audio, mel)
        mag = np.clip(columns_as_frames(pseudo_inverse(basis)[0] @ frames_as_columns(linear),
                                        linear.shape[0]), 0.0, None).astype(np.float32)
        eps = 1e-5 * mag.max(axis=1, keepdims=True) + 1e-12
        cep = np.fft.irfft(np.log(mag + eps), n=n_fft, axis=1)
        cep[:, lifter:n_fft - lifter + 1] = 0.0
        env = np.exp(np.fft.rfft(cep, axis=1).real)
        env = env / np.sqrt(np.square(env).mean(axis=1, keepdims=True))
        env = np.maximum(env, floor)
        env = env / np.sqrt(np.square(env).mean(axis=1, keepdims=True))
        gain = (env * frame_std[:, None, :]).astype(np.float32)
        self.gain = np.concatenate([gain, gain[..., -1:]], axis=-1)  # F + 1 centred frames
        self.window = hann(audio["win_length"], n_fft).astype(np.float32)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        n_fft, hop, half = self.n_fft, self.hop, self.n_fft // 2
        n = z.shape[-1]
        x = np.pad(z.astype(np.float32), ((0, 0), (half, half)))
        frames = 1 + n // hop
        windows = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop][:, :frames]
        spec = np.fft.rfft(windows * self.window, axis=-1)  # (B, frames, K)
        spec = spec * self.gain[:, :, :frames].transpose(0, 2, 1)
        chunks = np.fft.irfft(spec, n=n_fft, axis=-1).astype(np.float32) * self.window
        length = (frames - 1) * hop + n_fft
        out = np.zeros((z.shape[0], length), dtype=np.float32)
        env = np.zeros(length, dtype=np.float32)
        w2 = np.square(self.window)
        for k in range(frames):
            out[:, k * hop:k * hop + n_fft] += chunks[:, k]
            env[k * hop:k * hop + n_fft] += w2
        return (out[:, half:half + n] / env[half:half + n]).astype(np.float32)


def chain_start(init: np.ndarray, noise: np.ndarray, abar_first: float,
                start_noise: float) -> np.ndarray:
    """The chain's start around Griffin-Lim's estimate: ``sqrt(abar_first) init +
    start_noise sqrt(1 - abar_first) noise`` (``noise`` already shaped by the prior)."""
    return math.sqrt(abar_first) * init + start_noise * math.sqrt(1.0 - abar_first) * noise


# ---------------------------------------------------------------------- noise
class PositionalNoise:
    """Standard normal noise, each sample a function of the item's key, the draw (stream)
    and its position: blocks of ``NOISE_BLOCK`` samples, each from its own generator seeded
    with ``(key, stream, block)``, so a decode cut into pieces draws the same noise."""

    def __init__(self, seed: Optional[int], batch: int) -> None:
        self.keys = [int(k) for k in np.random.default_rng(seed).integers(0, 2**62, size=batch)]
        self._cache: dict = {}

    def draw(self, stream: int, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of ``stream``: ``(B, stop - start)`` float32."""
        first, last = start // NOISE_BLOCK, max(start, stop - 1) // NOISE_BLOCK
        rows = []
        for key in self.keys:
            blocks = []
            for j in range(first, last + 1):
                block = self._cache.get((key, stream, j))
                if block is None:
                    rng = np.random.default_rng([key, stream, j])
                    block = rng.standard_normal(NOISE_BLOCK, dtype=np.float32)
                    if len(self._cache) > 256:
                        self._cache.clear()
                    self._cache[key, stream, j] = block
                blocks.append(block)
            row = np.concatenate(blocks)
            rows.append(row[start - first * NOISE_BLOCK:stop - first * NOISE_BLOCK])
        return np.stack(rows)


# ---------------------------------------------------------------------- the decoder
def _onnx_sessions(paths: dict, threads: Optional[int]) -> tuple:
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxDecoderError("this folder's graphs are ONNX: pip install onnxruntime") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    providers = ["CPUExecutionProvider"]
    return tuple(ort.InferenceSession(str(paths[role]), options, providers=providers)
                 for role in ("conditioning", "denoiser"))


class _TorchProgram:
    """A ``torch.export`` program behind onnxruntime's ``run(None, feeds)``."""

    def __init__(self, path: Path, inputs: Sequence[str]) -> None:
        import torch

        self.torch, self.inputs = torch, tuple(inputs)
        # torch logs its own traceback of a failed load and warns that the archive's
        # buffers are read-only (they are only read): the error below says it in one line
        log = logging.getLogger("torch.export")
        level = log.level
        try:
            log.setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given buffer is not writable")
                self.module = torch.export.load(str(path)).module()
        except Exception as e:  # a missing, truncated or foreign file
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise OnnxDecoderError(f"cannot load {path} as a torch.export program ({why}); "
                                   f"export the model again") from None
        finally:
            log.setLevel(level)

    def run(self, _outputs, feeds: dict) -> list:
        torch = self.torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[k], dtype=np.float32))
                for k in self.inputs]
        with torch.inference_mode():
            out = self.module(*args)
        return [t.numpy() for t in out] if isinstance(out, (tuple, list)) else [out.numpy()]


def _torch_programs(paths: dict, threads: Optional[int], cond_inputs: Sequence[str],
                    wave_input: bool = False) -> tuple:
    try:
        import torch
    except ImportError:
        raise OnnxDecoderError("this folder's graphs are torch.export programs: pip install "
                               "torch") from None
    if threads:
        torch.set_num_threads(int(threads))
    return (_TorchProgram(paths["conditioning"], ["mel", "wave"][:1 + bool(wave_input)]),
            _TorchProgram(paths["denoiser"], ["x", "steps", *cond_inputs]))


class OnnxVocoder:
    """An exported folder, ready to decode.

    Args:
        folder: what ``wavediff export --format onnx`` (or ``torch-export``) wrote.
        threads: onnxruntime's intra-op threads (default: its own choice); for a
            ``torch-export`` folder, ``torch.set_num_threads`` (process-wide).
    """

    def __init__(self, folder, threads: Optional[int] = None) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "decoder.json"
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OnnxDecoderError(f"{meta_path} is not readable ({e}); export the model again "
                                   f"with 'wavediff export --format onnx'") from None
        if self.meta.get("format") != FORMAT:
            raise OnnxDecoderError(f"{meta_path} is not a {FORMAT} folder; export the model "
                                   f"again with this version of wavediff")
        self.audio = self.meta["audio"]
        self.basis = np.load(self.folder / "filterbank.npy", allow_pickle=False)
        runtime = self.meta.get("runtime", "onnxruntime")
        graphs = self.meta.get("graphs", {"conditioning": "conditioning.onnx",
                                          "denoiser": "denoiser.onnx"})
        paths = {}
        for role in ("conditioning", "denoiser"):
            name = str(graphs.get(role, ""))
            if not name or Path(name).name != name:  # a bare file name in this folder only
                raise OnnxDecoderError(f"{meta_path} names {name!r} as the {role} graph; "
                                       f"export the model again")
            paths[role] = self.folder / name
        # the conditioning's outputs, fed by name to the denoiser: one per layer (before:
        # one stacked "conds", which the denoiser split again: a copy of it every step)
        layers = self.meta.get("conditioning_outputs")
        if layers is not None and not (isinstance(layers, int) and 0 < layers <= 4096):
            raise OnnxDecoderError(f"{meta_path} declares {layers!r} conditioning outputs; "
                                   f"export the model again")
        self.cond_inputs = (["conds"] if layers is None
                            else [f"cond_{i}" for i in range(layers)])
        # projections of the Griffin-Lim waveform the network is conditioned on (0: none;
        # folders before it: none)
        self.gl_condition = int(self.meta.get("gl_condition", 0))
        start = int(self.meta.get("start_iters", 0))
        if not 0 <= self.gl_condition <= 100 or (self.gl_condition and start not in (0, self.gl_condition)):
            raise OnnxDecoderError(f"{meta_path} declares gl_condition {self.gl_condition!r} "
                                   f"with start_iters {start!r}; export the model again")
        # where Griffin-Lim starts: the seed's noise, or the phase vocoder's phase (folders
        # before it: noise)
        self.gl_init = self.meta.get("gl_init", "noise")
        if self.gl_init not in ("noise", "phase-vocoder"):
            raise OnnxDecoderError(f"{meta_path} declares gl_init {self.gl_init!r}; export "
                                   f"the model again")
        if runtime == "onnxruntime":
            self.conditioning, self.denoiser = _onnx_sessions(paths, threads)
        elif runtime == "torch":
            self.conditioning, self.denoiser = _torch_programs(
                paths, threads, self.cond_inputs, wave_input=self.gl_condition > 0)
        else:
            raise OnnxDecoderError(f"{meta_path} names the runtime {runtime!r}, which this "
                                   f"decoder does not know; export the model again")
        self.runtime = runtime

    def _conditioning(self, mel: np.ndarray, wave: Optional[np.ndarray] = None) -> list:
        """Every layer's conditioning of ``mel`` (one array per layer; folders exported
        before that: one stacked array); ``wave``: the mel's Griffin-Lim waveform, for a
        model conditioned on it (``gl_condition``)."""
        feeds = {"mel": mel}
        if self.gl_condition:
            feeds["wave"] = np.ascontiguousarray(wave, dtype=np.float32)
        return self.conditioning.run(None, feeds)

    def _eps(self, x: np.ndarray, step: float, conds: list, abar: float) -> np.ndarray:
        """The noise estimate of one network evaluation at the (fractional) training step
        ``step``, whose level has alpha-bar ``abar``: the output itself, or for a network
        that predicts the residual (``x0_hat = x / sqrt(abar) + out``) ``-sqrt(abar /
        (1 - abar)) out``."""
        feeds = {"x": x.astype(np.float32), "steps": np.full((x.shape[0],), step, np.float32)}
        feeds.update(zip(self.cond_inputs, conds))
        out = self.denoiser.run(None, feeds)[0]
        if self.meta.get("prediction", "eps") == "eps":  # folders before it: eps
            return out
        return out * np.float32(-math.sqrt(abar / (1.0 - abar)))

    @property
    def sample_rate(self) -> int:
        return int(self.audio["sample_rate"])

    def _frame_std(self, mel: np.ndarray) -> np.ndarray:
        """PriorGrad's per-frame std ``(B, F)``: the frame energy scaled by the training
        set's range, floored."""
        prior = self.meta["prior"]
        energy = np.sqrt(np.square(decompress(self.audio, mel).astype(np.float32)).mean(axis=1))
        lo, hi = prior["energy"]
        return np.clip((energy - lo) / (hi - lo), prior["floor"], 1.0).astype(np.float32)

    def _colour(self, mel: np.ndarray) -> Optional[Callable[[np.ndarray], np.ndarray]]:
        """White noise -> the prior's noise for ``mel`` (None: the standard normal prior)."""
        prior = self.meta["prior"]
        if prior is None:
            return None
        std = self._frame_std(mel)
        if prior["kind"] == "priorgrad":
            per_sample = np.repeat(std, self.audio["hop_length"], axis=-1)
            return lambda z: z * per_sample
        return SpectralFilter(self.audio, self.basis, mel, std, prior)

    def decode(self, mel: np.ndarray, *, seed: Optional[int] = None,
               noises: Optional[Sequence[np.ndarray]] = None,
               consistency: Optional[int] = None,
               chunk_frames: Optional[int] = CHUNK_FRAMES) -> np.ndarray:
        """``(n_mels, F)`` or ``(B, n_mels, F)`` in the model's convention -> audio
        ``(F * hop,)`` or ``(B, F * hop)`` float32 in [-1, 1].

        ``noises``: the standard normal draws to use instead of numpy's, in the order
        the torch decode draws them (the Griffin-Lim start's, ``x_T``'s, one per later
        step), each ``(B, F * hop)``. ``consistency``: projections per step (default: the
        model's). A mel longer than twice ``chunk_frames`` (None or 0: never) is decoded
        through the streaming scheduler, ``chunk_frames`` at a time, item by item: the
        same audio to float rounding, in memory that does not grow with the length (not
        with ``noises``, which are whole-length).
        """
        mel = np.asarray(mel, dtype=np.float32)
        single = mel.ndim == 2
        if single:
            mel = mel[None]
        n_mels = self.audio["n_mels"]
        if mel.ndim != 3 or mel.shape[1] != n_mels or mel.shape[-1] < 1:
            raise OnnxDecoderError(f"expected a mel of shape ({n_mels}, frames) or "
                                   f"(batch, {n_mels}, frames), got {mel.shape}")
        if not np.isfinite(mel).all():
            raise OnnxDecoderError("the mel holds NaN or infinite values; fix the model that "
                                   "wrote it")
        supplied = list(noises) if noises is not None else None
        shape = (mel.shape[0], mel.shape[-1] * self.audio["hop_length"])
        positional = PositionalNoise(seed, mel.shape[0])
        if supplied is None and chunk_frames and mel.shape[-1] > 2 * chunk_frames:
            wav = np.stack([self._decode_in_pieces(item, key, consistency, chunk_frames)
                            for item, key in zip(mel, positional.keys)])
            return wav[0] if single else wav

        def draw(stream: int) -> np.ndarray:
            if supplied is None:
                return positional.draw(stream, 0, shape[1])
            if not supplied:
                raise OnnxDecoderError("fewer noise draws given than the decode needs")
            z = np.asarray(supplied.pop(0), dtype=np.float32)
            if z.shape != shape:
                raise OnnxDecoderError(f"a noise draw has shape {z.shape}, expected {shape}")
            return z

        plan = self.meta["plan"]
        betas, abar, steps = plan["betas"], plan["alpha_bars"], plan["network_steps"]
        iters = self.meta["consistency"] if consistency is None else int(consistency)
        start_iters, gl_iters = self.meta["start_iters"], self.gl_condition
        pv = self.gl_init == "phase-vocoder" and bool(start_iters or gl_iters)
        # the phase vocoder's float64 magnitudes, rounded, are the projector's: one solve
        mag64 = mel_to_magnitude(self.audio, self.basis, mel, float64=True) if pv else None
        projector = (Projector(self.audio, self.basis, mel,
                               None if mag64 is None else mag64.astype(np.float32))
                     if iters or start_iters or gl_iters else None)
        init = wave = None
        if start_iters or gl_iters:  # one Griffin-Lim waveform: the start and/or conditioning
            if pv:
                phase = PhaseVocoder(self.audio["hop_length"], self.audio["n_fft"]).advance(mag64)
                source = projector.synthesize(phase)
            else:
                source = draw(GL_START)
            gl = np.clip(projector.griffin_lim(source, gl_iters or start_iters), -1.0, 1.0)
            init = gl if start_iters else None
            wave = gl if gl_iters else None
        conds = self._conditioning(mel, wave)
        colour = self._colour(mel)
        x = draw(X_T)
        if colour is not None:
            x = colour(x)
        if init is not None:
            x = chain_start(init, x, abar[-1], self.meta.get("start_noise", 1.0))
        n = len(betas)
        for s in reversed(range(n)):
            eps = self._eps(x, steps[s], conds, abar[s])
            if iters:
                x0 = projector.griffin_lim((x - math.sqrt(1.0 - abar[s]) * eps)
                                           / math.sqrt(abar[s]), iters, keep_uncovered=True)
                eps = (x - math.sqrt(abar[s]) * x0) / math.sqrt(1.0 - abar[s])
            x = (x - betas[s] / math.sqrt(1.0 - abar[s]) * eps) / math.sqrt(1.0 - betas[s])
            if s > 0:
                sigma = math.sqrt((1.0 - abar[s - 1]) / (1.0 - abar[s]) * betas[s])
                z = draw(2 + n - 1 - s)  # the draw after network evaluation n - 1 - s
                x = x + sigma * (z if colour is None else colour(z))
        wav = np.clip(x, -1.0, 1.0).astype(np.float32)
        return wav[0] if single else wav


    def _decode_in_pieces(self, mel: np.ndarray, key: int, consistency: Optional[int],
                          chunk: int) -> np.ndarray:
        """One ``(n_mels, F)`` mel through the streaming scheduler, ``chunk`` frames at a
        time, with the noise of the batch item whose key is ``key``."""
        decoder = OnnxStreamingDecoder(self, consistency=consistency,
                                       block=chunk * self.audio["hop_length"], key=key)
        pieces = [decoder.push(mel[:, i:i + chunk]) for i in range(0, mel.shape[-1], chunk)]
        pieces.append(decoder.finish())
        return np.concatenate(pieces)

    # ------------------------------------------------------------------ streaming
    def streaming_decoder(self, *, seed: Optional[int] = None,
                          consistency: Optional[int] = None, lookahead: Optional[int] = None,
                          block: Optional[int] = None) -> "OnnxStreamingDecoder":
        """A decoder of one mel that arrives in pieces: ``push(frames)`` -> the audio that
        became final, ``finish()`` -> the rest; together equal to :meth:`decode` of the
        whole mel with the same ``seed`` (see :class:`OnnxStreamingDecoder`)."""
        return OnnxStreamingDecoder(self, seed=seed, consistency=consistency,
                                    lookahead=lookahead, block=block)

    def stream(self, chunks, **options):
        """Yield 1-D audio pieces as ``chunks`` of ``(n_mels, k)`` frames arrive
        (``options`` as :meth:`streaming_decoder`)."""
        decoder = self.streaming_decoder(**options)
        for chunk in chunks:
            piece = decoder.push(chunk)
            if piece.size:
                yield piece
        piece = decoder.finish()
        if piece.size:
            yield piece


class OnnxStreamingDecoder:
    """The exported decode cut into stages (each Griffin-Lim projection of the start, each
    network evaluation, each projection inside a step, each coloured draw), run by
    ``streaming_core``'s scheduler as mel frames arrive, with positional noise: the
    streamed audio equals :meth:`OnnxVocoder.decode` of the whole mel with the same seed,
    to float rounding, for any chunking. ``lookahead`` (samples of mel beyond a sample
    before it is final; default and maximum :attr:`lookahead_exact`) trades exactness for
    latency; ``block`` (samples) makes each stage wait for that many new samples (default
    16 frames, as wavediff's; one hop for the lowest latency); ``key``: the noise key of a
    batch item of the whole decode (default: the seed's first, a single mel's)."""

    def __init__(self, voc: OnnxVocoder, *, seed: Optional[int] = None,
                 consistency: Optional[int] = None, lookahead: Optional[int] = None,
                 block: Optional[int] = None, key: Optional[int] = None) -> None:
        meta = voc.meta
        if "receptive_field" not in meta:
            raise OnnxDecoderError("this folder was exported before streaming was supported; "
                                   "export the model again with 'wavediff export --format onnx'")
        if lookahead is not None and lookahead < 0:
            raise OnnxDecoderError(f"lookahead must be >= 0 samples, got {lookahead}")
        self.voc, self.audio = voc, voc.audio
        self.hop, self.n_mels = self.audio["hop_length"], self.audio["n_mels"]
        self.iters = meta["consistency"] if consistency is None else int(consistency)
        self.noise = PositionalNoise(seed, 1)
        if key is not None:  # a batch item's noise key (OnnxVocoder.decode in pieces)
            self.noise.keys = [int(key)]
        self.frames = 0
        self._phase_vocoder = PhaseVocoder(self.hop, self.audio["n_fft"])
        self.pipeline = StagePipeline(self._build(), self.hop,
                                      lambda xs: np.concatenate(xs, axis=-1),
                                      lookahead=lookahead,
                                      block=16 * self.hop if block is None else block)

    lookahead = property(lambda self: self.pipeline.lookahead)
    lookahead_exact = property(lambda self: self.pipeline.lookahead_exact)

    def _build(self) -> list:
        meta, audio, hop = self.voc.meta, self.audio, self.hop
        r_proj = whole_hops(audio["n_fft"], hop)
        prior = meta["prior"]
        r_prior = r_proj if prior is not None and prior["kind"] == "specgrad" else 0
        r_net = whole_hops(meta["receptive_field"] + MEL_MARGIN_FRAMES * hop, hop)
        plan = meta["plan"]
        betas, abar, steps = plan["betas"], plan["alpha_bars"], plan["network_steps"]
        start_iters, iters = meta["start_iters"], self.iters
        start_noise = float(meta.get("start_noise", 1.0))  # folders before it: 1
        basis = self.voc.basis

        def project(x, seg, keep_uncovered=False):
            return Projector(audio, basis, None, magnitude=seg.magnitude)(x, keep_uncovered)

        def colour(z, seg):
            fn = self.voc._colour(seg.mel)
            return z if fn is None else fn(z)

        stages = []
        gl_cond = self.voc.gl_condition
        gl_iters = gl_cond or start_iters  # one Griffin-Lim waveform: start and/or conditioning
        pv = self.voc.gl_init == "phase-vocoder"

        def gl_source(x, a, b, seg):  # the noise, or the frames' phase-vocoder phase
            if pv:
                start = Projector(audio, basis, None, magnitude=seg.magnitude).synthesize(
                    seg.phase)
            else:
                start = self.noise.draw(GL_START, a, b)
            return project(start, seg)

        for k in range(gl_iters):
            if k == 0:  # the phase vocoder's start: an overlap-add more of reach
                stages.append(Stage("griffin-lim 1", 2 * r_proj if pv else r_proj, gl_source,
                                    source=True))
            else:
                stages.append(Stage(f"griffin-lim {k + 1}", r_proj,
                                    lambda x, a, b, seg: project(x, seg)))

        def x_t(x, a, b, seg):
            z = colour(self.noise.draw(X_T, a, b), seg)
            if x is None or not start_iters:
                return z
            init = np.clip(x, -1.0, 1.0)
            return chain_start(init, z, abar[-1], start_noise)

        if gl_cond:
            # the Griffin-Lim waveform travels with the chain as its last row; the network
            # stages condition on it
            def carried(fn):
                def run(x, a, b, seg):
                    wave = x[-1:]
                    seg.data["wave"] = np.clip(wave, -1.0, 1.0)
                    y = fn(x[:-1] if x.shape[0] > 1 else wave, a, b, seg)
                    return np.concatenate([y, wave])
                return run
        else:
            def carried(fn):
                return fn
        stages.append(Stage("x_T", r_prior, carried(x_t), source=gl_iters == 0))

        n = len(betas)
        for i in range(n):
            s = n - 1 - i

            def eps_of(x, seg, s=s):
                conds = self.voc._conditioning(seg.mel, seg.data.get("wave"))
                return self.voc._eps(x, steps[s], conds, abar[s])

            def update(x, eps, a, seg, s=s, i=i):
                x = (x - betas[s] / math.sqrt(1.0 - abar[s]) * eps) / math.sqrt(1.0 - betas[s])
                if s > 0:
                    sigma = math.sqrt((1.0 - abar[s - 1]) / (1.0 - abar[s]) * betas[s])
                    z = self.noise.draw(2 + i, a, a + x.shape[-1])
                    x = x + sigma * colour(z, seg)
                return x

            reach_noise = r_prior if s > 0 else 0
            if not iters:
                stages.append(Stage(f"step {i + 1}", r_net + reach_noise,
                                    carried(lambda x, a, b, seg, eps_of=eps_of, update=update:
                                            update(x, eps_of(x, seg), a, seg)), network=True))
                continue

            def net(x, a, b, seg, s=s, eps_of=eps_of):  # rows: x, its clean estimate
                x0 = (x - math.sqrt(1.0 - abar[s]) * eps_of(x, seg)) / math.sqrt(abar[s])
                return np.concatenate([x, x0])
            stages.append(Stage(f"step {i + 1} network", r_net, carried(net), network=True))
            for k in range(iters):
                stages.append(Stage(f"step {i + 1} projection {k + 1}", r_proj,
                                    carried(lambda x, a, b, seg: np.concatenate(
                                        [x[:1], project(x[1:], seg, True)]))))

            def after(x, a, b, seg, s=s, update=update):
                eps = (x[:1] - math.sqrt(abar[s]) * x[1:]) / math.sqrt(1.0 - abar[s])
                return update(x[:1], eps, a, seg)
            stages.append(Stage(f"step {i + 1} update", reach_noise, carried(after)))
        return stages

    def push(self, frames) -> np.ndarray:
        """Add mel frames ``(n_mels, k)``; returns the samples that became final (1-D)."""
        mel = np.asarray(frames, dtype=np.float32)
        if mel.ndim == 3 and mel.shape[0] == 1:
            mel = mel[0]
        if mel.ndim != 2 or mel.shape[0] != self.n_mels:
            raise OnnxDecoderError(f"mel chunk of shape {mel.shape} after {self.frames} "
                                   f"frames; expected ({self.n_mels}, frames)")
        if not np.isfinite(mel).all():
            raise OnnxDecoderError(f"mel chunk holds NaN or infinite values (after {self.frames} "
                                   f"frames of the stream); fix the model that wrote it")
        if self.pipeline.finished:
            raise OnnxDecoderError("the stream has ended; start a new one")
        if mel.shape[-1] == 0:
            return np.zeros(0, dtype=np.float32)
        mel = mel[None]
        data = {"mel": mel}
        gl = self.voc.meta["start_iters"] or self.voc.gl_condition
        if gl and self.voc.gl_init == "phase-vocoder":  # frame by frame, as frames arrive
            mag64 = mel_to_magnitude(self.audio, self.voc.basis, mel, float64=True)
            data["phase"] = self._phase_vocoder.advance(mag64)
            data["magnitude"] = mag64.astype(np.float32)  # what the float32 solve returns
        elif self.iters or gl:
            data["magnitude"] = mel_to_magnitude(self.audio, self.voc.basis, mel)
        self.frames += mel.shape[-1]
        return self._audio(self.pipeline.add_frames(mel.shape[-1], **data))

    def finish(self) -> np.ndarray:
        """End the stream: the remaining samples (1-D)."""
        return self._audio(self.pipeline.finish())

    @staticmethod
    def _audio(out) -> np.ndarray:
        if out is None:
            return np.zeros(0, dtype=np.float32)
        return np.clip(out[0], -1.0, 1.0).astype(np.float32)


def load_mel(path) -> np.ndarray:
    """A ``.npy`` mel, its header checked before anything is allocated: a float array of 2
    or 3 dimensions whose declared size the file really holds (no pickles)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            have = path.stat().st_size - f.tell()
    except (OSError, ValueError) as e:
        raise OnnxDecoderError(f"cannot read {path} as a .npy array ({e}); save the mel with "
                               f"numpy.save") from None
    if dtype.kind != "f" or len(shape) not in (2, 3):
        raise OnnxDecoderError(f"{path} holds a {dtype} array of shape {shape}; expected a "
                               f"float mel (n_mels, frames)")
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if need > have:
        raise OnnxDecoderError(f"{path} declares {need} bytes of data but holds {have}: the "
                               f"file is truncated or corrupt; write it again")
    return np.load(path, allow_pickle=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Decode a mel with a wavediff model exported to "
                                            "ONNX (numpy + onnxruntime; soundfile for WAV).")
    p.add_argument("folder", help="the folder 'wavediff export --format onnx' (or "
                                   "torch-export) wrote")
    p.add_argument("mel", help="a .npy mel (n_mels, frames) in the model's convention")
    p.add_argument("out", help="the WAV file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime's intra-op threads (torch's for a "
                                                           "torch-export folder)")
    args = p.parse_args(argv)
    try:
        import soundfile as sf

        voc = OnnxVocoder(args.folder, threads=args.threads)
        wav = voc.decode(load_mel(args.mel), seed=args.seed)
        out = Path(args.out)
        tmp = out.with_name(out.name + ".part")
        sf.write(str(tmp), wav.T if wav.ndim == 2 else wav, voc.sample_rate, format="WAV",
                 subtype="PCM_16")
        os.replace(tmp, out)
    except OnnxDecoderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({wav.shape[-1] / voc.sample_rate:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
