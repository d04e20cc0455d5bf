#!/usr/bin/env bash
# Many-speaker 16 kHz recipe from the Asterisk prompt sets packaged by Debian: packages ->
# corpus (one speaker held out whole) -> features -> training -> decoded eval set -> scores.
#
#   cd recipes/asterisk
#   bash run.sh                                        # fetch the packages, then all stages
#   bash run.sh --sounds-root /usr/share/asterisk/sounds   # sets already installed: no fetch
#   bash run.sh --add-corpus en_US_m_Joe=/data/joe      # one more voice (LJSpeech layout)
#   bash run.sh --conf conf/debug.yaml --stop-stage 5   # check every stage in a minute
#
# Stages: 0 fetch (apt-get download of the .deb files into downloads/debs, unpacked with
# dpkg-deb -x into downloads/root; no root rights needed, nothing installed), 1 prepare
# (decode, trim, normalise: corpus/wavs, corpus/metadata.csv `id|speaker|prompt`,
# data/<set>/{wav.scp,utt2spk}), 2 features, 3 train, 4 decode the eval set, 5 evaluate,
# 6 export. Every stage skips work already done.
# Sets: dev = every clip of the unseen voice(s) (--unseen), eval = --n-eval clips of each
# seen voice, train_nodev = the rest. See README.md for the voices, rates and licenses.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
utils=$recipe_dir/../utils

# ---------------------------------------------------------------- options
stage=0
stop_stage=100
conf=conf/base.yaml
sounds_root=""             # an Asterisk sounds folder; skips stage 0
packages="asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722"
download_dir=downloads
corpus=corpus
unseen=fr_CA_f_June
n_eval=20
rate=16000
add_corpus=""              # NAME=DIR[,NAME=DIR]: LJSpeech-layout corpora added as seen voices
datadir=data
dumpdir=dump
expdir=exp
nj=4
# shellcheck disable=SC2034  # read by ../utils/stages.sh
ngpu=""                    # empty: GPU if present; 0: CPU; 1: one GPU; N: N GPUs (torchrun)
resume=true                # continue an interrupted training from its newest checkpoint
decode_seed=0
# shellcheck disable=SC2034  # read by ../utils/stages.sh
eval_metrics=""            # what stage 5 scores; default: the config's recipe.eval_metrics
# shellcheck disable=SC2034  # read by ../utils/stages.sh
max_utts=""                # cut each set to its first N utterances (0: all)

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<EOF
Options (default):
  --stage N ($stage)  --stop-stage N ($stop_stage)  --conf FILE ($conf)
  --sounds-root DIR  --packages "PKG ..." ($packages)
  --download-dir DIR ($download_dir)  --corpus DIR ($corpus)
  --unseen VOICE[,VOICE] ($unseen)  --n-eval N ($n_eval)  --rate HZ ($rate)
  --add-corpus NAME=DIR[,NAME=DIR]
  --datadir DIR ($datadir)  --dumpdir DIR ($dumpdir)  --expdir DIR ($expdir)
  --nj N ($nj)  --ngpu N (auto)  --resume [true|false] ($resume)  --decode-seed N ($decode_seed)
  --eval-metrics LIST  --max-utts N
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
        --stage|--stop-stage|--conf|--sounds-root|--packages|--download-dir|--corpus|--unseen|\
        --n-eval|--rate|--add-corpus|--datadir|--dumpdir|--expdir|--nj|--ngpu|--decode-seed|\
        --eval-metrics|--max-utts)
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

# ---------------------------------------------------------------- 0: fetch the packages
if [[ -z $sounds_root ]]; then
    sounds_root=$download_dir/root/usr/share/asterisk/sounds
    if run_stage 0; then
        banner 0 "fetch $packages"
        debs=$download_dir/debs
        # sets found to the .deb files of package $1 in $debs (none: an empty array)
        find_debs() {
            shopt -s nullglob
            found=("$debs/$1"_*.deb)
            shopt -u nullglob
        }
        mkdir -p "$debs" "$download_dir/root"
        for pkg in $packages; do
            [[ $pkg =~ ^[a-z0-9][a-z0-9.+-]+$ ]] || die "--packages: '$pkg' is not a Debian package name"
            [[ $pkg =~ -en(-|$) ]] && die "$pkg: the English prompt sets are reserved for evaluation; leave them out"
            find_debs "$pkg"
            if (( ${#found[@]} == 0 )); then
                command -v apt-get > /dev/null || die "$pkg: apt-get not found; put ${pkg}_*.deb in $debs or give --sounds-root"
                # apt-get checks the file against the signed archive index before it keeps it
                (cd "$debs" && apt-get download "$pkg") \
                    || die "apt-get download $pkg failed; run 'apt-get update', or put the .deb in $debs"
                find_debs "$pkg"
                (( ${#found[@]} > 0 )) || die "apt-get download $pkg left no ${pkg}_*.deb in $debs"
            fi
            deb=${found[-1]}
            stamp=$download_dir/root/.$(basename "$deb").unpacked
            if [[ -f $stamp ]]; then
                echo "stage 0: $(basename "$deb") is unpacked; skip"
                continue
            fi
            dpkg-deb --info "$deb" > /dev/null 2>&1 || die "$deb is not a readable .deb; delete it and rerun"
            tmp=$download_dir/root.tmp
            rm -rf "$tmp" && mkdir -p "$tmp"
            dpkg-deb -x "$deb" "$tmp" || die "dpkg-deb could not unpack $deb; delete it and rerun"
            # only the sound folders and the license files are kept
            [[ -d $tmp/usr/share/asterisk/sounds ]] || die "$deb holds no usr/share/asterisk/sounds"
            mkdir -p "$sounds_root" "$download_dir/root/usr/share/doc"
            cp -R "$tmp/usr/share/asterisk/sounds/." "$sounds_root/"
            [[ -d $tmp/usr/share/doc ]] && cp -R "$tmp/usr/share/doc/." "$download_dir/root/usr/share/doc/"
            rm -rf "$tmp"
            touch "$stamp"
            echo "stage 0: unpacked $(basename "$deb")"
        done
        echo "stage 0: voices in $sounds_root (licenses in $download_dir/root/usr/share/doc)"
        finished 0
    fi
else
    echo "--sounds-root $sounds_root given: no fetch"
fi

# ---------------------------------------------------------------- 1: prepare
if run_stage 1; then
    banner 1 "prepare $corpus and $datadir/{train_nodev,dev,eval}"
    [[ -d $sounds_root ]] || die "$sounds_root not found (run stage 0 or give --sounds-root)"
    extra=()
    if [[ -n $add_corpus ]]; then
        IFS=, read -r -a specs <<< "$add_corpus"
        for spec in "${specs[@]}"; do extra+=(--add-corpus "$spec"); done
    fi
    python "$recipe_dir/local/data_prep.py" --sounds-root "$sounds_root" --corpus "$corpus" \
        --datadir "$datadir" --unseen "$unseen" --n-eval "$n_eval" --rate "$rate" "${extra[@]}"
    finished 1
fi

run_shared_stages
# shellcheck disable=SC2154  # exp is set by ../utils/stages.sh
echo "done: $exp"
