"""Every preset reproduces the mel that the real system's code wrote for the same clip.

``tests/data/reference_mels`` holds one clip (JOE001-0007.flac, 22,050 Hz) and, per system,
the array its own feature code produced from it; ``references.json`` gives each file's
layout, frame count, the loader's int16 scale and the precision the system computes in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from wavediff.audio.io import load_audio
from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.presets import PRESET_NAMES, get_preset

DATA = Path(__file__).parent / "data" / "reference_mels"
FACTS: dict[str, Any] = json.loads((DATA / "references.json").read_text())
SOURCE = DATA / FACTS["source"]["file"]


def to_mel_by_frame(array: np.ndarray, layout: str) -> np.ndarray:
    """A reference array in its stored layout -> ``(n_mels, F)``."""
    if layout == "(1, mel, frame)":
        assert array.shape[0] == 1
        return array[0]
    if layout == "(frame, mel)":
        return array.T
    assert layout == "(mel, frame)"
    return array


def compute(name: str) -> tuple[MelSpectrogram, np.ndarray, int]:
    """The preset's mel of the source clip, loaded the way the system loads it."""
    facts = FACTS["systems"][name]
    mel = MelSpectrogram.from_preset(name)
    rate = facts["sample_rate"]
    audio, sr = load_audio(SOURCE, rate, resample=rate != FACTS["source"]["sample_rate"])
    assert sr == mel.config.sample_rate == rate
    # load_audio scales int16 by 1/32768; lmnt-com/diffwave divides by 32767.5 instead,
    # which raises every sample by a factor 32768 / 32767.5 (1.3e-6 in its output units)
    audio = audio * np.float32(32768.0 / facts["loader_scale"])
    x = torch.from_numpy(audio)
    if facts["computed_in"] == "float64":  # espnet and coqui compute in float64 numpy
        x = x.double()
    return mel, mel(x).float().numpy(), len(audio)


# presets that are another preset's computation at another sample rate: the reference clips
# are 22,050 Hz files of the systems' own code; tests/test_mel.py checks these at their rate
SAME_CODE_OTHER_RATE = {"espnet-16k": "espnet"}


def test_every_preset_has_a_reference() -> None:
    assert set(FACTS["systems"]) == set(PRESET_NAMES) - set(SAME_CODE_OTHER_RATE)
    for name, sibling in SAME_CODE_OTHER_RATE.items():
        a, b = get_preset(name).to_dict(), get_preset(sibling).to_dict()
        assert a.pop("sample_rate") != b.pop("sample_rate")
        assert {k: v for k, v in a.items() if k != "preset"} == {
            k: v for k, v in b.items() if k != "preset"}


@pytest.mark.parametrize("name", [n for n in PRESET_NAMES if n not in SAME_CODE_OTHER_RATE])
def test_preset_reproduces_reference(name: str) -> None:
    facts = FACTS["systems"][name]
    stored = np.load(DATA / facts["file"])
    assert list(stored.shape) == facts["shape"]
    expected = to_mel_by_frame(stored, facts["layout"])
    mel, got, n_samples = compute(name)
    if "n_samples" in facts:
        assert n_samples == facts["n_samples"]
    assert got.shape == expected.shape == (mel.config.n_mels, facts["frames"])
    assert mel.config.num_frames(n_samples) == facts["frames"]

    diff = np.abs(got - expected)
    if mel.config.sample_rate == FACTS["source"]["sample_rate"]:
        # other programs' float32 (or float64) STFTs of the same clip: <= 1e-4 measured with
        # AVX-512 and AVX2 kernels, so 1e-3 leaves room for any kernel; a wrong convention
        # is off by 0.1 or more
        assert diff.max() <= 1e-3, f"{name}: max abs diff {diff.max():.3g}"
        return

    # Resampled audio (vocos): mel bands above 10 kHz lie in soxr's transition and stop
    # band, where the 22,050 Hz source has no content. There, values sit 80-140 dB below
    # the loudest band of the frame, at the rounding floor of a float32 FFT, and different
    # FFT kernels (e.g. MKL's AVX-512 and SSE paths) give different logs. Such entries
    # must still agree to within 1e-6 of the frame's loudest band in the linear domain;
    # every other entry to 1e-3 in the log domain.
    first_bin = (mel.mel_basis.numpy() > 0).argmax(axis=1)
    low_edges = first_bin * mel.config.sample_rate / mel.config.n_fft
    high_band = low_edges >= 10_000
    assert 0 < high_band.sum() <= 5
    assert diff[~high_band].max() <= 1e-3, f"{name}: max abs diff {diff[~high_band].max():.3g}"
    lin_got = mel.decompress(torch.from_numpy(got).double()).numpy()
    lin_ref = mel.decompress(torch.from_numpy(expected).double()).numpy()
    loudest = lin_got.max(axis=0, keepdims=True)
    at_rounding_floor = np.abs(lin_got - lin_ref) <= 1e-6 * loudest
    assert np.all((diff <= 1e-3) | at_rounding_floor), f"{name}: max abs diff {diff.max():.3g}"
    assert np.median(diff[high_band]) <= 1e-3


def test_matcha_is_hifigan_normalised() -> None:
    _, hifigan, _ = compute("hifigan")
    _, matcha, _ = compute("matcha")
    # the same mel, normalised in float32 in either order: a few ulps of values up to ~6
    assert np.abs(matcha - (hifigan + 5.536622) / 2.116101).max() <= 1e-5
