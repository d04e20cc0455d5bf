"""The model shipped in the package: found by name, its config, a golden output, the CLI.

The golden output catches an accidental change of the shipped weights or of the decoding
engine. After deliberately replacing the weights, regenerate it with
``python tests/test_shipped_model.py --regenerate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import wavediff_cli

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "data" / "joe_golden.npz"
DEMO = REPO / "egs" / "demo"


def golden_input() -> np.ndarray:
    """A fixed short mel: 24 frames of the demo clip's Tacotron 2 mel (hifigan values)."""
    return np.load(DEMO / "JOE001-0007_tacotron2.npy")[:, 100:124].astype(np.float32)


def decode_golden() -> np.ndarray:
    from wavediff.vocoder import Vocoder

    voc = Vocoder.from_pretrained("joe", precision="fp32")
    return voc.decode(golden_input(), seed=1234).numpy()


def test_shipped_model_loads_by_name_with_its_config():
    from wavediff.pretrained import list_models, model_info
    from wavediff.vocoder import Vocoder

    assert "joe" in [m.name for m in list_models()]
    info = model_info("joe")
    assert info.size_bytes < 12e6
    voc = Vocoder.from_pretrained("joe", precision="fp32")
    cfg = voc.config
    assert (voc.sample_rate, cfg.audio.preset, cfg.audio.n_mels, voc.hop_length) == (
        22050, "hifigan", 80, 256)
    assert cfg.diffusion.prior == "priorgrad" and cfg.diffusion.prior_energy is not None
    assert voc.step is not None and voc.step > 0
    assert sum(p.numel() for p in voc.model.parameters()) == info.card["parameters"]
    for key in ("description", "training", "dev_set", "quality", "limits", "status"):
        assert key in info.card, key


def test_golden_output():
    expected = np.load(GOLDEN)
    got = decode_golden()
    assert got.shape == expected["audio"].shape
    # written on one CPU; float32 kernels of another (GEMMs, FFTs, the projection's float32
    # NNLS) round differently: 1e-6 apart measured with AVX2 kernels. 2e-4 leaves room for
    # any kernel and still catches changed weights or a changed engine (~0.01 or more)
    np.testing.assert_allclose(got, expected["audio"], atol=2e-4, rtol=0)


def test_vocode_without_checkpoint_uses_the_shipped_model(tmp_path):
    r = wavediff_cli("vocode", "--outdir", tmp_path, "--seed", "0", DEMO / "JOE001-0007.flac",
                     DEMO / "JOE001-0007_espnet.npy")
    assert r.returncode == 0, r.stderr
    assert "using the shipped model 'joe'" in r.stderr
    import soundfile as sf

    wav, sr = sf.read(tmp_path / "JOE001-0007.wav")
    assert sr == 22050 and len(wav) == sf.info(DEMO / "JOE001-0007.flac").frames
    assert (tmp_path / "JOE001-0007_espnet.wav").exists()
    assert "espnet" in r.stderr  # the convention was detected and converted
    r = wavediff_cli("models")
    assert r.returncode == 0 and "joe (default)" in r.stdout and "22050 Hz" in r.stdout


def test_the_shipped_model_is_chosen_by_the_inputs_rate(tmp_path):
    """Without --checkpoint the model is the shipped one at the inputs' rate (stated by the
    files or by --sample-rate), said in one line; none at that rate is refused clearly."""
    import soundfile as sf

    from wavediff.errors import CheckpointError
    from wavediff.pretrained import choose_model, list_models

    rates = {m.sample_rate for m in list_models()}
    assert choose_model(22050)[0] == "joe" and "22050 Hz" in choose_model(22050)[1]
    assert choose_model(None)[0] == "joe" and "state no sample rate" in choose_model(None)[1]
    unshipped = next(r for r in (16000, 24000, 44100, 48000) if r not in rates)
    with pytest.raises(CheckpointError, match=f"no shipped model runs at {unshipped} Hz"):
        choose_model(unshipped)
    assert "--resample" in choose_model(unshipped, resample=True)[1]

    mel = np.load(DEMO / "JOE001-0007_espnet.npy")  # states no rate
    np.save(tmp_path / "a.npy", mel)
    r = wavediff_cli("vocode", "--outdir", tmp_path / "o", "--steps", "1", "--sample-rate",
                     "22050", tmp_path / "a.npy")
    assert r.returncode == 0, r.stderr
    assert "using the shipped model 'joe'" in r.stderr and "at 22050 Hz, joe's rate" in r.stderr
    # mels said to be of a rate no shipped model runs at: one line, nothing written
    r = wavediff_cli("vocode", "--outdir", tmp_path / "x", "--sample-rate", str(unshipped),
                     tmp_path / "a.npy")
    assert r.returncode == 1 and f"no shipped model runs at {unshipped} Hz" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x" / "a.wav").exists()
    # with a model given, --sample-rate is checked against it
    r = wavediff_cli("vocode", "--checkpoint", "joe", "--outdir", tmp_path / "y",
                     "--sample-rate", str(unshipped), tmp_path / "a.npy")
    assert r.returncode == 1 and f"states {unshipped} Hz (--sample-rate)" in r.stderr
    # audio at another rate: refused, or resampled to the default model's with --resample
    wav, sr = sf.read(DEMO / "JOE001-0007.flac", dtype="float32")
    sf.write(tmp_path / "b.wav", wav[: sr // 2][::2], sr // 2)  # 11025 Hz, 0.5 s
    r = wavediff_cli("vocode", "--outdir", tmp_path / "z", "--steps", "1", tmp_path / "b.wav")
    assert r.returncode == 1 and f"no shipped model runs at {sr // 2} Hz" in r.stderr
    r = wavediff_cli("vocode", "--outdir", tmp_path / "z", "--steps", "1", "--resample",
                     tmp_path / "b.wav")
    assert r.returncode == 0, r.stderr
    assert sf.info(tmp_path / "z" / "b.wav").samplerate == 22050


def test_shipped_model_resynthesises_a_held_out_clip():
    # JOE001-0007 is in the model's dev set (never trained on): copy-synthesis with the
    # model's defaults keeps the spectrum, and so does the network alone (no projection in
    # the chain; conditioned on the mel's Griffin-Lim waveform): measured 0.157 and 0.179,
    # where the model before it (a Griffin-Lim start, no conditioning) gave 0.16 and 0.46
    import soundfile as sf

    from wavediff.audio.mel import MelSpectrogram
    from wavediff.vocoder import Vocoder

    voc = Vocoder.from_pretrained("joe", precision="fp32")
    assert voc.config.diffusion.consistency_iters >= 1
    wav, sr = sf.read(DEMO / "JOE001-0007.flac", dtype="float32")
    wav = wav[: int(1.5 * sr)]
    mel = MelSpectrogram(voc.preset)

    def log_mel_l1(out):
        return float((mel(torch.from_numpy(wav)) - mel(out)).abs().mean())

    speech = log_mel_l1(voc.copy_synthesis(wav, seed=0))
    alone = log_mel_l1(voc.copy_synthesis(wav, seed=0, consistency=0))
    assert speech < 0.25 and alone < 0.3 and speech < alone, (speech, alone)


if __name__ == "__main__":
    if "--regenerate" in sys.argv:
        torch.set_num_threads(1)
        np.savez(GOLDEN, audio=decode_golden())
        print(f"wrote {GOLDEN}")
