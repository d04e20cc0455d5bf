"""Write a small synthetic speech-like corpus (for demos, smoke tests and CI).

Each utterance is a sequence of voiced "syllables" (a glottal-like harmonic source with a
gliding pitch through vowel-like formant resonances) separated by short noise bursts and
pauses. It is no speech, but it has the structure a vocoder must learn: harmonics, formants,
onsets and silence. The layout is LJSpeech's: wavs/<id>.wav and metadata.csv.

example:
  wavediff toy-corpus --outdir data/toy --num-utts 24
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outdir", required=True, help="corpus directory (wavs/ and metadata.csv)")
    p.add_argument("--num-utts", type=int, default=24, help="number of utterances (default: 24)")
    p.add_argument("--seconds", type=float, default=2.0, help="mean utterance length in seconds (default: 2.0)")
    p.add_argument("--sample-rate", type=int, default=22050, help="in Hz (default: 22050)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the "
                                                        "same corpus (default: 0)")
    p.add_argument("--prefix", default="TOY001", help="utterance id prefix")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="audio file type (default: wav)")


def run(args: argparse.Namespace) -> int:
    from wavediff.audio.io import save_audio
    from wavediff.audio.synth import toy_utterance

    out = Path(args.outdir)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(args.num_utts):
        utt = f"{args.prefix}-{i + 1:04d}"
        wav = toy_utterance(args.sample_rate, args.seconds, seed=args.seed * 100_003 + i)
        save_audio(out / "wavs" / f"{utt}.{args.format}", wav, args.sample_rate)
        text = f"toy utterance {i + 1}"
        lines.append(f"{utt}|{text}|{text}")
    (out / "metadata.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.num_utts} utterances to {out}")
    return 0
