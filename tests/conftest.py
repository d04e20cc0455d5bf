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


def randomize_outputs(model: torch.nn.Module, bias_std: float = 0.2,
                      output_std: float = 0.5) -> torch.nn.Module:
    """Non-trivial biases and output layer (a fresh model's output layer is zero, so it
    would predict no noise at all), in place; returns ``model``."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0.0, bias_std)
        model.output_projection.weight.normal_(0.0, output_std)
    return model


def tiny_vocoder(diffusion: dict | None = None, preset: str = "hifigan", **model):
    """A tiny float32 vocoder with non-trivial random outputs and a 3-step schedule;
    ``diffusion`` and ``model`` settings override the tiny config's."""
    from wavediff.config import Config
    from wavediff.model import build_model
    from wavediff.vocoder import Vocoder

    data = tiny_config_dict()
    data["audio"] = {"preset": preset}
    data["model"] = {**data["model"], **model}
    data["diffusion"] = {"fast_schedule": [1e-4, 0.05, 0.3], **(diffusion or {})}
    config = Config.from_dict(data)
    torch.manual_seed(0)
    net = randomize_outputs(build_model(config).eval(), 0.1, 0.3)
    return Vocoder(net, config, precision="fp32")


# models of each kind the exported decoders run (diffusion settings, model settings)
EXPORT_CASES = {
    "plain": ({}, {}),
    "priorgrad+gl_start+projection": ({"prior": "priorgrad", "prior_energy": [1e-4, 0.5],
                                       "conditioning": "noise_level", "start_iters": 3,
                                       "consistency_iters": 2}, {}),
    "subbands": ({"consistency_iters": 1}, {"subbands": 2}),
    "gl_start, less noise": ({"start_iters": 2, "start_noise": 0.3, "consistency_iters": 1}, {}),
    "specgrad": ({"prior": "specgrad", "prior_energy": [1e-4, 0.5], "consistency_iters": 1}, {}),
    "residual prediction": ({"prediction": "residual", "start_iters": 2, "start_noise": 0.3,
                             "consistency_iters": 1}, {}),
    "griffin-lim conditioning": ({"consistency_iters": 1}, {"gl_condition": 2}),
    "griffin-lim conditioning and start, sub-bands": (
        {"start_iters": 2, "start_noise": 0.3}, {"gl_condition": 2, "subbands": 2}),
    "phase-vocoder griffin-lim start": (
        {"start_iters": 2, "gl_init": "phase-vocoder", "consistency_iters": 1}, {}),
    "phase-vocoder griffin-lim conditioning": (
        {"gl_init": "phase-vocoder", "consistency_iters": 1}, {"gl_condition": 2}),
}


def random_mel(batch: int = 1, frames: int = 13, seed: int = 0):
    """A ``(batch, 80, frames)`` float32 numpy mel of speech-like log values."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 80, frames, generator=g) * 1.5 - 6.0).numpy()


def torch_noise_draws(meta: dict, shape: tuple, seed: int) -> list:
    """The standard normal draws the torch decode of ``seed`` makes, in its order, for an
    exported folder's ``decoder.json`` ``meta``: Griffin-Lim's start, x_T, then one after
    every network evaluation but the last."""
    from wavediff.diffusion.noise import GL_START, X_T, PositionalNoise, step_stream

    draws = PositionalNoise.from_generator(torch.Generator().manual_seed(seed), shape[0])
    noise_start = meta.get("gl_init", "noise") == "noise"
    streams = ([GL_START] if (meta["start_iters"] or meta.get("gl_condition")) and noise_start
               else []) + [X_T] + [
        step_stream(i) for i in range(len(meta["plan"]["betas"]) - 1)]
    return [draws.draw(k, 0, shape[-1]).numpy() for k in streams]


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


def wavediff_cli(*args: str, cwd: Path | None = None,
                 subprocess_: bool = False) -> subprocess.CompletedProcess:
    """Run the ``wavediff`` command with ``args``; returns the completed process.

    In this process by default (``wavediff.cli.main.main`` with stdout and stderr captured;
    an exception the command lets through becomes its traceback on stderr and status 1, as
    the interpreter would print it): a command then costs no interpreter start and torch
    import. ``subprocess_=True`` runs ``python -m wavediff`` in a child process instead.
    """
    argv = [str(a) for a in args]
    if subprocess_:
        return subprocess.run([sys.executable, "-m", "wavediff", *argv], cwd=cwd,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    import contextlib
    import io
    import logging
    import traceback

    from wavediff.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    root, ours = logging.getLogger(), logging.getLogger("wavediff")
    saved = (list(root.handlers), root.level, ours.level, torch.get_num_threads(), os.getcwd())
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse: --help, usage errors
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - what the interpreter would print
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved[4])
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ours.setLevel(saved[2])
        torch.set_num_threads(saved[3])
    return subprocess.CompletedProcess(["wavediff", *argv], code, out.getvalue(), err.getvalue())


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
