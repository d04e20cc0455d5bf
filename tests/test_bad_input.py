"""Bad input wherever it enters: preprocess, train and vocode, through the real CLI.

Every bad file gets one ``error:`` line that names it and says what to do, the command
exits non-zero, the other files of a batch are still processed, and a summary ends it.
Pickled payloads (a ``.npy`` object array, a checkpoint) are refused without running: each
payload would create a marker file, and a control load shows that it really would.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import write_tiny_config
from wavediff.audio.synth import toy_utterance
from wavediff.cli.main import main
from wavediff.audio.dump import list_records, load_record

SR = 22050


class Payload:
    """Unpickling this creates ``path``: proof that pickled code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error: ")]


def line_for(lines: list[str], name: str) -> str:
    found = [ln for ln in lines if f"/{name}" in ln]
    assert len(found) == 1, (name, lines)
    return found[0]


def write_bad_audio(d: Path) -> dict[str, tuple[str, ...]]:
    """Bad audio files in ``d``; returns name -> phrases its error line must hold."""
    d.mkdir(parents=True, exist_ok=True)
    x = toy_utterance(SR, 0.5, seed=1)
    sf.write(d / "good.wav", x, SR, subtype="PCM_16")
    sf.write(d / "pcm24.wav", x, SR, subtype="PCM_24")
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "zero_length.wav", np.zeros(0, np.float32), SR, subtype="PCM_16")
    good = (d / "good.wav").read_bytes()
    (d / "truncated.wav").write_bytes(good[:30])
    (d / "corrupt.wav").write_bytes(b"RIFF" + good[4:12] + b"\x00garbage" * 4 + good[44:])
    sf.write(d / "rate16k.wav", x[:8000], 16000, subtype="PCM_16")
    sf.write(d / "stereo.wav", np.stack([x, x], 1), SR, subtype="PCM_16")
    sf.write(d / "pcm8.wav", x, SR, subtype="PCM_U8")
    sf.write(d / "clipped.wav", np.clip(x * 20, -1, 1), SR, subtype="PCM_16")
    sf.write(d / "silent.wav", np.zeros_like(x), SR, subtype="PCM_16")
    return {
        "empty.wav": ("empty file (0 bytes)", "re-export it"),
        "zero_length.wav": ("contains no samples", "remove it"),
        "truncated.wav": ("cannot read audio", "re-export it as WAV or FLAC"),
        "corrupt.wav": ("cannot read audio", "re-export it as WAV or FLAC"),
        "rate16k.wav": ("sample rate is 16000 Hz but 22050 Hz is expected", "--resample"),
        "stereo.wav": ("2 channels, expected mono", "--to-mono"),
        "pcm8.wav": ("8-bit PCM", "16- or 24-bit source", "--allow-low-quality"),
        "clipped.wav": ("is clipped", "unclipped source", "--allow-low-quality"),
        "silent.wav": ("is silent", "remove it", "--allow-low-quality"),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """The bad audio battery, and a tiny model trained on a clean dump."""
    root = tmp_path_factory.mktemp("bad")
    expected = write_bad_audio(root / "wavs")
    clean = root / "clean"
    clean.mkdir()
    for name in ("good.wav", "pcm24.wav"):
        (clean / name).write_bytes((root / "wavs" / name).read_bytes())
    assert main(["preprocess", "--wav-dir", str(clean), "--dumpdir", str(root / "dump"),
                 "-q"]) == 0
    conf = write_tiny_config(root / "c.yaml", max_steps=2, save_interval=2)
    assert main(["train", "--config", str(conf), "--train-dumpdir", str(root / "dump"),
                 "--outdir", str(root / "exp"), "-q"]) == 0
    return {"root": root, "expected": expected, "conf": conf, "exp": root / "exp",
            "dump": root / "dump"}


# ---------------------------------------------------------------------- preprocess
def test_preprocess_battery(corpus, tmp_path, capsys):
    dump = tmp_path / "dump"
    assert main(["preprocess", "--wav-dir", str(corpus["root"] / "wavs"), "--dumpdir",
                 str(dump), "-q"]) == 1
    err = capsys.readouterr().err
    lines = error_lines(err)
    expected = corpus["expected"]
    assert len(lines) == len(expected)
    for name, phrases in expected.items():
        line = line_for(lines, name)
        for phrase in phrases:
            assert phrase in line, (name, line)
    assert err.rstrip().splitlines()[-1].startswith(
        f"{len(expected)} of {len(expected) + 2} utterances failed: ")
    # the good files were processed; 24-bit PCM is read at full resolution
    assert sorted(p.name for p in dump.glob("*.npz")) == ["good.npz", "pcm24.npz"]
    w24 = load_record(dump / "pcm24.npz")[0]
    ref, _ = sf.read(corpus["root"] / "wavs" / "pcm24.wav", dtype="float64")
    n = min(len(w24), len(ref))
    # 24-bit samples are exact in float32, so this is equal in fact; < 2**-22 (two 24-bit
    # steps) still fails for audio read at 16 bits (steps of 2**-15)
    assert np.abs(w24[:n] - ref[:n]).max() < 2.0 ** -22


def test_preprocess_options_accept_what_the_messages_promise(corpus, tmp_path, capsys):
    dump = tmp_path / "dump"
    assert main(["preprocess", "--wav-dir", str(corpus["root"] / "wavs"), "--dumpdir",
                 str(dump), "--allow-low-quality", "--resample", "--to-mono", "-q"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert sorted(ln.split(":")[1].rsplit("/", 1)[-1] for ln in lines) == [
        "corrupt.wav", "empty.wav", "truncated.wav", "zero_length.wav"]
    assert len(list(dump.glob("*.npz"))) == 7


# ---------------------------------------------------------------------- vocode
def test_vocode_battery(corpus, tmp_path, capsys):
    good = load_record(list_records(corpus["dump"])[0])[1]
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "mel_good.npy", good)
    for name, value in (("mel_nan", np.nan), ("mel_inf", np.inf)):
        bad = good.copy()
        bad[2, 3] = value
        np.save(d / f"{name}.npy", bad)
    np.save(d / "mel_bins.npy", good[:64])
    np.save(d / "mel_rank1.npy", good[0])
    np.save(d / "mel_rank4.npy", good[None, None])
    np.save(d / "mel_zero_frames.npy", good[:, :0])
    np.save(d / "mel_complex.npy", good.astype(np.complex64) + 1j)
    np.save(d / "mel_bool.npy", good > -5)
    np.save(d / "mel_constant.npy", np.full_like(good, 0.5))
    np.save(d / "mel_huge.npy", good + 1e6)
    np.save(d / "mel_silent.npy", np.full_like(good, np.log(1e-5)))  # silence: vocoded
    (d / "mel_empty.npy").write_bytes(b"")
    (d / "mel_truncated.npy").write_bytes((d / "mel_good.npy").read_bytes()[:100])
    marker, control = tmp_path / "npy_payload_ran", tmp_path / "control_ran"
    np.save(d / "mel_pickled.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    np.save(tmp_path / "control.npy", np.array([Payload(control)], dtype=object),
            allow_pickle=True)

    wavs = corpus["root"] / "wavs"
    out = tmp_path / "out"
    inputs = sorted(d.iterdir()) + sorted(wavs.iterdir())
    assert main(["vocode", "--checkpoint", str(corpus["exp"]), "--outdir", str(out), "--seed",
                 "0", "-q", *map(str, inputs)]) == 1
    err = capsys.readouterr().err
    lines = error_lines(err)
    expected_mel = {
        "mel_nan.npy": ("NaN/Inf",), "mel_inf.npy": ("NaN/Inf",),
        "mel_bins.npy": ("(64, ", "80"), "mel_rank1.npy": ("(", "80"),
        "mel_rank4.npy": ("(1, 1, 80,", "80"), "mel_zero_frames.npy": ("(80, 0)",),
        "mel_complex.npy": ("complex array (dtype complex64", "real float array"),
        "mel_bool.npy": ("boolean array (dtype bool",),
        "mel_constant.npy": ("every value is 0.5", "constant mel"),
        "mel_huge.npy": ("fits no known mel convention", "above its ceiling"),
        "mel_empty.npy": ("not a readable .npy file", "np.save"),
        "mel_truncated.npy": ("not a readable .npy file", "np.save"),
        "mel_pickled.npy": ("pickled Python objects", "plain float array"),
    }
    expected_audio = {k: v for k, v in corpus["expected"].items()
                      if k not in ("pcm8.wav", "clipped.wav", "silent.wav")}
    for name, phrases in {**expected_mel, **expected_audio}.items():
        line = line_for(lines, name)
        for phrase in phrases:
            assert phrase in line, (name, line)
    assert len(lines) == len(expected_mel) + len(expected_audio)
    failed = len(expected_mel) + len(expected_audio)
    assert f"{failed} of {len(inputs)} inputs failed" in err
    # copy-synthesis of 8-bit, 24-bit, clipped and silent audio is analysis, not training
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(
        ["mel_good.wav", "mel_silent.wav", "good.wav", "pcm24.wav", "pcm8.wav", "clipped.wav",
         "silent.wav"])
    assert "--stats" not in line_for(lines, "mel_constant.npy")
    assert "--stats" not in line_for(lines, "mel_huge.npy")
    assert not marker.exists()
    np.load(tmp_path / "control.npy", allow_pickle=True)  # the payload is live
    assert control.exists()


def _evil_checkpoint(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"format": "wavediff-checkpoint", "version": 1, "step": 5,
                     "model": Payload(marker), "config": {}}, f)


def test_checkpoint_with_pickled_code_is_refused_by_vocode_and_train(corpus, tmp_path, capsys):
    marker = tmp_path / "ckpt_payload_ran"
    evil = tmp_path / "evil.pt"
    _evil_checkpoint(evil, marker)
    np.save(tmp_path / "m.npy", load_record(list_records(corpus["dump"])[0])[1])
    assert main(["vocode", "--checkpoint", str(evil), "--outdir", str(tmp_path / "o"),
                 str(tmp_path / "m.npy")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(evil) in err
    assert "refused without running" in err
    assert "only load checkpoints from sources you trust" in err

    exp = tmp_path / "exp"
    exp.mkdir()
    _evil_checkpoint(exp / "checkpoint-5steps.pt", marker)
    assert main(["train", "--config", str(corpus["conf"]), "--train-dumpdir",
                 str(corpus["dump"]), "--outdir", str(exp), "--resume", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint-5steps.pt" in err and "refused" in err
    assert not marker.exists()
    control = tmp_path / "control.pt"
    _evil_checkpoint(control, marker)
    with open(control, "rb") as f:
        pickle.load(f)  # the payload is live
    assert marker.exists()


def test_checkpoint_with_nan_weights_is_refused_naming_the_tensors(corpus, tmp_path, capsys):
    import torch

    from wavediff.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    state = load_checkpoint(latest_checkpoint(corpus["exp"]))
    for key in ("model", "ema"):
        if state.get(key):
            name = sorted(state[key])[0]
            state[key][name] = torch.full_like(state[key][name], float("nan"))
    state["config"] = state["config"].to_dict()
    state.pop("path")
    exp = tmp_path / "diverged"
    exp.mkdir()
    save_checkpoint(exp / "checkpoint-9steps.pt", state)
    np.save(tmp_path / "m.npy", load_record(list_records(corpus["dump"])[0])[1])
    out = tmp_path / "o"
    assert main(["vocode", "--checkpoint", str(exp), "--outdir", str(out),
                 str(tmp_path / "m.npy")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN or infinite" in err[0] and name in err[0]
    assert "diverged" in err[0] and "earlier checkpoint" in err[0]
    assert not out.exists() or not list(out.glob("*.wav"))


@pytest.mark.parametrize("damage", ["shape", "missing"])
def test_checkpoint_that_does_not_fit_its_config_is_one_line_everywhere(corpus, tmp_path,
                                                                      capsys, damage):
    import torch

    from wavediff.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    state = load_checkpoint(latest_checkpoint(corpus["exp"]))
    state["config"] = state["config"].to_dict()
    state.pop("path")
    for key in ("model", "ema"):
        if state.get(key):
            name = sorted(state[key])[0]
            if damage == "shape":
                state[key][name] = torch.zeros(3, 3)
            else:
                del state[key][name]
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_bytes((corpus["exp"] / "config.yaml").read_bytes())
    save_checkpoint(exp / "checkpoint-9steps.pt", state)
    np.save(tmp_path / "m.npy", load_record(list_records(corpus["dump"])[0])[1])
    commands = [["vocode", "--checkpoint", str(exp), "--outdir", str(tmp_path / "o"),
                 str(tmp_path / "m.npy")],
                ["train", "--config", str(corpus["conf"]), "--train-dumpdir",
                 str(corpus["dump"]), "--outdir", str(exp), "--resume", "-q"],
                ["train", "--config", str(corpus["conf"]), "--train-dumpdir",
                 str(corpus["dump"]), "--outdir", str(tmp_path / "warm"), "--init-checkpoint",
                 str(exp / "checkpoint-9steps.pt"), "-q"]]
    for command in commands:
        assert main(command) == 1, command[0]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "do not fit" in err[0] and "Traceback" not in err[0], err


# ---------------------------------------------------------------------- train
def test_train_refuses_bad_records_listing_every_one(corpus, tmp_path, capsys):
    dump = tmp_path / "dump"
    dump.mkdir()
    for p in corpus["dump"].iterdir():
        (dump / p.name).write_bytes(p.read_bytes())
    wave, mel = load_record(dump / "good.npz")
    (dump / "truncated.npz").write_bytes((dump / "good.npz").read_bytes()[:200])
    np.savez(dump / "bins.npz", wave=wave, mel=mel[:64])
    np.savez(dump / "pickled.npz", wave=np.array([{"a": 1}], dtype=object), mel=mel)
    np.savez(dump / "misaligned.npz", wave=wave[:-5], mel=mel)
    assert main(["train", "--config", str(corpus["conf"]), "--train-dumpdir", str(dump),
                 "--outdir", str(tmp_path / "exp"), "-q"]) == 1
    err = capsys.readouterr().err
    for name, phrase in (("truncated", "not a readable feature record"),
                         ("bins", "expected (80, frames)"), ("pickled", "pickled Python objects"),
                         ("misaligned", "samples for")):
        line = next(ln for ln in err.splitlines() if f"{name}.npz" in ln)
        assert phrase in line and "rerun wavediff preprocess" in line, line
    assert error_lines(err) == [
        f"error: 4 of 6 records in {dump} cannot be trained on (listed above); rerun wavediff "
        f"preprocess for them or delete them"]


def test_train_stops_on_a_record_with_nan_naming_it(corpus, tmp_path, capsys):
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "audio.yaml").write_bytes((corpus["dump"] / "audio.yaml").read_bytes())
    wave, mel = load_record(corpus["dump"] / "good.npz")
    mel = mel.copy()
    mel[0, 1] = np.nan
    np.savez(dump / "nan.npz", wave=wave, mel=mel)
    conf = write_tiny_config(tmp_path / "c.yaml", num_workers=1)
    assert main(["train", "--config", str(conf), "--train-dumpdir", str(dump),
                 "--outdir", str(tmp_path / "exp"), "-q"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [
        f"error: {dump / 'nan.npz'}: 'mel' holds 1 NaN/Inf values; delete the record and rerun "
        f"wavediff preprocess, then continue with --resume"], err


@pytest.mark.parametrize("text,phrases", [
    ("train:\n  batch_sise: 4\n", ("unknown key(s) in section 'train': batch_sise", "known:")),
    ("train:\n  batch_size: four\n", ("train.batch_size must be an integer", "'four'")),
    ("model:\n  residual_layers: 2.5\n", ("model.residual_layers must be an integer",)),
    ("trian:\n  batch_size: 4\n", ("unknown config section(s): trian", "expected:")),
    ("audio:\n  preset: custom\n  n_mels: 100000000\n",
     ("n_mels 100000000 is beyond the largest supported (512)",)),
    ("train:\n  ? |\n    two\n    lines\n  : 1\n", ("unknown key(s) in section 'train': 'two\\nlines",)),
])
def test_config_errors_name_the_file_and_key(corpus, tmp_path, capsys, text, phrases):
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    assert main(["train", "--config", str(conf), "--train-dumpdir", str(corpus["dump"]),
                 "--outdir", str(tmp_path / "exp")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {conf}: "), err
    for phrase in phrases:
        assert phrase in err, err
    assert not (tmp_path / "exp").exists()


def test_override_of_the_wrong_type_is_one_line(corpus, tmp_path, capsys):
    assert main(["train", "--config", str(corpus["conf"]), "--train-dumpdir",
                 str(corpus["dump"]), "--outdir", str(tmp_path / "exp"),
                 "--set", "train.grad_accum=two"]) == 1
    err = capsys.readouterr().err
    assert err == "error: train.grad_accum must be an integer, got 'two'\n"



def test_vocode_refuses_size_bombs_and_files_that_read_other_files(corpus, tmp_path, capsys):
    """Declared sizes are checked before reading; HDF5 data must live in the file itself."""
    import zipfile

    import h5py
    from numpy.lib import format as npformat

    good = load_record(list_records(corpus["dump"])[0])[1]
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "mel_good.npy", good)
    with open(d / "header_bomb.npy", "wb") as f:  # 1 KB claiming 3 TB
        npformat.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                            "shape": (80, 10 ** 10)})
    with zipfile.ZipFile(d / "zip_bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("mel.npy", "w", force_zip64=True) as m:  # ~1 MB expanding to 1 GB
            npformat.write_array_header_1_0(m, {"descr": "<f4", "fortran_order": False,
                                                "shape": (80, 3_300_000)})
            for _ in range(64):
                m.write(b"\0" * (1 << 24))
    secret = tmp_path / "secret.bin"
    np.full((80, 50), -3.0, np.float32).tofile(secret)
    with h5py.File(d / "external.h5", "w") as h:
        h.create_dataset("feats", shape=(80, 50), dtype="f4",
                         external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    layout = h5py.VirtualLayout(shape=(80, 50), dtype="f4")
    with h5py.File(tmp_path / "source.h5", "w") as h:
        h.create_dataset("x", data=np.full((80, 50), -3.0, np.float32))
    layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "x", shape=(80, 50))
    with h5py.File(d / "virtual.h5", "w") as h:
        h.create_virtual_dataset("feats", layout)
    assert (d / "zip_bomb.npz").stat().st_size < 2 * 2 ** 20

    out = tmp_path / "out"
    assert main(["vocode", "--checkpoint", str(corpus["exp"]), "--outdir", str(out), "--seed",
                 "0", "-q", *map(str, sorted(d.iterdir()))]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert "beyond the limit" in line_for(lines, "header_bomb.npy")
    assert "--max-frames" in line_for(lines, "zip_bomb.npz")
    assert "external files" in line_for(lines, "external.h5")
    assert "virtual dataset" in line_for(lines, "virtual.h5")
    assert sorted(p.name for p in out.glob("*.wav")) == ["mel_good.wav"]


@pytest.mark.parametrize("utt", ["/tmp/evil", "../escape", "sub/dir", "..", "a\\b", "-rf",
                                 "bell\x07"])
def test_utterance_ids_never_become_paths(corpus, tmp_path, capsys, utt):
    good = load_record(list_records(corpus["dump"])[0])[1]
    np.save(tmp_path / "m.npy", good)
    scp = tmp_path / "list.scp"
    scp.write_text(f"ok {tmp_path / 'm.npy'}\n{utt} {tmp_path / 'm.npy'}\n")
    out = tmp_path / "out"
    before = set(tmp_path.parent.rglob("*"))
    assert main(["vocode", "--checkpoint", str(corpus["exp"]), "--outdir", str(out),
                 "--scp", str(scp), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{scp}:2" in err[0] and "plain name" in err[0]
    assert set(tmp_path.parent.rglob("*")) == before  # nothing written anywhere
    assert main(["preprocess", "--scp", str(scp), "--dumpdir", str(tmp_path / "d"), "-q"]) == 1
    assert "plain name" in capsys.readouterr().err


def test_paths_that_are_not_regular_files_are_named_for_what_they_are(corpus, tmp_path, capsys):
    import os

    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "good.npy", load_record(list_records(corpus["dump"])[0])[1])
    os.symlink("loop_b.npy", d / "loop_a.npy")
    os.symlink("loop_a.npy", d / "loop_b.npy")
    os.symlink("nowhere.npy", d / "dangling.npy")
    os.mkfifo(d / "fifo.npy")  # opening it would block: never opened
    os.symlink("/dev/urandom", d / "urandom.npy")  # reading it would never end
    (d / "voice.m4a").write_bytes(b"\x00" * 64)
    sf.write(d / "one_sample.wav", np.full(1, 0.1, np.float32), SR)
    out = tmp_path / "out"
    assert main(["vocode", "--checkpoint", str(corpus["exp"]), "--outdir", str(out), "-q",
                 "--steps", "1", *map(str, sorted(d.iterdir()))]) == 1
    lines = error_lines(capsys.readouterr().err)
    expected = {
        "loop_a.npy": "is a symbolic link loop", "loop_b.npy": "is a symbolic link loop",
        "dangling.npy": "is a symbolic link to nowhere.npy, which does not exist",
        "fifo.npy": "is a FIFO (named pipe), not a regular mel file",
        "urandom.npy": "is a device, not a regular mel file",
        "voice.m4a": "an audio format wavediff does not read '.m4a'",
        "one_sample.wav": "waveform has 1 samples",
    }
    assert len(lines) == len(expected)
    for name, phrase in expected.items():
        assert phrase in line_for(lines, name)
    assert "does not exist; check the path" not in "\n".join(lines)
    assert "empty file" not in line_for(lines, "urandom.npy")
    assert [p.name for p in out.glob("*.wav")] == ["good.wav"]


def test_a_name_at_the_file_name_limit_is_written(corpus, tmp_path, capsys):
    # the temporary name of an atomic write is derived so that it never exceeds the limit
    stem = "u" * (255 - len(".npy"))  # the output <stem>.wav is 255 characters too
    d = tmp_path / "in"
    d.mkdir()
    src = d / f"{stem}.npy"
    np.save(src, load_record(list_records(corpus["dump"])[0])[1])
    out = tmp_path / "out"
    assert main(["vocode", "--checkpoint", str(corpus["exp"]), "--outdir", str(out), "-q",
                 "--steps", "1", str(src)]) == 0, capsys.readouterr().err
    written = list(out.glob("*.wav"))
    assert [len(p.name) for p in written] == [255]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
