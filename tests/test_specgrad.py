"""SpecGrad's prior: noise shaped by the mel's spectral envelope at PriorGrad's level,
checked against the spectrum it should have, the loss's whitening, and a tiny model
trained and decoded with it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_dump, tiny_config_dict
from wavediff.audio.mel import compress_mel, mel_filterbank
from wavediff.audio.presets import get_preset
from wavediff.config import Config
from wavediff.diffusion import GaussianDiffusion
from wavediff.diffusion.prior import SHAPE_FLOOR, EnergyPrior, SpectralPrior
from wavediff.train.trainer import Trainer
from wavediff.vocoder import Vocoder

HIFIGAN = get_preset("hifigan")
HOP, N_FFT = HIFIGAN.hop_length, HIFIGAN.n_fft
FREQS = torch.arange(N_FFT // 2 + 1) * HIFIGAN.sample_rate / N_FFT


def _stationary_mel(frames: int, level: float) -> torch.Tensor:
    """The hifigan mel of a stationary low-pass magnitude (corner 1 kHz), ``level`` at DC."""
    mag = level / (1.0 + (FREQS / 1000.0) ** 2)
    linear = (mel_filterbank(HIFIGAN) @ mag)[:, None].repeat(1, frames)
    return compress_mel(HIFIGAN, linear)[None]


def _power(x: torch.Tensor) -> torch.Tensor:
    """Mean power per frequency bin over the frames and items of ``x`` (B, T)."""
    win = torch.hann_window(N_FFT)
    spec = torch.stft(x, N_FFT, HOP, N_FFT, win, center=False, return_complex=True)
    return spec.abs().square().mean(dim=(0, 2)) / win.square().sum()


def test_the_noise_has_the_mels_envelope_and_priorgrads_level():
    mel = _stationary_mel(64, 0.5)
    prior = SpectralPrior(HIFIGAN, (0.0, 1.0), floor=0.1)
    shaper = prior.shaper(mel)
    z = torch.randn(32, 64 * HOP, generator=torch.Generator().manual_seed(0))
    noise = shaper.color(z)
    # the level is PriorGrad's: the frame std of the same mel. 2M samples: the std estimate
    # is within ~0.1 % of its value; the window's edges and gain floor leave ~1 %; 3 % is
    # ample and a missing normalisation is off by a factor of 2 or more
    std = float(EnergyPrior(HIFIGAN, (0.0, 1.0), 0.1).frame_std(mel).mean())
    assert abs(float(noise[:, N_FFT:-N_FFT].std()) / std - 1.0) < 0.03
    # the shape is the envelope's: power at 200-500 Hz over power at 5-7 kHz. The
    # envelope falls ~(1 + (f/1k)^2)^-1, i.e. ~130x in power; smoothing, the filterbank's
    # pseudo-inverse and the floor (0.1 in gain, 0.01 in power) keep it above 20x, while
    # white noise (PriorGrad) gives 1x
    power = _power(noise)
    low = power[(FREQS > 200) & (FREQS < 500)].mean()
    high = power[(FREQS > 5000) & (FREQS < 7000)].mean()
    assert float(low / high) > 20.0
    # and the noise's power follows the filter's own gains bin by bin: over 32 x 61 frames
    # a bin's mean power is within ~5 % (chi-square, 3,900 degrees of freedom); 20 % allows
    # the window's spreading between neighbouring bins
    gain = shaper.gain[0, :, 0]
    ratio = power[4:-4] / gain[4:-4].square()
    assert float(ratio.median() - 1.0).__abs__() < 0.2


def test_the_gain_is_floored_and_whitening_undoes_colouring():
    mel = _stationary_mel(32, 0.5)
    prior = SpectralPrior(HIFIGAN, (0.0, 1.0), floor=0.1)
    gain = prior.gain(mel)[0, :, 5]
    level = float(prior.frame_std(mel)[0, 5])
    rms = float(gain.square().mean().sqrt())
    # float32: the rms is the frame std to rounding
    assert abs(rms - level) < 1e-5 * level
    # the floor: no gain below SHAPE_FLOOR of the rms (the renormalisation after the clamp
    # lowers it by the energy the clamp added: under 1 % here, 10 % allowed; without the
    # floor the gain falls below 1e-3 of the rms above fmax), and above fmax (8 kHz, no mel
    # band) the gain sits at the floor
    assert float(gain.min()) >= 0.9 * SHAPE_FLOOR * rms
    assert float(gain[FREQS > 9000].max()) < 2 * SHAPE_FLOOR * rms
    shaper = prior.shaper(mel)
    z = torch.randn(2, 32 * HOP, generator=torch.Generator().manual_seed(1))
    # time-invariant gains: whitening (G^+ D^-1 G) inverts colouring (G^+ D G) up to the
    # circular aliasing of filtering frame by frame (the envelope's response is short) and
    # the ends; measured 1.1e-3 inside, on values up to ~4. Gains applied the wrong way
    # round (D twice) are off by O(1)
    back = shaper.whiten(shaper.color(z))
    inner = slice(N_FFT, -N_FFT)
    assert float((back[:, inner] - z[:, inner]).abs().max()) < 1e-2


def test_the_loss_whitens_with_the_same_filter():
    """The diffusion loss of a denoiser that returns the exact added noise is 0, and one
    that is off by white noise e is charged |L^-1 e|, not |e|."""
    mel = _stationary_mel(16, 0.5).repeat(2, 1, 1)
    diff = GaussianDiffusion([0.1, 0.2, 0.3], prior=SpectralPrior(HIFIGAN, (0.0, 1.0), 0.1))
    x0 = torch.zeros(2, 16 * HOP)
    t = torch.tensor([1, 2])
    z = torch.randn(2, 16 * HOP, generator=torch.Generator().manual_seed(2))
    shaper = diff.noise_shaper(mel)
    added = shaper.color(z)
    sigma = torch.sqrt(1 - diff.alpha_bar[t].float())[:, None]

    def exact(x_t, steps, mel_):
        return x_t / sigma  # x0 = 0: x_t = sigma * L z

    assert float(diff.loss(exact, x0, mel, t=t, noise=z)) < 1e-5
    e = 0.01 * torch.randn(2, 16 * HOP, generator=torch.Generator().manual_seed(3))

    def off(x_t, steps, mel_):
        return x_t / sigma + e

    expected = float((shaper.whiten(added + e) - shaper.whiten(added)).abs().mean())
    got = float(diff.loss(off, x0, mel, t=t, noise=z))
    # the same float32 filters in another order: ~1e-6 relative
    assert abs(got - expected) < 1e-3 * expected
    assert got > 1.5 * float(e.abs().mean())  # the floor's 1/0.1 gain shows up


def test_short_inputs_are_shaped_too():
    prior = SpectralPrior(HIFIGAN, (0.0, 1.0), 0.1)
    for frames in (1, 2, 3):
        shaper = prior.shaper(_stationary_mel(frames, 0.5))
        out = shaper.color(torch.randn(1, frames * HOP))
        assert out.shape == (1, frames * HOP) and torch.isfinite(out).all()
        assert float(out.abs().max()) > 0


@pytest.mark.slow  # trains (4 steps of a tiny model)
def test_specgrad_training_stores_statistics_and_decodes(tmp_path):
    dump = make_dump(tmp_path, n=3, seconds=0.4)
    data = tiny_config_dict(max_steps=4, save_interval=4, log_interval=2, eval_interval=4)
    data["diffusion"] = {"prior": "specgrad", "conditioning": "noise_level"}
    Trainer(Config.from_dict(data), dump, dump, tmp_path / "exp", progress=False).run()
    voc = Vocoder.from_pretrained(tmp_path / "exp")
    energy = voc.config.diffusion.prior_energy
    assert isinstance(voc.diffusion.prior, SpectralPrior)
    assert energy is not None and 0 < energy[0] < energy[1]
    mel = np.load(next(dump.glob("*.npz")))["mel"]
    for sampler in ("fast", "ddim"):
        wav = voc.decode(mel, seed=0, sampler=sampler)
        assert wav.shape == (mel.shape[-1] * HOP,) and torch.isfinite(wav).all()
        assert float(wav.abs().max()) > 0
    assert math.isfinite(float(wav.std()))
