"""The command line: preprocess, compute-statistics, train and vocode, good and bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

from conftest import make_corpus, wavediff_cli
from wavediff.audio.presets import get_preset
from wavediff.cli.main import SUBCOMMANDS, main
from wavediff.audio.dump import list_records, load_record
from wavediff.version import __version__


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"wavediff {__version__}"
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: wavediff {name}" in out and "example" in out, name
        # examples print as written: continued lines stay lines (no run of spaces where a
        # backslash-newline was swallowed)
        examples = out[out.index("example"):]
        assert not re.search(r"\S {4,}--", examples), (name, examples)


def test_python_dash_m_runs_the_same_command():
    r = wavediff_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"wavediff {__version__}"


@pytest.mark.parametrize("preset", ["hifigan", "tacotron2"])
def test_preprocess_records_are_frame_aligned(tmp_path, preset):
    paths = make_corpus(tmp_path / "wavs", n=3, seconds=0.5)
    assert main(["preprocess", "--preset", preset, "--wav-dir", str(tmp_path / "wavs"),
                 "--dumpdir", str(tmp_path / "dump"), "-q"]) == 0
    cfg = get_preset(preset)
    records = list_records(tmp_path / "dump")
    assert [r.stem for r in records] == [p.stem for p in paths]
    for rec, src in zip(records, paths):
        wave, mel = load_record(rec)
        n = sf.info(src).frames
        assert mel.shape == (80, cfg.num_frames(n))
        assert len(wave) == mel.shape[1] * cfg.hop_length
        original, _ = sf.read(src, dtype="float32")
        k = min(n, len(wave))
        np.testing.assert_array_equal(wave[:k], original[:k])  # samples copied, not computed


def test_preprocess_scp_parallel_matches_serial_and_resumes(tmp_path):
    paths = make_corpus(tmp_path / "wavs", n=4, seconds=0.4)
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"utt{i} {p}\n" for i, p in enumerate(paths)))
    for nj, d in ((1, "a"), (2, "b")):
        assert main(["preprocess", "--scp", str(scp), "--dumpdir", str(tmp_path / d),
                     "--nj", str(nj), "-q"]) == 0
    for ra, rb in zip(list_records(tmp_path / "a"), list_records(tmp_path / "b")):
        assert ra.name == rb.name
        # each mel is the same single-threaded computation in either process: bit-identical
        np.testing.assert_array_equal(load_record(ra)[1], load_record(rb)[1])
    # a rerun keeps existing records untouched
    before = {r.name: r.stat().st_mtime_ns for r in list_records(tmp_path / "a")}
    assert main(["preprocess", "--scp", str(scp), "--dumpdir", str(tmp_path / "a"), "-q"]) == 0
    assert {r.name: r.stat().st_mtime_ns for r in list_records(tmp_path / "a")} == before


def test_preprocess_refuses_sample_rate_mismatch_but_finishes_the_rest(tmp_path, capsys):
    make_corpus(tmp_path / "wavs", n=2, seconds=0.4)
    make_corpus(tmp_path / "wavs", n=1, seconds=0.4, sample_rate=16000, prefix="LOW")
    assert main(["preprocess", "--wav-dir", str(tmp_path / "wavs"),
                 "--dumpdir", str(tmp_path / "dump"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "16000" in err and "22050" in err and "--resample" in err
    assert "1 of 3 utterances failed: LOW00" in err
    assert sorted(r.stem for r in list_records(tmp_path / "dump")) == ["UTT00", "UTT01"]
    # with --resample it goes through, at the config's rate
    assert main(["preprocess", "--wav-dir", str(tmp_path / "wavs"), "--resample",
                 "--dumpdir", str(tmp_path / "dump"), "-q"]) == 0
    wave, mel = load_record(tmp_path / "dump" / "LOW00.npz")
    assert abs(len(wave) - 0.4 * 22050 * 1.25) < 0.6 * 22050  # resampled length, not 16 kHz's


def test_compute_statistics_matches_numpy(tmp_path):
    make_corpus(tmp_path / "wavs", n=3, seconds=0.4)
    main(["preprocess", "--wav-dir", str(tmp_path / "wavs"), "--dumpdir", str(tmp_path / "d"), "-q"])
    out = tmp_path / "stats.npy"
    assert main(["compute-statistics", "--dumpdir", str(tmp_path / "d"), "--out", str(out), "-q"]) == 0
    stats = np.load(out)
    allmel = np.concatenate([load_record(r)[1] for r in list_records(tmp_path / "d")], axis=1)
    assert stats.shape == (2, 80)
    # float64 one-pass sums (stored as float32) vs numpy's float32 pairwise mean and
    # two-pass std of ~100 frames: both within ~1e-6 relative of the exact values
    np.testing.assert_allclose(stats[0], allmel.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats[1], allmel.std(axis=1), rtol=1e-4, atol=1e-5)
    # .h5 is real HDF5 (ParallelWaveGAN's mean/scale datasets), which --stats reads back
    import h5py

    from wavediff.audio.formats import read_stats

    h5 = tmp_path / "stats.h5"
    assert main(["compute-statistics", "--dumpdir", str(tmp_path / "d"), "--out", str(h5), "-q"]) == 0
    # the same computation written to another format and read back: bit-identical (the
    # default rtol=1e-7 is below one float32 ulp)
    with h5py.File(h5, "r") as f:
        np.testing.assert_allclose(f["mean"][()], stats[0])
        np.testing.assert_allclose(f["scale"][()], stats[1])
    np.testing.assert_allclose(read_stats(h5)[0], stats[0], rtol=1e-6)
    for bad in ("stats.txt", "folder"):
        if bad == "folder":
            (tmp_path / bad).mkdir()
        assert main(["compute-statistics", "--dumpdir", str(tmp_path / "d"), "--out",
                     str(tmp_path / bad), "-q"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_train_writes_experiment_and_refuses_to_overwrite(trained_exp, tmp_path):
    exp = trained_exp["exp"]
    assert (exp / "config.yaml").exists()
    assert sorted(p.name for p in exp.glob("checkpoint-*.pt")) == [
        "checkpoint-10steps.pt", "checkpoint-20steps.pt"]
    assert list((exp / "logs").glob("events.out.tfevents.*"))
    r = wavediff_cli("train", "--config", trained_exp["conf"], "--train-dumpdir",
                     trained_exp["dump"] / "train", "--outdir", exp, "-q")
    assert r.returncode == 1
    assert "--resume" in r.stderr and r.stderr.count("\n") == 1


def test_train_refuses_dump_of_another_convention(trained_exp, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(trained_exp["conf"].read_text().replace("preset: hifigan", "preset: tacotron2"))
    r = wavediff_cli("train", "--config", conf, "--train-dumpdir", trained_exp["dump"] / "train",
                     "--outdir", tmp_path / "exp", "-q")
    assert r.returncode == 1 and "padding" in r.stderr and "rerun preprocess" in r.stderr


def test_vocode_mels_and_copy_synthesis(trained_exp, tmp_path):
    dump = trained_exp["dump"] / "dev"
    mels = tmp_path / "mels"
    mels.mkdir()
    frames = {}
    for rec in list_records(dump):
        mel = load_record(rec)[1]
        frames[rec.stem] = mel.shape[1]
        np.save(mels / f"{rec.stem}.npy", mel)
    np.save(mels / "tn_layout.npy", mel.T)  # (T, n_mels) is read too
    src = make_corpus(tmp_path / "wav", n=1, seconds=0.33, seed=7)[0]
    out = tmp_path / "out"
    r = wavediff_cli("vocode", "--checkpoint", trained_exp["exp"], "--outdir", out, "--seed", "0",
                     "--batch-size", "2", mels, src)
    assert r.returncode == 0, r.stderr
    assert "real-time factor" in r.stderr
    for name, f in frames.items():
        audio, sr = sf.read(out / f"{name}.wav", dtype="float32")
        assert sr == 22050 and len(audio) == f * 256
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert len(sf.read(out / "tn_layout.wav")[0]) == mel.shape[1] * 256
    audio, _ = sf.read(out / f"{src.stem}.wav")
    assert len(audio) == sf.info(src).frames  # copy-synthesis keeps the input length


def test_vocode_same_seed_same_audio(trained_exp, tmp_path):
    rec = list_records(trained_exp["dump"] / "dev")[0]
    np.save(tmp_path / "m.npy", load_record(rec)[1])
    outs = []
    for i, seed in enumerate(("3", "3", "4")):
        r = wavediff_cli("vocode", "--checkpoint", trained_exp["exp"], "--outdir", tmp_path / f"o{i}",
                         "--seed", seed, "-q", tmp_path / "m.npy")
        assert r.returncode == 0, r.stderr
        outs.append(sf.read(tmp_path / f"o{i}" / "m.wav")[0])
    # the same decode with the same seed on the same machine (one thread): bit-identical
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_vocode_bad_inputs_fail_alone(trained_exp, tmp_path):
    good = load_record(list_records(trained_exp["dump"] / "dev")[0])[1]
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "good.npy", good)
    np.save(d / "empty.npy", np.zeros((80, 0), np.float32))
    np.save(d / "bins.npy", np.zeros((64, 20), np.float32))
    nan = good.copy()
    nan[3, 5] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out = tmp_path / "out"
    r = wavediff_cli("vocode", "--checkpoint", trained_exp["exp"], "--outdir", out, "-q",
                     d / "good.npy", d / "missing.npy", d / "empty.npy", d / "bins.npy",
                     d / "nan.npy", d / "pickled.npy")
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 5, r.stderr
    by_name = {name: next(ln for ln in lines if name in ln) for name in
               ("missing", "empty", "bins", "nan", "pickled")}
    assert "does not exist" in by_name["missing"]
    assert "empty" in by_name["empty"]
    assert "80 bins" in by_name["bins"]
    assert "NaN" in by_name["nan"]
    assert "pickled" in by_name["pickled"]
    assert "5 of 6 inputs failed" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["good.wav", "vocode_stats.json"]


def test_vocode_refuses_untrusted_checkpoint(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    np.save(tmp_path / "m.npy", np.zeros((80, 4), np.float32))
    r = wavediff_cli("vocode", "--checkpoint", bad, "--outdir", tmp_path / "o", tmp_path / "m.npy")
    assert r.returncode == 1 and "refused" in r.stderr
    assert not (tmp_path / "pwned").exists()
    assert r.stderr.strip().count("\n") == 0  # one line, no traceback


def test_config_errors_are_one_line(tmp_path):
    make_corpus(tmp_path / "w", n=1, seconds=0.3)
    conf = tmp_path / "c.yaml"
    conf.write_text("train:\n  batch_sise: 4\n")
    r = wavediff_cli("preprocess", "--config", conf, "--wav-dir", tmp_path / "w",
                     "--dumpdir", tmp_path / "d")
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "batch_sise" in r.stderr
    assert r.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("option, message", [
    (["--seed", str(2**70)], "--seed must be an integer in 0..2**63-1"),
    (["--chunk-seconds", "nan"], "--chunk-seconds must be a number of seconds >= 0"),
    (["--chunk-seconds", "-1"], "--chunk-seconds must be a number of seconds >= 0"),
    (["--steps", "-1"], "--steps must be at least 1 (or 0: Griffin-Lim alone"),
    (["--steps", "0", "--consistency", "0"], "--steps 0 decodes with Griffin-Lim alone"),
    (["--consistency", "101"], "--consistency must be 0..100"),
])
def test_vocode_refuses_bad_options_once_before_loading(tmp_path, capsys, option, message):
    mel = tmp_path / "a.npy"
    np.save(mel, np.zeros((80, 10), np.float32))
    # the checkpoint does not exist: an option error must come first, on one line
    assert main(["vocode", "--checkpoint", str(tmp_path / "missing"), "--outdir",
                 str(tmp_path / "o"), *option, str(mel), "-q"]) == 1
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_vocode_name_suffix_as_parallelwavegan(tmp_path, capsys):
    from test_checkpoint import random_model, tiny_config
    from wavediff.vocoder import Vocoder

    config = tiny_config()
    Vocoder(random_model(config), config).save_pretrained(tmp_path / "m")
    mel = tmp_path / "in" / "utt1.npy"
    mel.parent.mkdir()
    np.save(mel, np.random.default_rng(0).normal(-5, 1, (config.audio.n_mels, 6)).astype("f4"))
    assert main(["vocode", "--checkpoint", str(tmp_path / "m"), "--outdir", str(tmp_path / "o"),
                 "--steps", "2", "--seed", "0", "--name-suffix", "_gen", str(mel), "-q"]) == 0
    assert [p.name for p in sorted((tmp_path / "o").glob("*.wav"))] == ["utt1_gen.wav"]
    assert main(["vocode", "--checkpoint", str(tmp_path / "m"), "--outdir", str(tmp_path / "o"),
                 "--name-suffix", "/../x", str(mel), "-q"]) == 1
    assert "--name-suffix" in capsys.readouterr().err


def test_file_system_refusals_are_one_line(tmp_path, capsys):
    # an existing file where an output folder goes, a folder where a report file goes
    afile = tmp_path / "afile"
    afile.write_text("x")
    mel = tmp_path / "a.npy"
    np.save(mel, np.zeros((80, 10), np.float32))
    assert main(["vocode", "--outdir", str(afile), str(mel), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {afile}: a file is there; give a folder name that is not an existing file", err
    from wavediff.cli.main import describe_os_error
    import errno
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.wav"))
    assert describe_os_error(e) == f"{tmp_path / 'x.wav'}: the disk is full; free space and run the command again"
    e = IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp/.r.tmp", None, str(tmp_path))
    assert describe_os_error(e) == f"{tmp_path}: a folder is there; give a file name"


def test_vocode_shows_progress_within_a_long_utterance(trained_exp, tmp_path, capsys,
                                                       monkeypatch):
    # an utterance over LONG_SECONDS logs its own progress (plain lines in a log file)
    import wavediff.cli.vocode as vocode

    monkeypatch.setattr(vocode, "LONG_SECONDS", 0.5)
    wav = make_corpus(tmp_path / "wavs", n=1, seconds=1.0)[0]
    short = make_corpus(tmp_path / "short", n=1, seconds=0.3, prefix="S")[0]
    out = tmp_path / "out"
    assert main(["vocode", "--checkpoint", str(trained_exp["exp"]), "--outdir", str(out),
                 "--steps", "2", "--seed", "0", "--chunk-seconds", "0.25", str(wav),
                 str(short)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "chunk-steps)" in line]
    assert lines and all(wav.stem in line for line in lines)  # the long one only
    assert lines[-1].split(": ")[-1].startswith("100% (")
    assert len(lines) <= 11  # every 10%, not every chunk
