"""Drop-in APIs and the vocode CLI fed with mels of other systems' conventions."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import wavediff_cli
from wavediff.compat import ESPnetVocoder, predict
from wavediff.errors import MelError
from wavediff.vocoder import Vocoder

DATA = Path(__file__).parent / "data" / "reference_mels"
FACTS = json.loads((DATA / "references.json").read_text())
HOP = 256


@pytest.fixture(scope="module")
def vocoder(trained_exp) -> Vocoder:
    return Vocoder.from_pretrained(trained_exp["exp"])


def ref(name: str) -> np.ndarray:
    return np.load(DATA / FACTS["systems"][name]["file"])


def test_decode_converts_other_conventions(vocoder: Vocoder) -> None:
    t2 = ref("tacotron2")[:, :40]  # (80, 40) in tacotron2's convention
    wav = vocoder.decode(t2, input_preset="tacotron2", seed=0)
    assert wav.shape == (39 * HOP,)  # centred -> uncentred: one frame fewer
    # the same values moved half a hop onto the model's grid: each frame the cubic
    # half-way value of the four around it, the end frames repeated (float64, stored as
    # float32 as the conversion does)
    t64 = t2.astype("float64")
    e = np.concatenate([t64[:, :1], t64, t64[:, -1:]], axis=1)
    half = (9 * (e[:, 1:-2] + e[:, 2:-1]) - e[:, :-3] - e[:, 3:]) / 16
    native = vocoder.decode(half.astype("float32"), seed=0)
    # the same mel, noise and decode: equal in practice; 1e-5 is slack for a layout copy,
    # frames off the grid (e.g. the last one dropped instead) change ~0.1
    assert torch.allclose(wav, native, atol=1e-5)
    assert not torch.allclose(wav, vocoder.decode(t2[:, :39], seed=0), atol=1e-2)
    # auto: the values are also the model's own hifigan ones, which are kept as they are
    assert vocoder.decode(t2, input_preset="auto", seed=0).shape == (40 * HOP,)
    espnet = ref("espnet")[:40]  # (T, 80) layout
    wav = vocoder.decode(espnet, input_preset="espnet", seed=0)
    assert wav.shape == (39 * HOP,) and bool(torch.isfinite(wav).all())
    wavs = vocoder.decode_batch([ref("matcha")[:, :30], ref("matcha")[:, :20]],
                                input_preset="matcha", seed=0)
    assert [w.shape[0] for w in wavs] == [30 * HOP, 20 * HOP]


def test_decode_refuses_other_rates(vocoder: Vocoder) -> None:
    with pytest.raises(MelError, match="24000 Hz"):
        vocoder.decode(ref("vocos")[:, :20], input_preset="auto")


def test_espnet_style_inference(vocoder: Vocoder) -> None:
    raw = ref("espnet")[:50]  # (T, 80) log10 mel
    mean, scale = raw.mean(0), raw.std(0) + 1e-3
    esp = ESPnetVocoder(vocoder, stats=(mean, scale), seed=0)
    assert esp.fs == 22050
    from_raw = esp.inference(torch.from_numpy(raw), normalize_before=True)
    from_norm = esp.inference(torch.from_numpy((raw - mean) / scale))
    assert from_raw.shape == (49 * HOP,)
    # normalising and de-normalising rounds the mel by ~1 float32 ulp (~1e-6 here), which the
    # decode carries to the audio at about that size; 1e-4 is ample, wrong stats are not
    assert torch.allclose(from_raw, from_norm, atol=1e-4)
    # the same call twice in one process: bit-identical
    assert torch.equal(esp(torch.from_numpy(raw), normalize_before=True), from_raw)
    with pytest.raises(MelError, match=r"\(T, n_mels\)"):
        esp.inference(torch.zeros(1, 50, 80))


def test_espnet_vocoder_without_stats_warns_about_normalised_features(vocoder, caplog) -> None:
    raw = ref("espnet")[:50]
    normalised = (raw - raw.mean(0)) / (raw.std(0) + 1e-3)
    esp = ESPnetVocoder(vocoder, seed=0)  # no stats= although the TTS normalised its output
    with caplog.at_level("WARNING", logger="wavediff.convert"):
        esp.inference(torch.from_numpy(normalised))
    assert "normalised per bin" in caplog.text and "stats" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="wavediff.convert"):
        esp.inference(torch.from_numpy(raw))  # raw features: nothing to say
    assert "normalised" not in caplog.text


def test_lmnt_style_predict(trained_exp, vocoder: Vocoder) -> None:
    spec = torch.from_numpy(ref("diffwave-lmnt")[:, :30])
    audio, rate = predict(spec, trained_exp["exp"], fast_sampling=True, device="cpu", seed=0)
    assert rate == 22050 and audio.shape == (1, 29 * HOP)
    assert float(audio.abs().max()) <= 1.0
    again, _ = predict(spec[None], vocoder, fast_sampling=True, seed=0)  # a loaded Vocoder
    # the same weights, mel and seed in one process: equal in practice, 1e-5 is slack
    assert torch.allclose(audio, again, atol=1e-5)
    import inspect

    # lmnt's signature and default: the full chain unless fast_sampling=True
    assert inspect.signature(predict).parameters["fast_sampling"].default is False
    with pytest.raises(MelError, match="params"):
        predict(spec, vocoder, params={"n_mels": 80})


def test_vocode_cli_detects_converts_and_refuses(trained_exp, tmp_path: Path) -> None:
    mels = tmp_path / "mels"
    mels.mkdir()
    np.save(mels / "t2.npy", ref("tacotron2")[:, :30])
    raw = ref("espnet")[:30]
    mean, scale = raw.mean(0), raw.std(0) + 1e-3
    with h5py.File(mels / "esp.h5", "w") as f:
        f["feats"] = ((raw - mean) / scale).astype(np.float32)
    np.save(mels / "stats.npy", np.stack([mean, scale]).astype(np.float32))  # found beside
    np.save(mels / "square.npy", ref("tacotron2")[:, :80])
    evil = np.empty(1, dtype=object)
    evil[0] = {"a": 1}
    np.save(mels / "evil.npy", evil, allow_pickle=True)
    out = tmp_path / "out"
    r = wavediff_cli("vocode", "--checkpoint", trained_exp["exp"], "--outdir", out, mels,
                     "--seed", "0")
    assert r.returncode == 1
    assert sorted(p.name for p in out.glob("*.wav")) == ["esp.wav", "t2.wav"]
    assert "t2.npy: hifigan, layout (n_mels, T)" in r.stderr
    assert "tacotron2 mels have the same values" in r.stderr and "--input-preset tacotron2" in r.stderr
    assert "esp.h5: espnet, layout (T, n_mels)" in r.stderr and "stats.npy" in r.stderr
    assert "approximate conversion espnet -> hifigan" in r.stderr and "expected error" in r.stderr
    assert "--input-layout" in r.stderr and "pickled" in r.stderr
    assert "2 of 4 inputs failed" in r.stderr
    r = wavediff_cli("vocode", "--checkpoint", trained_exp["exp"], "--outdir", tmp_path / "o2",
                     mels / "square.npy", "--input-preset", "tacotron2", "--input-layout",
                     "mels-frames", "-q")
    assert r.returncode == 0, r.stderr
    import soundfile as sf

    assert sf.info(str(tmp_path / "o2" / "square.wav")).frames == 79 * HOP


def test_mel_files_that_state_another_rate_are_refused(trained_exp, tmp_path: Path) -> None:
    # the same HiFi-GAN-style values at 16 kHz cannot be told from the values alone: a file
    # that says its rate (h5 attribute, npz or .pt entry) is refused with the numbers; files
    # that say nothing are read at the model's rate, and the log says so, once
    mel = ref("hifigan")[0, :, :30]  # (80, 30)
    mels = tmp_path / "mels"
    mels.mkdir()
    with h5py.File(mels / "h5_16k.h5", "w") as f:
        f.create_dataset("feats", data=mel.T)
        f.attrs["sampling_rate"] = 16000
    np.savez(mels / "npz_16k.npz", mel=mel, sr=np.int64(16000))
    torch.save({"mel": torch.from_numpy(mel), "hop_length": 200}, mels / "pt_hop200.pt")
    with h5py.File(mels / "h5_ok.h5", "w") as f:
        f.create_dataset("feats", data=mel.T)
        f["feats"].attrs["sample_rate"] = 22050
    np.save(mels / "plain.npy", mel)
    out = tmp_path / "out"
    r = wavediff_cli("vocode", "--checkpoint", trained_exp["exp"], "--outdir", out, mels,
                     "--seed", "0", "--steps", "2")
    assert r.returncode == 1
    assert sorted(p.name for p in out.glob("*.wav")) == ["h5_ok.wav", "plain.wav"]
    assert "h5_16k.h5: the file states 16000 Hz (sampling_rate = 16000 in the attributes" in r.stderr
    assert "npz_16k.npz: the file states 16000 Hz (sr = 16000" in r.stderr
    assert "but the model runs at 22050 Hz" in r.stderr and "0.73x as long" in r.stderr
    assert "pt_hop200.pt: the file states a hop of 200 samples" in r.stderr
    assert r.stderr.count("no sample rate: read at") == 1
    assert "1 mel file states no sample rate: read at the model's 22050 Hz" in r.stderr
