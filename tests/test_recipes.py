"""The LJSpeech recipe end to end on a tiny generated LJSpeech-layout archive (file:// URL)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import soundfile as sf

from conftest import make_corpus

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "recipes" / "ljspeech" / "run.sh"
N_UTTS, N_DEV, N_EVAL = 12, 2, 2


def recipe_env() -> dict:
    """The test's interpreter (and its `wavediff` script) first on PATH, one thread each."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "OMP_NUM_THREADS": "1"}


def run_recipe(cwd: Path, *args: str, script: Path = RUN) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=recipe_env())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, str]:
    """A tiny LJSpeech-1.1.tar.bz2 (12 generated clips) and its sha256."""
    root = tmp_path_factory.mktemp("ljs")
    corpus = root / "LJSpeech-1.1"
    paths = make_corpus(corpus / "wavs", n=N_UTTS, seconds=0.4, prefix="LJ001-00")
    # metadata.csv is not sorted on purpose: the recipe sorts the ids
    lines = [f"{p.stem}|Text {i}.|Text {i}." for i, p in enumerate(paths)]
    (corpus / "metadata.csv").write_text("\n".join(reversed(lines)) + "\n")
    tar_path = root / "LJSpeech-1.1.tar.bz2"
    with tarfile.open(tar_path, "w:bz2") as tar:
        tar.add(corpus, arcname="LJSpeech-1.1")
    return tar_path, sha256(tar_path)


