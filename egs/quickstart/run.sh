#!/usr/bin/env bash
# Quick start: make a small synthetic corpus, extract features, train a small DiffWave on
# the CPU, and vocode held-out mels and a wav file (copy-synthesis) with it.
#
#   bash egs/quickstart/run.sh [WORKDIR [--set section.key=value ...]]
#
# WORKDIR defaults to exp/quickstart; --set options go to `wavediff train`.
# Takes a few minutes on a laptop CPU. Listen to WORKDIR/vocoded/*.wav, or watch training
# with: tensorboard --logdir WORKDIR/exp/logs
set -euo pipefail

work=${1:-exp/quickstart}
shift $(( $# > 0 ? 1 : 0 ))
conf=$(dirname "$0")/tiny.yaml
mkdir -p "$work"

echo "== 1/5 synthetic corpus"
wavediff toy-corpus --outdir "$work/corpus" --num-utts 24 --seconds 2.0 --seed 0
wavediff toy-corpus --outdir "$work/corpus_dev" --num-utts 3 --seconds 2.0 --seed 1 --prefix TOYDEV

echo "== 2/5 features"
wavediff preprocess --config "$conf" --wav-dir "$work/corpus/wavs" --dumpdir "$work/dump/train" --nj 2
wavediff preprocess --config "$conf" --wav-dir "$work/corpus_dev/wavs" --dumpdir "$work/dump/dev"

echo "== 3/5 training (resumes if interrupted)"
wavediff train --config "$conf" --train-dumpdir "$work/dump/train" --dev-dumpdir "$work/dump/dev" \
  --outdir "$work/exp" --resume "$@"

echo "== 4/5 vocoding the dev mels"
mkdir -p "$work/dev_mels"
python - "$work/dump/dev" "$work/dev_mels" <<'PY'
import sys, pathlib, numpy as np
src, dst = map(pathlib.Path, sys.argv[1:])
for rec in sorted(src.glob("*.npz")):
    with np.load(rec) as d:
        np.save(dst / f"{rec.stem}.npy", d["mel"])
PY
wavediff vocode --checkpoint "$work/exp" --outdir "$work/vocoded" --seed 0 "$work/dev_mels"

echo "== 5/5 copy-synthesis of a wav file"
wavediff vocode --checkpoint "$work/exp" --outdir "$work/copysynth" --seed 0 \
  "$work/corpus_dev/wavs/TOYDEV-0001.wav"

echo "done: $work/vocoded/ and $work/copysynth/ hold the generated audio"
