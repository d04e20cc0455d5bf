"""MelSpectrogram against independent numpy/librosa versions of every preset's convention."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.presets import PRESET_NAMES, get_preset
from wavediff.errors import AudioError, ConfigError, MelError

LENGTHS = (777, 4099, 11111)


def make_audio(n: int, sample_rate: int = 22050, seed: int = 0) -> np.ndarray:
    """A chirp (50 Hz to Nyquist) plus white noise, with a silent stretch in the middle."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    f0, f1 = 50.0, sample_rate / 2
    duration = n / sample_rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
    x = 0.5 * np.sin(phase) + 0.02 * rng.standard_normal(n)
    x[n // 2 : n // 2 + n // 8] = 0.0
    return np.clip(x, -1, 1).astype(np.float32)


# ---------------------------------------------------------------- independent references
# Each function writes a system's computation out the way that system writes it, in
# float64 numpy, from an array of shape (T,) to (n_mels, F).


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann


def _slaney(sr: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=1024, n_mels=n_mels, fmin=fmin, fmax=fmax)


def _htk(sr: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    return librosa.filters.mel(
        sr=sr, n_fft=1024, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm=None
    )


def _centered_magnitude(x: np.ndarray) -> np.ndarray:
    spec = librosa.stft(
        x, n_fft=1024, hop_length=256, win_length=1024, window="hann",
        center=True, pad_mode="reflect",
    )
    return np.abs(spec)


def ref_hifigan(x: np.ndarray, n_mels: int = 80, fmax: float | None = 8000.0) -> np.ndarray:
    # reflect-pad (n_fft - hop) / 2, frames of 1024 every 256, sqrt(re^2 + im^2 + 1e-9)
    xp = np.pad(x, (384, 384), mode="reflect")
    frames = librosa.util.frame(xp, frame_length=1024, hop_length=256)
    spec = np.fft.rfft(frames * _hann(1024)[:, None], axis=0)
    mag = np.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    mel = _slaney(22050, n_mels, 0.0, fmax) @ mag
    return np.log(np.clip(mel, 1e-5, None))


def ref_tacotron2(x: np.ndarray) -> np.ndarray:
    mel = _slaney(22050, 80, 0.0, 8000.0) @ _centered_magnitude(x)
    return np.log(np.clip(mel, 1e-5, None))


def ref_matcha(x: np.ndarray) -> np.ndarray:
    return (ref_hifigan(x) - (-5.536622)) / 2.116101


def ref_espnet(x: np.ndarray, sr: int = 22050) -> np.ndarray:
    spc = _centered_magnitude(x).T
    mel_basis = _slaney(sr, 80, 80.0, 7600.0)
    return np.log10(np.maximum(1e-10, np.dot(spc, mel_basis.T))).T


def ref_espnet_16k(x: np.ndarray) -> np.ndarray:
    # ParallelWaveGAN egs/arctic/voc1: logmelfilterbank at 16 kHz (fft 1024, hop 256)
    return ref_espnet(x, sr=16000)


def ref_diffwave_lmnt(x: np.ndarray) -> np.ndarray:
    spec = _centered_magnitude(x) / np.sqrt(np.sum(_hann(1024) ** 2))
    mel = _htk(22050, 80, 20.0, 11025.0) @ spec
    spectrogram = 20 * np.log10(np.clip(mel, 1e-5, None)) - 20
    return np.clip((spectrogram + 100) / 100, 0.0, 1.0)


def ref_coqui(x: np.ndarray) -> np.ndarray:
    S = 20 * np.log10(np.maximum(1e-8, _slaney(22050, 80, 0.0, None) @ _centered_magnitude(x))) - 20
    return np.clip(8 * (S + 100) / 100 - 4, -4, 4)


def ref_vocos(x: np.ndarray) -> np.ndarray:
    mel = _htk(24000, 100, 0.0, 12000.0) @ _centered_magnitude(x)
    return np.log(np.clip(mel, 1e-7, None))


REFERENCES = {
    "hifigan": ref_hifigan,
    "tacotron2": ref_tacotron2,
    "matcha": ref_matcha,
    "espnet": ref_espnet,
    "espnet-16k": ref_espnet_16k,
    "diffwave-lmnt": ref_diffwave_lmnt,
    "coqui": ref_coqui,
    "vocos": ref_vocos,
}


def test_every_preset_has_a_reference() -> None:
    assert set(REFERENCES) == set(PRESET_NAMES)


@pytest.mark.filterwarnings("ignore:n_fft=1024 is too large")
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_matches_independent_reference(name: str) -> None:
    mel = MelSpectrogram.from_preset(name)
    # float64 input is exact up to the filterbank: slaney banks are librosa's own, htk
    # banks come from torchaudio, whose float32 triangles differ from librosa's htk=True
    # by float32 rounding
    tol64 = 1e-10 if mel.config.mel_scale == "slaney" else 1e-4
    for n in LENGTHS:
        x = make_audio(n, mel.config.sample_rate, seed=n)
        expected = REFERENCES[name](x.astype(np.float64))
        got32 = mel(torch.from_numpy(x))
        got64 = mel(torch.from_numpy(x).double())
        assert got32.dtype == torch.float32 and got64.dtype == torch.float64
        assert got32.shape == expected.shape == (mel.config.n_mels, mel.config.num_frames(n))
        # float32 STFT and filterbank products: ~1e-6 relative to a frame's loud bins, up to
        # ~2.5e-5 (log units) in the quietest bins next to the silent stretch (measured with
        # AVX-512 and AVX2 kernels); 1e-4 leaves room for others, a wrong convention is 0.1+
        assert np.abs(got32.numpy() - expected).max() <= 1e-4, (name, n)
        # float64: ~1e-14 measured, so 1e-10 is slack for any FFT kernel
        assert np.abs(got64.numpy() - expected).max() <= tol64, (name, n)


def test_override_changes_the_computation() -> None:
    mel = MelSpectrogram.from_preset("hifigan", n_mels=64, fmax=None)
    assert mel.config.preset == "custom"
    assert mel.config.n_mels == 64 and mel.config.max_frequency == 11025.0  # 22050 / 2: exact
    assert tuple(mel.mel_basis.shape) == (64, 513)
    x = make_audio(4099)
    got = mel(torch.from_numpy(x).double()).numpy()
    # float64 throughout (as tol64 above): ~1e-14 apart
    assert np.abs(got - ref_hifigan(x.astype(np.float64), n_mels=64, fmax=None)).max() <= 1e-10


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_filterbank_follows_scale_and_norm(scale: str, norm: str | None) -> None:
    mel = MelSpectrogram.from_preset("hifigan", mel_scale=scale, mel_norm=norm, fmin=20.0)
    expected = librosa.filters.mel(
        sr=22050, n_fft=1024, n_mels=80, fmin=20.0, fmax=8000.0, htk=scale == "htk", norm=norm
    )
    got = mel.mel_basis.numpy()
    # float32 filterbanks computed two ways: a few ulps of the largest weight
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown mel preset 'hifi'"):
        MelSpectrogram.from_preset("hifi")


# ---------------------------------------------------------------- shape and frame contract


@pytest.mark.parametrize("name", ["hifigan", "tacotron2"])
def test_frame_count_and_centres(name: str) -> None:
    mel = MelSpectrogram.from_preset(name)
    cfg = mel.config
    offset = 0 if cfg.padding == "center" else cfg.hop_length // 2
    for n in (1023, 1024, 5000, 5120):
        assert mel(torch.zeros(n)).shape == (cfg.n_mels, cfg.num_frames(n))
    # a click on the centre of frame 7 makes frame 7 the loudest frame
    x = torch.zeros(5000)
    x[7 * cfg.hop_length + offset] = 1.0
    energy = mel.linear(x).sum(dim=0)
    assert int(energy.argmax()) == 7


def test_batched_equals_per_item() -> None:
    mel = MelSpectrogram.from_preset("diffwave-lmnt")
    batch = torch.from_numpy(np.stack([make_audio(4099, seed=s) for s in range(3)]))
    out = mel(batch)
    assert out.shape == (3, 80, mel.config.num_frames(4099))
    # each item is its own STFT and filterbank product, but batched FFT/GEMM kernels may sum
    # in another order: the float32 mel is ~1.1e-6 (lmnt units, measured with AVX-512 and
    # AVX2 kernels) from the float64 one, so two float32 orders can differ by ~2e-6; 1e-5
    # leaves room for any kernel, and items differ from each other by ~0.2
    for i in range(3):
        assert torch.allclose(out[i], mel(batch[i]), atol=1e-5, rtol=0)
    assert not torch.allclose(out[0], out[1])


def test_forward_is_compress_of_linear() -> None:
    mel = MelSpectrogram.from_preset("coqui")
    x = torch.from_numpy(make_audio(4099))
    assert torch.equal(mel(x), mel.compress(mel.linear(x)))  # the same calls: bit-identical


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_decompress_inverts_compress(name: str) -> None:
    mel = MelSpectrogram.from_preset(name)
    # 2e-4 .. 5 stays inside every preset's clamp and clip range
    log_linear = torch.empty(4, 80, 50, dtype=torch.float64).uniform_(np.log(2e-4), np.log(5.0))
    linear = torch.exp(log_linear)
    back = mel.decompress(mel.compress(linear))
    # float64 log then exp: relative error ~|log| * 1e-16 plus the normalisations (~1e-14)
    assert torch.allclose(back, linear, rtol=1e-12, atol=0)
    back32 = mel.decompress(mel.compress(linear.float()))
    assert back32.dtype == torch.float32
    # float32: the rounding of the compressed value (~6e-8 of its size) comes back through
    # exp as a relative error of the linear value, ~1e-6 (measured); 1e-5 holds for any kernel
    assert torch.allclose(back32.double(), linear, rtol=1e-5, atol=0)


def test_decompress_of_clipped_values_returns_the_clip_edge() -> None:
    mel = MelSpectrogram.from_preset("diffwave-lmnt")
    linear = torch.tensor([1e-9, 1e-3, 1e3], dtype=torch.float64)
    back = mel.decompress(mel.compress(linear))
    # clip (0, 1) corresponds to linear 1e-4 .. 10 for 20*log10(m) - 20, (x + 100) / 100
    # (float64 pow: ~1e-15 relative; allclose's rtol 1e-5 is slack)
    assert torch.allclose(back, torch.tensor([1e-4, 1e-3, 10.0], dtype=torch.float64))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_silence_maps_to_floor(name: str) -> None:
    mel = MelSpectrogram.from_preset(name)
    out = mel(torch.zeros(2, 3000))
    # the float32 log of the clamp value vs the float64 floor: a float32 log is within an ulp
    # or so, and floors reach -16.1 (vocos) where an ulp is 1.9e-6; 1e-5 is a few ulps there
    assert torch.allclose(out, torch.full_like(out, mel.config.floor), atol=1e-5, rtol=0)


def test_buffers_are_not_persistent() -> None:
    mel = MelSpectrogram.from_preset("vocos")
    assert mel.state_dict() == {}
    assert tuple(mel.window.shape) == (1024,)
    assert tuple(mel.mel_basis.shape) == (100, 513)


def test_module_cast_to_float64_still_follows_the_input_dtype() -> None:
    mel = MelSpectrogram.from_preset("vocos")
    x = torch.from_numpy(make_audio(4099, 24000))
    expected32, expected64 = mel(x), mel(x.double())
    mel = mel.double()
    assert mel.mel_basis.dtype == torch.float64
    got32, got64 = mel(x), mel(x.double())
    # the buffers come back to float32 unchanged (float32 -> float64 -> float32 is exact):
    # the same computation, bit-identical
    assert got32.dtype == torch.float32 and torch.equal(got32, expected32)
    assert got64.dtype == torch.float64 and torch.equal(got64, expected64)


def test_half_precision_input_is_computed_in_float32() -> None:
    mel = MelSpectrogram.from_preset("hifigan")
    x = torch.from_numpy(make_audio(4099))
    out = mel(x.half())
    assert out.dtype == torch.float32
    assert (out - mel(x.half().float())).abs().max() == 0  # the same computation: exact


# ---------------------------------------------------------------- errors


def test_too_short_input_is_refused_with_the_numbers() -> None:
    mel = MelSpectrogram.from_preset("tacotron2")
    with pytest.raises(AudioError, match=r"512 samples .* at least 513"):
        mel(torch.zeros(512))
    assert mel(torch.zeros(513)).shape == (80, 3)
    same = MelSpectrogram.from_preset("hifigan")
    with pytest.raises(AudioError, match=r"384 samples .* at least 385"):
        same(torch.zeros(384))
    assert same(torch.zeros(385)).shape == (80, 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_refused(bad: float) -> None:
    x = torch.zeros(2, 4000)
    x[1, 17] = bad
    with pytest.raises(AudioError, match="1 NaN or infinite"):
        MelSpectrogram.from_preset("hifigan")(x)


@pytest.mark.parametrize("shape", [(), (1, 2, 4000)])
def test_wrong_rank_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(AudioError, match=r"shape \(T,\) or \(B, T\)"):
        MelSpectrogram.from_preset("hifigan")(torch.zeros(shape))


def test_non_float_input_is_refused() -> None:
    mel = MelSpectrogram.from_preset("hifigan")
    with pytest.raises(AudioError, match="float tensor.*torch.int16"):
        mel(torch.zeros(4000, dtype=torch.int16))
    # numpy arrays (what soundfile.read returns) are accepted as they are
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 4000).astype(np.float32)
    assert torch.equal(mel(x), mel(torch.from_numpy(x)))  # the same values: bit-identical
    with pytest.raises(AudioError, match="torch.Tensor or numpy array"):
        mel([0.0] * 4000)
    with pytest.raises(MelError, match="float tensor"):
        mel.decompress(torch.zeros(80, 3, dtype=torch.int64))


def test_constructor_needs_a_mel_config() -> None:
    with pytest.raises(MelError, match="from_preset"):
        MelSpectrogram("hifigan")  # type: ignore[arg-type]


# ---------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_cuda_matches_cpu(name: str) -> None:
    mel = MelSpectrogram.from_preset(name)
    batch = torch.from_numpy(np.stack([make_audio(11111, seed=s) for s in range(2)]))
    cpu = mel(batch)
    mel = mel.to("cuda")
    assert mel.window.is_cuda and mel.mel_basis.is_cuda
    gpu = mel(batch.cuda())
    assert gpu.is_cuda and gpu.shape == cpu.shape
    # cuFFT/cuBLAS vs the CPU kernels: each float32 mel is within ~2.5e-5 of the exact one
    # (see test_preset_matches_independent_reference); 1e-3 and, for float64, 1e-6 are slack
    assert (gpu.cpu() - cpu).abs().max() <= 1e-3
    gpu64 = mel(batch.cuda().double())
    assert gpu64.dtype == torch.float64
    assert (gpu64.cpu() - mel.cpu()(batch.double())).abs().max() <= 1e-6


def test_presets_are_known_to_get_preset() -> None:
    for name in PRESET_NAMES:
        assert MelSpectrogram.from_preset(name).config == get_preset(name)


@pytest.mark.parametrize("name", ["hifigan", "tacotron2", "espnet"])
def test_long_inputs_are_analysed_in_blocks_with_the_same_result(name: str, monkeypatch) -> None:
    mel = MelSpectrogram.from_preset(name)
    wav = 0.3 * torch.randn(2, 40 * mel.config.hop_length + 77,
                            generator=torch.Generator().manual_seed(1))
    whole = mel(wav)
    monkeypatch.setattr(MelSpectrogram, "BLOCK_FRAMES", 7)  # several blocks and a short last one
    blocked = mel(wav)
    assert blocked.shape == whole.shape and whole.shape[-1] > 3 * 7
    # every frame is its own FFT, so the blocks hold the same numbers up to rounding, but the
    # FFT batches and filterbank GEMMs have other shapes, which kernels sum in another order
    # (AVX2 kernels: 3.6e-7 apart). Either float32 result is ~1.1e-6 (log units) from the
    # float64 mel, so up to ~2e-6 apart; 1e-5 leaves room for any kernel and still catches a
    # misplaced or missing block (log mels of different frames differ by ~1)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-5)
