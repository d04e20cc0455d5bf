#!/usr/bin/env bash
# joe recipe: the shipped model 'joe' (Vocoder.from_pretrained("joe")), reproduced or extended.
#
#   cd recipes/joe
#   bash run.sh --db-root /path/to/corpora/joe                 # every stage
#   bash run.sh --db-root /path/to/corpora/joe --stage 3 --stop-stage 3   # more training
#
# The joe corpus (one hour of a synthetic US-English male voice, LJSpeech-1.1 layout, FLAC
# at 22,050 Hz) runs through the LJSpeech pipeline (../ljspeech/run.sh, same stages and
# options) with conf/joe.yaml and this split: the first 15 utterance IDs (JOE001-0001 ..
# JOE001-0015) are held out as the dev set, which is also the evaluation set; the other
# 660 are trained on. Training stops at train.max_steps or after train.max_minutes of
# training time and continues from its newest checkpoint when rerun (raise either to
# train longer). Stage 6 exports exp/joe/pretrained (config.yaml + model.safetensors),
# the layout of the shipped model; local/make_card.py writes its card.json from the
# stage-5 scores. The shipped weights then had the few-step fine-tune from Griffin-Lim:
# conf/joe_gl.yaml and conf/joe_gl2.yaml (their headers give the commands). To warm-start from the shipped weights instead of from scratch:
#   wavediff train --init-checkpoint joe --config conf/joe.yaml --train-dumpdir \
#       dump/train_nodev --dev-dumpdir dump/dev --outdir exp/joe_more
set -euo pipefail
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$recipe_dir/../ljspeech/run.sh" --conf "$recipe_dir/conf/joe.yaml" \
    --n-dev 15 --n-eval 0 --held-out head --nj 2 "$@"
