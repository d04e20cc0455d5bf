"""Mel file readers: formats, layouts, scp lists, statistics, and refusal of unsafe files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from wavediff.audio.formats import (
    apply_layout, load_mel_file, possible_layouts, read_mel, read_mel_scp, read_stats,
    split_spec,
)
from wavediff.audio.presets import get_preset
from wavediff.errors import MelError
from wavediff.audio.dump import save_record, write_audio_config


@pytest.fixture()
def mel() -> np.ndarray:
    return np.random.default_rng(0).normal(-5, 2, (80, 37)).astype(np.float32)


@pytest.mark.parametrize("layout", ["mels-frames", "1-mels-frames", "frames-mels"])
def test_npy_layouts(tmp_path: Path, mel: np.ndarray, layout: str) -> None:
    stored = {"mels-frames": mel, "1-mels-frames": mel[None], "frames-mels": mel.T}[layout]
    np.save(tmp_path / "a.npy", stored)
    assert possible_layouts(stored.shape, [80]) == [(layout, 80)]
    # every reader in this file copies the stored float32 values (transposes, squeezes): exact
    np.testing.assert_array_equal(read_mel(tmp_path / "a.npy", 80), mel)
    np.testing.assert_array_equal(apply_layout(stored, layout), mel)


def test_fortran_order_npy(tmp_path: Path, mel: np.ndarray) -> None:
    np.save(tmp_path / "f.npy", np.asfortranarray(mel))
    np.testing.assert_array_equal(read_mel(tmp_path / "f.npy", 80), mel)


def test_npz_and_wavediff_record(tmp_path: Path, mel: np.ndarray) -> None:
    np.savez(tmp_path / "one.npz", feats=mel.T)
    np.testing.assert_array_equal(read_mel(tmp_path / "one.npz", 80), mel)
    dump = tmp_path / "dump"
    dump.mkdir()
    write_audio_config(dump, get_preset("tacotron2"))
    save_record(dump / "u.npz", np.zeros(37 * 256, np.float32), mel)
    f = load_mel_file(dump / "u.npz")
    np.testing.assert_array_equal(f.array, mel)
    assert f.known is not None and f.known.preset == "tacotron2"
    np.savez(tmp_path / "two.npz", a=mel, b=mel)
    with pytest.raises(MelError, match="several arrays"):
        load_mel_file(tmp_path / "two.npz")
    np.testing.assert_array_equal(load_mel_file(f"{tmp_path / 'two.npz'}:b").array, mel)


def test_pt_tensor_and_dict(tmp_path: Path, mel: np.ndarray) -> None:
    torch.save(torch.from_numpy(mel)[None], tmp_path / "a.pt")
    np.testing.assert_array_equal(read_mel(tmp_path / "a.pt", 80), mel)
    torch.save({"mel": torch.from_numpy(mel.T), "step": 3}, tmp_path / "d.pt")
    np.testing.assert_array_equal(read_mel(tmp_path / "d.pt", 80), mel)


class _Payload:
    """Unpickling this would create a file: proof that a loader ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pt_holding_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"mel": torch.zeros(80, 4), "x": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(MelError, match="refused"):
        read_mel(tmp_path / "evil.pt", 80)
    assert not marker.exists()


def test_pickled_npy_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(str(marker))
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    with pytest.raises(MelError, match="pickled"):
        read_mel(tmp_path / "evil.npy", 80)
    assert not marker.exists()
    with open(tmp_path / "evil.npz", "wb") as f:
        np.savez(f, mel=arr)
    with pytest.raises(MelError, match="pickled"):
        read_mel(tmp_path / "evil.npz", 80)
    assert not marker.exists()


def test_h5_feats_and_named_dataset(tmp_path: Path, mel: np.ndarray) -> None:
    with h5py.File(tmp_path / "u.h5", "w") as f:
        f["feats"] = mel.T
        f["wave"] = np.zeros(100, np.float32)
    np.testing.assert_array_equal(read_mel(tmp_path / "u.h5", 80), mel)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["a"] = mel.T
        f["b"] = mel
    with pytest.raises(MelError, match="no 'feats' dataset.*a, b"):
        read_mel(tmp_path / "v.h5", 80)
    np.testing.assert_array_equal(read_mel(f"{tmp_path / 'v.h5'}:b", 80), mel)
    assert split_spec("d/x.h5:feats") == (Path("d/x.h5"), "feats")
    assert split_spec("d/x.npy") == (Path("d/x.npy"), None)


def test_mel_scp(tmp_path: Path) -> None:
    scp = tmp_path / "feats.scp"
    scp.write_text("u1 dump/u1.h5:feats\nu2 mels/u2.npy\n")
    assert read_mel_scp(scp) == [("u1", "dump/u1.h5:feats"), ("u2", "mels/u2.npy")]
    scp.write_text("u1 raw_feats.ark:123\n")
    with pytest.raises(MelError, match="ark"):
        read_mel_scp(scp)


def test_bad_arrays(tmp_path: Path, mel: np.ndarray) -> None:
    bad = mel.copy()
    bad[3, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(MelError, match="NaN/Inf.*frame 5"):
        read_mel(tmp_path / "nan.npy", 80)
    np.save(tmp_path / "wrong.npy", mel[:60])
    with pytest.raises(MelError, match="no axis of 80"):
        read_mel(tmp_path / "wrong.npy", 80)
    with pytest.raises(MelError, match="does not exist"):
        read_mel(tmp_path / "missing.npy", 80)
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(MelError, match="unsupported"):
        read_mel(tmp_path / "x.txt", 80)


def test_stats_files(tmp_path: Path) -> None:
    mean, scale = np.linspace(-6, 0, 80), np.linspace(0.5, 2, 80)
    np.save(tmp_path / "stats.npy", np.stack([mean, scale]).astype(np.float32))
    m, s = read_stats(tmp_path / "stats.npy", 80)
    # stored as float32: one rounding (<= 6e-8 relative) of the float64 values
    np.testing.assert_allclose(m, mean, rtol=1e-6)
    np.testing.assert_allclose(s, scale, rtol=1e-6)
    with h5py.File(tmp_path / "stats.h5", "w") as f:
        f["mean"], f["scale"] = mean, scale
    # float64 stored and read back: exact (the default rtol 1e-7 is slack)
    np.testing.assert_allclose(read_stats(tmp_path / "stats.h5")[1], scale)
    x = np.random.default_rng(1).normal(mean, scale, (500, 80))
    np.savez(tmp_path / "feats_stats.npz", count=np.array(500), sum=x.sum(0),
             sum_square=(x * x).sum(0))
    m, s = read_stats(tmp_path / "feats_stats.npz")
    # float64: sum / count vs numpy's mean of the same sum (~1 ulp of values up to 6), and
    # one-pass vs two-pass variance (cancellation costs ~36 / 0.25 x 1e-16 relative)
    np.testing.assert_allclose(m, x.mean(0), atol=1e-9)
    np.testing.assert_allclose(s, x.std(0), rtol=1e-6)
    with pytest.raises(MelError, match="80 bins but the features have 60"):
        read_stats(tmp_path / "stats.npy", 60)
