"""The many-speaker Asterisk recipe on a tiny fake package (a .deb built here, no apt-get)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import make_corpus
from test_recipes import recipe_env, snapshot

G722 = pytest.importorskip("G722", reason="the g722 package is not installed "
                           "(pip install 'wavediff[recipes]')")

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "recipes" / "asterisk" / "run.sh"
RATE = 16000
PACKAGE = "asterisk-core-sounds-zz-g722"  # a made-up package name: never in an archive
SEEN = {"es_MX_f_Ana": 7, "it_IT_m_Bruno": 6}
UNSEEN = "fr_CA_f_Cleo"


def prompt(seed: int, seconds: float = 0.8, pad: float = 0.3) -> np.ndarray:
    """A voiced buzz (never silent) with `pad` seconds of near-silence at both ends, as int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 100 + 10 * (seed % 7)
    buzz = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 30) if k * f0 < RATE / 2)
    speech = 0.1 * buzz * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    quiet = 1e-4 * rng.standard_normal(int(pad * RATE))
    return (np.concatenate([quiet, speech, quiet]) * 32767).astype(np.int16)


def speech_dbfs(wav: np.ndarray, frame: int = 512) -> float:
    """RMS level of the frames within 40 dB of the loudest, in dBFS."""
    frames = wav[: len(wav) // frame * frame].reshape(-1, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    active = rms[rms > rms.max() * 0.01]
    return float(20 * np.log10(np.sqrt(np.mean(active**2))))


def build_package(root: Path) -> Path:
    """A .deb laid out as Debian's prompt packages: usr/share/asterisk/sounds/<voice>/."""
    tree = root / "pkg"
    sounds = tree / "usr/share/asterisk/sounds"
    for voice, n in {**SEEN, UNSEEN: 4}.items():
        d = sounds / voice
        (d / "digits").mkdir(parents=True)
        for i in range(n):
            pcm = prompt(seed=sum(map(ord, voice)) + i)
            sub = d / "digits" if i == 0 else d
            if voice == "it_IT_m_Bruno":  # raw 16-bit 16 kHz PCM, the other wideband format
                quiet = (pcm.astype(np.float32) * 0.1).astype("<i2")  # 20 dB quieter
                (sub / f"p{i}.sln16").write_bytes(quiet.tobytes())
            else:
                (sub / f"p{i}.g722").write_bytes(G722.G722(RATE, 64000).encode(pcm))
    ana = sounds / "es_MX_f_Ana"
    (ana / "empty.g722").write_bytes(b"")                                    # named, skipped
    (ana / "beep.g722").write_bytes(G722.G722(RATE, 64000).encode(prompt(1, 0.1, 0.0)))
    (ana / "secret.g722").symlink_to("/etc/hostname")                        # never read
    en = sounds / "en_US_f_Eve"                                              # reserved
    en.mkdir()
    (en / "p0.g722").write_bytes(G722.G722(RATE, 64000).encode(prompt(5)))
    narrow = sounds / "de_DE_f_Gsm"                                          # 8 kHz only
    narrow.mkdir()
    (narrow / "p0.gsm").write_bytes(b"\x00" * 330)
    doc = tree / f"usr/share/doc/{PACKAGE}"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("License: CC-BY-SA-3.0\n")
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        f"Package: {PACKAGE}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: test <t@t>\n"
        "Description: test prompts\n")
    debs = root / "dl/debs"
    debs.mkdir(parents=True)
    deb = debs / f"{PACKAGE}_1.0-1_all.deb"
    r = subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return deb


def run_recipe(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=recipe_env())


