"""Shared fixtures: tiny configs, generated corpora and a tiny trained experiment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tests run in parallel processes on small machines
# float32 wherever a precision is "auto", in this process and the commands it starts: the
# tests compare decodes at float32 tolerances on any CPU (bf16 is tested where asked for)
os.environ["WAVEDIFF_PRECISION"] = "fp32"

TINY_MODEL = {"residual_layers": 4, "residual_channels": 16, "dilation_cycle": 2,
              "step_embedding_dim": 32, "step_hidden_dim": 64}


def tiny_config_dict(**train) -> dict:
    base_train = {"batch_size": 4, "crop_samples": 2048, "max_steps": 20, "log_interval": 5,
                  "eval_interval": 20, "save_interval": 10, "num_dev_utterances": 1,
                  "num_workers": 0, "learning_rate": 1e-3}
    base_train.update(train)
    return {"audio": {"preset": "hifigan"}, "model": dict(TINY_MODEL), "train": base_train}


def write_tiny_config(path: Path, **train) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(tiny_config_dict(**train)))
    return path


def make_corpus(root: Path, n: int = 4, seconds: float = 0.6, sample_rate: int = 22050,
                seed: int = 0, prefix: str = "UTT", fmt: str = "wav") -> list[Path]:
    from wavediff.audio.io import save_audio
    from wavediff.audio.synth import toy_utterance

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"{prefix}{i:02d}.{fmt}"
        save_audio(p, toy_utterance(sample_rate, seconds, seed=seed + i), sample_rate)
        paths.append(p)
    return paths


def make_dump(root: Path, n: int = 4, seconds: float = 0.4) -> Path:
    """A corpus of ``n`` toy utterances under ``root/wavs``, preprocessed to ``root/dump``."""
    from wavediff.cli.main import main

    make_corpus(root / "wavs", n=n, seconds=seconds)
    assert main(["preprocess", "--wav-dir", str(root / "wavs"), "--dumpdir",
                 str(root / "dump"), "-q"]) == 0
    return root / "dump"


def wavediff_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m wavediff ARGS`` in a subprocess; returns the completed process."""
    return subprocess.run([sys.executable, "-m", "wavediff", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="session")
def trained_exp(tmp_path_factory) -> dict:
    """A tiny model trained for 20 steps through the CLI, with its dumps and corpus."""
    root = tmp_path_factory.mktemp("exp")
    make_corpus(root / "wavs", n=4)
    make_corpus(root / "dev_wavs", n=2, seed=100, prefix="DEV")
    conf = write_tiny_config(root / "tiny.yaml")
    for src, dump in (("wavs", "train"), ("dev_wavs", "dev")):
        r = wavediff_cli("preprocess", "--config", conf, "--wav-dir", root / src,
                         "--dumpdir", root / "dump" / dump, "-q")
        assert r.returncode == 0, r.stderr
    r = wavediff_cli("train", "--config", conf, "--train-dumpdir", root / "dump/train",
                     "--dev-dumpdir", root / "dump/dev", "--outdir", root / "exp", "-q")
    assert r.returncode == 0, r.stderr
    return {"root": root, "conf": conf, "exp": root / "exp", "dump": root / "dump"}


def pytest_collection_modifyitems(config, items) -> None:
    """A test that uses the trained experiment trains a model (once per worker): it is an
    end-to-end test, marked ``slow`` like the modules that say so themselves, so
    ``-m "not slow"`` trains nothing."""
    for item in items:
        if "trained_exp" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
