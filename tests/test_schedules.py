"""Searched inference schedules: the search on a closed-form objective, storage by name,
use by name from Python and the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from conftest import wavediff_cli
from wavediff.config import DiffusionConfig
from wavediff.errors import ConfigError
from wavediff.inference.schedule_search import (
    geometric, read_schedules, search_schedule, valid, write_schedule)
from wavediff.vocoder import Vocoder

TRAIN = DiffusionConfig().training_betas()


def test_search_finds_the_minimum_of_a_known_objective():
    target = [3e-4, 4e-3, 0.06, 0.4]

    def objective(betas):
        return sum((math.log(b) - math.log(t)) ** 2 for b, t in zip(betas, target))

    grid_only, grid_err = search_schedule(objective, TRAIN, 4, grid=6, rounds=0)
    best, err = search_schedule(objective, TRAIN, 4, grid=6, rounds=4)
    # the same float64 objective of the same betas: equal, approx's rel=1e-6 is slack
    assert err <= grid_err and err == pytest.approx(objective(best))
    assert err < 0.05  # within about 12% of each target beta
    assert valid(TRAIN, best)


def test_validity_follows_the_training_noise_range():
    assert valid(TRAIN, geometric(1e-4, 0.5, 6))
    assert not valid(TRAIN, [1e-5, 0.5])  # first beta below the first training beta
    assert not valid(TRAIN, [0.9] * 6)  # more noise than the training chain adds


def test_schedules_are_stored_and_reused_by_name(trained_exp, tmp_path):
    exp = trained_exp["exp"]
    r = wavediff_cli("tune-schedule", "--checkpoint", exp, "--dev-dumpdir",
                     trained_exp["dump"] / "dev", "--steps", "2", "--grid", "2", "--rounds", "1",
                     "--utterances", "1", "--seconds", "0.2", "--name", "fast2")
    assert r.returncode == 0, r.stderr
    stored = read_schedules(exp)
    assert list(stored) == ["fast2"] and len(stored["fast2"]) == 2
    assert yaml.safe_load((exp / "schedules.yaml").read_text()) == {"fast2": stored["fast2"]}
    voc = Vocoder.from_pretrained(exp)
    mel = np.load(next((trained_exp["dump"] / "dev").glob("*.npz")))["mel"]
    by_name = voc.decode(mel, schedule="fast2", seed=0)
    by_betas = voc.decode(mel, schedule=stored["fast2"], seed=0)
    # the same betas, decode and seed in one process: bit-identical
    assert np.array_equal(by_name.numpy(), by_betas.numpy())
    with pytest.raises(ConfigError, match="no schedule named 'nope'.*fast2"):
        voc.decode(mel, schedule="nope")
    out = tmp_path / "out"
    r = wavediff_cli("vocode", "--checkpoint", exp, "--outdir", out, "--schedule", "fast2",
                     "--seed", "0", trained_exp["root"] / "dev_wavs")
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads((out / "vocode_stats.json").read_text())["steps"] == 2
    r = wavediff_cli("vocode", "--checkpoint", exp, "--outdir", out, "--schedule", "nope",
                     trained_exp["root"] / "dev_wavs")
    assert r.returncode == 1 and "no schedule named 'nope'" in r.stderr
    # a pretrained export carries the schedules along
    folder = voc.save_pretrained(tmp_path / "m")
    assert Vocoder.from_pretrained(folder).schedules == stored


def test_schedule_names_are_plain_words(tmp_path):
    with pytest.raises(ConfigError, match="plain word"):
        write_schedule(tmp_path, "../x", [0.1])