@pytest.fixture
def workdir(tmp_path) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (the recipe's stage 0 unpacks .deb files)")
    build_package(tmp_path)
    joe = tmp_path / "joe"
    paths = make_corpus(joe / "wavs", n=5, seconds=1.5, sample_rate=22050, prefix="JOE-")
    (joe / "metadata.csv").write_text("".join(f"{p.stem}|text|text\n" for p in paths))
    return tmp_path


def split_of(root: Path) -> dict[str, dict[str, str]]:
    out = {}
    for name in ("train_nodev", "dev", "eval"):
        scp = [ln.split() for ln in (root / f"data/{name}/wav.scp").read_text().splitlines()]
        spk = dict(ln.split() for ln in (root / f"data/{name}/utt2spk").read_text().splitlines())
        assert [u for u, _ in scp] == list(spk)
        assert all(Path(p).is_absolute() and Path(p).is_file() for _, p in scp)
        out[name] = spk
    return out


def test_packages_to_corpus_and_speaker_split_then_rerun_skips(workdir):
    args = ["--stop-stage", "1", "--packages", PACKAGE, "--download-dir", "dl",
            "--unseen", UNSEEN, "--n-eval", "2", "--add-corpus", f"en_US_m_Joe={workdir / 'joe'}"]
    r = run_recipe(workdir, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    # stage 0: the cached .deb is unpacked (no apt-get), sound folders and licenses kept
    assert f"unpacked {PACKAGE}_1.0-1_all.deb" in r.stdout
    assert (workdir / f"dl/root/usr/share/doc/{PACKAGE}/copyright").is_file()
    # stage 1: the reserved English set and the narrow-band set are left out, by name
    assert "en_US_f_Eve: English sets are reserved" in r.stdout
    assert "de_DE_f_Gsm: only narrow-band" in r.stdout
    assert "empty.g722: empty file" in r.stderr
    meta = [ln.split("|") for ln in (workdir / "corpus/metadata.csv").read_text().splitlines()]
    speakers = {spk for _, spk, _ in meta}
    assert speakers == {*SEEN, UNSEEN, "en_US_m_Joe"}
    ids = {u for u, _, _ in meta}
    assert "es_MX_f_Ana-digits-p0" in ids and "es_MX_f_Ana-p1" in ids
    # the symlink was never followed, the empty file and the 0.1 s beep are not clips
    assert not any("secret" in u or "empty" in u or "beep" in u for u in ids)
    for utt in ids:
        wav, sr = sf.read(str(workdir / f"corpus/wavs/{utt}.wav"))
        assert sr == RATE
        # trimmed: the 0.3 s of near-silence at each end is gone, a 50 ms margin kept
        if "Joe" not in utt:
            assert 0.8 < len(wav) / RATE < 1.0  # of 1.4 s; trim works on 46 ms frames
        # loudness-normalised: the speech at -20 dBFS RMS (Bruno's prompts were 20 dB quieter),
        # unless the peak would pass -1 dBFS
        peak = np.max(np.abs(wav))
        assert peak <= 10 ** (-1 / 20) + 1e-3
        assert abs(speech_dbfs(wav) + 20) < 1.5 or peak > 0.88
    split = split_of(workdir)
    # the unseen voice is all of dev and nowhere else; 2 eval clips per seen voice
    assert set(split["dev"].values()) == {UNSEEN} and len(split["dev"]) == 4
    assert UNSEEN not in set(split["train_nodev"].values()) | set(split["eval"].values())
    for voice in [*SEEN, "en_US_m_Joe"]:
        assert list(split["eval"].values()).count(voice) == 2
    assert not set(split["eval"]) & set(split["train_nodev"])
    assert len(split["train_nodev"]) + len(split["eval"]) == 7 + 6 + 5
    table = (workdir / "corpus/speakers.tsv").read_text()
    assert f"{UNSEEN}\tfr\tf\tunseen (dev)" in table and "en_US_f_Eve" not in table

    before = snapshot(workdir)
    r2 = run_recipe(workdir, *args)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "is unpacked; skip" in r2.stdout and r2.stdout.count("(up to date)") == 3
    assert snapshot(workdir) == before


def test_bad_options_stop_with_one_line(workdir):
    base = ["--stop-stage", "1", "--packages", PACKAGE, "--download-dir", "dl"]
    r = run_recipe(workdir, *base, "--unseen", "xx_XX_f_Nobody")
    assert r.returncode != 0
    assert "--unseen xx_XX_f_Nobody: no such voice" in r.stderr
    assert not (workdir / "data").exists()
    r = run_recipe(workdir, "--stop-stage", "0", "--packages", "asterisk-core-sounds-en-g722",
                   "--download-dir", "dl")
    assert r.returncode != 0 and "reserved for evaluation" in r.stderr
    r = run_recipe(workdir, "--stop-stage", "0", "--packages", "x;rm -rf /", "--download-dir", "dl")
    assert r.returncode != 0 and "not a Debian package name" in r.stderr
    r = run_recipe(workdir, *base, "--unseen", UNSEEN, "--n-eval", "50")
    assert r.returncode != 0 and "leaves none to train on" in r.stderr


@pytest.mark.slow
def test_recipe_trains_and_scores_a_16k_model(workdir):
    args = ["--packages", PACKAGE, "--download-dir", "dl", "--unseen", UNSEEN, "--n-eval", "2",
            "--conf", "conf/debug.yaml", "--nj", "2", "--ngpu", "0", "--stop-stage", "5"]
    r = run_recipe(workdir, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    out = workdir / "exp/debug/wav/checkpoint-10steps/eval"
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 4 and all(sf.info(str(w)).samplerate == RATE for w in wavs)
    # the speakers travel with the features; training draws them equally often
    assert (workdir / "exp/debug/dump/train_nodev/utt2spk").is_file()
    assert "every speaker drawn equally often" in (workdir / "exp/debug/train.log").read_text()
    cfg = (workdir / "exp/debug/config.yaml").read_text()
    assert "preset: espnet-16k" in cfg and "sample_rate: 16000" in cfg
    scores = json.loads((workdir / "exp/debug/eval/checkpoint-10steps/scores.json").read_text())
    assert sorted(scores["systems"][0]["utterances"]) == [w.stem for w in wavs]
