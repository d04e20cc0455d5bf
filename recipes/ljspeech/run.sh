#!/usr/bin/env bash
# LJSpeech recipe: corpus -> features -> DiffWave training -> decoded eval set -> evaluation.
#
#   cd recipes/ljspeech
#   bash run.sh                                   # download LJSpeech-1.1 (2.7 GB), then all stages
#   bash run.sh --db-root /data/LJSpeech-1.1      # use an unpacked corpus instead
#   bash run.sh --conf conf/debug.yaml --stage 2 --stop-stage 4
#
# Stages: 0 download (resumable, sha256 checked before unpacking), 1 prepare
# (data/<set>/wav.scp), 2 features (wavediff preprocess + compute-statistics), 3 train,
# 4 decode the eval set, 5 evaluate, 6 export the model (config.yaml + model.safetensors).
# Every stage skips work already done, so rerunning a finished recipe takes seconds and an
# interrupted one continues where it stopped.
# Outputs: data/, dump/<set>/, exp/<conf name>/ (checkpoints, logs/ for TensorBoard),
# exp/<conf name>/wav/<checkpoint>/eval/<utt_id>.wav and exp/<conf name>/pretrained/.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
utils=$recipe_dir/../utils

# ---------------------------------------------------------------- options
stage=0
stop_stage=100
conf=conf/base.yaml
db_root=""                 # an unpacked LJSpeech-1.1 folder; skips the download
download_dir=downloads
download_url=https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2
official_sha256=be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5
official_size=2748572632
sha256=$official_sha256
archive_size=""            # expected bytes; default: the official size with the official digest
datadir=data
dumpdir=dump
expdir=exp
n_dev=250
n_eval=250
held_out="tail"            # take dev/eval from the end of the sorted IDs (head: the start)
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
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<EOF
Options (default):
  --stage N ($stage)  --stop-stage N ($stop_stage)  --conf FILE ($conf)
  --db-root DIR  --download-dir DIR ($download_dir)  --download-url URL
  --sha256 HEX (the official digest)  --archive-size BYTES
  --datadir DIR ($datadir)  --dumpdir DIR ($dumpdir)  --expdir DIR ($expdir)
  --n-dev N ($n_dev)  --n-eval N ($n_eval; 0: the dev set)  --held-out tail|head ($held_out)
  --nj N ($nj)  --ngpu N (auto)
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
        --stage|--stop-stage|--conf|--db-root|--download-dir|--download-url|--sha256|\
        --archive-size|--datadir|--dumpdir|--expdir|--n-dev|--n-eval|--held-out|--nj|--ngpu|\
        --decode-seed|--eval-metrics|--max-utts)
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
if [[ -z $archive_size && $sha256 == "$official_sha256" ]]; then archive_size=$official_size; fi

# ---------------------------------------------------------------- 0: download
if [[ -z $db_root ]]; then
    db_root=$download_dir/LJSpeech-1.1
    if run_stage 0; then
        banner 0 "download"
        if [[ -f $db_root/metadata.csv ]]; then
            echo "stage 0: $db_root is already unpacked; skip"
        else
            size_args=()
            [[ -n $archive_size ]] && size_args=(--size "$archive_size")
            python "$utils/download.py" --url "$download_url" \
                --out "$download_dir/LJSpeech-1.1.tar.bz2" --sha256 "$sha256" \
                "${size_args[@]}" --unpack-to "$download_dir"
            [[ -f $db_root/metadata.csv ]] || die "the archive holds no LJSpeech-1.1/metadata.csv"
            echo "stage 0: LJSpeech-1.1 is in $db_root (the archive may be deleted)"
        fi
        finished 0
    fi
else
    echo "--db-root $db_root given: no download"
fi

# ---------------------------------------------------------------- 1: prepare
if run_stage 1; then
    banner 1 "prepare $datadir/{train_nodev,dev,eval}/wav.scp"
    [[ -d $db_root ]] || die "corpus folder $db_root not found (run stage 0 or give --db-root)"
    python "$recipe_dir/local/data_prep.py" --db-root "$db_root" --datadir "$datadir" \
        --n-dev "$n_dev" --n-eval "$n_eval" --held-out "$held_out"
    finished 1
fi

run_shared_stages
# shellcheck disable=SC2154  # exp is set by ../utils/stages.sh
echo "done: $exp"
