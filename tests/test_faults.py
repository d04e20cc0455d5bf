"""Faults during training: SIGKILL, SIGTERM, a full disk, non-finite losses.

The kill tests stop real training processes (``python -m wavediff train``) and read their
progress from the per-step debug log lines (``-v`` with ``train.log_interval=1``).
"""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import make_dump, write_tiny_config
from wavediff.cli.main import main
from wavediff.diffusion.process import GaussianDiffusion
from wavediff.checkpoint import checkpoint_name, list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow  # end-to-end: trains tiny models

STEP_LINE = re.compile(r"wavediff\.train: \(steps: (\d+)\) train/loss")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    return make_dump(tmp_path_factory.mktemp("faults"), n=3)


def train_args(conf: Path, dump: Path, exp: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(conf), "--train-dumpdir", str(dump), "--outdir", str(exp),
            "--device", "cpu", *extra]


def start_training(args: list[str], prelude: str = "") -> subprocess.Popen:
    """A training process with per-step debug lines on stderr (``prelude`` runs first)."""
    code = (f"import sys\n{prelude}\n"
            "from wavediff.cli.main import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.Popen([sys.executable, "-c", code, *args, "-v"], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)


def wait_for_step(proc: subprocess.Popen, step: int) -> int:
    """Read ``proc``'s log until it reports a step >= ``step``; returns the step reported."""
    assert proc.stderr is not None
    tail: list[str] = []
    for line in proc.stderr:
        tail = (tail + [line])[-20:]
        m = STEP_LINE.search(line)
        if m and int(m.group(1)) >= step:
            return int(m.group(1))
    raise AssertionError(f"training ended (status {proc.wait()}) before step {step}:\n"
                         + "".join(tail))


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def every_checkpoint_loads(exp: Path) -> list[int]:
    steps = []
    for step, path in list_checkpoints(exp):
        assert load_checkpoint(path)["step"] == step
        steps.append(step)
    return steps


# ---------------------------------------------------------------------- SIGKILL
def test_sigkill_at_a_random_moment_then_resume_loses_at_most_one_interval(dump, tmp_path):
    interval = 5
    kill_at = random.Random().randint(11, 24)  # a different moment on every run
    conf = write_tiny_config(tmp_path / "c.yaml", max_steps=10_000, save_interval=interval,
                             log_interval=1, keep_checkpoints=2)
    exp = tmp_path / "exp"
    proc = start_training(train_args(conf, dump, exp))
    reached = wait_for_step(proc, kill_at)
    proc.send_signal(signal.SIGKILL)
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL

    steps = every_checkpoint_loads(exp)  # nothing corrupt is listed
    saved = steps[-1]
    lost = reached - saved
    assert 0 <= lost <= interval, f"killed after step {reached}, newest checkpoint {saved}"

    r = subprocess.run([sys.executable, "-m", "wavediff",
                        *train_args(conf, dump, exp, "--resume", "--set",
                                    f"train.max_steps={saved + 3}")],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resumed from {exp / checkpoint_name(saved)} at step {saved}" in r.stderr
    assert f"trained to step {saved + 3}" in r.stdout
    assert not list(exp.glob(".*.tmp"))


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(dump, tmp_path):
    """Killed half-way through writing checkpoint 10: checkpoint 5 stays, the temp file goes."""
    conf = write_tiny_config(tmp_path / "c.yaml", max_steps=10_000, save_interval=5,
                             log_interval=1)
    exp, marker = tmp_path / "exp", tmp_path / "writing"
    prelude = textwrap.dedent(f"""
        import time, torch
        real_save, calls = torch.save, []
        def save(obj, f, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # the second checkpoint: half the bytes, then hang
                f.write(b"PK\\x03\\x04" + bytes(4096)); f.flush()
                open({str(marker)!r}, "w").close()
                time.sleep(600)
            return real_save(obj, f, *args, **kwargs)
        torch.save = save
    """)
    proc = start_training(train_args(conf, dump, exp), prelude)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no second checkpoint write"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    finish(proc)

    temporaries = list(exp.glob(f".{checkpoint_name(10)}.*.tmp"))
    assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0
    assert every_checkpoint_loads(exp) == [5]

    r = subprocess.run([sys.executable, "-m", "wavediff",
                        *train_args(conf, dump, exp, "--resume", "--set", "train.max_steps=7")],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"removed {temporaries[0].name}, left by a checkpoint write that was interrupted" \
        in r.stderr
    assert "at step 5" in r.stderr and "trained to step 7" in r.stdout
    assert not temporaries[0].exists()
    assert every_checkpoint_loads(exp) == [5, 7]


# ---------------------------------------------------------------------- SIGTERM
def test_sigterm_writes_a_checkpoint_then_exits(dump, tmp_path):
    conf = write_tiny_config(tmp_path / "c.yaml", max_steps=10_000, save_interval=5_000,
                             log_interval=1)
    exp = tmp_path / "exp"
    proc = start_training(train_args(conf, dump, exp))
    reached = wait_for_step(proc, 7)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 143, err
    steps = every_checkpoint_loads(exp)
    assert len(steps) == 1 and steps[0] >= reached
    assert f"SIGTERM: saved {checkpoint_name(steps[0])} at step {steps[0]}" in err
    assert f"stopped by SIGTERM at step {steps[0]}" in out and "--resume" in out


# ---------------------------------------------------------------------- full disk
def test_full_disk_keeps_previous_checkpoint_removes_temp_and_says_so(dump, tmp_path, monkeypatch,
                                                                      capsys):
    conf = write_tiny_config(tmp_path / "c.yaml", max_steps=10, save_interval=5)
    exp = tmp_path / "exp"
    real_save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the disk fills up half-way through checkpoint 10
            f.write(b"PK\x03\x04" + bytes(1000))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(train_args(conf, dump, exp, "-q")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: could not write checkpoint {exp / checkpoint_name(10)}: "
                          f"No space left on device; its temporary file was removed and the "
                          f"newest intact checkpoint is {checkpoint_name(5)} (free disk space, "
                          f"then continue with --resume)")
    assert sorted(p.name for p in exp.iterdir()) == [checkpoint_name(5), "config.yaml", "logs",
                                                     "train.log"]
    assert every_checkpoint_loads(exp) == [5]

    monkeypatch.undo()  # space freed
    assert main(train_args(conf, dump, exp, "-q", "--resume")) == 0
    assert every_checkpoint_loads(exp) == [5, 10]


# ---------------------------------------------------------------------- non-finite
def test_nonfinite_steps_are_skipped_counted_logged_and_stored(dump, tmp_path, monkeypatch,
                                                               capsys):
    conf = write_tiny_config(tmp_path / "c.yaml", max_steps=8, save_interval=8,
                             max_nonfinite_steps=3)
    real_loss, calls = GaussianDiffusion.loss, []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        loss = real_loss(self, *args, **kwargs)
        return loss * float("nan") if len(calls) in (3, 4) else loss

    monkeypatch.setattr(GaussianDiffusion, "loss", flaky)
    assert main(train_args(conf, dump, tmp_path / "exp", "-q")) == 0
    out, err = capsys.readouterr()
    assert "2 non-finite steps were skipped" in out
    warned = [ln for ln in err.splitlines() if "non-finite loss" in ln]
    assert [ln.split("wavediff.train: ")[1].split(":")[0] for ln in warned] == [
        "step 2", "step 3"], err
    assert "(2 in a row, 2 in all; the run stops after 3 in a row)" in warned[1]
    state = load_checkpoint(tmp_path / "exp")
    assert state["nonfinite_steps"] == 2 and state["step"] == 8
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_k_nonfinite_steps_in_a_row_stop_the_run(dump, tmp_path, monkeypatch, capsys):
    conf = write_tiny_config(tmp_path / "c.yaml", max_steps=50, save_interval=50,
                             max_nonfinite_steps=4)
    real_loss = GaussianDiffusion.loss
    monkeypatch.setattr(GaussianDiffusion, "loss",
                        lambda self, *a, **k: real_loss(self, *a, **k) * float("inf"))
    assert main(train_args(conf, dump, tmp_path / "exp", "-q")) == 1
    err = capsys.readouterr().err
    assert "error: 4 non-finite steps in a row at step 3; lower the learning rate, check the " \
           "features for NaN, or set train.amp=none" in err
    assert not list_checkpoints(tmp_path / "exp")  # nothing trained on garbage was saved
