"""Training: exact resume, non-finite steps, and an overfit test that proves learning."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import make_corpus, tiny_config_dict
from wavediff.audio.io import load_audio
from wavediff.cli.main import main
from wavediff.config import Config
from wavediff.checkpoint import load_checkpoint
from wavediff.train.trainer import Trainer, TrainingError
from wavediff.vocoder import Vocoder

pytestmark = pytest.mark.slow  # end-to-end: trains tiny models


@pytest.fixture()
def dumps(tmp_path):
    make_corpus(tmp_path / "wavs", n=3, seconds=0.5)
    assert main(["preprocess", "--wav-dir", str(tmp_path / "wavs"),
                 "--dumpdir", str(tmp_path / "dump"), "-q"]) == 0
    return tmp_path / "dump"


def _config(**train) -> Config:
    return Config.from_dict(tiny_config_dict(**train))


def test_resume_is_exact(dumps, tmp_path):
    cfg = _config(max_steps=6, save_interval=3, log_interval=3)
    straight = Trainer(cfg, dumps, None, tmp_path / "a", progress=False)
    straight.run()

    first = Trainer(_config(max_steps=3, save_interval=3, log_interval=3), dumps, None,
                    tmp_path / "b", progress=False)
    first.run()
    resumed = Trainer(cfg, dumps, None, tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 3
    resumed.run()

    a = load_checkpoint(tmp_path / "a")
    b = load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 6
    # the same steps on the same batches and noise in one process, the optimiser state saved
    # and read back bit for bit: bit-identical
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=0, atol=0, msg=key)
    # and the run really moved the weights
    init = Trainer(_config(), dumps, None, tmp_path / "c", progress=False).model.state_dict()
    assert not torch.equal(init["output_projection.weight"], a["model"]["output_projection.weight"])


def test_resume_refuses_a_different_model(dumps, tmp_path):
    Trainer(_config(max_steps=2, save_interval=2), dumps, None, tmp_path / "e", progress=False).run()
    other = Config.from_dict({**tiny_config_dict(max_steps=4),
                              "model": {**tiny_config_dict()["model"], "residual_channels": 8}})
    with pytest.raises(Exception, match="'model' config differs"):
        Trainer(other, dumps, None, tmp_path / "e", resume=True, progress=False)


def test_nonfinite_steps_are_skipped_and_counted_then_stop(dumps, tmp_path, monkeypatch):
    trainer = Trainer(_config(max_steps=50, max_nonfinite_steps=3), dumps, None, tmp_path / "n",
                      progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real_loss = trainer.diffusion.loss
    monkeypatch.setattr(trainer.diffusion, "loss",
                        lambda *a, **k: real_loss(*a, **k) * float("nan"))
    wave, mel = torch.zeros(2, 2048), torch.full((2, 80, 8), -11.5)
    for _ in range(2):
        out = trainer.train_step(wave, mel)
        assert not out["finite"]
    assert trainer.nonfinite_total == 2
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # untouched: nothing NaN was written into the weights
    with pytest.raises(TrainingError, match="3 non-finite steps in a row"):
        trainer.train_step(wave, mel)


def test_overfit_one_utterance_beats_untrained(tmp_path):
    """A tiny model trained on one utterance copy-synthesises it far better than untrained."""
    make_corpus(tmp_path / "wavs", n=1, seconds=0.6, seed=3)
    assert main(["preprocess", "--wav-dir", str(tmp_path / "wavs"),
                 "--dumpdir", str(tmp_path / "dump"), "-q"]) == 0
    cfg = Config.from_dict({
        **tiny_config_dict(max_steps=300, batch_size=4, crop_samples=4096, learning_rate=3e-3,
                           save_interval=300, log_interval=100, ema_decay=0.99),
        "model": {"residual_layers": 6, "residual_channels": 24, "dilation_cycle": 3,
                  "step_embedding_dim": 32, "step_hidden_dim": 64},
    })
    trainer = Trainer(cfg, tmp_path / "dump", None, tmp_path / "exp", progress=False)
    wav, _ = load_audio(next((tmp_path / "wavs").iterdir()))

    def distance(vocoder: Vocoder) -> float:
        out = vocoder.copy_synthesis(wav, seed=0)
        ref = vocoder.mel(wav)
        return float((vocoder.mel(out) - ref).abs().mean())

    untrained = distance(Vocoder(copy.deepcopy(trainer.model), cfg))
    trainer.run()
    trained = distance(Vocoder.from_pretrained(tmp_path / "exp"))
    assert trained < 0.6 * untrained, (
        f"log-mel L1 of copy-synthesis: untrained {untrained:.3f}, trained {trained:.3f}")
    assert np.isfinite(trained)


def test_train_log_is_plain_timestamped_lines(trained_exp):
    """Through the CLI with stderr not a terminal: no progress bar, plain lines in train.log."""
    import re

    text = (trained_exp["exp"] / "train.log").read_text()
    assert "\r" not in text
    lines = text.splitlines()
    step_lines = [ln for ln in lines if "train/loss = " in ln]
    assert len(step_lines) == 4  # log_interval 5, 20 steps
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO wavediff\.train: "
    assert all(re.match(stamp + r"\(steps: \d+\) train/loss = [\d.]+, grad_norm = ", ln)
               for ln in step_lines), step_lines
    assert any("step 20: dev/loss" in ln for ln in lines)
    assert any("precision: float32" in ln for ln in lines)


def test_training_time_budget_stops_and_resume_respects_it(dumps, tmp_path):
    cfg = _config(max_steps=50, save_interval=50, log_interval=50, max_minutes=1e-6)
    trainer = Trainer(cfg, dumps, None, tmp_path / "b", progress=False)
    last = trainer.run()
    assert trainer.step == 2  # the budget is seen after the first step, the second stops
    assert last.name == "checkpoint-2steps.pt"
    state = load_checkpoint(last)
    assert 0 < state["train_seconds"] < 60
    again = Trainer(cfg, dumps, None, tmp_path / "b", resume=True, progress=False)
    assert again.run() == last and again.step == 2  # used up: no step is trained
    more = Trainer(_config(max_steps=3, save_interval=50, log_interval=50), dumps, None,
                   tmp_path / "b", resume=True, progress=False)
    more.run()
    assert more.step == 3 and more.train_seconds > state["train_seconds"]
