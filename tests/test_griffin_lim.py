"""Griffin-Lim alone (steps=0): the no-network decode and baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.phase import SpectralProjector
from wavediff.cli.main import main
from wavediff.config import Config
from wavediff.diffusion.schedule import GRIFFIN_LIM, plan
from wavediff.errors import ConfigError
from wavediff.model import DiffWave
from wavediff.vocoder import Vocoder


def _vocoder() -> Vocoder:
    cfg = Config.from_dict({"audio": {"preset": "hifigan"},
                            "model": {"residual_layers": 2, "residual_channels": 4,
                                      "dilation_cycle": 2}})
    torch.manual_seed(0)
    return Vocoder(DiffWave.from_config(cfg), cfg)


def _buzz(seconds: float = 0.3) -> torch.Tensor:
    n = int(seconds * 22050) // 256 * 256
    t = torch.arange(n) / 22050
    return sum(0.2 / k * torch.sin(2 * math.pi * 110 * k * t) for k in range(1, 6))[None]


def test_steps_zero_is_griffin_lim_without_the_network(monkeypatch):
    voc = _vocoder()
    assert plan("fast", voc.config.diffusion, 0).sampler == GRIFFIN_LIM
    assert plan("ddim", voc.config.diffusion, 0).network_steps == []

    def never(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(voc.model, "forward", never)
    monkeypatch.setattr(voc.model, "denoise", never)
    mel = voc.mel(_buzz())
    out = voc.decode(mel, steps=0, seed=5, input_preset=None)
    # the same draws and the same 32 projections, one process: bit-identical
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(mel.shape[0], mel.shape[-1] * 256, generator=g)
    expected = SpectralProjector(voc.config.audio, mel).griffin_lim(noise, 32).clamp(-1, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # more projections bring the mel closer (log-mel L1 against the input mel)
    fn = MelSpectrogram(voc.config.audio)
    few = voc.decode(mel, steps=0, consistency=2, seed=5, input_preset=None)
    err_few = float((fn(few) - mel).abs().mean())
    err_many = float((fn(out) - mel).abs().mean())
    assert err_many < 0.7 * err_few, (err_few, err_many)
    with pytest.raises(ConfigError, match="at least one projection"):
        voc.decode(mel, steps=0, consistency=0, input_preset=None)


def test_vocode_steps_zero_writes_griffin_lim_audio(tmp_path, capsys):
    voc = _vocoder()
    voc.save_pretrained(tmp_path / "model")
    mel = voc.mel(_buzz())[0].numpy()
    np.save(tmp_path / "a.npy", mel)
    assert main(["vocode", "--checkpoint", str(tmp_path / "model"), "--outdir",
                 str(tmp_path / "out"), "--steps", "0", "--seed", "1",
                 "--input-preset", "hifigan", str(tmp_path / "a.npy")]) == 0
    assert "no network: Griffin-Lim alone, 32 projections of noise" in capsys.readouterr().err
    audio, sr = sf.read(tmp_path / "out" / "a.wav", dtype="float32")
    assert sr == 22050 and len(audio) == mel.shape[-1] * 256
    fn = MelSpectrogram(voc.config.audio)
    # Griffin-Lim's audio has the mel's spectrum (noise would be far: ~3 in these units)
    assert float((fn(torch.from_numpy(audio)[None])[0] - torch.from_numpy(mel)).abs().mean()) < 1.0
    assert main(["vocode", "--checkpoint", str(tmp_path / "model"), "--outdir",
                 str(tmp_path / "out2"), "--steps", "0", "--consistency", "0",
                 str(tmp_path / "a.npy")]) != 0
