"""Mel conventions of real systems: detection, round trips, conversion error, vocoding.

For each system folder of a reference set (one mel file per utterance written by that
system's own code, e.g. ``reference_mels/``: hifigan/, tacotron2/, espnet/, ...) it
reports

* ``auto``: how many files ``--input-preset auto`` names with the right convention and
  layout (normalised ESPnet features use the ``stats.h5`` beside them);
* round trip: the file converted to the model's convention and back, max abs error on
  the frames both keep (``exact`` conversions must stay within 1e-4);
* conversion error: converted mel against the model-convention mel of the same audio,
  as measured here, next to the error the converter predicts in its warning;
* vocoding (with ``--checkpoint``): the log-mel distance (mean abs, nats, hifigan mel)
  between audio decoded from the converted mel and audio decoded from the native mel of
  the same utterance with the same noise, against the same figure when the file is fed
  unconverted (the wrong preset forced).

example:
  python benchmarks/mel_conversion.py --refdir data/reference_mels \\
      --checkpoint exp/hifigan_small --utts 3 --out results/mel_conversion.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from wavediff.audio.convert import MelConverter, error_stats
from wavediff.audio.detect import detect
from wavediff.audio.prepare import MelPreparer
from wavediff.audio.formats import apply_layout, load_mel_file, read_stats
from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.presets import get_preset
from wavediff.errors import MelError

LAYOUT_OF = {"(1, 80, T)": "1-mels-frames", "(80, T)": "mels-frames", "(T, 80)": "frames-mels",
             "(100, T)": "mels-frames"}


def expected_layout(manifest: dict, system: str) -> str:
    text = manifest["systems"][system]["array_layout"]
    for key, layout in LAYOUT_OF.items():
        if key in text:
            return layout
    raise ValueError(f"unknown layout text {text!r}")


def files_of(folder: Path) -> list[Path]:
    """One file per utterance: .npy when present, else .h5."""
    by_utt: dict[str, Path] = {}
    for p in sorted(folder.glob("*")):
        if p.suffix in (".npy", ".h5") and not p.name.startswith("stats"):
            by_utt.setdefault(p.stem, p)
    return [by_utt[k] for k in sorted(by_utt)]


def log_mel_distance(mel: MelSpectrogram, a: torch.Tensor, b: torch.Tensor) -> float:
    n = min(a.shape[-1], b.shape[-1])
    return float((mel(a[:n]) - mel(b[:n])).abs().mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--refdir", required=True, help="folder of system folders + manifest.json")
    p.add_argument("--target", default="hifigan", help="the model's preset (default hifigan)")
    p.add_argument("--checkpoint", help="a model trained on --target for the vocoding figures")
    p.add_argument("--utts", type=int, default=2, help="utterances vocoded per system")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    ref = Path(args.refdir)
    manifest = json.loads((ref / "manifest.json").read_text())
    target = get_preset(args.target)
    native_files = {f.stem: f for f in files_of(ref / args.target)}
    vocoder = None
    if args.checkpoint:
        from wavediff.vocoder import Vocoder

        vocoder = Vocoder.from_pretrained(args.checkpoint)
        if vocoder.preset.to_dict() != target.to_dict():
            print(f"the checkpoint is a {vocoder.preset.preset} model, not {args.target}")
            return 1
    lmel = MelSpectrogram(target)
    results = {}
    for system in sorted(manifest["systems"]):
        folder = ref / system
        files = files_of(folder)
        preset_name = "espnet" if system == "espnet_norm" else system
        stats = None
        if (folder / "stats.h5").exists():
            stats = read_stats(folder / "stats.h5")
        row: dict = {"files": len(files), "expected_layout": expected_layout(manifest, system)}
        prep = MelPreparer(target, "auto", stats=stats)
        correct, decisions, round_trips, errors, expected = 0, set(), [], [], None
        converted: dict[str, np.ndarray] = {}
        for f in files:
            arr = load_mel_file(f).array
            try:
                seen = prep._denormalise(arr.astype(np.float64), f.name) if stats else arr
                det = detect(seen, source=f.name, stats_given=stats is not None)
            except MelError as e:
                decisions.add(f"refused: {e}")
                continue
            decisions.add(f"{det.preset.preset} {det.layout}")
            correct += det.preset.preset == preset_name and det.layout == row["expected_layout"]
            src = det.preset
            try:
                there = MelConverter(src, target, source_stats=stats)
                back = MelConverter(target, src, target_stats=stats)
            except MelError as e:
                row["conversion"] = f"refused: {e}"
                continue
            mel_src = apply_layout(arr, det.layout).astype(np.float64)
            hifi = there(mel_src)
            again = back(hifi)
            n = hifi.shape[-1]
            round_trips.append(float(np.abs(again[:, :n] - mel_src[:, :n]).max()))
            converted[f.stem] = hifi
            if f.stem in native_files:
                native = apply_layout(load_mel_file(native_files[f.stem]).array,
                                      expected_layout(manifest, args.target))
                errors.append(error_stats(target, hifi, native))
            expected = there.expected_error()
            row["kind"] = there.kind
        row["auto_correct"] = correct
        row["decisions"] = sorted(decisions)
        if round_trips:
            row["round_trip_max"] = max(round_trips)
        if errors:
            row["measured_error"] = {k: float(np.mean([getattr(e, k) for e in errors]))
                                     for k in ("mean", "p95", "max", "mean_db")}
            row["expected_error"] = {k: getattr(expected, k) for k in ("mean", "p95", "max", "mean_db")}
        if vocoder is not None and system == args.target:
            # the metric's floor: the same native mel decoded with another noise seed
            utts = sorted(converted, key=lambda u: converted[u].shape[-1])[: args.utts]
            row["logmel_dist_other_seed"] = float(np.mean([log_mel_distance(
                lmel, vocoder.decode(converted[u], steps=args.steps, seed=args.seed + 1),
                vocoder.decode(converted[u], steps=args.steps, seed=args.seed)) for u in utts]))
        if vocoder is not None and system != args.target and converted:
            with_conv, forced = [], []
            utts = sorted(converted, key=lambda u: converted[u].shape[-1])[: args.utts]
            for u in utts:
                native = apply_layout(load_mel_file(native_files[u]).array,
                                      expected_layout(manifest, args.target))
                wav_native = vocoder.decode(native, steps=args.steps, seed=args.seed)
                wav_conv = vocoder.decode(converted[u], steps=args.steps, seed=args.seed)
                raw = load_mel_file(next(f for f in files if f.stem == u)).array
                wrong = apply_layout(raw, row["expected_layout"])  # values as they are
                wav_wrong = vocoder.decode(wrong, steps=args.steps, seed=args.seed)
                with_conv.append(log_mel_distance(lmel, wav_conv, wav_native))
                forced.append(log_mel_distance(lmel, wav_wrong, wav_native))
            row["logmel_dist_converted"] = float(np.mean(with_conv))
            row["logmel_dist_forced"] = float(np.mean(forced))
            row["vocoded_utts"] = utts
        results[system] = row
        print_row(system, row)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


def print_row(system: str, row: dict) -> None:
    print(f"== {system}: {row['files']} files, auto correct {row['auto_correct']}/{row['files']} "
          f"({'; '.join(row['decisions'])[:160]})")
    if "conversion" in row:
        print(f"   conversion: {row['conversion'][:200]}")
    if "round_trip_max" in row:
        print(f"   {row.get('kind')}: round trip max abs {row['round_trip_max']:.2e}")
    if "measured_error" in row:
        m, e = row["measured_error"], row["expected_error"]
        print(f"   vs native mel: measured mean {m['mean']:.3f} p95 {m['p95']:.3f} max {m['max']:.2f} "
              f"({m['mean_db']:.2f} dB); predicted mean {e['mean']:.3f} p95 {e['p95']:.3f} "
              f"max {e['max']:.2f} ({e['mean_db']:.2f} dB)")
    if "logmel_dist_other_seed" in row:
        print(f"   vocoded log-mel distance, native mel with another noise seed: "
              f"{row['logmel_dist_other_seed']:.3f}")
    if "logmel_dist_converted" in row:
        print(f"   vocoded log-mel distance to native: converted {row['logmel_dist_converted']:.3f}, "
              f"forced wrong preset {row['logmel_dist_forced']:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
