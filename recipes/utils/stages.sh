#!/usr/bin/env bash
# shellcheck disable=SC2154  # the variables come from the recipe that sources this file
# Stages 2-6 shared by the recipes (sourced by recipes/<corpus>/run.sh after its options are
# parsed). Expects: conf, datadir, dumpdir, expdir, nj, ngpu, resume, decode_seed,
# eval_metrics, max_utts, utils, recipe_dir, stage, stop_stage and die(). Sets: conf
# (absolute), name, exp, launch, device, and data/dump: where stages 2-5 find the lists and
# features (datadir and dumpdir, or exp/data and exp/dump when the sets are cut to max_utts
# utterances each). Every stage skips work already done, so a finished recipe reruns in
# seconds and an interrupted one continues where it stopped. Sets are train_nodev, dev, eval.

set -euo pipefail  # as the recipe that sources it

# A relative --conf is looked up in the current folder, then in the recipe folder.
if [[ ! -f $conf && -f $recipe_dir/$conf ]]; then conf=$recipe_dir/$conf; fi
[[ -f $conf ]] || die "config $conf not found"
conf=$(cd "$(dirname "$conf")" && pwd)/$(basename "$conf")
name=$(basename "$conf" .yaml)
exp=$expdir/$name

# The config's recipe section (recipe.max_utterances, recipe.eval_metrics) gives the
# defaults of --max-utts and --eval-metrics; the command line wins.
settings=$(python "$utils/recipe_settings.py" "$conf") || exit 1
read -r conf_max_utts conf_eval_metrics <<< "$settings"
max_utts=${max_utts:-$conf_max_utts}
eval_metrics=${eval_metrics:-$conf_eval_metrics}
[[ $max_utts =~ ^[0-9]+$ ]] || die "--max-utts $max_utts: give a number of utterances (0: all)"
data=$datadir
dump=$dumpdir
if (( max_utts > 0 )); then
    data=$exp/data
    dump=$exp/dump
fi

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

stage_start=0
banner() {
    stage_start=$SECONDS
    echo "=================== stage $1: $2 ($(date '+%F %T'))"
}
finished() { echo "stage $1 finished in $(( SECONDS - stage_start )) s"; }
run_stage() { (( stage <= $1 && stop_stage >= $1 )); }

# Sets ckpt to the name of the newest checkpoint of $exp, or stops with the hint $1.
newest_checkpoint() {
    local state _
    read -r state _ _ ckpt <<< "$(python "$utils/train_status.py" "$conf" "$exp")"
    [[ $state != none ]] || die "$exp holds no checkpoint; $1"
}

# Prints the first utterance of scp $1 that has no file $2/<utt>$3 (nothing if none).
first_missing() {
    local utt _
    while read -r utt _; do
        [[ -n $utt && ! -f $2/$utt$3 ]] && { echo "$utt"; return 0; }
    done < "$1"
    return 0
}

# ---------------------------------------------------------------- 2: features
stage_features() {
    banner 2 "features"
    for set in train_nodev dev eval; do
        scp=$data/$set/wav.scp
        [[ -f $scp ]] || die "$scp not found; run stage 1"
        if [[ -f $dump/$set/audio.yaml && -z $(first_missing "$scp" "$dump/$set" .npz) ]]; then
            echo "stage 2: $dump/$set holds every record of $scp; skip"
        else
            wavediff preprocess --config "$conf" --scp "$scp" --dumpdir "$dump/$set" --nj "$nj"
        fi
        # many-speaker corpora: the speakers travel with the features (train.balance_speakers)
        spk=$datadir/$set/utt2spk
        if [[ -f $spk ]] && ! cmp -s "$spk" "$dump/$set/utt2spk"; then
            cp "$spk" "$dump/$set/utt2spk"
        fi
    done
    stats=$dump/train_nodev/stats.npy
    if [[ -f $stats && -z $(find "$dump/train_nodev" -name '*.npz' -newer "$stats" -print -quit) ]]; then
        echo "stage 2: $stats is up to date; skip"
    else
        wavediff compute-statistics --dumpdir "$dump/train_nodev" --out "$stats"
    fi
    finished 2
}

