"""Stream: a TTS-style producer yields mel frames a few at a time, wavediff turns them into
audio as they come, and each piece is written (or played) as soon as it is final.

    python egs/streaming/stream.py [--checkpoint joe] [--mel MEL.npy] [--out out.wav]
        [--chunk-frames 10] [--frames-per-second 200] [--lookahead-ms MS] [--play]
        [--precision auto]

The producer stands in for an acoustic model: it yields --chunk-frames frames at a time at
--frames-per-second (0: as fast as possible) from MEL.npy, or from the mel of the demo
recording in egs/demo when no --mel is given. Prints the lookahead, when the first audio
came (wall time after the first frame, and after the lookahead's worth of frames had
arrived), the latency of each later piece, the real-time factor, and checks that the
streamed audio equals the whole decode. --play sends each piece to the sound card with the
`sounddevice` package when it is installed.
"""
import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wavediff import Vocoder

HERE = Path(__file__).resolve().parent
p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--checkpoint", default="joe")
p.add_argument("--mel", default=None, help="(n_mels, frames) .npy in the model's convention")
p.add_argument("--out", default="stream_out.wav")
p.add_argument("--chunk-frames", type=int, default=10)
p.add_argument("--frames-per-second", type=float, default=200.0)
p.add_argument("--lookahead-ms", type=float, default=None)
p.add_argument("--play", action="store_true")
p.add_argument("--precision", default="auto", help="auto, fp32, bf16 (bf16: equal to the whole "
               "decode to bf16 rounding only)")
args = p.parse_args()

vocoder = Vocoder.from_pretrained(args.checkpoint, precision=args.precision)
if args.mel:
    mel = np.load(args.mel).astype(np.float32)
else:  # the demo recording's mel, as a TTS model would have made it
    wav, sr = sf.read(HERE.parent / "demo" / "JOE001-0007.flac", dtype="float32")
    mel = vocoder.mel(wav).numpy()
sr = vocoder.sample_rate
lookahead = None if args.lookahead_ms is None else int(args.lookahead_ms * sr / 1000)


def tts_frames():
    """Stands in for an acoustic model: a few frames at a time, at its own pace."""
    for i in range(0, mel.shape[-1], args.chunk_frames):
        if args.frames_per_second > 0:
            time.sleep(args.chunk_frames / args.frames_per_second)
        yield mel[:, i:i + args.chunk_frames]


player = None
if args.play:
    try:
        import sounddevice
        player = sounddevice.OutputStream(samplerate=sr, channels=1, dtype="float32")
        player.start()
    except Exception as e:  # no package or no sound card: write the file only
        print(f"not playing ({e})")

decoder = vocoder.streaming_decoder(seed=0, lookahead=lookahead)  # or vocoder.stream(frames)
print(f"lookahead {decoder.lookahead} samples = {1000 * decoder.lookahead / sr:.0f} ms of mel "
      f"(exact: {1000 * decoder.lookahead_exact / sr:.0f} ms), {len(decoder.stages)} stages")
pieces, latencies, frames_in = [], [], 0
t0 = time.perf_counter()
with sf.SoundFile(args.out, "w", samplerate=sr, channels=1, subtype="FLOAT") as out:
    for chunk in itertools.chain(tts_frames(), [None]):  # None: the utterance ended
        t_in = time.perf_counter()
        piece = decoder.finish() if chunk is None else decoder.push(chunk)
        frames_in += 0 if chunk is None else chunk.shape[-1]
        if not piece.numel():
            continue
        latencies.append(time.perf_counter() - t_in)  # from the frames that freed it
        if not pieces:
            print(f"first audio {time.perf_counter() - t0:.3f} s after the start, "
                  f"{latencies[0]:.3f} s after the frames that completed the lookahead "
                  f"arrived ({frames_in} frames in)")
        pieces.append(piece)
        out.write(piece.numpy())
        if player is not None:
            player.write(piece.numpy()[:, None])
elapsed = time.perf_counter() - t0
audio = torch.cat(pieces)
print(f"{len(pieces)} pieces, each {np.median(latencies):.3f} s (median) / {max(latencies):.3f} s "
      f"(max) after its frames; {audio.numel() / sr:.2f} s of audio in {elapsed:.2f} s")
whole = vocoder.decode(mel, seed=0, input_preset=None)
print(f"max |streamed - whole decode| = {float((audio - whole).abs().max()):.2e}"
      + ("" if lookahead is None else " (shortened lookahead: not exact near each edge)"))
print(f"wrote {args.out}")
