"""GTA fine-tuning: predicted mels paired with recordings, frame checks, init from a model."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import make_corpus, wavediff_cli
from wavediff.audio.io import load_audio
from wavediff.audio.mel import MelSpectrogram
from wavediff.audio.presets import get_preset
from wavediff.audio.dump import load_record, read_audio_config
from wavediff.train.gta import GtaError, apply_init_checkpoint, build_gta_dump, pair_scps

HOP = 256


def gta_lists(root: Path, n: int = 3) -> tuple[Path, Path, list[Path]]:
    """A corpus, its tacotron2-convention mels (npy and h5) and the two scp files."""
    wavs = make_corpus(root / "wavs", n=n, seconds=0.5)
    mel = MelSpectrogram.from_preset("tacotron2")
    feats, wav_lines = [], []
    for i, w in enumerate(wavs):
        audio, _ = load_audio(w, 22050)
        m = mel(torch.from_numpy(audio)).numpy()
        if i % 2:
            p = root / f"{w.stem}.h5"
            with h5py.File(p, "w") as f:
                f["feats"] = m.T
            feats.append(f"{w.stem} {p}:feats")
        else:
            p = root / f"{w.stem}.npy"
            np.save(p, m)
            feats.append(f"{w.stem} {p}")
        wav_lines.append(f"{w.stem} {w}")
    (root / "feats.scp").write_text("\n".join(feats) + "\n")
    (root / "wav.scp").write_text("\n".join(wav_lines) + "\n")
    return root / "feats.scp", root / "wav.scp", wavs


def test_gta_dump_trims_to_the_frame_grid(tmp_path: Path) -> None:
    feats, wavs, files = gta_lists(tmp_path)
    report = build_gta_dump(feats, wavs, tmp_path / "dump", get_preset("hifigan"), progress=False)
    assert report.utterances == 3 and "tacotron2 x3 (approximate)" in report.conventions
    assert read_audio_config(tmp_path / "dump").preset == "hifigan"
    target = MelSpectrogram.from_preset("hifigan")
    for f in files:
        audio, _ = load_audio(f, 22050)
        wave, mel = load_record(tmp_path / "dump" / f"{f.stem}.npz")
        assert mel.shape == (80, len(audio) // HOP) and len(wave) == mel.shape[1] * HOP
        np.testing.assert_array_equal(wave, audio[: len(wave)])  # samples copied: exact
        assert mel.shape == target(torch.from_numpy(audio)).shape
    assert report.trimmed + report.padded + report.exact == 3
    assert report.trimmed == sum(1 for f in files if len(load_audio(f, 22050)[0]) % HOP)


def test_gta_refuses_far_lengths_and_unpaired_ids(tmp_path: Path) -> None:
    feats, wavs, files = gta_lists(tmp_path)
    lines = wavs.read_text().splitlines()
    long = make_corpus(tmp_path / "long", n=1, seconds=1.5, seed=9)[0]
    lines[1] = f"{files[1].stem} {long}"  # the recording of another, longer utterance
    wavs.write_text("\n".join(lines) + "\n")
    with pytest.raises(GtaError, match=f"1 of 3 pairs.*{files[1].stem} \\("):
        build_gta_dump(feats, wavs, tmp_path / "dump", get_preset("hifigan"), progress=False)
    assert not (tmp_path / "dump").exists()
    wavs.write_text("\n".join(lines[:2] + ["EXTRA /x.wav"]) + "\n")
    with pytest.raises(GtaError, match=f"missing from .*{files[2].stem}.*EXTRA"):
        pair_scps(feats, wavs)


def test_gta_names_the_frame_rate_that_mels_of_another_rate_imply(tmp_path: Path) -> None:
    # mels made from the same recordings resampled to 16 kHz (hop 256): 16 ms frames
    wavs = make_corpus(tmp_path / "wavs", n=3, seconds=1.0)
    mel16 = MelSpectrogram(get_preset("hifigan").replace(sample_rate=16000, fmax=8000.0))
    feats = []
    for w in wavs:
        audio, _ = load_audio(w, 16000, resample=True)
        np.save(tmp_path / f"{w.stem}.npy", mel16(torch.from_numpy(audio)).numpy())
        feats.append(f"{w.stem} {tmp_path / (w.stem + '.npy')}")
    (tmp_path / "feats.scp").write_text("\n".join(feats) + "\n")
    (tmp_path / "wav.scp").write_text("".join(f"{w.stem} {w}\n" for w in wavs))
    with pytest.raises(GtaError, match=r"3 of 3 pairs.*as if the mels were made at 1[56]\d\d\d Hz"):
        build_gta_dump(tmp_path / "feats.scp", tmp_path / "wav.scp", tmp_path / "dump",
                       get_preset("hifigan"), progress=False)
    # a file that states its rate is refused for that, with the numbers
    with h5py.File(tmp_path / "stated.h5", "w") as f:
        f["feats"] = np.load(tmp_path / f"{wavs[0].stem}.npy").T
        f.attrs["sampling_rate"] = 16000
    (tmp_path / "feats.scp").write_text(f"{wavs[0].stem} {tmp_path / 'stated.h5'}\n")
    (tmp_path / "wav.scp").write_text(f"{wavs[0].stem} {wavs[0]}\n")
    with pytest.raises(Exception, match="states 16000 Hz.*model runs at 22050 Hz"):
        build_gta_dump(tmp_path / "feats.scp", tmp_path / "wav.scp", tmp_path / "dump",
                       get_preset("hifigan"), progress=False)


def test_gta_fine_tuning_cli(trained_exp, tmp_path: Path) -> None:
    feats, wavs, _ = gta_lists(tmp_path)
    out = tmp_path / "gta_exp"
    r = wavediff_cli("train", "--init-checkpoint", trained_exp["exp"], "--train-feats-scp", feats,
                     "--train-wav-scp", wavs, "--outdir", out, "--set", "train.max_steps=2",
                     "--set", "train.save_interval=2")
    assert r.returncode == 0, r.stderr
    assert "fine-tuning from" in r.stderr and "3 GTA pairs" in r.stderr
    assert (out / "checkpoint-2steps.pt").exists() and len(list((out / "dump_gta").glob("*.npz"))) == 3
    r = wavediff_cli("train", "--train-feats-scp", feats, "--outdir", tmp_path / "x")
    assert r.returncode != 0 and "--train-wav-scp" in r.stderr


def test_init_checkpoint_must_match_the_model(trained_exp) -> None:
    from wavediff.train.gta import load_init_checkpoint

    state = load_init_checkpoint(trained_exp["exp"])

    class Fake:
        config = state["config"].override(["model.residual_channels=8"])

    with pytest.raises(Exception, match="'model' config differs"):
        apply_init_checkpoint(Fake(), state)
