#!/usr/bin/env python3
"""Build a many-speaker corpus from Asterisk prompt sets and write the recipe's splits.

    python local/data_prep.py --sounds-root DIR --corpus corpus --datadir data \
        [--unseen fr_CA_f_June] [--n-eval 20] [--add-corpus joe_US_m_Joe=/data/joe]

DIR is a ``sounds`` folder as the Debian packages install it (``/usr/share/asterisk/sounds``
or the same tree unpacked by stage 0): one folder per voice named ``<lang>_<COUNTRY>_<f|m>_
<Name>`` (``es_MX_f_Allison``), prompts in subfolders (``digits/``, ``letters/`` ...). Each
prompt is read by its format: ``.g722`` (G.722 at 64 kbit/s, 16 kHz, decoded by the ``g722``
package), ``.sln16`` (raw 16-bit 16 kHz PCM) or ``.wav``/``.flac`` (soundfile). Voices below
16 kHz (``.gsm``, ``.ulaw``, ``.alaw``, 8 kHz ``.wav`` sets) are left out: a 16 kHz vocoder
cannot learn from them. English sets (``en_*``) are reserved for evaluation and never used.

Every prompt is trimmed (leading and trailing silence below ``--trim-db`` under the peak,
a 50 ms margin kept), loudness-normalised (speech RMS to ``--target-dbfs``, the peak kept
below -1 dBFS) and written as ``corpus/wavs/<id>.wav`` (16-bit PCM at ``--rate``); the id is
``<voice>-<prompt path>`` with ``/`` as ``-`` and anything outside ``[A-Za-z0-9_-]`` dropped.
Prompts shorter than ``--min-seconds`` after trimming (beeps, pauses) are skipped. A prompt
that cannot be read is named on stderr and skipped; the others still finish. Nothing is read
before its declared size is checked (``--max-seconds``).

``corpus/metadata.csv`` is LJSpeech's layout with a speaker column: ``id|speaker|prompt``
(the prompt's path: Asterisk's packages carry no transcripts, and a vocoder needs none).
``corpus/speakers.tsv`` lists each voice with its language, sex, rate, clips and minutes.

The split, by speaker: every clip of the ``--unseen`` voices is the ``dev`` set (the unseen-
speaker set the trainer scores), ``--n-eval`` clips of each seen voice (every k-th of its
sorted ids) are the ``eval`` set, and the rest is ``train_nodev``. Each set gets ``wav.scp``
(``<id> <absolute path>``) and ``utt2spk``. ``--add-corpus NAME=DIR`` adds an LJSpeech-layout
corpus (``metadata.csv`` and ``wavs/``) as one more seen voice, resampled to ``--rate``.
Rerunning with the same arguments rewrites nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOICE = re.compile(r"^(?P<lang>[a-z]{2,3})_(?P<country>[A-Z]{2})_(?P<sex>[fm])_(?P<name>[A-Za-z0-9]+)$")
G722_RATE = 16000
G722_BYTES_PER_SECOND = 8000  # 64 kbit/s: one byte per two samples
SOUNDFILE_SUFFIXES = (".wav", ".flac")
READABLE = (".g722", ".sln16") + SOUNDFILE_SUFFIXES
NARROWBAND = (".gsm", ".ulaw", ".alaw", ".sln", ".g729")
RESERVED_LANGS = ("en",)  # the English prompt sets are kept for evaluation elsewhere
SETS = ("train_nodev", "dev", "eval")


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


class PromptError(Exception):
    """A prompt that cannot be used (named on stderr, then skipped)."""


@dataclass
class Voice:
    name: str       # folder name, also the speaker label
    lang: str
    sex: str
    root: Path
    corpus: bool = False  # an LJSpeech-layout corpus added with --add-corpus


# ---------------------------------------------------------------- reading
def read_g722(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    try:
        import G722  # the g722 package (libg722); imported here so --help works without it
    except ImportError:
        fail("decoding .g722 prompts needs the g722 package: pip install 'wavediff[recipes]' "
             "(or pip install g722)")

    size = path.stat().st_size
    if size == 0:
        raise PromptError("empty file")
    if size / G722_BYTES_PER_SECOND > max_seconds:
        raise PromptError(f"{size / G722_BYTES_PER_SECOND:.0f} s declared by its size, over "
                          f"--max-seconds {max_seconds:g}")
    pcm = np.asarray(G722.G722(G722_RATE, 64000).decode(path.read_bytes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0, G722_RATE


def read_sln16(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    size = path.stat().st_size
    if size < 2:
        raise PromptError("empty file")
    if size / (2 * G722_RATE) > max_seconds:
        raise PromptError(f"{size / (2 * G722_RATE):.0f} s declared by its size, over "
                          f"--max-seconds {max_seconds:g}")
    pcm = np.fromfile(path, dtype="<i2", count=size // 2)
    return pcm.astype(np.float32) / 32768.0, G722_RATE


def read_soundfile(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile's own message names the problem
        raise PromptError(f"not readable audio ({e})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise PromptError("no audio in the file")
    if info.frames / info.samplerate > max_seconds:
        raise PromptError(f"{info.frames / info.samplerate:.0f} s declared by its header, "
                          f"over --max-seconds {max_seconds:g}")
    if info.channels > 8:
        raise PromptError(f"{info.channels} channels declared; expected speech (1 or 2)")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise PromptError(f"cannot decode ({e})") from None
    return audio.mean(axis=1), int(sr)


def read_prompt(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    suffix = path.suffix.lower()
    if suffix == ".g722":
        audio, sr = read_g722(path, max_seconds)
    elif suffix == ".sln16":
        audio, sr = read_sln16(path, max_seconds)
    else:
        audio, sr = read_soundfile(path, max_seconds)
    if not np.all(np.isfinite(audio)):
        raise PromptError("NaN or Inf samples")
    return audio, sr


# ---------------------------------------------------------------- processing
def trim_and_normalise(audio: np.ndarray, sr: int, trim_db: float, target_dbfs: float) -> np.ndarray:
    """Trim silence at both ends (50 ms margin), set the speech RMS, keep the peak < -1 dBFS."""
    import librosa

    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-4:
        raise PromptError("silent")
    frame, hop = 1024 * sr // 22050 or 1, 256 * sr // 22050 or 1
    _, (start, end) = librosa.effects.trim(audio, top_db=trim_db, frame_length=frame,
                                           hop_length=hop)
    margin = int(0.05 * sr)
    audio = audio[max(0, start - margin):min(audio.size, end + margin)]
    # RMS over the frames within trim_db of the loudest: the speech, not its pauses
    rms = librosa.feature.rms(y=audio, frame_length=frame, hop_length=hop, center=False)[0]
    if rms.size == 0:
        raise PromptError("shorter than one frame after trimming")
    active = rms[rms > rms.max() * 10 ** (-trim_db / 20)]
    speech_rms = float(np.sqrt(np.mean(active ** 2)))
    gain = 10 ** (target_dbfs / 20) / max(speech_rms, 1e-8)
    gain = min(gain, 10 ** (-1 / 20) / float(np.max(np.abs(audio))))
    return (audio * gain).astype(np.float32)


def resample(audio: np.ndarray, sr: int, rate: int) -> np.ndarray:
    if sr == rate:
        return audio
    import librosa

    return librosa.resample(audio, orig_sr=sr, target_sr=rate, res_type="soxr_hq").astype(np.float32)


def safe_id(voice: str, rel: Path) -> str:
    parts = [voice, *rel.with_suffix("").parts]
    text = "-".join(parts)
    return re.sub(r"[^A-Za-z0-9_-]", "", text.replace(" ", "_"))


# ---------------------------------------------------------------- finding voices
def find_voices(sounds_root: Path) -> list[Voice]:
    voices = []
    for d in sorted(p for p in sounds_root.iterdir() if p.is_dir()):
        m = VOICE.match(d.name)
        if not m:
            continue
        if m["lang"] in RESERVED_LANGS:
            print(f"{d.name}: English sets are reserved for evaluation; left out")
            continue
        voices.append(Voice(d.name, m["lang"], m["sex"], d))
    return voices


def voice_prompts(voice: Voice, min_rate: int) -> list[Path]:
    if voice.corpus:
        meta = voice.root / "metadata.csv"
        ids = [ln.split("|", 1)[0].strip() for ln in meta.read_text(encoding="utf-8").splitlines()
               if ln.strip()]
        out = []
        for utt in sorted(set(ids)):
            found = [voice.root / "wavs" / f"{utt}{s}" for s in SOUNDFILE_SUFFIXES]
            found = [f for f in found if f.is_file()]
            if found:
                out.append(found[0])
            else:
                warn(f"{voice.name}: {utt} is in metadata.csv but has no file in wavs/; skipped")
        return out
    files = [f for f in voice.root.rglob("*") if f.is_file() and not f.is_symlink()]
    usable = sorted(f for f in files if f.suffix.lower() in READABLE)
    # one file per prompt: the widest format a package set ships
    by_prompt: dict[Path, Path] = {}
    for f in usable:
        key = f.relative_to(voice.root).with_suffix("")
        rank = READABLE.index(f.suffix.lower())
        if key not in by_prompt or rank < READABLE.index(by_prompt[key].suffix.lower()):
            by_prompt[key] = f
    if not by_prompt and any(f.suffix.lower() in NARROWBAND for f in files):
        print(f"{voice.name}: only narrow-band (8 kHz) formats; left out")
    prompts = [by_prompt[k] for k in sorted(by_prompt)]
    if prompts and prompts[0].suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            rate = sf.info(str(prompts[0])).samplerate
        except Exception:
            rate = None  # the file is named again (and skipped) when it is read
        if rate is not None and rate < min_rate:
            print(f"{voice.name}: recorded at {rate} Hz, below --rate {min_rate}; left out")
            return []
    return prompts


def add_corpus(spec: str) -> Voice:
    if "=" not in spec:
        fail(f"--add-corpus {spec!r}: give NAME=DIR (e.g. joe_US_m_Joe=/data/joe)")
    name, root = spec.split("=", 1)
    m = VOICE.match(name)
    if not m:
        fail(f"--add-corpus name {name!r} must read <lang>_<COUNTRY>_<f|m>_<Name>, e.g. "
             "en_US_m_Joe")
    root_path = Path(root).resolve()
    if not (root_path / "metadata.csv").is_file():
        fail(f"--add-corpus {root}: no metadata.csv; give an LJSpeech-layout folder")
    return Voice(name, m["lang"], m["sex"], root_path, corpus=True)


# ---------------------------------------------------------------- writing
def write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), audio, rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)  # a half-written file never carries the final name


def build_corpus(voices: list[Voice], corpus: Path, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """Write corpus/wavs/*.wav; returns the (id, speaker, prompt) rows of the usable clips."""
    wavs = corpus / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    done_file = corpus / ".done.json"
    done: dict[str, str] = json.loads(done_file.read_text()) if done_file.is_file() else {}
    rows: list[tuple[str, str, str]] = []
    failures = 0
    for voice in voices:
        prompts = voice_prompts(voice, args.rate)
        kept = 0
        for f in prompts:
            rel = f.relative_to(voice.root / "wavs" if voice.corpus else voice.root)
            utt = safe_id(voice.name, rel)
            out = wavs / f"{utt}.wav"
            st = f.stat()
            key = f"{st.st_size}:{st.st_mtime_ns}"
            if done.get(utt) == key and out.is_file():
                rows.append((utt, voice.name, rel.as_posix()))
                kept += 1
                continue
            if done.get(utt) == f"skip:{key}":
                continue
            try:
                audio, sr = read_prompt(f, args.max_seconds)
                if sr < args.rate:
                    raise PromptError(f"{sr} Hz, below --rate {args.rate}")
                audio = resample(audio, sr, args.rate)
                audio = trim_and_normalise(audio, args.rate, args.trim_db, args.target_dbfs)
                if audio.size < args.min_seconds * args.rate:
                    done[utt] = f"skip:{key}"
                    continue
            except PromptError as e:
                print(f"skipped {f}: {e}", file=sys.stderr)
                failures += 1
                continue
            write_wav(out, audio, args.rate)
            done[utt] = key
            rows.append((utt, voice.name, rel.as_posix()))
            kept += 1
        if prompts:
            print(f"{voice.name}: {kept} of {len(prompts)} prompts kept")
        write_if_changed(done_file, json.dumps(done, indent=0, sort_keys=True))
    if failures:
        print(f"{failures} prompt(s) could not be read (named above); the rest is written",
              file=sys.stderr)
    return rows


def split(rows: list[tuple[str, str, str]], unseen: set[str], n_eval: int) -> dict[str, list[tuple[str, str]]]:
    by_speaker: dict[str, list[str]] = {}
    for utt, spk, _ in rows:
        by_speaker.setdefault(spk, []).append(utt)
    sets: dict[str, list[tuple[str, str]]] = {s: [] for s in SETS}
    for spk in sorted(by_speaker):
        utts = sorted(by_speaker[spk])
        if spk in unseen:
            sets["dev"] += [(u, spk) for u in utts]
            continue
        if n_eval >= len(utts):
            fail(f"{spk} has {len(utts)} clips; --n-eval {n_eval} leaves none to train on")
        stride = len(utts) / n_eval if n_eval else 0
        picked = {utts[int(i * stride + stride / 2)] for i in range(n_eval)}
        sets["eval"] += [(u, spk) for u in utts if u in picked]
        sets["train_nodev"] += [(u, spk) for u in utts if u not in picked]
    return sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sounds-root", required=True, type=Path,
                   help="the Asterisk 'sounds' folder holding <lang>_<COUNTRY>_<f|m>_<Name>/")
    p.add_argument("--corpus", required=True, type=Path, help="where the corpus is written")
    p.add_argument("--datadir", required=True, type=Path)
    p.add_argument("--unseen", default="fr_CA_f_June",
                   help="comma-separated voices held out whole as the dev set")
    p.add_argument("--n-eval", type=int, default=20, help="eval clips per seen voice")
    p.add_argument("--rate", type=int, default=16000, help="sample rate of the corpus")
    p.add_argument("--add-corpus", action="append", default=[], metavar="NAME=DIR",
                   help="an LJSpeech-layout corpus added as one more seen voice")
    p.add_argument("--trim-db", type=float, default=40.0)
    p.add_argument("--target-dbfs", type=float, default=-20.0)
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--max-seconds", type=float, default=300.0)
    args = p.parse_args()

    root = args.sounds_root
    if not root.is_dir():
        fail(f"{root} not found; run stage 0 or give --sounds-root")
    voices = find_voices(root) + [add_corpus(s) for s in args.add_corpus]
    names = [v.name for v in voices]
    if len(set(names)) != len(names):
        fail(f"a voice is named twice: {', '.join(sorted(names))}")
    unseen = {u for u in args.unseen.split(",") if u}
    missing = sorted(unseen - set(names))
    if missing:
        fail(f"--unseen {', '.join(missing)}: no such voice under {root} (found: "
             f"{', '.join(names) or 'none'})")
    if not voices:
        fail(f"{root} holds no voice folder <lang>_<COUNTRY>_<f|m>_<Name>; run stage 0")
    if not set(names) - unseen:
        fail("every voice is held out with --unseen; leave at least one to train on")
    if args.n_eval < 0 or args.rate < 8000 or not 0 < args.min_seconds < args.max_seconds:
        fail("give --n-eval >= 0, --rate >= 8000 and 0 < --min-seconds < --max-seconds")

    rows = build_corpus(voices, args.corpus, args)
    rows.sort()
    kept = {spk for _, spk, _ in rows}
    for spk in sorted(unseen - kept):
        fail(f"the unseen voice {spk} has no usable clip")
    write_if_changed(args.corpus / "metadata.csv", "".join(f"{u}|{s}|{t}\n" for u, s, t in rows))

    sets = split(rows, unseen, args.n_eval)
    if not sets["train_nodev"]:
        fail("no seen voice has a usable clip: nothing to train on")
    import soundfile as sf

    wavs = (args.corpus / "wavs").resolve()
    duration = {utt: sf.info(str(wavs / f"{utt}.wav")).duration for utt, _, _ in rows}
    seconds: dict[str, float] = {}
    clips: dict[str, int] = {}
    for utt, spk, _ in rows:
        seconds[spk] = seconds.get(spk, 0.0) + duration[utt]
        clips[spk] = clips.get(spk, 0) + 1
    lines = ["speaker\tlanguage\tsex\trole\tsource\tclips\tminutes"]
    for v in voices:
        if v.name not in clips:
            continue
        role = "unseen (dev)" if v.name in unseen else "seen (train, eval)"
        lines.append(f"{v.name}\t{v.lang}\t{v.sex}\t{role}\t{v.root}\t{clips[v.name]}\t"
                     f"{seconds[v.name] / 60:.1f}")
    write_if_changed(args.corpus / "speakers.tsv", "\n".join(lines) + "\n")

    for name, entries in sets.items():
        scp = "".join(f"{u} {wavs / (u + '.wav')}\n" for u, _ in entries)
        spk = "".join(f"{u} {s}\n" for u, s in entries)
        changed = write_if_changed(args.datadir / name / "wav.scp", scp)
        write_if_changed(args.datadir / name / "utt2spk", spk)
        minutes = sum(duration[u] for u, _ in entries) / 60
        speakers = sorted({s for _, s in entries})
        print(f"{args.datadir / name}: {len(entries)} clips, {minutes:.1f} min, "
              f"{len(speakers)} speaker(s){'' if changed else ' (up to date)'}")


if __name__ == "__main__":
    main()
