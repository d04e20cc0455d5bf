"""Convention detection and conversion, checked on the mels real systems wrote.

``tests/data/reference_mels`` holds, per system, the mel its own code computed from one
clip (see ``references.json``); every preset reproduces them (``test_reference_mels``).
"""

from __future__ import annotations

import json
import re
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
def test_value_conversions_round_trip(name: str) -> None:
    mel = as_mel(name)
    there = MelConverter(name, "hifigan")
    back = MelConverter("hifigan", name)
    assert there.filterbank_same and back.filterbank_same
    # the same padding: exact; tacotron2's frames lie half a hop off hifigan's: approximate
    assert there.exact == back.exact == (name != "tacotron2")
    hifi = there(mel)
    assert hifi.shape[1] == FACTS["systems"]["hifigan"]["frames"]
    again = back(hifi)
    assert again.shape == mel.shape
    if name == "tacotron2":
        # each way, a frame is the cubic half-way value (-1, 9, 9, -1) / 16 of the four
        # around it (the grid moves half a hop): there and back, a frame three from the
        # ends is (1, -18, 63, 164, 63, -18, 1) / 256 of its neighbours
        mel = mel.astype(np.float64)
        kernel = np.array([1, -18, 63, 164, 63, -18, 1]) / 256
        smoothed = sum(k * mel[:, i:mel.shape[1] - 6 + i] for i, k in enumerate(kernel))
        again, mel = again[:, 3:-3], smoothed
    # float64 affine/log maths, stored as float32 twice: ~1 ulp of values up to ~12 (1e-6)
    assert np.abs(again - mel).max() <= 1e-4


def test_matcha_and_tacotron2_convert_to_the_hifigan_reference() -> None:
    reference = as_mel("hifigan")
    # the same clip's mels, related by matcha's affine map with 7-digit constants, each stored
    # in float32: ~1e-6 apart; 1e-4 is slack
    assert np.abs(MelConverter("matcha", "hifigan")(as_mel("matcha")) - reference).max() <= 1e-4
    # tacotron2 has the same values on a grid half a hop earlier: one frame more. The
    # values convert exactly but the frames do not: labelled approximate, and the error it
    # states is of the size measured against the real HiFi-GAN mel of the same clip
    t2 = MelConverter("tacotron2", "hifigan")
    assert t2.kind == "approximate" and "half a hop" in t2.describe()
    assert "expected error" in t2.describe()
    got = t2(as_mel("tacotron2"))
    assert got.shape == reference.shape
    hifigan = get_preset("hifigan")
    measured = error_stats(hifigan, got, reference).mean
    assert measured > 0.01  # not exact
    assert 0.33 * measured <= t2.expected_error().mean <= 3.0 * measured
    # moving the frames onto the grid beats reading them half a hop off (the last dropped)
    off_grid = error_stats(hifigan, as_mel("tacotron2")[:, :-1], reference).mean
    assert measured < 0.75 * off_grid, (measured, off_grid)


def test_stats_conversion_is_exact() -> None:
    feats, stats = normalised_espnet()
    conv = MelConverter("espnet", "espnet", source_stats=stats)
    raw = conv(feats.T)
    assert conv.exact
    # float64 (x * scale + mean) and back, each stored as float32: ~1 ulp (1e-6); 1e-4 is slack
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


def test_the_spectrum_is_solved_by_nnls_closer_than_the_clipped_pseudo_inverse(monkeypatch):
    import wavediff.audio.convert as convert_module
    from wavediff.audio.detect import decompress, filterbank64

    src = get_preset("espnet")
    basis = filterbank64(src)
    linear = decompress(src, as_mel("espnet").astype(np.float64))
    clipped = np.maximum(np.linalg.pinv(basis) @ linear, 0.0)
    solved = convert_module.nnls(basis, linear)
    assert solved.shape == clipped.shape and (solved >= 0).all()
    # a non-negative spectrum whose mel is nearer the file's: the least-squares fit
    fit = lambda a: float(np.linalg.norm(basis @ a - linear))  # noqa: E731
    assert fit(solved) < 0.8 * fit(clipped), (fit(solved), fit(clipped))
    # and through the converter, a mel nearer the hifigan reference of the same audio than
    # the clipped pseudo-inverse gives in its place
    reference, hifigan = as_mel("hifigan"), get_preset("hifigan")
    got = error_stats(hifigan, MelConverter("espnet", "hifigan")(as_mel("espnet")), reference)
    monkeypatch.setattr(convert_module, "nnls",
                        lambda b, y, pinv=None, step=None, iters=0: np.maximum(pinv @ y, 0.0))
    old = error_stats(hifigan, MelConverter("espnet", "hifigan")(as_mel("espnet")), reference)
    assert got.mean < old.mean, (got, old)


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
    # compress() calls compress_mel on the same float64 input: the same computation
    np.testing.assert_array_equal(y, y_torch)
    inside = (y > (cfg.clip[0] if cfg.clip else -np.inf)) & (y < (cfg.clip[1] if cfg.clip else np.inf))
    assert inside.sum() > 10
    # float64 log then exp/pow: relative error ~|log value| * 1e-16 (< 1e-13); 1e-9 is slack
    np.testing.assert_allclose(decompress(cfg, y)[inside], linear[inside], rtol=1e-9)
    # decompress() calls decompress_mel on the same input: equal, rtol is slack
    np.testing.assert_allclose(decompress(cfg, y), decompress_mel(cfg, torch.from_numpy(y)).numpy(),
                               rtol=1e-12)
    # float64 dB of values up to ~70: ~1e-14 apart
    np.testing.assert_allclose(to_db(cfg, y)[inside], 20 * np.log10(linear[inside]), atol=1e-9)


