"""Where Griffin-Lim starts (``diffusion.gl_init``, ``gl_init=``, ``--gl-init``): from the
seed's noise, or from the phase a phase-locked vocoder gives the mel's magnitudes, which
keeps a periodic signal periodic; the chain's start and conditioning follow it; streams
and the exported decoders decode it (tests/test_stream.py, EXPORT_CASES in
tests/conftest.py); ``vocode --gl-init``: tests/test_griffin_lim.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import tiny_config_dict, tiny_vocoder, wavediff_cli
from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.phase import (
    PhaseVocoder, SpectralProjector, phase_vocoder_phase, phase_vocoder_start,
)
from wavediff.audio.presets import get_preset
from wavediff.config import Config
from wavediff.errors import ConfigError
from wavediff.inference.decode import chain_inputs, griffin_lim

SR, HOP, N_FFT = 22050, 256, 1024
LAG = 200  # samples per period: F0 = 110.25 Hz, an exactly periodic test signal


def _buzz(seconds: float = 1.0) -> torch.Tensor:
    """A voiced-like tone: F0 SR / LAG with eight decaying harmonics, (1, T)."""
    n = int(seconds * SR) // HOP * HOP
    t = torch.arange(n, dtype=torch.float64) / SR
    f0 = SR / LAG
    x = sum(0.25 / k * torch.sin(2 * math.pi * f0 * k * t + 0.7 * k) for k in range(1, 9))
    return x.float()[None]


def _periodicity(w: torch.Tensor) -> float:
    """Normalised correlation of the middle of ``w`` with itself one period later."""
    x = w[0].double()
    a, b = x[2000:-2000 - LAG], x[2000 + LAG:-2000]
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_a_stationary_peak_advances_by_its_frequency_and_its_lobe_alternates():
    k0, frames = 40, 6
    mag = torch.zeros(1, N_FFT // 2 + 1, frames, dtype=torch.float64)
    mag[0, k0 - 1], mag[0, k0], mag[0, k0 + 1] = 0.5, 1.0, 0.5  # a symmetric peak: on the bin
    phase = phase_vocoder_phase(mag, HOP, N_FFT)[0]
    step = (phase[k0, 1:] - phase[k0, :-1]).numpy()
    expected = 2 * math.pi * k0 * HOP / N_FFT
    np.testing.assert_allclose(np.angle(np.exp(1j * (step - expected))), 0.0, atol=1e-9)
    # the lobe's neighbours: pi apart, frame after frame
    diff = (phase[k0 + 1] - phase[k0]).numpy()
    np.testing.assert_allclose(np.cos(diff), -1.0, atol=1e-9)
    # an off-bin peak (parabola through the log-magnitudes) advances by its own frequency
    mag[0, k0 - 1], mag[0, k0 + 1] = 0.3, 0.7
    off = phase_vocoder_phase(mag, HOP, N_FFT)[0]
    lm = np.log([0.3, 1.0, 0.7])
    shift = 0.5 * (lm[0] - lm[2]) / (lm[0] - 2 * lm[1] + lm[2])
    assert 0.1 < shift < 0.5
    expected = 2 * math.pi * (k0 + shift) * HOP / N_FFT
    step = (off[k0, 1:] - off[k0, :-1]).numpy()
    np.testing.assert_allclose(np.angle(np.exp(1j * (step - expected))), 0.0, atol=1e-9)


def test_griffin_lim_from_the_phase_vocoder_keeps_a_tone_periodic():
    cfg = get_preset("hifigan")
    buzz = _buzz()
    mel = MelSpectrogram(cfg)(buzz)
    assert _periodicity(buzz) > 0.99
    gen = torch.Generator().manual_seed(0)
    scores = {}
    for init in ("noise", "phase-vocoder"):
        w = griffin_lim(cfg, mel, 8, generator=gen, init=init)
        assert w.shape == buzz.shape
        scores[init] = _periodicity(w)
        # either way the projections reach the mel's spectrum
        assert float((MelSpectrogram(cfg)(w) - mel).abs().mean()) < 0.5
    # measured: 0.995 against 0.87-0.91 (three seeds of noise); the aperiodic part shrinks
    # twenty-fold, a quarter is asked
    assert scores["phase-vocoder"] > 0.95, scores
    assert 1.0 - scores["phase-vocoder"] < 0.25 * (1.0 - scores["noise"]), scores
    # the start itself: the magnitudes with that phase, no noise, deterministic (the same
    # computation twice in one process, so the same kernels: bit-equal on any CPU)
    projector = SpectralProjector(cfg, mel)
    start = phase_vocoder_start(cfg, mel, projector)
    torch.testing.assert_close(start, phase_vocoder_start(cfg, mel, projector), rtol=0, atol=0)
    assert _periodicity(start) > 0.9
    # in pieces, a vocoder carried from piece to piece: the same start (samples away from
    # the cut, which overlap-add joins from frames of both pieces)
    vocoder = PhaseVocoder(HOP, N_FFT)
    parts = [phase_vocoder_start(cfg, m, SpectralProjector(cfg, m), vocoder)
             for m in (mel[..., :30], mel[..., 30:])]
    cut = 30 * HOP
    torch.testing.assert_close(parts[0][:, :cut - N_FFT], start[:, :cut - N_FFT], rtol=0,
                               atol=1e-5)
    torch.testing.assert_close(parts[1][:, N_FFT:], start[:, cut + N_FFT:], rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="must be one of noise, phase-vocoder"):
        griffin_lim(cfg, mel, 2, generator=None, init="zeros")


def test_the_phase_vocoder_and_the_projector_share_one_float64_solve(monkeypatch):
    import wavediff.audio.phase as phase

    cfg = get_preset("hifigan")
    mel = MelSpectrogram(cfg)(_buzz(0.3))
    precise = SpectralProjector(cfg, mel, precise=True)
    assert precise.precise_magnitude.dtype == torch.float64
    assert precise.magnitude.dtype == torch.float32
    # the projector's magnitudes are the float64 solution rounded: the same float64 tensor
    # cast once more here, a rounding with no kernel in it, so bit-equal on any CPU
    torch.testing.assert_close(precise.magnitude, precise.precise_magnitude.float(),
                               rtol=0, atol=0)
    # and near the float32 solve (its iterates round differently: measured 2.8e-6 of the
    # largest magnitude apart; 1e-4 of it allowed for other CPUs' kernels)
    plain = SpectralProjector(cfg, mel)
    assert plain.precise_magnitude is None
    scale = float(plain.magnitude.max())
    torch.testing.assert_close(plain.magnitude, precise.magnitude, rtol=0, atol=1e-4 * scale)
    start = phase_vocoder_start(cfg, mel, plain)  # solves again, in float64
    calls = []
    real = phase.mel_to_magnitude
    monkeypatch.setattr(phase, "mel_to_magnitude",
                        lambda *a, **k: calls.append(k.get("dtype")) or real(*a, **k))
    shared = phase_vocoder_start(cfg, mel, precise)
    assert calls == []  # no second solve: the projector's float64 magnitudes are the start's
    # the same phase; the magnitudes differ as above (measured 2e-7 apart, peak 0.71)
    torch.testing.assert_close(shared, start, rtol=0, atol=1e-5)
    # a decode from the phase-vocoder start builds its projector so: one solve in all
    griffin_lim(cfg, mel, 2, generator=None, init="phase-vocoder")
    assert calls == [torch.float64], calls
    calls.clear()
    chain_inputs(mel, generator=torch.Generator().manual_seed(0), audio=cfg, consistency=2,
                 condition_iters=2, gl_init="phase-vocoder")
    assert calls == [torch.float64], calls


def test_decode_takes_gl_init_from_the_call_or_the_config():
    voc = tiny_vocoder()
    mel = voc.mel(_buzz(0.4))
    # exact comparisons below: the same arithmetic twice in one process (only the seed or
    # where the setting comes from differs), so the same kernels on any CPU
    noise0 = voc.decode(mel, steps=0, seed=0, input_preset=None)
    noise1 = voc.decode(mel, steps=0, seed=1, input_preset=None)
    pv0 = voc.decode(mel, steps=0, seed=0, input_preset=None, gl_init="phase-vocoder")
    pv1 = voc.decode(mel, steps=0, seed=1, input_preset=None, gl_init="phase-vocoder")
    assert float((noise0 - noise1).abs().max()) > 1e-2  # noise: the seed matters
    torch.testing.assert_close(pv0, pv1, rtol=0, atol=0)  # the phase vocoder: it does not
    expected = griffin_lim(voc.config.audio, mel, 32, generator=None, init="phase-vocoder")
    torch.testing.assert_close(pv0, expected[0] if pv0.dim() == 1 else expected,
                               rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="gl_init must be one of"):
        voc.decode(mel, steps=0, input_preset=None, gl_init="zeros")
    # a model whose config says so decodes so by default
    voc_pv = tiny_vocoder(diffusion={"gl_init": "phase-vocoder"})
    torch.testing.assert_close(voc_pv.decode(mel, steps=0, seed=3, input_preset=None), pv0,
                               rtol=0, atol=0)
    torch.testing.assert_close(voc_pv.decode(mel, steps=0, seed=0, input_preset=None,
                                             gl_init="noise"), noise0, rtol=0, atol=0)


def test_the_chain_starts_and_is_conditioned_on_the_chosen_griffin_lim():
    voc = tiny_vocoder(diffusion={"start_iters": 2, "start_noise": 0.0}, gl_condition=2)
    mel = voc.mel(_buzz(0.3))
    inputs = chain_inputs(mel, generator=torch.Generator().manual_seed(0),
                          audio=voc.config.audio, start_iters=2, condition_iters=2,
                          gl_init="phase-vocoder")
    expected = griffin_lim(voc.config.audio, mel, 2, generator=None, init="phase-vocoder")
    torch.testing.assert_close(inputs.init, expected, rtol=0, atol=1e-6)
    assert inputs.wave is inputs.init  # one Griffin-Lim decode for both
    a = voc.decode(mel, seed=0, input_preset=None)
    b = voc.decode(mel, seed=0, input_preset=None, gl_init="phase-vocoder")
    assert float((a - b).abs().max()) > 1e-3


def test_the_config_names_the_start():
    data = tiny_config_dict()
    data["diffusion"] = {"gl_init": "phase-vocoder"}
    assert Config.from_dict(data).diffusion.gl_init == "phase-vocoder"
    data["diffusion"] = {"gl_init": "zeros"}
    with pytest.raises(ConfigError, match="diffusion.gl_init must be one of"):
        Config.from_dict(data)


def test_vocode_refuses_an_unknown_start(tmp_path):
    voc = tiny_vocoder()
    voc.save_pretrained(tmp_path / "model")
    np.save(tmp_path / "a.npy", voc.mel(_buzz(0.4))[0].numpy())
    bad = wavediff_cli("vocode", "--checkpoint", tmp_path / "model", "--outdir", tmp_path / "o2",
                       "--gl-init", "zeros", tmp_path / "a.npy")
    assert bad.returncode != 0 and "invalid choice: 'zeros'" in bad.stderr
    assert not (tmp_path / "o2" / "a.wav").exists()
