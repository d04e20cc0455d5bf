"""Spectral consistency (wavediff.audio.phase) and the samplers' projection hook."""

from __future__ import annotations

import math

import pytest
import torch

from wavediff.audio.mel import MelSpectrogram, mel_filterbank
from wavediff.audio.phase import SpectralProjector, mel_to_magnitude
from wavediff.audio.presets import get_preset
from wavediff.diffusion import GaussianDiffusion, SamplingPlan, sample_ddim, sample_fast
from wavediff.errors import MelError

CFG = get_preset("hifigan")


def harmonic(seconds: float = 0.5, f0: float = 110.0, seed: int = 0) -> torch.Tensor:
    """A buzz with a few harmonics and a little noise: (1, T), T a multiple of the hop."""
    n = int(seconds * CFG.sample_rate) // CFG.hop_length * CFG.hop_length
    t = torch.arange(n, dtype=torch.float64) / CFG.sample_rate
    g = torch.Generator().manual_seed(seed)
    x = sum(0.2 / k * torch.sin(2 * math.pi * f0 * k * t) for k in range(1, 8))
    return (x + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)).unsqueeze(0)


def spectral_convergence(a: torch.Tensor, b: torch.Tensor) -> float:
    window = torch.hann_window(CFG.win_length, dtype=torch.float64)
    sa = torch.stft(a, CFG.n_fft, CFG.hop_length, window=window, return_complex=True).abs()
    sb = torch.stft(b, CFG.n_fft, CFG.hop_length, window=window, return_complex=True).abs()
    return float(torch.linalg.norm(sa - sb) / torch.linalg.norm(sb))


def test_magnitudes_are_non_negative_and_give_back_the_mel():
    wav = harmonic()
    mel = MelSpectrogram(CFG)(wav)
    mag = mel_to_magnitude(CFG, mel)
    assert mag.shape == (1, CFG.n_fft // 2 + 1, mel.shape[-1]) and (mag >= 0).all()
    linear = MelSpectrogram(CFG).decompress(mel).double()
    rebuilt = mel_filterbank(CFG).double() @ mag.double()
    assert float(torch.linalg.norm(rebuilt - linear) / torch.linalg.norm(linear)) < 0.05
    with pytest.raises(MelError, match="shape"):
        mel_to_magnitude(CFG, mel[:, :10])


def test_projection_onto_the_true_magnitudes_leaves_a_waveform_unchanged():
    wav = harmonic()
    proj = SpectralProjector(CFG, MelSpectrogram(CFG)(wav))
    x = torch.nn.functional.pad(wav.unsqueeze(1), (proj.pad, proj.pad), mode="reflect").squeeze(1)
    spec = torch.stft(x, CFG.n_fft, CFG.hop_length, window=proj.window, center=False,
                      return_complex=True)
    proj.magnitude = spec.abs()
    out = proj(wav)
    assert out.shape == wav.shape and out.dtype == wav.dtype
    torch.testing.assert_close(out, wav, atol=1e-9, rtol=0)


def test_griffin_lim_from_noise_approaches_the_mels_magnitudes():
    wav = harmonic()
    proj = SpectralProjector(CFG, MelSpectrogram(CFG)(wav))
    noise = 0.1 * torch.randn(wav.shape, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64)
    before = spectral_convergence(noise, wav)
    after = spectral_convergence(proj.griffin_lim(noise, 30), wav)
    assert before > 0.9 and after < 0.35, (before, after)
    with pytest.raises(MelError, match="waveform"):
        proj(wav[:, :-1])


def band_energy(x: torch.Tensor, lo: float, hi: float) -> float:
    spec = torch.fft.rfft(x[0])
    freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / CFG.sample_rate)
    return float(spec[(freqs >= lo) & (freqs < hi)].abs().square().sum())


def test_keep_uncovered_leaves_the_band_above_fmax_as_the_input_has_it():
    wav = harmonic()  # its harmonics lie below 1 kHz
    n = wav.shape[-1]
    t = torch.arange(n, dtype=torch.float64) / CFG.sample_rate
    high = 0.1 * torch.sin(2 * math.pi * 9500.0 * t).unsqueeze(0)  # above fmax = 8 kHz
    assert CFG.fmax == 8000.0
    proj = SpectralProjector(CFG, MelSpectrogram(CFG)(wav))
    x = wav + high
    plain, kept = proj(x), proj(x, keep_uncovered=True)
    top = band_energy(high, 8500.0, 11025.0)
    # a plain projection empties the band no mel band covers; keep_uncovered leaves it be
    assert band_energy(plain, 8500.0, 11025.0) < 1e-3 * top
    assert abs(band_energy(kept, 8500.0, 11025.0) / top - 1.0) < 0.01
    # below fmax both take the mel's magnitudes: the same waveform there
    low = spectral_convergence(proj(wav), wav)
    below_7k = torch.fft.rfftfreq(n, 1 / CFG.sample_rate) < 7000.0
    for out in (plain, kept):
        lowpassed = torch.fft.irfft(torch.fft.rfft(out) * below_7k, n=n)
        assert spectral_convergence(lowpassed, wav) < low + 0.02
    # Griffin-Lim iterations inside the chain keep it too
    many = proj.griffin_lim(x, 3, keep_uncovered=True)
    assert band_energy(many, 8500.0, 11025.0) / top > 0.99