def test_normalised_features_under_a_named_preset_are_warned_about(caplog) -> None:
    # ESPnet's features normalised per bin, named as espnet but without their statistics:
    # converted as asked, with the evidence and the fix in a warning
    feats, _ = normalised_espnet()
    with caplog.at_level("WARNING"):
        prepared = prepare_mel(feats, get_preset("hifigan"), "espnet")
    assert prepared.detection.preset.preset == "espnet"
    assert "normalised per bin" in caplog.text and "--stats" in caplog.text
    assert "spectral tilt" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # raw espnet features under their own name: no warning
        prepare_mel(stored("espnet"), get_preset("hifigan"), "espnet")
    assert "normalised" not in caplog.text


def test_silence_and_constants_are_not_called_normalised() -> None:
    hifigan = get_preset("hifigan")
    silent = np.full((80, 40), hifigan.floor, np.float32)  # an all-silent HiFi-GAN mel
    det = detect(silent, prefer=hifigan)
    assert det.preset.preset == "hifigan" and "floor" in det.evidence
    with pytest.raises(MelError, match=r"every value is 0\.5: a constant mel") as err:
        detect(np.full((80, 40), 0.5, np.float32))
    assert "--stats" not in str(err.value)
    loud = 1e6 + np.random.default_rng(0).standard_normal((80, 40))  # values around 1e6
    with pytest.raises(AmbiguousMelError, match="fits no known mel convention") as err:
        detect(loud)
    assert "--stats" not in str(err.value)


def test_normalised_refusal_names_the_option_with_its_value() -> None:
    feats, _ = normalised_espnet()
    with pytest.raises(NormalisedMelError) as err:
        detect(feats)
    message = str(err.value)
    assert "--stats <stats.h5|stats.npy|feats_stats.npz>" in message
    assert not message.rstrip().endswith("--input-preset")


@pytest.mark.parametrize("array, words", [
    (np.zeros((0, 80), np.float32), "empty array (dtype float32"),
    (torch.zeros(80, 0, dtype=torch.float16), "empty array (dtype float16"),
    (np.ones((80, 20), np.complex64), "complex array (dtype complex64"),
    (np.ones((80, 20), bool), "boolean array (dtype bool"),
    (torch.ones(80, 20, dtype=torch.bool), "boolean array (dtype bool"),
])
def test_arrays_that_are_not_mels_are_named_by_their_stored_dtype(array, words) -> None:
    with pytest.raises(MelError, match=re.escape(words)):
        prepare_mel(array, get_preset("hifigan"))


def test_the_tacotron2_hint_is_short_and_said_once(caplog) -> None:
    # hifigan and tacotron2 mels have identical values: the hint is not part of every
    # file's line, and it is said once per run, not once per file
    prep = MelPreparer(get_preset("hifigan"))
    with caplog.at_level("INFO", logger="wavediff.convert"):
        lines = [prep(stored(name), name).detection.describe(name)
                 for name in ("hifigan", "tacotron2", "hifigan")]
    assert all(len(line) < 200 and "tacotron2 mels" not in line for line in lines)
    hints = [r for r in caplog.records if "--input-preset tacotron2" in r.getMessage()]
    assert len(hints) == 1


def test_16k_espnet_mels_are_told_apart_by_the_model_rate() -> None:
    # a 16 kHz espnet mel has espnet's values: the array alone cannot tell the rate, so the
    # model's rate decides (prefer), else the 22,050 Hz preset with a note naming the option
    cfg16 = get_preset("espnet-16k")
    source = DATA / FACTS["source"]["file"]
    audio, _ = load_audio(source, 16000, resample=True)  # the reference clip at 16 kHz
    wav = torch.from_numpy(audio).double()
    mel16 = MelSpectrogram(cfg16)(wav).float().numpy().T  # (T, 80), ESPnet's layout
    assert mel16.shape == (cfg16.num_frames(wav.numel()), 80)
    det = detect(mel16)
    assert det.preset.preset == "espnet"
    assert "espnet-16k" in det.tie and "--input-preset espnet-16k" in det.tie
    assert "16,000 Hz" in det.tie
    own = detect(mel16, prefer=cfg16)
    assert own.preset.preset == "espnet-16k" and "model's rate" in own.tie
    # hifigan's values differ: a 16 kHz espnet mel is not read as hifigan for a hifigan model
    assert detect(mel16, prefer=get_preset("hifigan")).preset.preset == "espnet"
    # frames of 16 ms are not 11.6 ms: a 22,050 Hz model refuses them with the fix
    with pytest.raises(MelError, match="16000 Hz, hop 256 .*use a model trained at 16000 Hz"):
        MelConverter(cfg16, get_preset("hifigan"))
