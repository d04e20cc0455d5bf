#!/usr/bin/env bash
# Template recipe for a new single-speaker corpus: copy this folder to recipes/<corpus>/ and
# read README.md for what to change.
#
#   bash run.sh --db-root /data/mycorpus                 # a folder of audio files
#   bash run.sh --db-root /data/mycorpus --conf conf/debug.yaml --n-dev 10 --n-eval 10
#
# Stages: 1 prepare (data/<set>/wav.scp), 2 features (wavediff preprocess +
# compute-statistics), 3 train, 4 decode the eval set, 5 evaluate, 6 export (the shared
# stages 2-6 live in recipes/utils/stages.sh). Every stage skips work already done, so
# rerunning a finished recipe takes seconds.
# Outputs: data/, dump/<set>/, exp/<conf name>/ (checkpoints, logs/ for TensorBoard) and
# exp/<conf name>/wav/<checkpoint>/eval/<utt_id>.wav.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
utils=$recipe_dir/../utils

# ---------------------------------------------------------------- options
stage=1
stop_stage=100
conf=conf/base.yaml
db_root=""                 # the corpus: a folder of audio files (searched recursively)
datadir=data
dumpdir=dump
expdir=exp
n_dev=100
n_eval=100
nj=4
# shellcheck disable=SC2034  # read by ../utils/stages.sh
ngpu=""                    # empty: GPU if present; 0: CPU; 1: one GPU; N: N GPUs (torchrun)
resume=true                # continue an interrupted training from its newest checkpoint
decode_seed=0
# shellcheck disable=SC2034  # read by ../utils/stages.sh
eval_metrics=""            # what stage 5 scores (wavediff evaluate --metrics); default:
                           # the config's recipe.eval_metrics ("all" unless it says)
# shellcheck disable=SC2034  # read by ../utils/stages.sh
max_utts=""                # cut each set to its first N utterances (0: all); default: the
                           # config's recipe.max_utterances (conf/debug.yaml: a handful)

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<EOF
Options (default):
  --stage N ($stage)  --stop-stage N ($stop_stage)  --conf FILE ($conf)
  --db-root DIR (required)
  --datadir DIR ($datadir)  --dumpdir DIR ($dumpdir)  --expdir DIR ($expdir)
  --n-dev N ($n_dev)  --n-eval N ($n_eval)  --nj N ($nj)  --ngpu N (auto)
  --resume [true|false] ($resume)  --decode-seed N ($decode_seed)
  --eval-metrics LIST (the config's recipe.eval_metrics, else all; e.g. pesq,stoi,log_mel_l1)
  --max-utts N (the config's recipe.max_utterances, else 0: every utterance of each set)
EOF
}

die() { echo "error: $*" >&2; exit 1; }

while (( $# > 0 )); do
    opt=$1
    case $opt in
        -h|--help) usage; exit 0 ;;
        --resume)
            if [[ ${2:-} == true || ${2:-} == false ]]; then resume=$2; shift; else resume=true; fi
            shift; continue ;;
        --stage|--stop-stage|--conf|--db-root|--datadir|--dumpdir|--expdir|--n-dev|--n-eval|--nj|--ngpu|--decode-seed|--eval-metrics|--max-utts)
            (( $# >= 2 )) || die "$opt needs a value"
            var=${opt#--}; var=${var//-/_}
            printf -v "$var" '%s' "$2"
            shift 2 ;;
        *) usage >&2; die "unknown option $opt" ;;
    esac
done

# shared: setup, helpers and stages 2-6
# shellcheck source=/dev/null
source "$utils/stages.sh"
[[ -n $db_root ]] || die "give --db-root: the folder holding the corpus audio"

# ---------------------------------------------------------------- 1: prepare
if run_stage 1; then
    banner 1 "prepare $datadir/{train_nodev,dev,eval}/wav.scp"
    [[ -d $db_root ]] || die "corpus folder $db_root not found"
    python "$recipe_dir/local/data_prep.py" --db-root "$db_root" --datadir "$datadir" \
        --n-dev "$n_dev" --n-eval "$n_eval"
    finished 1
fi

run_shared_stages
# shellcheck disable=SC2154  # exp is set by ../utils/stages.sh
echo "done: $exp"