def download_args(url_path: Path, digest: str) -> list[str]:
    return ["--download-url", url_path.as_uri(), "--sha256", digest, "--download-dir", "dl"]


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_ljspeech_recipe_end_to_end_then_rerun_skips(tmp_path, archive):
    tar_path, digest = archive
    args = [*download_args(tar_path, digest), "--conf", "conf/debug.yaml", "--n-dev", N_DEV,
            "--n-eval", N_EVAL, "--nj", "2", "--ngpu", "0"]
    r = run_recipe(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    for stage in range(6):
        assert f"stage {stage}:" in r.stdout or f"stage {stage} finished" in r.stdout

    # stage 0: verified and unpacked
    assert (tmp_path / "dl/LJSpeech-1.1/metadata.csv").is_file()
    assert not (tmp_path / "dl/LJSpeech-1.1.tar.bz2.part").exists()
    # stage 1: sorted ids, the last N_EVAL -> eval, the N_DEV before -> dev
    ids = [f"LJ001-00{i:02d}" for i in range(N_UTTS)]
    split = {}
    for name in ("train_nodev", "dev", "eval"):
        rows = [line.split() for line in (tmp_path / f"data/{name}/wav.scp").read_text().splitlines()]
        assert all(Path(p).is_absolute() and Path(p).is_file() for _, p in rows)
        split[name] = [u for u, _ in rows]
    assert split == {"train_nodev": ids[:-4], "dev": ids[-4:-2], "eval": ids[-2:]}
    # the debug config's recipe section cuts each set to its first 4 utterances: the cut
    # lists and their features live in the experiment, data/ keeps the whole split
    cut = {name: utts[:4] for name, utts in split.items()}
    assert len(cut["train_nodev"]) < len(split["train_nodev"])
    assert "sets cut to their first 4 utterances" in r.stdout
    for name, utts in cut.items():
        rows = (tmp_path / f"exp/debug/data/{name}/wav.scp").read_text().splitlines()
        assert [line.split()[0] for line in rows] == utts
    # stage 2: one record per utterance of the cut sets, statistics
    for name, utts in cut.items():
        assert sorted(p.stem for p in (tmp_path / f"exp/debug/dump/{name}").glob("*.npz")) == utts
    assert (tmp_path / "exp/debug/dump/train_nodev/stats.npy").is_file()
    assert not (tmp_path / "dump").exists()
    # stage 3: the debug config trains 10 steps
    assert (tmp_path / "exp/debug/checkpoint-10steps.pt").is_file()
    # stage 4: one wav per eval utterance, as long as its mel
    out = tmp_path / "exp/debug/wav/checkpoint-10steps/eval"
    assert sorted(p.stem for p in out.glob("*.wav")) == split["eval"]
    for utt in split["eval"]:
        import numpy as np

        with np.load(tmp_path / f"exp/debug/dump/eval/{utt}.npz") as rec:
            expected = rec["wave"].shape[-1]
        info = sf.info(str(out / f"{utt}.wav"))
        assert info.samplerate == 22050 and info.frames == expected
    # stage 5: scores and the listening report of the eval set
    evaldir = tmp_path / "exp/debug/eval/checkpoint-10steps"
    import json

    scores = json.loads((evaldir / "scores.json").read_text())
    assert sorted(scores["systems"][0]["utterances"]) == split["eval"]
    # the debug config's quick metrics (recipe.eval_metrics), not every metric
    assert {m["name"] for m in scores["metrics"]} == {"pesq", "stoi", "log_mel_l1", "mr_stft"}
    assert (evaldir / "report.html").is_file() and (evaldir / "report_files").is_dir()

    before = snapshot(tmp_path)
    r2 = run_recipe(tmp_path, *args)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "is already unpacked; skip" in r2.stdout
    assert r2.stdout.count("up to date (skipped)") == 3
    assert r2.stdout.count("holds every record") == 3
    assert "stats.npy is up to date; skip" in r2.stdout
    assert "trained to step 10 of 10; skip" in r2.stdout
    assert "holds every eval utterance; skip" in r2.stdout
    assert "scores.json is up to date; skip" in r2.stdout
    assert "wavediff preprocess" not in r2.stderr and "train:" not in r2.stderr
    assert snapshot(tmp_path) == before

    # the command line overrides the config's cut: every utterance, in the shared dump/
    r3 = run_recipe(tmp_path, *args, "--max-utts", "0", "--stage", "2", "--stop-stage", "2")
    assert r3.returncode == 0, r3.stdout + r3.stderr
    assert "sets cut" not in r3.stdout
    assert sorted(p.stem for p in (tmp_path / "dump/train_nodev").glob("*.npz")) == split["train_nodev"]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_archive_is_refused_and_not_unpacked(tmp_path, archive, damage):
    tar_path, digest = archive
    data = bytearray(tar_path.read_bytes())
    if damage == "flip":
        for i in range(100, 110):
            data[i] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    bad = tmp_path / "mirror" / "LJSpeech-1.1.tar.bz2"
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    r = run_recipe(tmp_path, *download_args(bad, digest), "--stop-stage", "1")
    assert r.returncode != 0
    assert "checksum mismatch" in r.stderr and "not unpacked" in r.stderr
    assert not (tmp_path / "dl/LJSpeech-1.1").exists()
    assert not (tmp_path / "dl/LJSpeech-1.1.tar.bz2").exists()
    assert not (tmp_path / "data").exists()


def test_truncated_download_is_kept_and_resumed(tmp_path, archive):
    tar_path, digest = archive
    size = tar_path.stat().st_size
    partial = tmp_path / "mirror" / "LJSpeech-1.1.tar.bz2"
    partial.parent.mkdir()
    partial.write_bytes(tar_path.read_bytes()[: size // 3])
    args = ["--sha256", digest, "--archive-size", str(size), "--download-dir", "dl",
            "--stop-stage", "0"]
    r = run_recipe(tmp_path, "--download-url", partial.as_uri(), *args)
    assert r.returncode != 0 and "truncated" in r.stderr and "resume" in r.stderr
    assert (tmp_path / "dl/LJSpeech-1.1.tar.bz2.part").stat().st_size == size // 3
    assert not (tmp_path / "dl/LJSpeech-1.1").exists()

    r = run_recipe(tmp_path, "--download-url", tar_path.as_uri(), *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming LJSpeech-1.1.tar.bz2.part at byte {size // 3:,}" in r.stdout
    assert sha256(tmp_path / "dl/LJSpeech-1.1.tar.bz2") == digest
    assert (tmp_path / "dl/LJSpeech-1.1/metadata.csv").is_file()


def test_oversized_partial_download_must_be_deleted(tmp_path, archive):
    tar_path, digest = archive
    part = tmp_path / "dl" / "LJSpeech-1.1.tar.bz2.part"
    part.parent.mkdir()
    part.write_bytes(b"x" * (tar_path.stat().st_size + 10))
    r = run_recipe(tmp_path, *download_args(tar_path, digest), "--archive-size",
                   str(tar_path.stat().st_size), "--stop-stage", "0")
    assert r.returncode != 0 and "Delete it" in r.stderr
    assert not (tmp_path / "dl/LJSpeech-1.1").exists()


def test_recipe_options_are_checked(tmp_path):
    r = run_recipe(tmp_path, "--ngpu", "two", "--stage", "3")
    assert r.returncode != 0 and "give a number of GPUs" in r.stderr
    r = run_recipe(tmp_path, "--no-such-option", "1")
    assert r.returncode != 0 and "unknown option" in r.stderr
    r = run_recipe(tmp_path, "--conf", "conf/missing.yaml")
    assert r.returncode != 0 and "not found" in r.stderr
    r = run_recipe(tmp_path, "--help")
    assert r.returncode == 0 and "--db-root" in r.stdout and "--max-utts" in r.stdout


def test_recipe_section_of_the_config_is_checked(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("recipe:\n  eval_metrics: pesq,nonsense\n")
    r = run_recipe(tmp_path, "--db-root", tmp_path, "--conf", conf, "--stage", "2")
    assert r.returncode != 0
    assert "unknown metric 'nonsense'" in r.stderr and "Traceback" not in r.stderr
    conf.write_text("recipe:\n  max_utterances: -1\n")
    r = run_recipe(tmp_path, "--db-root", tmp_path, "--conf", conf, "--stage", "2")
    assert r.returncode != 0 and "recipe.max_utterances must be >= 0" in r.stderr
    r = run_recipe(tmp_path, "--db-root", tmp_path, "--max-utts", "many", "--stage", "2")
    assert r.returncode != 0 and "--max-utts many" in r.stderr


def test_template_recipe_prepares_a_folder_of_audio(tmp_path):
    make_corpus(tmp_path / "corpus" / "a", n=3, seconds=0.3, prefix="A")
    make_corpus(tmp_path / "corpus" / "b", n=3, seconds=0.3, prefix="B", fmt="flac")
    script = REPO / "recipes" / "template" / "run.sh"
    r = run_recipe(tmp_path, "--db-root", tmp_path / "corpus", "--conf", "conf/debug.yaml",
                   "--n-dev", "1", "--n-eval", "1", "--stop-stage", "1", script=script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "data/eval/wav.scp").read_text().split()[0] == "B02"
    assert (tmp_path / "data/dev/wav.scp").read_text().split()[0] == "B01"
    assert len((tmp_path / "data/train_nodev/wav.scp").read_text().splitlines()) == 4
    r = run_recipe(tmp_path, "--stage", "0", script=script)
    assert r.returncode != 0 and "--db-root" in r.stderr


def test_joe_recipe_holds_out_the_first_ids_as_dev_and_eval(tmp_path):
    corpus = tmp_path / "joe"
    paths = make_corpus(corpus / "wavs", n=18, seconds=0.3, prefix="JOE001-00")
    (corpus / "metadata.csv").write_text("".join(f"{p.stem}|t|t\n" for p in paths))
    r = run_recipe(tmp_path, "--db-root", corpus, "--stop-stage", "1",
                   script=REPO / "recipes" / "joe" / "run.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    ids = {name: [line.split()[0] for line in (tmp_path / f"data/{name}/wav.scp").read_text().splitlines()]
           for name in ("train_nodev", "dev", "eval")}
    assert ids["dev"] == [f"JOE001-00{i:02d}" for i in range(15)] == ids["eval"]
    assert ids["train_nodev"] == ["JOE001-0015", "JOE001-0016", "JOE001-0017"]
