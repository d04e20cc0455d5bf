"""A standalone decoder of a wavediff model exported to ONNX: numpy and onnxruntime only.

``wavediff export --format onnx`` writes a folder with the network as two ONNX graphs
(``conditioning.onnx``: mel -> per-layer conditioning; ``denoiser.onnx``: one network
evaluation), ``decoder.json`` (the mel convention, the sampling plan, the prior, the
Griffin-Lim settings) and ``filterbank.npy``, and a copy of this file as ``decode_onnx.py``.
This file imports nothing of wavediff or torch, so the folder runs wherever numpy,
onnxruntime (and soundfile, to write WAV files) are installed::

    python decode_onnx.py FOLDER mel.npy out.wav [--seed 0] [--threads 2]

The mel is ``(n_mels, frames)`` (or ``(B, n_mels, frames)``) in the model's convention
(``decoder.json`` names it), as ``wavediff`` writes them or :meth:`Vocoder.mel` returns.
The arithmetic is that of ``wavediff``'s fast sampler: the chain started around the
Griffin-Lim decode when the model was trained so, the prior's noise (PriorGrad's scale or
SpecGrad's filter), and the
spectral-consistency projections of every step's clean estimate. Random numbers come from
numpy (a seeded ``numpy.random.Generator``), so the audio of a seed differs from the torch
decode's; given the same noise draws (``noises=``) the two agree to float32 rounding.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

FORMAT = "wavediff-onnx-1"
NNLS_ITERS = 50


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


def mel_to_magnitude(audio: dict, basis: np.ndarray, mel: np.ndarray,
                     iters: int = NNLS_ITERS) -> np.ndarray:
    """``(B, n_mels, F)`` -> ``(B, n_fft // 2 + 1, F)`` non-negative linear magnitudes whose
    mel is closest to ``mel``: FISTA from the clipped pseudo-inverse, in float32."""
    basis64 = basis.astype(np.float64)
    linear = decompress(audio, mel)
    if audio["stft_normalized"]:
        linear = linear * np.sqrt(np.square(hann(audio["win_length"], audio["win_length"])).sum())
    step = 1.0 / float(np.linalg.norm(basis64, 2)) ** 2
    a = np.clip(np.linalg.pinv(basis64) @ linear, 0.0, None).astype(np.float32)
    y = linear.astype(np.float32)
    b32 = basis.astype(np.float32)
    z, t = a, 1.0
    for _ in range(iters):
        nxt = np.clip(z - np.float32(step) * (b32.T @ (b32 @ z - y)), 0.0, None)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = nxt + np.float32((t - 1.0) / t_next) * (nxt - a)
        a, t = nxt, t_next
    return a


class Projector:
    """Projects waveforms ``(B, F * hop)`` onto the magnitudes of a mel: the STFT of the
    mel's framing keeps its phase and takes the magnitudes, then windowed overlap-add
    (one Griffin-Lim iteration), in float32."""

    def __init__(self, audio: dict, basis: np.ndarray, mel: np.ndarray) -> None:
        self.n_fft, self.hop = audio["n_fft"], audio["hop_length"]
        self.frames = mel.shape[-1]
        self.magnitude = mel_to_magnitude(audio, basis, mel)
        self.window = hann(audio["win_length"], self.n_fft).astype(np.float32)
        self.pad = self.n_fft // 2 if audio["padding"] == "center" else (self.n_fft - self.hop) // 2
        self._norm: Optional[np.ndarray] = None

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        n_fft, hop, pad = self.n_fft, self.hop, self.pad
        n = wav.shape[-1]
        x = np.pad(wav.astype(np.float32), ((0, 0), (pad, pad)), mode="reflect")
        total = (n + 2 * pad - n_fft) // hop + 1
        frames = min(total, self.frames)
        x = x[:, :(total - 1) * hop + n_fft]
        windows = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop][:, :frames]
        spec = np.fft.rfft(windows * self.window, axis=-1)  # (B, frames, K)
        phase = spec / np.maximum(np.abs(spec), 1e-12)
        spec = self.magnitude[:, :, :frames].transpose(0, 2, 1) * phase
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

    def griffin_lim(self, wav: np.ndarray, iters: int) -> np.ndarray:
        for _ in range(iters):
            wav = self(wav)
        return wav


class SpectralFilter:
    """SpecGrad's noise: white noise filtered frame by frame by the mel's smoothed spectral
    envelope at PriorGrad's level, in the STFT of the mel's geometry (centred frames,
    zero padding, periodic Hann window; overlap-add normalised by the window's squares)."""

    def __init__(self, audio: dict, basis: np.ndarray, mel: np.ndarray, frame_std: np.ndarray,
                 prior: dict) -> None:
        n_fft, lifter, floor = audio["n_fft"], prior["lifter"], prior["shape_floor"]
        self.n_fft, self.hop = n_fft, audio["hop_length"]
        linear = decompress(audio, mel).astype(np.float32)
        pinv = np.linalg.pinv(basis.astype(np.float64)).astype(np.float32)
        mag = np.clip(pinv @ linear, 0.0, None)
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


# ---------------------------------------------------------------------- the decoder
class OnnxVocoder:
    """An exported folder, ready to decode.

    Args:
        folder: what ``wavediff export --format onnx`` wrote.
        threads: onnxruntime's intra-op threads (default: its own choice).
    """

    def __init__(self, folder, threads: Optional[int] = None) -> None:
        import onnxruntime as ort

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
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        self.conditioning = ort.InferenceSession(str(self.folder / "conditioning.onnx"), options,
                                                 providers=providers)
        self.denoiser = ort.InferenceSession(str(self.folder / "denoiser.onnx"), options,
                                             providers=providers)

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
               consistency: Optional[int] = None) -> np.ndarray:
        """``(n_mels, F)`` or ``(B, n_mels, F)`` in the model's convention -> audio
        ``(F * hop,)`` or ``(B, F * hop)`` float32 in [-1, 1].

        ``noises``: the standard normal draws to use instead of numpy's, in the order
        the torch decode draws them (the Griffin-Lim start's, ``x_T``'s, one per later
        step), each ``(B, F * hop)``. ``consistency``: projections per step (default: the
        model's).
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
        rng = np.random.default_rng(seed)
        supplied = list(noises) if noises is not None else None
        shape = (mel.shape[0], mel.shape[-1] * self.audio["hop_length"])

        def draw() -> np.ndarray:
            if supplied is None:
                return rng.standard_normal(shape, dtype=np.float32)
            if not supplied:
                raise OnnxDecoderError("fewer noise draws given than the decode needs")
            z = np.asarray(supplied.pop(0), dtype=np.float32)
            if z.shape != shape:
                raise OnnxDecoderError(f"a noise draw has shape {z.shape}, expected {shape}")
            return z

        plan = self.meta["plan"]
        betas, abar, steps = plan["betas"], plan["alpha_bars"], plan["network_steps"]
        iters = self.meta["consistency"] if consistency is None else int(consistency)
        start_iters = self.meta["start_iters"]
        projector = Projector(self.audio, self.basis, mel) if iters or start_iters else None
        init = None
        if start_iters:
            init = np.clip(projector.griffin_lim(draw(), start_iters), -1.0, 1.0)
        conds = self.conditioning.run(None, {"mel": mel})[0]
        colour = self._colour(mel)
        x = draw()
        if colour is not None:
            x = colour(x)
        if init is not None:
            x = math.sqrt(abar[-1]) * init + math.sqrt(1.0 - abar[-1]) * x
        n = len(betas)
        for s in reversed(range(n)):
            t = np.full((x.shape[0],), steps[s], dtype=np.float32)
            eps = self.denoiser.run(None, {"x": x.astype(np.float32), "steps": t,
                                           "conds": conds})[0]
            if iters:
                x0 = projector.griffin_lim((x - math.sqrt(1.0 - abar[s]) * eps)
                                           / math.sqrt(abar[s]), iters)
                eps = (x - math.sqrt(abar[s]) * x0) / math.sqrt(1.0 - abar[s])
            x = (x - betas[s] / math.sqrt(1.0 - abar[s]) * eps) / math.sqrt(1.0 - betas[s])
            if s > 0:
                sigma = math.sqrt((1.0 - abar[s - 1]) / (1.0 - abar[s]) * betas[s])
                z = draw()
                x = x + sigma * (z if colour is None else colour(z))
        wav = np.clip(x, -1.0, 1.0).astype(np.float32)
        return wav[0] if single else wav


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
    p.add_argument("folder", help="the folder 'wavediff export --format onnx' wrote")
    p.add_argument("mel", help="a .npy mel (n_mels, frames) in the model's convention")
    p.add_argument("out", help="the WAV file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
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
