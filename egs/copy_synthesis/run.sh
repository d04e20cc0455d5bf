#!/usr/bin/env bash
# Copy-synthesis: compute the mel of recorded audio with the model's own front end and decode
# it back, to hear the best the vocoder can do on that voice (no TTS errors involved).
#
#   bash egs/copy_synthesis/run.sh CHECKPOINT OUTDIR AUDIO [AUDIO ...]
#
# CHECKPOINT: a checkpoint-<N>steps.pt file or an experiment folder.
# AUDIO:      wav/flac files or folders of them, at the model's sample rate.
# Each output OUTDIR/<name>.wav has the length of its input; compare the two by ear.
set -euo pipefail

if (( $# < 3 )); then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
checkpoint=$1
outdir=$2
shift 2

# Add --resample to accept audio at another sample rate.
wavediff vocode --checkpoint "$checkpoint" --outdir "$outdir" --seed 0 "$@"

echo "copy-synthesis written to $outdir"
