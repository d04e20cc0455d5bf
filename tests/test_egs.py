"""Each example in egs/ runs as its header says, against a tiny trained model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_recipes import REPO, recipe_env

EGS = REPO / "egs"
pytestmark = pytest.mark.slow


def run(*cmd) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600,
                          env=recipe_env())


@pytest.fixture(scope="module")
def mels(trained_exp, tmp_path_factory) -> dict[str, int]:
    """The dev mels of the tiny experiment as .npy files; name -> expected samples."""
    out = tmp_path_factory.mktemp("mels")
    lengths = {}
    for rec in sorted((trained_exp["dump"] / "dev").glob("*.npz")):
        with np.load(rec) as d:
            np.save(out / f"{rec.stem}.npy", d["mel"])
            lengths[rec.stem] = d["wave"].shape[-1]
    return {"dir": out, "lengths": lengths}


def check_outputs(outdir: Path, lengths: dict[str, int]) -> None:
    assert sorted(p.stem for p in outdir.glob("*.wav")) == sorted(lengths)
    for name, n in lengths.items():
        wav, sr = sf.read(str(outdir / f"{name}.wav"))
        assert sr == 22050 and len(wav) == n and np.isfinite(wav).all()


def test_vocode_tts_mels(trained_exp, mels, tmp_path):
    r = run("bash", EGS / "vocode_tts_mels/run.sh", trained_exp["exp"], mels["dir"], tmp_path / "out")
    assert r.returncode == 0, r.stderr
    check_outputs(tmp_path / "out", mels["lengths"])
    r = run("bash", EGS / "vocode_tts_mels/run.sh", trained_exp["exp"])
    assert r.returncode == 2 and "CHECKPOINT MEL_DIR" in r.stderr


def test_python_api(trained_exp, mels, tmp_path):
    files = sorted(mels["dir"].glob("*.npy"))
    r = run(sys.executable, EGS / "python_api/vocode.py", trained_exp["exp"], tmp_path / "out", *files)
    assert r.returncode == 0, r.stderr
    check_outputs(tmp_path / "out", mels["lengths"])
    code = [line for line in (EGS / "python_api/vocode.py").read_text().split('"""')[2].splitlines()
            if line.strip() and not line.strip().startswith("#")]
    assert len(code) < 20


def test_copy_synthesis(trained_exp, tmp_path):
    wav = sorted((trained_exp["root"] / "dev_wavs").glob("*.wav"))[0]
    ckpt = sorted(trained_exp["exp"].glob("checkpoint-*steps.pt"))[-1]
    r = run("bash", EGS / "copy_synthesis/run.sh", ckpt, tmp_path / "out", wav)
    assert r.returncode == 0, r.stderr
    check_outputs(tmp_path / "out", {wav.stem: sf.info(str(wav)).frames})


def test_streaming(trained_exp, mels, tmp_path):
    mel = sorted(mels["dir"].glob("*.npy"))[0]
    r = run(sys.executable, EGS / "streaming/stream.py", "--checkpoint", trained_exp["exp"],
            "--mel", mel, "--out", tmp_path / "out.wav", "--chunk-frames", "3",
            "--frames-per-second", "0", "--precision", "fp32")
    assert r.returncode == 0, r.stderr
    assert "first audio" in r.stdout and "lookahead" in r.stdout
    diff = float(r.stdout.split("max |streamed - whole decode| = ")[1].split()[0])
    assert diff < 1e-4
    wav, sr = sf.read(str(tmp_path / "out.wav"))
    assert sr == 22050 and len(wav) == mels["lengths"][mel.stem]
