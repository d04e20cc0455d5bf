"""load_audio and save_audio: round trips, resampling, every refusal, atomic writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavediff.audio.io import load_audio, save_audio
from wavediff.errors import AudioError


def pcm16(n: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32767, size=n, dtype=np.int16)
    x[:3] = [-32768, 0, 32767]
    return x


def sine(freq: float, sample_rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sample_rate / len(x))


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_int16_round_trip_scales_by_32768(tmp_path: Path, ext: str) -> None:
    raw = pcm16()
    path = tmp_path / f"a.{ext}"
    sf.write(path, raw, 22050, subtype="PCM_16")
    x, sr = load_audio(path, 22050)
    assert sr == 22050 and x.dtype == np.float32 and x.shape == (4000,)
    # int16 / 2**15 is exact in float32 (a power-of-two scale of a 16-bit integer): bit-identical
    assert np.array_equal(x, raw.astype(np.float32) / 32768)
    assert x.min() == -1.0 and x.max() == 32767 / 32768


def test_sample_rate_none_accepts_any_rate(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, pcm16(), 16000)
    x, sr = load_audio(path)
    assert sr == 16000 and len(x) == 4000


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"nope\.wav does not exist; check the path"):
        load_audio(path)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_garbled_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    sf.write(path, pcm16(), 22050)
    data = bytearray(path.read_bytes())
    data[0:12] = b"JUNKJUNKJUNK"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError, match=r"bad\.wav: cannot read audio .*re-export"):
        load_audio(path)


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    sf.write(path, pcm16(), 22050)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(AudioError, match=r"cut\.flac: cannot read audio"):
        load_audio(path)


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not audio at all\n")
    with pytest.raises(AudioError, match=r"notes\.wav: cannot read audio"):
        load_audio(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.int16), 22050)
    with pytest.raises(AudioError, match=r"empty\.wav: contains no samples"):
        load_audio(path)


def test_stereo_is_refused_unless_to_mono(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left = np.full(1000, 0.5, dtype=np.float32)
    right = np.full(1000, -0.25, dtype=np.float32)
    sf.write(path, np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    advice = r"has 2 channels.*--to-mono.*sox .*stereo\.wav -c 1 mono\.wav"
    with pytest.raises(AudioError, match=advice):
        load_audio(path)
    x, _ = load_audio(path, to_mono=True)
    # (0.5 - 0.25) / 2 is exact in binary; allclose's default tolerance only absorbs a mixdown
    # written another way (a wrong channel or no averaging is off by 0.125 or more)
    assert x.shape == (1000,) and np.allclose(x, 0.125)


def test_wrong_rate_is_refused_without_resample(tmp_path: Path) -> None:
    path = tmp_path / "cd.wav"
    sf.write(path, sine(440, 44100), 44100)
    with pytest.raises(AudioError, match=r"44100 Hz but 22050 Hz is expected; pass --resample"):
        load_audio(path, 22050)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "nan.wav"
    x = sine(440, 22050, 0.1)
    x[[5, 9]] = bad
    sf.write(path, x, 22050, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains 2 NaN or infinite"):
        load_audio(path)


# ---------------------------------------------------------------- resampling


def test_resample_keeps_pitch_and_length(tmp_path: Path) -> None:
    path = tmp_path / "cd.wav"
    sf.write(path, sine(440, 44100), 44100, subtype="FLOAT")
    x, sr = load_audio(path, 22050, resample=True)
    assert sr == 22050 and x.dtype == np.float32
    assert len(x) == 22050
    assert abs(peak_frequency(x, sr) - 440.0) <= 1.0
    # the resampler's passband ripple, not rounding, bounds the amplitude error
    assert abs(np.abs(x[1000:-1000]).max() - 0.5) < 1e-3


def test_resample_up_to_24k_length_is_rounded(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    sf.write(path, pcm16(58269), 22050)
    x, sr = load_audio(path, 24000, resample=True)
    assert sr == 24000 and len(x) == round(58269 * 24000 / 22050) == 63422


# ---------------------------------------------------------------- writing


def test_save_round_trip_and_clipping(tmp_path: Path) -> None:
    x = np.array([0.0, 0.5, -0.5, 1.5, -2.0, 0.25], dtype=np.float32)
    path = save_audio(tmp_path / "deep" / "dir" / "out.wav", x, 22050)
    assert path == tmp_path / "deep" / "dir" / "out.wav"
    info = sf.info(path)
    assert info.subtype == "PCM_16" and info.samplerate == 22050 and info.channels == 1
    y, sr = load_audio(path, 22050)
    # these samples are exact in int16 and int16 / 2**15 is exact: bit-identical
    assert np.array_equal(y, np.array([0, 16384, -16384, 32767, -32768, 8192]) / np.float32(32768))
    assert sorted(os.listdir(path.parent)) == ["out.wav"]


def test_save_torch_tensor_as_float_flac(tmp_path: Path) -> None:
    x = torch.linspace(-1, 1, 1001, dtype=torch.float64)
    path = save_audio(tmp_path / "t.flac", x, 24000, subtype="PCM_24")
    y, sr = load_audio(path, 24000)
    # quantisation, not arithmetic: PCM_24 is off by at most one step of 2**-23 (rounding and
    # the clip at +1 included) and 24-bit values read back exactly in float32
    assert sr == 24000 and np.abs(y - x.numpy()).max() <= 2.0**-23


def test_save_overwrites_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    save_audio(path, np.zeros(100, dtype=np.float32), 22050)
    save_audio(path, np.full(50, 0.5, dtype=np.float32), 22050)
    y, _ = load_audio(path)
    assert len(y) == 50 and np.all(y == 0.5)  # 0.5 is exact in int16 (16384 / 32768)


@pytest.mark.parametrize(
    "wav, message",
    [
        (np.array([0.0, np.nan, 0.1], dtype=np.float32), "1 NaN or infinite"),
        (np.zeros((2, 100), dtype=np.float32), r"shape \(T,\), got \(2, 100\)"),
        (np.zeros(100, dtype=np.int16), "must be float"),
        (np.zeros(0, dtype=np.float32), "no samples"),
    ],
)
def test_save_refuses_bad_samples(tmp_path: Path, wav: np.ndarray, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        save_audio(tmp_path / "out.wav", wav, 22050)
    assert os.listdir(tmp_path) == []


def test_save_refuses_unknown_extension_and_subtype(tmp_path: Path) -> None:
    x = np.zeros(100, dtype=np.float32)
    with pytest.raises(AudioError, match=r"unknown audio extension '\.xyz'"):
        save_audio(tmp_path / "out.xyz", x, 22050)
    with pytest.raises(AudioError, match="subtype 'FLOAT' is not valid for FLAC"):
        save_audio(tmp_path / "out.flac", x, 22050, subtype="FLOAT")
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = sf.write

    def full_disk(file, data, *args, **kwargs):  # writes half, then runs out of space
        real_write(file, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sf, "write", full_disk)
    target = tmp_path / "out.wav"
    with pytest.raises(AudioError, match=r"cannot write .*out\.wav: No space left on device"):
        save_audio(target, np.zeros(1000, dtype=np.float32), 22050)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.wav"
    save_audio(target, np.full(100, 0.25, dtype=np.float32), 22050)
    before = target.read_bytes()

    def failing(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(sf, "write", failing)
    with pytest.raises(AudioError, match="Input/output error"):
        save_audio(target, np.zeros(1000, dtype=np.float32), 22050)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.wav"]
