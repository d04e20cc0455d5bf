"""Vocode a mel as it arrives: read frames from standard input (or a file that is still
being written) and write each piece of audio as soon as it is final.

Input framing: raw little-endian float32, frame after frame, each frame the model's
n_mels values (80 for the shipped model) in the model's own mel convention (or another
system's, named with --input-preset: converted piece by piece), i.e. a
(frames, n_mels) C-order array written row by row (numpy: mel.T.astype('<f4').tobytes()
for a (n_mels, frames) mel). Frames may arrive in any pieces; the stream ends at end of
input (with --follow: when FILE.done exists, or after --idle-timeout seconds without new
bytes).

Output: --output - (the default) writes raw little-endian float32 mono PCM at the model's
sample rate to standard output, flushed piece by piece (play with e.g. 'aplay -f FLOAT_LE
-r 22050' or 'ffplay -f f32le -ar 22050 -'); --output FILE.wav writes FILE.partial.wav as
the audio comes and renames it to FILE.wav at the end (after an error the .partial.wav
keeps the audio made so far). With --seed S the audio equals Vocoder.decode(mel, seed=S) of
the whole mel with the same model and options, to float rounding ('wavediff vocode --seed'
derives each file's seed from S and its name).
The log gives the lookahead and the latency of each piece.

examples:
  python tts.py | wavediff stream --seed 0 | aplay -f FLOAT_LE -r 22050 -c 1
  wavediff stream --input mel.f32 --output out.wav
  wavediff stream --input growing.f32 --follow --output out.wav --lookahead-ms 500
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from wavediff.audio.presets import PRESET_NAMES
from wavediff.config import GL_INITS

log = logging.getLogger("wavediff.stream")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="a shipped model's name, a pretrained folder, a checkpoint file or an "
                        "experiment directory (default: the shipped model 'joe')")
    p.add_argument("--input", default="-", metavar="FILE",
                   help="raw float32 frames (see above); - for standard input (default)")
    p.add_argument("--output", default="-", metavar="FILE",
                   help="- : raw float32 PCM on standard output (default); FILE.wav: a WAV "
                        "file, complete at the end")
    p.add_argument("--follow", action="store_true",
                   help="the input file is still being written: at its end wait for more, "
                        "until FILE.done exists or --idle-timeout passes")
    p.add_argument("--idle-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="with --follow: end the stream after this long without new bytes")
    p.add_argument("--read-frames", type=int, default=10, metavar="N",
                   help="frames read at a time (a smaller read gives audio sooner)")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: the "
                   "model's); 0: Griffin-Lim alone, no network")
    p.add_argument("--schedule", default=None, help="a stored fast schedule by name")
    p.add_argument("--consistency", type=int, default=None, metavar="N",
                   help="projections per step (default: the model's)")
    p.add_argument("--gl-init", choices=GL_INITS, default=None,
                   help="where Griffin-Lim starts: noise or phase-vocoder (default: the "
                        "model's diffusion.gl_init; as wavediff vocode --gl-init)")
    p.add_argument("--sampler", choices=["fast", "ddim", "ddpm"], default=None)
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: random)")
    p.add_argument("--lookahead-ms", type=float, default=None, metavar="MS",
                   help="look ahead this much mel instead of the exact lookahead (logged): "
                        "audio sooner, no longer equal to the whole decode near each edge")
    p.add_argument("--block-frames", type=int, default=None, metavar="N",
                   help="each stage computes at least N frames at a time (default 16; 1: "
                        "lowest latency; more: less recomputation, higher throughput)")
    p.add_argument("--input-preset", choices=PRESET_NAMES, default=None,
                   help="the convention of the frames (default: the model's own); each piece "
                        "is converted as the whole file would be")
    p.add_argument("--stats", default=None,
                   help="stats.h5/.npy of per-bin normalised features (ESPnet)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--device", default="cpu")


def _frames(stream: BinaryIO, n_mels: int, per_read: int, follow: Optional[Path],
            idle_timeout: float) -> Iterator:
    """``(n_mels, k)`` float32 numpy arrays read from ``stream`` as the bytes come."""
    import numpy as np

    from wavediff.errors import MelError

    frame_bytes = 4 * n_mels
    pending = b""
    idle_since = time.monotonic()
    while True:
        want = frame_bytes * per_read - len(pending)
        data = stream.read1(want) if hasattr(stream, "read1") else stream.read(want)
        if data:
            idle_since = time.monotonic()
            pending += data
            whole = len(pending) // frame_bytes * frame_bytes
            if whole:
                block = np.frombuffer(pending[:whole], dtype="<f4").reshape(-1, n_mels)
                pending = pending[whole:]
                yield block.T.astype(np.float32)
            continue
        if follow is None or Path(f"{follow}.done").exists() \
                or time.monotonic() - idle_since > idle_timeout:
            break
        time.sleep(0.01)
    if pending:
        raise MelError(f"the input ended inside a frame ({len(pending)} bytes of a "
                       f"{frame_bytes}-byte frame of {n_mels} float32 values); write whole "
                       f"frames of the model's n_mels")


def run(args: argparse.Namespace) -> int:
    import soundfile as sf

    from wavediff.audio.presets import get_preset
    from wavediff.cli.common import check_output_file
    from wavediff.errors import WavediffError
    from wavediff.vocoder import Vocoder

    if args.read_frames < 1:
        raise WavediffError("--read-frames must be at least 1")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise WavediffError(f"--seed must be an integer in 0..2**63-1, got {args.seed}")
    if args.lookahead_ms is not None and not args.lookahead_ms >= 0:
        raise WavediffError(f"--lookahead-ms must be >= 0, got {args.lookahead_ms}")
    if args.block_frames is not None and args.block_frames < 1:
        raise WavediffError("--block-frames must be at least 1")
    to_stdout = args.output == "-"
    if not to_stdout and not args.output.lower().endswith(".wav"):
        raise WavediffError(f"--output {args.output}: give a .wav file, or - for raw float32 "
                            f"on standard output")
    if args.follow and args.input == "-":
        raise WavediffError("--follow reads a growing file: give it with --input FILE")
    if not to_stdout:
        check_output_file(args.output, "--output")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # fail early
    voc = Vocoder.from_pretrained(args.checkpoint or "joe", device=args.device,
                                  precision=args.precision)
    sr, hop = voc.sample_rate, voc.hop_length
    lookahead = (None if args.lookahead_ms is None
                 else int(round(args.lookahead_ms / 1000 * sr)))
    dec = voc.streaming_decoder(steps=args.steps, sampler=args.sampler, seed=args.seed,
                                schedule=args.schedule, consistency=args.consistency,
                                input_preset=args.input_preset, stats=args.stats,
                                lookahead=lookahead, gl_init=args.gl_init,
                                block=None if args.block_frames is None
                                else args.block_frames * hop)
    log.info("streaming with %s (%d Hz, %d mel bins, hop %d): lookahead %d samples (%.0f ms "
             "of mel%s), %d stages", args.checkpoint or "joe", sr, voc.n_mels, hop,
             dec.lookahead, 1000 * dec.lookahead / sr,
             "" if dec.lookahead == dec.lookahead_exact
             else f"; exact: {1000 * dec.lookahead_exact / sr:.0f} ms", len(dec.stages))
    out_path = None if to_stdout else Path(args.output)
    partial = None if out_path is None else out_path.with_name(out_path.stem + ".partial.wav")
    sink = sys.stdout.buffer if to_stdout else sf.SoundFile(
        str(partial), "w", samplerate=sr, channels=1, subtype="FLOAT")
    written, frames_in, t0, first = 0, 0, time.perf_counter(), None

    def emit(piece) -> None:
        nonlocal written, first
        if not piece.numel():
            return
        pcm = piece.numpy().astype("<f4")
        if to_stdout:
            sink.write(pcm.tobytes())
            sink.flush()
        else:
            try:
                sink.write(pcm)
            except (RuntimeError, sf.SoundFileError) as e:  # libsndfile: full disk, I/O
                raise WavediffError(f"cannot write {partial} ({e}); free some space or "
                                    f"choose another --output") from None
        written += pcm.size
        if first is None:
            first = time.perf_counter() - t0
            log.info("first audio after %.3f s (%d frames read)", first, frames_in)
        log.debug("%.3f s: %d samples out, %d frames in", time.perf_counter() - t0,
                  pcm.size, frames_in)

    try:
        try:
            n_mels = (voc.n_mels if args.input_preset is None
                      else get_preset(args.input_preset).n_mels)
            for block in _frames(source, n_mels, args.read_frames,
                                 None if not args.follow else Path(args.input),
                                 args.idle_timeout):
                frames_in += block.shape[-1]
                emit(dec.push(block))
            if not frames_in:
                raise WavediffError(f"no mel frames arrived on {args.input}; write float32 "
                                    f"frames of {voc.n_mels} values (see wavediff stream "
                                    f"--help)")
            emit(dec.finish())
        finally:
            if source is not sys.stdin.buffer:
                source.close()
            if not to_stdout:
                sink.close()
    except WavediffError as e:
        if partial is not None and not written:
            partial.unlink(missing_ok=True)
        elif partial is not None:
            raise WavediffError(f"{e} ({written / sr:.2f} s of audio before it kept in "
                                f"{partial})") from None
        raise
    if out_path is not None:
        os.replace(partial, out_path)
    elapsed = time.perf_counter() - t0
    log.info("%d frames in, %.2f s of audio out in %.2f s (real-time factor %.2f)%s",
             frames_in, written / sr, elapsed, elapsed / max(written / sr, 1e-9),
             f"; wrote {out_path}" if out_path else "")
    return 0
