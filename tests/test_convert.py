"""Convention detection and conversion, checked on the mels real systems wrote.

``tests/data/reference_mels`` holds, per system, the mel its own code computed from one
clip (see ``references.json``); every preset reproduces them (``test_reference_mels``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wavediff.audio.convert import MelConverter, error_stats
from wavediff.audio.detect import AmbiguousMelError, NormalisedMelError, detect
from wavediff.audio.prepare import MelPreparer, prepare_mel
from wavediff.audio.formats import apply_layout
from wavediff.audio.io import load_audio
from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.presets import PRESET_NAMES, get_preset
from wavediff.errors import MelError

DATA = Path(__file__).parent / "data" / "reference_mels"
FACTS = json.loads((DATA / "references.json").read_text())
LAYOUT = {"(1, mel, frame)": "1-mels-frames", "(mel, frame)": "mels-frames",
          "(frame, mel)": "frames-mels"}
SYSTEMS = sorted(FACTS["systems"])


def stored(name: str) -> np.ndarray:
    return np.load(DATA / FACTS["systems"][name]["file"])


def as_mel(name: str) -> np.ndarray:
    return apply_layout(stored(name), LAYOUT[FACTS["systems"][name]["layout"]])


def normalised_espnet() -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The espnet reference normalised per bin, as ParallelWaveGAN does, (T, 80)."""
    raw = as_mel("espnet").astype(np.float64)
    mean, scale = raw.mean(axis=1), raw.std(axis=1) + 1e-3
    return ((raw - mean[:, None]) / scale[:, None]).T.astype(np.float32), (mean, scale)


@pytest.mark.parametrize("name", SYSTEMS)
def test_auto_names_convention_and_layout(name: str) -> None:
    det = detect(stored(name), source=name)
    assert det.preset.preset == name
    assert det.layout == LAYOUT[FACTS["systems"][name]["layout"]]
    assert det.evidence and name in det.describe(name)


def test_normalised_features_need_stats() -> None:
    feats, stats = normalised_espnet()
    with pytest.raises(NormalisedMelError, match="--stats"):
        detect(feats)
    prepared = MelPreparer(get_preset("hifigan"), "auto", stats=stats)(feats)
    assert prepared.detection.preset.preset == "espnet"
    assert prepared.mel.shape == (80, feats.shape[0] - 1)


def test_ambiguous_layout_and_convention_are_refused() -> None:
    square = as_mel("tacotron2")[:, :80]
    with pytest.raises(AmbiguousMelError, match=r"\(n_mels, T\) or \(T, n_mels\).*--input-layout"):
        detect(square)
    assert detect(square, layout="mels-frames").preset.preset == "tacotron2"
    rng = np.random.default_rng(0)
    tilt = np.linspace(0.8, -0.8, 80)[:, None]
    vague = np.clip(-2.1 + tilt + rng.gamma(2, 0.35, (80, 60)), -2.6, 1.3).astype(np.float32)
    with pytest.raises(AmbiguousMelError, match="could be any of: .*espnet.*--input-preset"):
        detect(vague)


def test_no_convention_fits() -> None:
    with pytest.raises(MelError, match="no axis of 80 bins or 100 bins"):
        detect(np.zeros((64, 30), np.float32))
    with pytest.raises(AmbiguousMelError, match="fits no known mel convention"):
        detect(np.linspace(45, 40, 80, dtype=np.float32)[:, None].repeat(30, 1))


@pytest.mark.parametrize("name", ["matcha", "tacotron2", "hifigan"])
def test_exact_conversions_round_trip(name: str) -> None:
    mel = as_mel(name)
    there = MelConverter(name, "hifigan")
    back = MelConverter("hifigan", name)
    assert there.exact and back.exact
    hifi = there(mel)
    assert hifi.shape[1] == FACTS["systems"]["hifigan"]["frames"]
    again = back(hifi)
    n = hifi.shape[1]  # a frame dropped on the way (tacotron2) cannot come back
    assert np.abs(again[:, :n] - mel[:, :n]).max() <= 1e-4


