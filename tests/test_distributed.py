"""Distributed training and decoding: batch plans, and real 2-process gloo runs via torchrun.

The central property: 2 processes with B samples each give, step for step, the weights of
1 process with a batch of 2B on the same samples (the diffusion noise of a sample depends
on its place in the global batch, not on the rank), also across a resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_dump, tiny_config_dict, write_tiny_config
from wavediff.audio.io import load_audio
from wavediff.cli.main import main
from wavediff.config import Config
from wavediff.errors import ConfigError
from wavediff.checkpoint import list_checkpoints, load_checkpoint
from wavediff.audio.dump import list_records, load_record
from wavediff.train.data import StepBatchSampler
from wavediff.distributed import (
    BatchPlan, DistInfo, RankBatchSampler, file_seed, shard, split_sizes,
)
from wavediff.train.trainer import Trainer

pytestmark = pytest.mark.slow  # end-to-end: trains tiny models


def torchrun(*args: object, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N -m wavediff ARGS`` (gloo on the CPU)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), "-m", "wavediff", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    return make_dump(tmp_path_factory.mktemp("dist"), n=5)


def assert_same_weights(a: dict, b: dict, moved_from: dict) -> None:
    """``a`` and ``b`` agree to float tolerance, and both moved far from ``moved_from``."""
    worst, moved = 0.0, 0.0
    for key in a:
        # other batch shapes and gradient sums (micro-batches, all-reduce) round the float32
        # gradients differently (~1e-6 relative); Adam's normalised step passes that on at
        # ~lr * 1e-6 (more for gradients near zero). 2e-5 / 1e-4 is ample (measured ~2e-7
        # with AVX-512 and AVX2 kernels); the 100x-moved check below keeps it meaningful
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=2e-5, msg=key)
        worst = max(worst, float((a[key] - b[key]).abs().max()))
        moved = max(moved, float((a[key] - moved_from[key]).abs().max()))
    assert moved > 100 * max(worst, 1e-7), (moved, worst)


def single_process(dump: Path, outdir: Path, **train) -> dict:
    cfg = Config.from_dict(tiny_config_dict(**train))
    trainer = Trainer(cfg, dump, None, outdir, progress=False)
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    return {"init": init, "final": load_checkpoint(outdir)}


# ---------------------------------------------------------------------- plans, samplers
def test_split_sizes_differ_by_at_most_one():
    assert split_sizes(10, 4) == [3, 3, 2, 2]
    assert split_sizes(8, 4) == [2, 2, 2, 2]
    assert sum(split_sizes(17, 5)) == 17


def test_batch_plan_offsets_cover_the_global_batch_once():
    plan = BatchPlan(global_batch=10, world_size=2, grad_accum=2)
    assert plan.sizes(0) == [3, 3] and plan.sizes(1) == [2, 2]
    assert plan.offsets(0) == [0, 3] and plan.offsets(1) == [6, 8]
    assert not plan.even and "weighted" in plan.describe()
    assert BatchPlan(8, 2, 2).even and "global batch 8 = 2 process" in BatchPlan(8, 2, 2).describe()


def test_batch_plan_refuses_fewer_samples_than_micro_batches():
    with pytest.raises(ConfigError, match="train.batch_size 3 is smaller than the 4 micro-batches"):
        BatchPlan(global_batch=3, world_size=2, grad_accum=2)


def test_rank_samplers_partition_each_global_batch():
    plan = BatchPlan(global_batch=7, world_size=3, grad_accum=2)
    base = StepBatchSampler(5, 7, seed=3, start_step=2, max_steps=6)
    per_rank = [list(RankBatchSampler(base, plan, r)) for r in range(3)]
    assert all(len(batches) == 4 * 2 for batches in per_rank)
    for step in range(4):
        union = [item for r in range(3) for item in
                 per_rank[r][2 * step] + per_rank[r][2 * step + 1]]
        assert union == base.batch(2 + step)


def test_shard_union_is_the_input_and_file_seed_is_stable():
    items = list(range(11))
    parts = [shard(items, DistInfo(rank=r, world_size=3, backend="gloo")) for r in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert file_seed(0, "a") == file_seed(0, "a") != file_seed(0, "b") != file_seed(1, "b")


# ---------------------------------------------------------------------- one process
@pytest.mark.parametrize("batch_size,grad_accum", [(4, 2), (5, 2)])
def test_gradient_accumulation_equals_one_big_batch(dump, tmp_path, batch_size, grad_accum):
    """2 micro-batches (of 2+2, or of 3+2 samples) make the step of one batch."""
    steps = {"max_steps": 3, "save_interval": 3, "batch_size": batch_size}
    whole = single_process(dump, tmp_path / "whole", **steps)
    accum = single_process(dump, tmp_path / "accum", grad_accum=grad_accum, **steps)
    assert_same_weights(accum["final"]["model"], whole["final"]["model"], whole["init"])


# ---------------------------------------------------------------------- torchrun, gloo
def test_two_processes_equal_one_with_twice_the_batch_across_a_resume(dump, tmp_path):
    """torchrun x2 with B=2 each, checkpoint at 3, --resume to 6 == 1 process, B=4, 6 steps."""
    conf = write_tiny_config(tmp_path / "c.yaml", batch_size=4, max_steps=3, save_interval=3,
                             log_interval=1)
    exp = tmp_path / "ddp"
    r = torchrun("train", "--config", conf, "--train-dumpdir", dump, "--outdir", exp,
                 "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    assert [s for s, _ in list_checkpoints(exp)] == [3]
    r = torchrun("train", "--config", conf, "--train-dumpdir", dump, "--outdir", exp,
                 "--device", "cpu", "--resume", "--set", "train.max_steps=6")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "at step 3" in r.stderr
    assert "rank 0 of 2 (gloo, cpu); global batch 4 = 2 process(es)" in r.stderr
    assert r.stdout.count("trained to step 6") == 1  # rank 0 alone reports
    assert r.stderr.count("resumed from") == 1
    assert [s for s, _ in list_checkpoints(exp)] == [3, 6]

    one = single_process(dump, tmp_path / "one", batch_size=4, max_steps=6, save_interval=3)
    ddp = load_checkpoint(exp)
    assert ddp["step"] == one["final"]["step"] == 6
    assert_same_weights(ddp["model"], one["final"]["model"], one["init"])
    assert_same_weights(ddp["ema"], one["final"]["ema"], one["init"])


def test_uneven_global_batch_with_accumulation_equals_one_process(dump, tmp_path):
    """A global batch of 5 over 2 processes x 2 micro-steps (2+1 | 1+1 samples)."""
    conf = write_tiny_config(tmp_path / "c.yaml", batch_size=5, grad_accum=2, max_steps=3,
                             save_interval=3)
    r = torchrun("train", "--config", conf, "--train-dumpdir", dump, "--outdir",
                 tmp_path / "ddp", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "global batch 5 does not divide into 4 micro-batches" in r.stderr
    one = single_process(dump, tmp_path / "one", batch_size=5, max_steps=3, save_interval=3)
    assert_same_weights(load_checkpoint(tmp_path / "ddp")["model"], one["final"]["model"],
                        one["init"])


def test_distributed_vocode_union_equals_single_process(dump, tmp_path):
    conf = write_tiny_config(tmp_path / "c.yaml", max_steps=2, save_interval=2)
    exp = tmp_path / "exp"
    Trainer(Config.load(conf), dump, None, exp, progress=False).run()
    mels = tmp_path / "mels"
    mels.mkdir()
    lines = []
    for i, rec in enumerate(list_records(dump)):
        np.save(mels / f"u{i}.npy", load_record(rec)[1])
        lines.append(f"u{i} {mels / f'u{i}.npy'}")
    np.save(mels / "bad.npy", np.zeros((64, 9), np.float32))
    lines.append(f"bad {mels / 'bad.npy'}")
    scp = tmp_path / "mels.scp"
    scp.write_text("\n".join(lines) + "\n")

    single = tmp_path / "single"
    assert main(["vocode", "--checkpoint", str(exp), "--scp", str(scp), "--outdir", str(single),
                 "--seed", "7", "--device", "cpu", "-q"]) == 1
    r = torchrun("vocode", "--checkpoint", exp, "--scp", scp, "--outdir", tmp_path / "ddp",
                 "--seed", "7", "--device", "cpu", "-q")
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "bad.npy" in errors[0] and "(64, 9)" in errors[0], r.stderr
    assert "1 of 6 inputs failed: bad" in r.stderr
    names = sorted(p.name for p in single.glob("*.wav"))
    assert names == sorted(p.name for p in (tmp_path / "ddp").glob("*.wav")) == [
        f"u{i}.wav" for i in range(5)]
    for name in names:
        a, _ = load_audio(single / name)
        b, _ = load_audio(tmp_path / "ddp" / name)
        # each file is the same decode in either process (batch size 1, its own seed, one
        # thread): bit-identical
        np.testing.assert_array_equal(a, b, err_msg=name)
