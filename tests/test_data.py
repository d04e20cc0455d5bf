"""Feature records and the training data: aligned crops, padding, resumable batches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from wavediff.audio.presets import get_preset
from wavediff.audio.dump import (
    DumpError,
    check_dump_matches,
    list_records,
    load_record,
    read_audio_config,
    save_record,
    write_audio_config,
)
from wavediff.train.data import CropDataset, StepBatchSampler, crop_frames_for

HOP = 8
N_MELS = 3


def indexed_record(path, frames: int, hop: int = HOP):
    """Mel frame j holds j (in every bin); wave sample i holds i // hop."""
    mel = np.tile(np.arange(frames, dtype=np.float32), (N_MELS, 1))
    wave = (np.arange(frames * hop) // hop).astype(np.float32)
    save_record(path, wave, mel)
    return path


# ---------------------------------------------------------------------- records
def test_record_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(40).astype(np.float64)  # stored as float32
    mel = rng.standard_normal((N_MELS, 5)).astype(np.float32)
    path = tmp_path / "utt1.npz"
    save_record(path, wave, mel)
    w, m = load_record(path)
    assert w.dtype == np.float32 and m.dtype == np.float32
    # stored and read back (the float64 wave rounded to float32 once, as here): bit-identical
    np.testing.assert_array_equal(w, wave.astype(np.float32))
    np.testing.assert_array_equal(m, mel)
    assert [p.name for p in tmp_path.iterdir()] == ["utt1.npz"]  # no temp file left


def test_pickled_record_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    with open(path, "wb") as f:
        np.savez(f, wave=np.array([{"a": 1}], dtype=object), mel=np.zeros((N_MELS, 1)))
    with pytest.raises(DumpError, match="evil.npz"):
        load_record(path)


def test_garbage_record_is_refused(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(DumpError, match="garbage.npz"):
        load_record(path)
    path.write_bytes(pickle.dumps({"wave": [1.0], "mel": [[1.0]]}))
    with pytest.raises(DumpError, match="garbage.npz"):
        load_record(path)
    path.write_bytes(b"PK\x03\x04" + b"\0" * 50)
    with pytest.raises(DumpError, match="garbage.npz"):
        load_record(path)


def test_record_without_mel_is_refused(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, wave=np.zeros(8, dtype=np.float32))
    with pytest.raises(DumpError, match="partial.npz"):
        load_record(path)


def test_missing_record_is_refused(tmp_path):
    with pytest.raises(DumpError, match="nope.npz"):
        load_record(tmp_path / "nope.npz")


def test_list_records(tmp_path):
    with pytest.raises(DumpError, match="does not exist"):
        list_records(tmp_path / "missing")
    with pytest.raises(DumpError, match="no .npz"):
        list_records(tmp_path)
    for name in ("b", "a", "c"):
        indexed_record(tmp_path / f"{name}.npz", 2)
    assert [p.name for p in list_records(tmp_path)] == ["a.npz", "b.npz", "c.npz"]


# ---------------------------------------------------------------------- crops
U_VALUES = [0.0, 1e-9, 0.1, 0.25, 0.5, 0.77, 0.999, 0.999999999]


@pytest.mark.parametrize("frames", [10, 11, 37])
@pytest.mark.parametrize("crop", [1, 4, 10])
def test_crops_are_aligned_and_exact(tmp_path, frames, crop):
    rec = indexed_record(tmp_path / "u.npz", frames)
    ds = CropDataset([rec], crop_frames=crop, hop_length=HOP, pad_value=-11.5)
    starts = set()
    for u in U_VALUES + list(np.linspace(0, 1, 50, endpoint=False)):
        wave, mel = ds[(0, float(u))]
        assert wave.shape == (crop * HOP,)
        assert mel.shape == (N_MELS, crop)
        start = int(mel[0, 0])
        starts.add(start)
        assert 0 <= start <= frames - crop
        # consecutive frames, every bin alike (integer values, crops are data movement: exact)
        np.testing.assert_array_equal(mel.numpy(), np.tile(np.arange(start, start + crop),
                                                           (N_MELS, 1)))
        # each hop of samples belongs to the mel frame beside it
        np.testing.assert_array_equal(wave.numpy().reshape(crop, HOP),
                                      np.repeat(mel[0].numpy()[:, None], HOP, axis=1))
    # u in [0, 1) reaches both ends
    assert min(starts) == 0 and max(starts) == frames - crop
    assert ds[(0, 0.0)][1][0, 0] == 0
    assert ds[(0, 0.999999999)][1][0, 0] == frames - crop


def test_crop_start_grows_with_u(tmp_path):
    rec = indexed_record(tmp_path / "u.npz", 40)
    ds = CropDataset([rec], crop_frames=5, hop_length=HOP, pad_value=0.0)
    starts = [int(ds[(0, u)][1][0, 0]) for u in np.linspace(0, 0.999, 30)]
    assert starts == sorted(starts)
    assert len(set(starts)) > 20


@pytest.mark.parametrize("pad_value", [0.0, -11.5129])
def test_short_utterance_is_padded(tmp_path, pad_value):
    rec = tmp_path / "short.npz"
    rng = np.random.default_rng(2)
    wave = rng.uniform(0.1, 0.9, 3 * HOP).astype(np.float32)
    mel = rng.uniform(1.0, 2.0, (N_MELS, 3)).astype(np.float32)
    save_record(rec, wave, mel)
    ds = CropDataset([rec], crop_frames=7, hop_length=HOP, pad_value=pad_value)
    for u in (0.0, 0.5, 0.99):
        w, m = ds[(0, u)]
        assert w.shape == (7 * HOP,) and m.shape == (N_MELS, 7)
        # copies and constant padding, no arithmetic: exact
        np.testing.assert_array_equal(w[:3 * HOP].numpy(), wave)
        assert np.all(w[3 * HOP:].numpy() == 0.0)
        np.testing.assert_array_equal(m[:, :3].numpy(), mel)
        assert np.all(m[:, 3:].numpy() == np.float32(pad_value))


def test_crop_of_exact_length_is_the_whole_record(tmp_path):
    rec = indexed_record(tmp_path / "u.npz", 6)
    ds = CropDataset([rec], crop_frames=6, hop_length=HOP, pad_value=0.0)
    for u in (0.0, 0.5, 0.999):
        w, m = ds[(0, u)]
        np.testing.assert_array_equal(m[0].numpy(), np.arange(6))  # integer values: exact
        np.testing.assert_array_equal(w.numpy(), np.arange(6 * HOP) // HOP)


def test_record_with_wrong_length_is_refused(tmp_path):
    rec = tmp_path / "bad.npz"
    save_record(rec, np.zeros(5 * HOP - 1, dtype=np.float32), np.zeros((N_MELS, 5)))
    ds = CropDataset([rec], crop_frames=2, hop_length=HOP, pad_value=0.0)
    with pytest.raises(DumpError, match="bad.npz"):
        ds[(0, 0.0)]


def test_cache_returns_same_crops(tmp_path):
    records = [indexed_record(tmp_path / f"{i}.npz", 10 + i) for i in range(3)]
    plain = CropDataset(records, crop_frames=4, hop_length=HOP, pad_value=0.0)
    cached = CropDataset(records, crop_frames=4, hop_length=HOP, pad_value=0.0, cache=True)
    assert len(plain) == len(cached) == 3
    for item in [(0, 0.3), (2, 0.9), (0, 0.3), (1, 0.0)]:
        for a, b in zip(plain[item], cached[item]):  # the same stored data, cropped: exact
            assert np.array_equal(a.numpy(), b.numpy())
    before = cached[(0, 0.3)]
    records[0].unlink()
    after = cached[(0, 0.3)]  # served from the cache
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(before, after))
    with pytest.raises(DumpError):
        plain[(0, 0.3)]


# ---------------------------------------------------------------------- sampler
def test_batches_are_a_pure_function_of_seed_and_step():
    a = StepBatchSampler(13, 4, seed=5)
    b = StepBatchSampler(13, 4, seed=5)
    assert [b.batch(s) for s in (7, 3, 0)] == [a.batch(7), a.batch(3), a.batch(0)]
    assert a.batch(7) == a.batch(7)


def test_resume_from_step_yields_the_same_batches():
    k = 9
    full = StepBatchSampler(7, 3, seed=42, max_steps=20)
    resumed = StepBatchSampler(7, 3, seed=42, start_step=k, max_steps=20)
    all_batches = list(full)
    assert len(all_batches) == len(full) == 20
    assert list(resumed) == all_batches[k:]
    assert len(resumed) == 20 - k


def test_each_epoch_visits_every_record_once():
    n, bs = 10, 4
    sampler = StepBatchSampler(n, bs, seed=1, max_steps=15)  # 60 items = 6 epochs
    items = [item for batch in sampler for item in batch]
    assert all(len(batch) == bs for batch in StepBatchSampler(n, bs, seed=1, max_steps=15))
    for epoch in range(len(items) // n):
        indices = [i for i, _ in items[epoch * n:(epoch + 1) * n]]
        assert sorted(indices) == list(range(n))
    orders = {tuple(i for i, _ in items[e * n:(e + 1) * n]) for e in range(6)}
    assert len(orders) > 1  # a fresh permutation per epoch
    us = [u for _, u in items]
    assert all(0.0 <= u < 1.0 for u in us)
    assert len(set(us)) == len(us)


def test_different_seeds_differ():
    a = StepBatchSampler(20, 4, seed=1)
    b = StepBatchSampler(20, 4, seed=2)
    assert [a.batch(s) for s in range(5)] != [b.batch(s) for s in range(5)]
    assert [u for _, u in a.batch(0)] != [u for _, u in b.batch(0)]


def test_endless_sampler_has_no_length():
    sampler = StepBatchSampler(5, 2, seed=0)
    with pytest.raises(TypeError):
        len(sampler)
    it = iter(sampler)
    assert [next(it) for _ in range(3)] == [sampler.batch(s) for s in range(3)]


# ---------------------------------------------------------------------- dump conventions
def test_check_dump_matches(tmp_path):
    write_audio_config(tmp_path, get_preset("hifigan"))
    assert read_audio_config(tmp_path) == get_preset("hifigan")
    check_dump_matches(tmp_path, get_preset("hifigan"))  # same convention: accepted
    with pytest.raises(DumpError, match="padding") as info:
        check_dump_matches(tmp_path, get_preset("tacotron2"))
    msg = str(info.value)
    assert "magnitude_eps" in msg and "preset" in msg
    assert "n_mels" not in msg and "hop_length" not in msg  # only the differing fields
    with pytest.raises(DumpError, match="n_mels"):
        check_dump_matches(tmp_path, get_preset("hifigan").replace(n_mels=64))


def test_dump_without_audio_config_is_refused(tmp_path):
    with pytest.raises(DumpError, match="audio.yaml"):
        check_dump_matches(tmp_path, get_preset("hifigan"))
    (tmp_path / "audio.yaml").write_text("n_mels: many\n")
    with pytest.raises(DumpError, match="n_mels"):
        read_audio_config(tmp_path)


@pytest.mark.parametrize(
    "samples, hop, frames",
    [(16000, 256, 62), (16384, 256, 64), (100, 256, 1), (256, 256, 1), (511, 256, 1),
     (512, 256, 2), (16000, 300, 53)],
)
def test_crop_frames_for(samples, hop, frames):
    assert crop_frames_for(samples, hop) == frames


def test_balanced_sampler_draws_every_speaker_equally_and_resumes_exactly():
    # speaker 0 has 12 records, speaker 1 has 3, speaker 2 has 1
    groups = [0] * 12 + [1] * 3 + [2]
    sampler = StepBatchSampler(len(groups), 4, seed=3, max_steps=36, groups=groups)
    items = [i for batch in sampler for i, _ in batch]  # 144 items = 4 balanced epochs of 36
    counts = np.bincount([groups[i] for i in items], minlength=3)
    assert counts.tolist() == [48, 48, 48]
    # within an epoch the big speaker's records each come once, the small ones repeat
    epoch = items[:36]
    assert sorted(i for i in epoch if groups[i] == 0) == list(range(12))
    assert sorted(set(i for i in epoch if groups[i] == 1)) == [12, 13, 14]
    assert epoch.count(15) == 12
    # unbalanced, speaker 0 would have 3/4 of the draws
    plain = [i for b in StepBatchSampler(len(groups), 4, seed=3, max_steps=36) for i, _ in b]
    assert np.bincount([groups[i] for i in plain], minlength=3).tolist() == [108, 27, 9]
    resumed = StepBatchSampler(len(groups), 4, seed=3, start_step=17, max_steps=36, groups=groups)
    assert [b for b in resumed] == [sampler.batch(s) for s in range(17, 36)]


def test_utt2spk_is_read_checked_and_complete(tmp_path):
    from wavediff.errors import WavediffError
    from wavediff.train.data import read_utt2spk

    records = [tmp_path / f"{u}.npz" for u in ("a1", "a2", "b1")]
    spk = tmp_path / "utt2spk"
    spk.write_text("a1 anna\nb1 bert\na2 anna\n\nzz other\n")
    assert read_utt2spk(spk, records) == [0, 0, 1]
    spk.write_text("a1 anna\nb1 bert\n")
    with pytest.raises(WavediffError, match="no speaker for 1 training utterance.*a2"):
        read_utt2spk(spk, records)
    spk.write_text("a1 anna extra\n")
    with pytest.raises(WavediffError, match=r"utt2spk:1: expected '<utt_id> <speaker>'"):
        read_utt2spk(spk, records)
    with pytest.raises(WavediffError, match="balance_speakers false"):
        read_utt2spk(tmp_path / "missing", records)