class _Zero(torch.nn.Module):
    hop_length = 4

    def forward(self, x, steps, mel):
        return torch.zeros_like(x)


@pytest.mark.parametrize("sampler", [sample_fast, sample_ddim])
def test_the_samplers_return_the_projected_clean_estimate(sampler):
    diffusion = GaussianDiffusion([1e-4 + i * (0.05 - 1e-4) / 49 for i in range(50)])
    # 6 network steps either way: DiffWave's fast schedule, or 6 DDIM steps
    chosen = (SamplingPlan.fast(diffusion.betas, [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5])
              if sampler is sample_fast else SamplingPlan.ddim(diffusion.betas, 6))
    mel = torch.zeros(2, 3, 5)
    g = torch.Generator().manual_seed(0)
    target = torch.linspace(-0.5, 0.5, 20).expand(2, 20)
    seen = []

    def project(x0):
        seen.append(x0.clone())
        return target.clone()

    out = sampler(_Zero(), diffusion, mel, schedule=chosen, generator=g, project=project)
    torch.testing.assert_close(out, target)  # the last step lands on the projection
    assert len(seen) == 6
    plain = sampler(_Zero(), diffusion, mel, schedule=chosen,
                    generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(plain, target)


def test_vocoder_consistency_default_off_and_checked():
    from wavediff.config import Config
    from wavediff.errors import ConfigError
    from wavediff.model import DiffWave
    from wavediff.vocoder import Vocoder

    cfg = Config.from_dict({"audio": {"preset": "hifigan"},
                            "model": {"residual_layers": 2, "residual_channels": 4,
                                      "dilation_cycle": 2}})
    torch.manual_seed(0)
    voc = Vocoder(DiffWave.from_config(cfg), cfg)
    mel = MelSpectrogram(CFG)(harmonic(0.2).float())
    plain = voc.decode(mel, steps=2, seed=0)
    torch.testing.assert_close(voc.decode(mel, steps=2, seed=0, consistency=0), plain,
                               rtol=0, atol=0)
    projected = voc.decode(mel, steps=2, seed=0, consistency=3)
    assert projected.shape == plain.shape and not torch.allclose(projected, plain)
    # the projected output's spectrum is closer to the mel's (log-mel L1); the network is
    # untrained here: the loud noise it makes above fmax is kept (keep_uncovered), and the
    # clamp to [-1, 1] spreads some of it below
    def err(w):
        return float((MelSpectrogram(CFG)(w) - mel).abs().mean())
    assert err(projected) < 0.6 * err(plain)
    with pytest.raises(ConfigError, match="consistency"):
        voc.decode(mel, consistency=-1)
    with pytest.raises(ConfigError, match="consistency_iters"):
        Config.from_dict({"diffusion": {"consistency_iters": 1000}})


@pytest.mark.parametrize("name", ["hifigan", "tacotron2"])
def test_projection_in_blocks_equals_the_whole(name, monkeypatch):
    # long inputs are solved and projected a block of frames at a time; every frame is its
    # own NNLS problem and its own FFT, and the overlap-add is local, so the blocks give what
    # the whole input gives up to rounding. Not bit for bit: the float32 NNLS runs its
    # matrix products on (K, frames) blocks of another width, and the BLAS kernel a CPU
    # picks sums them in another order (an AVX2-only EPYC differed from the whole in 9% of
    # the magnitudes, by at most 7.6e-5 with magnitudes up to ~18).
    import wavediff.audio.phase as phase

    cfg = get_preset(name)
    g = torch.Generator().manual_seed(3)
    frames = 37
    wav = 0.2 * torch.randn(2, frames * cfg.hop_length, generator=g, dtype=torch.float64)
    mel = MelSpectrogram(cfg)(0.3 * torch.randn(2, frames * cfg.hop_length, generator=g))
    mel = mel[..., :frames]
    whole_proj = SpectralProjector(cfg, mel)
    whole = whole_proj(wav)
    monkeypatch.setattr(phase, "BLOCK_FRAMES", 5)
    blocked = SpectralProjector(cfg, mel)
    assert blocked.magnitude.dtype == torch.float32  # half the memory of float64
    # NNLS: 50 float32 FISTA iterations; rounding (6e-8 relative per operation, sums of up
    # to 513 terms, momentum up to 2x) leaves differences of order 1e-5 of the largest
    # magnitude; 1e-4 of it leaves room for any kernel and still catches a misplaced block
    # (a frame of another block differs by O(1) of the largest magnitude)
    scale = float(whole_proj.magnitude.abs().max())
    torch.testing.assert_close(blocked.magnitude, whole_proj.magnitude, rtol=0,
                               atol=1e-4 * scale)
    # the projection itself is float64 FFTs and overlap-add: with the same magnitudes the
    # blocks agree to float64 rounding (1e-9 is ~1e6 ulps of the 0.2-scale samples)
    blocked.magnitude = whole_proj.magnitude
    torch.testing.assert_close(blocked(wav), whole, rtol=0, atol=1e-9)
