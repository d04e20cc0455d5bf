#!/usr/bin/env bash
# Vocode a folder of mel files written by a TTS system (.npy or .pt, one utterance each).
#
#   bash egs/vocode_tts_mels/run.sh CHECKPOINT MEL_DIR [OUTDIR]
#
# CHECKPOINT: a checkpoint-<N>steps.pt file or an experiment folder (its newest checkpoint).
# MEL_DIR:    mels of shape (n_mels, frames), (1, n_mels, frames) or (frames, n_mels), in the
#             model's mel convention (e.g. HiFi-GAN's natural-log mel for the hifigan preset).
# OUTDIR:     where <name>.wav files go (default: vocoded/).
# A mel that cannot be read is reported and the others are still written (exit status 1).
set -euo pipefail

if (( $# < 2 )); then
    sed -n '2,10p' "$0" >&2
    exit 2
fi
checkpoint=$1
mel_dir=$2
outdir=${3:-vocoded}

# The model decodes with its own schedule (--steps N for another); --seed makes it
# repeatable; --batch-size decodes several mels at once (faster on a GPU).
wavediff vocode --checkpoint "$checkpoint" --outdir "$outdir" --seed 0 \
    --batch-size 4 "$mel_dir"

echo "wrote $(find "$outdir" -maxdepth 1 -name '*.wav' | wc -l) wav files to $outdir"
