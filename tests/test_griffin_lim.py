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
from wavediff.diffusion.noise import GL_START, X_T, PositionalNoise
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
    draws = PositionalNoise.from_generator(torch.Generator().manual_seed(5), mel.shape[0])
    noise = draws.draw(GL_START, 0, mel.shape[-1] * 256)
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


@pytest.mark.parametrize("gl_init, start", [("noise", "noise"),
                                             ("phase-vocoder", "the phase-vocoder phase")])
def test_vocode_steps_zero_writes_griffin_lim_audio(tmp_path, capsys, gl_init, start):
    voc = _vocoder()
    voc.save_pretrained(tmp_path / "model")
    mel = voc.mel(_buzz())[0].numpy()
    np.save(tmp_path / "a.npy", mel)
    assert main(["vocode", "--checkpoint", str(tmp_path / "model"), "--outdir",
                 str(tmp_path / "out"), "--steps", "0", "--seed", "1", "--gl-init", gl_init,
                 "--input-preset", "hifigan", str(tmp_path / "a.npy")]) == 0
    assert f"no network: Griffin-Lim alone, 32 projections of {start}" in capsys.readouterr().err
    audio, sr = sf.read(tmp_path / "out" / "a.wav", dtype="float32")
    assert sr == 22050 and len(audio) == mel.shape[-1] * 256
    fn = MelSpectrogram(voc.config.audio)
    # Griffin-Lim's audio has the mel's spectrum (noise would be far: ~3 in these units)
    assert float((fn(torch.from_numpy(audio)[None])[0] - torch.from_numpy(mel)).abs().mean()) < 1.0
    if gl_init == "phase-vocoder":  # no noise: what the API decodes with any seed (16-bit PCM)
        expected = voc.decode(mel, steps=0, seed=9, input_preset=None, gl_init=gl_init).numpy()
        np.testing.assert_allclose(audio, expected, atol=2.0 / 32768)
    assert main(["vocode", "--checkpoint", str(tmp_path / "model"), "--outdir",
                 str(tmp_path / "out2"), "--steps", "0", "--consistency", "0",
                 str(tmp_path / "a.npy")]) != 0


class _Recorder(torch.nn.Module):
    """eps = 0, and every input recorded."""
    hop_length = 4

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, steps, mel):
        self.seen.append(x.clone())
        return torch.zeros_like(x)


@pytest.mark.parametrize("sampler", ["fast", "ddim", "ddpm"])
def test_the_chain_starts_around_init(sampler):
    from wavediff.diffusion import GaussianDiffusion, get_sampler
    from wavediff.diffusion.schedule import SamplingPlan, alpha_bar

    betas = [1e-4 + i * (0.05 - 1e-4) / 49 for i in range(50)]
    diffusion = GaussianDiffusion(betas)
    mel, init = torch.zeros(2, 3, 5), torch.linspace(-0.5, 0.5, 20).expand(2, 20)
    noise = torch.randn(2, 20, generator=torch.Generator().manual_seed(0))
    rec = _Recorder()
    chosen = {"fast": SamplingPlan.fast(betas, [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5]),
              "ddim": SamplingPlan.ddim(betas, 6), "ddpm": SamplingPlan.ddpm(betas)}[sampler]
    get_sampler(sampler)(rec, diffusion, mel, schedule=chosen, noise=noise, init=init,
                         generator=torch.Generator().manual_seed(1))
    first = {"fast": alpha_bar([1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5])[-1],
             "ddim": diffusion.alpha_bar[-1], "ddpm": diffusion.alpha_bar[-1]}[sampler]
    a = float(first)
    # x_T = sqrt(abar_T) init + sqrt(1 - abar_T) noise: a few float32 operations
    torch.testing.assert_close(rec.seen[0], math.sqrt(a) * init + math.sqrt(1 - a) * noise,
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="init must have shape"):
        get_sampler(sampler)(rec, diffusion, mel, schedule=chosen, noise=noise,
                             init=init[:, :8])
    # diffusion.start_noise: that share of the first level's noise on the start (0: the
    # start itself, scaled; the network is told the level all the same)
    for share in (0.0, 0.3):
        quiet, rec = GaussianDiffusion(betas, start_noise=share), _Recorder()
        get_sampler(sampler)(rec, quiet, mel, schedule=chosen, noise=noise, init=init,
                             generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(
            rec.seen[0], math.sqrt(a) * init + share * math.sqrt(1 - a) * noise,
            rtol=0, atol=1e-6)


def test_start_noise_is_checked():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="diffusion.start_noise"):
            Config.from_dict({"diffusion": {"start_noise": bad}})


def test_a_model_configured_to_start_from_griffin_lim_decodes_from_it(monkeypatch):
    voc = _vocoder()
    voc.config.diffusion.start_iters = 8
    mel = voc.mel(_buzz())
    seen = []
    real = voc.model.denoise

    def spy(x, steps, conds):
        seen.append(x.clone())
        return real(x, steps, conds)

    monkeypatch.setattr(voc.model, "denoise", spy)
    voc2 = Vocoder(voc.model, voc.config, engine="reference")
    out = voc2.decode(mel, schedule=[1e-4, 0.1], seed=3, input_preset=None, consistency=0)
    assert out.shape == (1, mel.shape[-1] * 256)
    gl = voc2.decode(mel, steps=0, consistency=8, seed=3, input_preset=None)
    # the draws: Griffin-Lim's starting noise is the GL_START stream (so its decode is the
    # steps=0 decode of the same seed), x_T's the X_T stream; abar_T of the schedule is
    # 0.9999 * 0.9
    draws = PositionalNoise.from_generator(torch.Generator().manual_seed(3), 1)
    z = draws.draw(X_T, 0, gl.shape[-1])
    a = 0.9999 * 0.9
    # float32 arithmetic of a few operations on values below 1
    torch.testing.assert_close(seen[0], math.sqrt(a) * gl + math.sqrt(1 - a) * z,
                               rtol=0, atol=1e-5)