def test_matcha_and_tacotron2_convert_to_the_hifigan_reference() -> None:
    reference = as_mel("hifigan")
    assert np.abs(MelConverter("matcha", "hifigan")(as_mel("matcha")) - reference).max() <= 1e-4
    # tacotron2 has the same values on a grid half a hop earlier: one frame more
    t2 = MelConverter("tacotron2", "hifigan")
    assert t2.kind == "exact" and "half a hop" in t2.describe()
    assert t2(as_mel("tacotron2")).shape == reference.shape


def test_stats_conversion_is_exact() -> None:
    feats, stats = normalised_espnet()
    conv = MelConverter("espnet", "espnet", source_stats=stats)
    raw = conv(feats.T)
    assert conv.exact
    assert np.abs(raw - as_mel("espnet")).max() <= 1e-4
    back = MelConverter("espnet", "espnet", target_stats=stats)(raw)
    assert np.abs(back - feats.T).max() <= 1e-4


@pytest.mark.parametrize("name", ["espnet", "coqui", "diffwave-lmnt"])
def test_approximate_conversion_reports_an_honest_error(name: str) -> None:
    conv = MelConverter(name, "hifigan")
    assert conv.kind == "approximate"
    text = conv.describe()
    assert "approximate" in text and "expected error" in text and "filterbank" in text
    got = conv(as_mel(name))
    reference = as_mel("hifigan")
    assert got.shape == reference.shape
    measured = error_stats(get_preset("hifigan"), got, reference)
    expected = conv.expected_error()
    # the expected error is the right size: neither hidden nor wildly inflated
    assert expected.mean / 3 <= measured.mean <= expected.mean * 1.5, (measured, expected)
    assert measured.mean < 0.5  # and the conversion is useful: mean error < 0.5 nats


def test_sample_rate_or_hop_mismatch_is_refused_with_numbers() -> None:
    with pytest.raises(MelError, match="24000 Hz.*22050 Hz"):
        MelConverter("vocos", "hifigan")
    with pytest.raises(MelError, match="hop 256.*hop 300"):
        MelConverter("hifigan", get_preset("hifigan", hop_length=300, n_fft=1200, win_length=1200))


def test_convert_from_audio_matches_target_preset() -> None:
    """Through any route, the converted mel of real audio is near the target's own."""
    audio, _ = load_audio(DATA / FACTS["source"]["file"], 22050)
    x = torch.from_numpy(audio)
    target = MelSpectrogram.from_preset("hifigan")(x).numpy()
    for name in ("tacotron2", "matcha"):
        mel = MelSpectrogram.from_preset(name)(x).numpy()
        got = prepare_mel(mel, get_preset("hifigan"), name).mel
        assert got.shape == target.shape
        # tacotron2's grid is half a hop earlier; the values themselves convert exactly
        assert np.median(np.abs(got - target)) < (0.35 if name == "tacotron2" else 1e-5)


def test_given_preset_is_used_even_if_values_disagree(caplog) -> None:
    mel = as_mel("hifigan")
    with caplog.at_level("WARNING"):
        prepared = prepare_mel(mel, get_preset("hifigan"), "coqui")
    assert prepared.detection.preset.preset == "coqui"
    assert "do not look like coqui" in caplog.text


@pytest.mark.parametrize("name", sorted(PRESET_NAMES))
def test_one_decompression_for_numpy_and_torch(name):
    # detection's numpy helpers go through audio/mel.py's maths: no second copy to drift
    from wavediff.audio.detect import compress, decompress, to_db
    from wavediff.audio.mel import compress_mel, decompress_mel

    cfg = get_preset(name)
    linear = np.geomspace(max(cfg.clamp_min, 1e-4) * 2, 50.0, 97)
    y = compress(cfg, linear)
    y_torch = compress_mel(cfg, torch.from_numpy(linear)).numpy()
    np.testing.assert_array_equal(y, y_torch)
    inside = (y > (cfg.clip[0] if cfg.clip else -np.inf)) & (y < (cfg.clip[1] if cfg.clip else np.inf))
    assert inside.sum() > 10
    np.testing.assert_allclose(decompress(cfg, y)[inside], linear[inside], rtol=1e-9)
    np.testing.assert_allclose(decompress(cfg, y), decompress_mel(cfg, torch.from_numpy(y)).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(to_db(cfg, y)[inside], 20 * np.log10(linear[inside]), atol=1e-9)
