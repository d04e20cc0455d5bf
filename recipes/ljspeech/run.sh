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
ngpu=""                    # empty: GPU if present; 0: CPU; 1: one GPU; N: N GPUs (torchrun)
resume=true                # continue an interrupted training from its newest checkpoint
decode_seed=0

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
        --decode-seed)
            (( $# >= 2 )) || die "$opt needs a value"
            var=${opt#--}; var=${var//-/_}
            printf -v "$var" '%s' "$2"
            shift 2 ;;
        *) usage >&2; die "unknown option $opt" ;;
    esac
done

# A relative --conf is looked up in the current folder, then in the recipe folder.
if [[ ! -f $conf && -f $recipe_dir/$conf ]]; then conf=$recipe_dir/$conf; fi
[[ -f $conf ]] || die "config $conf not found"
conf=$(cd "$(dirname "$conf")" && pwd)/$(basename "$conf")
name=$(basename "$conf" .yaml)
exp=$expdir/$name

# --ngpu N > 1 runs training and decoding as N processes on this node with torchrun
# (DistributedDataParallel; train.batch_size stays the global batch).
launch=(wavediff)
case $ngpu in
    "") device=auto ;;
    0) device=cpu ;;
    1) device=cuda ;;
    *)
        [[ $ngpu =~ ^[1-9][0-9]*$ ]] || die "--ngpu $ngpu: give a number of GPUs (0 for the CPU)"
        command -v torchrun > /dev/null || die "--ngpu $ngpu needs torchrun (it comes with PyTorch)"
        device=cuda
        launch=(torchrun --standalone --nproc_per_node "$ngpu" -m wavediff) ;;
esac
if [[ -z $archive_size && $sha256 == "$official_sha256" ]]; then archive_size=$official_size; fi

stage_start=0
banner() {
    stage_start=$SECONDS
    echo "=================== stage $1: $2 ($(date '+%F %T'))"
}
finished() { echo "stage $1 finished in $(( SECONDS - stage_start )) s"; }
run_stage() { (( stage <= $1 && stop_stage >= $1 )); }

# Prints the first utterance of scp $1 that has no file $2/<utt>$3 (nothing if none).
first_missing() {
    local utt _
    while read -r utt _; do
        [[ -n $utt && ! -f $2/$utt$3 ]] && { echo "$utt"; return 0; }
    done < "$1"
    return 0
}

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

# ---------------------------------------------------------------- 2: features
if run_stage 2; then
    banner 2 "features"
    for set in train_nodev dev eval; do
        scp=$datadir/$set/wav.scp
        [[ -f $scp ]] || die "$scp not found; run stage 1"
        if [[ -f $dumpdir/$set/audio.yaml && -z $(first_missing "$scp" "$dumpdir/$set" .npz) ]]; then
            echo "stage 2: $dumpdir/$set holds every record of $scp; skip"
        else
            wavediff preprocess --config "$conf" --scp "$scp" --dumpdir "$dumpdir/$set" --nj "$nj"
        fi
    done
    stats=$dumpdir/train_nodev/stats.npy
    if [[ -f $stats && -z $(find "$dumpdir/train_nodev" -name '*.npz' -newer "$stats" -print -quit) ]]; then
        echo "stage 2: $stats is up to date; skip"
    else
        wavediff compute-statistics --dumpdir "$dumpdir/train_nodev" --out "$stats"
    fi
    finished 2
fi

# ---------------------------------------------------------------- 3: train
if run_stage 3; then
    banner 3 "train $exp"
    status=$(python "$utils/train_status.py" "$conf" "$exp")
    read -r state step max_steps _ <<< "$status"
    if [[ $state == "done" ]]; then
        echo "stage 3: $exp is trained to step $step of $max_steps; skip"
    else
        resume_args=()
        if [[ $state == partial ]]; then
            [[ $resume == true ]] || die "$exp holds checkpoints up to step $step; pass --resume true to continue, or use another --expdir"
            echo "stage 3: resuming $exp from step $step of $max_steps"
            resume_args=(--resume)
        fi
        "${launch[@]}" train --config "$conf" --train-dumpdir "$dumpdir/train_nodev" \
            --dev-dumpdir "$dumpdir/dev" --outdir "$exp" --device "$device" "${resume_args[@]}"
    fi
    finished 3
fi

# ---------------------------------------------------------------- 4: decode
if run_stage 4; then
    banner 4 "decode the eval set"
    status=$(python "$utils/train_status.py" "$conf" "$exp")
    read -r state step _ ckpt <<< "$status"
    [[ $state != none ]] || die "$exp holds no checkpoint; run stage 3"
    outdir=$exp/wav/$ckpt/eval
    scp=$datadir/eval/wav.scp
    if [[ -d $outdir && -z $(first_missing "$scp" "$outdir" .wav) ]]; then
        echo "stage 4: $outdir holds every eval utterance; skip"
    else
        mkdir -p "$outdir"
        todo=$outdir/.todo.scp
        while read -r utt _; do
            [[ -f $outdir/$utt.wav ]] || echo "$utt"
        done < "$scp" > "$todo"
        python "$utils/export_mels.py" --dumpdir "$dumpdir/eval" --outdir "$dumpdir/eval/mel_npy" \
            --scp "$outdir/.mel.scp" --only "$todo"
        "${launch[@]}" vocode --checkpoint "$exp/$ckpt.pt" --scp "$outdir/.mel.scp" \
            --outdir "$outdir" --seed "$decode_seed" --device "$device"
        rm -f "$todo" "$outdir/.mel.scp"
        echo "stage 4: decoded eval audio in $outdir"
    fi
    finished 4
fi

# ---------------------------------------------------------------- 5: evaluate
if run_stage 5; then
    banner 5 "evaluate"
    status=$(python "$utils/train_status.py" "$conf" "$exp")
    read -r state _ _ ckpt <<< "$status"
    [[ $state != none ]] || die "$exp holds no checkpoint; run stages 3 and 4"
    gendir=$exp/wav/$ckpt/eval
    [[ -d $gendir ]] || die "$gendir not found; run stage 4"
    evaldir=$exp/eval/$ckpt
    if [[ -f $evaldir/scores.json && -z $(find "$gendir" -newer "$evaldir/scores.json" -print -quit) ]]; then
        echo "stage 5: $evaldir/scores.json is up to date; skip"
    else
        wavediff evaluate --ref-scp "$datadir/eval/wav.scp" --gen-dir "$gendir" --config "$conf" \
            --nj "$nj" --json "$evaldir/scores.json" --report "$evaldir/report.html"
        echo "stage 5: scores in $evaldir/scores.json; open $evaldir/report.html in a browser"
    fi
    finished 5
fi
# ---------------------------------------------------------------- 6: export
if run_stage 6; then
    banner 6 "export $exp/pretrained"
    status=$(python "$utils/train_status.py" "$conf" "$exp")
    read -r state _ _ ckpt <<< "$status"
    [[ $state != none ]] || die "$exp holds no checkpoint; run stage 3"
    if [[ $exp/pretrained/model.safetensors -nt $exp/$ckpt.pt ]]; then
        echo "stage 6: $exp/pretrained is up to date; skip"
    else
        wavediff export --checkpoint "$exp/$ckpt.pt" --outdir "$exp/pretrained"
        echo "stage 6: Vocoder.from_pretrained(\"$exp/pretrained\") loads it"
    fi
    finished 6
fi
echo "done: $exp"
