"""Precision chosen from what the machine reports: train.amp auto, CPU bf16 training,
decoding precision by a cached calibration, bf16 decoding close to float32."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config_dict
from wavediff import hardware
from wavediff.config import Config
from wavediff.errors import ConfigError
from wavediff.inference import calibrate
from wavediff.vocoder import Vocoder


@pytest.fixture()
def no_override(monkeypatch):
    monkeypatch.delenv("WAVEDIFF_PRECISION", raising=False)


def test_auto_follows_native_bf16(monkeypatch, no_override):
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: False)
    dtype, why = hardware.resolve_precision("auto", "cpu")
    assert dtype is None and "no native bf16" in why
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: True)
    dtype, why = hardware.resolve_precision("auto", "cpu")
    assert dtype is torch.bfloat16 and "natively" in why


def test_explicit_choices_and_the_override(monkeypatch, no_override):
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: False)
    dtype, why = hardware.resolve_precision("bf16", "cpu")
    assert dtype is torch.bfloat16 and "emulated" in why  # honoured, with the warning
    assert hardware.resolve_precision("none", "cpu")[0] is None  # the older spelling of fp32
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        hardware.resolve_precision("fp16", "cpu")
    monkeypatch.setenv("WAVEDIFF_PRECISION", "bf16")
    assert hardware.resolve_precision("auto", "cpu")[0] is torch.bfloat16
    monkeypatch.setenv("WAVEDIFF_PRECISION", "fast")
    with pytest.raises(ConfigError, match="WAVEDIFF_PRECISION"):
        hardware.resolve_precision("auto", "cpu")


def test_machine_summary_names_the_cpu():
    info = hardware.machine_summary()
    assert info["cpu"] and info["threads"] >= 1 and isinstance(info["native_bf16"], bool)


def test_cpu_bf16_training_runs_under_autocast(trained_exp):
    from wavediff.train.trainer import Trainer

    cfg = Config.from_dict(tiny_config_dict(amp="bf16", max_steps=1))
    trainer = Trainer(cfg, trained_exp["dump"] / "train", None, trained_exp["root"] / "bf16",
                      progress=False)
    seen = []
    hook = trainer.model.output_projection.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    wave = torch.randn(2, 2048) * 0.1
    mel = torch.randn(2, 80, 8) - 5
    out = trainer.train_step(wave, mel)
    hook.remove()
    assert seen == [torch.bfloat16] and out["finite"]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.ema.parameters())


def test_calibration_is_measured_once_and_cached(monkeypatch, tmp_path, trained_exp, no_override):
    monkeypatch.setenv("WAVEDIFF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibrate, "cpu_native_bf16", lambda: True)
    calls = []

    def fake_time(model, precision):
        calls.append(precision)
        return {"fp32": 0.30, "bf16": 0.10}[precision]

    monkeypatch.setattr(calibrate, "_time_step", fake_time)
    voc = Vocoder.from_pretrained(trained_exp["exp"])
    first = calibrate.resolve_decode_precision("auto", voc.model, torch.device("cpu"))
    # bf16 measured faster, and auto still decodes in float32 (bf16 costs MCD above fmax)
    assert first[0] == "fp32" and "bf16 is faster" in first[1] and "measured now" in first[1]
    assert calls == ["fp32", "bf16"]
    again = calibrate.resolve_decode_precision("auto", voc.model, torch.device("cpu"))
    assert again[0] == "fp32" and "cached" in again[1] and len(calls) == 2
    cache = json.loads((tmp_path / "calibration.json").read_text())
    (entry,) = cache.values()
    assert entry["choice"] == "bf16" and entry["seconds_per_step"] == {"fp32": 0.30, "bf16": 0.10}
    monkeypatch.setattr(calibrate, "cpu_native_bf16", lambda: False)
    assert calibrate.resolve_decode_precision("auto", voc.model, torch.device("cpu"))[0] == "fp32"


def test_bf16_decoding_is_close_to_float32(trained_exp):
    """The bf16 difference is far below what another noise draw changes."""
    import numpy as np

    from wavediff.audio.mel import MelSpectrogram

    fp32 = Vocoder.from_pretrained(trained_exp["exp"], precision="fp32")
    bf16 = Vocoder.from_pretrained(trained_exp["exp"], precision="bf16")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    mel = np.load(next((trained_exp["dump"] / "dev").glob("*.npz")))["mel"]
    a, b = fp32.decode(mel, seed=0), bf16.decode(mel, seed=0)
    other = fp32.decode(mel, seed=1)
    mel_fn = MelSpectrogram(fp32.config.audio)

    def dist(x, y):
        return float((mel_fn(x) - mel_fn(y)).abs().mean())

    assert dist(a, b) < 0.25 * dist(a, other), (dist(a, b), dist(a, other))