# ---------------------------------------------------------------- 3: train
stage_train() {
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
        "${launch[@]}" train --config "$conf" --train-dumpdir "$dump/train_nodev" \
            --dev-dumpdir "$dump/dev" --outdir "$exp" --device "$device" "${resume_args[@]}"
    fi
    finished 3
}

# ---------------------------------------------------------------- 4: decode
stage_decode() {
    banner 4 "decode the eval set"
    newest_checkpoint "run stage 3"
    outdir=$exp/wav/$ckpt/eval
    scp=$data/eval/wav.scp
    if [[ -d $outdir && -z $(first_missing "$scp" "$outdir" .wav) ]]; then
        echo "stage 4: $outdir holds every eval utterance; skip"
    else
        mkdir -p "$outdir"
        todo=$outdir/.todo.scp
        while read -r utt _; do
            [[ -f $outdir/$utt.wav ]] || echo "$utt"
        done < "$scp" > "$todo"
        python "$utils/export_mels.py" --dumpdir "$dump/eval" --outdir "$dump/eval/mel_npy" \
            --scp "$outdir/.mel.scp" --only "$todo"
        "${launch[@]}" vocode --checkpoint "$exp/$ckpt.pt" --scp "$outdir/.mel.scp" \
            --outdir "$outdir" --seed "$decode_seed" --device "$device"
        rm -f "$todo" "$outdir/.mel.scp"
        echo "stage 4: decoded eval audio in $outdir"
    fi
    finished 4
}

# ---------------------------------------------------------------- 5: evaluate
stage_evaluate() {
    banner 5 "evaluate"
    newest_checkpoint "run stages 3 and 4"
    gendir=$exp/wav/$ckpt/eval
    [[ -d $gendir ]] || die "$gendir not found; run stage 4"
    evaldir=$exp/eval/$ckpt
    if [[ -f $evaldir/scores.json && -z $(find "$gendir" -newer "$evaldir/scores.json" -print -quit) ]]; then
        echo "stage 5: $evaldir/scores.json is up to date; skip"
    else
        wavediff evaluate --ref-scp "$data/eval/wav.scp" --gen-dir "$gendir" --config "$conf" \
            --nj "$nj" --metrics "$eval_metrics" --json "$evaldir/scores.json" \
            --report "$evaldir/report.html"
        echo "stage 5: scores in $evaldir/scores.json; open $evaldir/report.html in a browser"
    fi
    finished 5
}

# ---------------------------------------------------------------- 6: export
stage_export() {
    banner 6 "export $exp/pretrained"
    newest_checkpoint "run stage 3"
    if [[ $exp/pretrained/model.safetensors -nt $exp/$ckpt.pt ]]; then
        echo "stage 6: $exp/pretrained is up to date; skip"
    else
        wavediff export --checkpoint "$exp/$ckpt.pt" --outdir "$exp/pretrained"
        echo "stage 6: Vocoder.from_pretrained(\"$exp/pretrained\") loads it"
    fi
    finished 6
}

# With --max-utts N: exp/data/<set>/wav.scp, the first N lines of datadir's (rewritten only
# when they change, so a rerun touches nothing).
cut_sets() {
    (( max_utts > 0 )) || return 0
    local set src cut
    for set in train_nodev dev eval; do
        src=$datadir/$set/wav.scp
        [[ -f $src ]] || die "$src not found; run stage 1"
        mkdir -p "$data/$set"
        cut=$(head -n "$max_utts" "$src")
        if [[ ! -f $data/$set/wav.scp || $(< "$data/$set/wav.scp") != "$cut" ]]; then
            printf '%s\n' "$cut" > "$data/$set/wav.scp"
        fi
    done
    echo "sets cut to their first $max_utts utterances: $data (features: $dump)"
}

# Runs stages 2..6 that lie within --stage/--stop-stage.
run_shared_stages() {
    if (( stop_stage >= 2 && stage <= 5 )); then cut_sets; fi
    if run_stage 2; then stage_features; fi
    if run_stage 3; then stage_train; fi
    if run_stage 4; then stage_decode; fi
    if run_stage 5; then stage_evaluate; fi
    if run_stage 6; then stage_export; fi
}
