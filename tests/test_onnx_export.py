"""ONNX export: the exported folder decodes without torch, equal to the torch decode given
the same noise draws; bad folders and inputs are refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import (EXPORT_CASES, random_mel, tiny_vocoder, torch_noise_draws,
                      wavediff_cli)
from wavediff.errors import ConfigError
from wavediff.vocoder import Vocoder

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package (the export "
                                          "extra; CI installs it)")
ort = pytest.importorskip("onnxruntime", reason="the exported decoder needs onnxruntime")

from wavediff.inference.onnx_export import export_onnx  # noqa: E402
from wavediff.onnx_decoder import OnnxDecoderError, OnnxVocoder  # noqa: E402

HOP = 256


def _vocoder(diffusion: dict | None = None, **model) -> Vocoder:
    return tiny_vocoder(diffusion, **model)


_mel, _torch_draws, CASES = random_mel, torch_noise_draws, EXPORT_CASES


@pytest.mark.parametrize("case", list(CASES))
def test_the_exported_folder_decodes_as_torch_does(case, tmp_path):
    diffusion, model = CASES[case]
    voc = _vocoder(diffusion, **model)
    folder = export_onnx(voc, tmp_path / "onnx")
    assert sorted(p.name for p in folder.iterdir()) == [
        "conditioning.onnx", "decode_onnx.py", "decoder.json", "denoiser.onnx", "filterbank.npy",
        "phase_vocoder.py", "streaming_core.py"]
    dec = OnnxVocoder(folder, threads=1)
    for batch, frames in ((1, 13), (2, 7)):  # other lengths and batches than traced (8)
        mel = _mel(batch, frames)
        expected = voc.decode(torch.from_numpy(mel), seed=5, input_preset=None).numpy()
        got = dec.decode(mel, noises=_torch_draws(dec.meta, expected.shape, 5))
        assert got.shape == expected.shape and float(np.abs(expected).max()) > 0.01
        # the same float32 arithmetic through other kernels (onnxruntime's convolutions,
        # numpy's FFTs and NNLS): 1.2e-6 measured on the shipped model; the 1e-4
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # the seed path draws numpy's noise: same seed, same audio; another seed, other audio
    a, b = dec.decode(_mel()[0], seed=1), dec.decode(_mel()[0], seed=1)
    assert a.shape == (13 * HOP,) and np.array_equal(a, b)
    assert not np.array_equal(a, dec.decode(_mel()[0], seed=2))


def test_the_folder_runs_without_torch_or_wavediff(tmp_path):
    folder = export_onnx(_vocoder({"consistency_iters": 1}), tmp_path / "onnx")
    np.save(tmp_path / "mel.npy", _mel()[0])
    # torch and wavediff made unimportable: the copied script needs numpy, onnxruntime and
    # soundfile only
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.modules['wavediff'] = None; "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code, str(folder / "decode_onnx.py"),
                          str(folder), str(tmp_path / "mel.npy"), str(tmp_path / "out.wav")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    import soundfile as sf

    wav, sr = sf.read(tmp_path / "out.wav")
    assert sr == 22050 and wav.shape == (13 * HOP,) and np.abs(wav).max() > 0
    assert not (tmp_path / "out.wav.part").exists()


def test_bad_inputs_and_folders_are_refused(tmp_path):
    folder = export_onnx(_vocoder(), tmp_path / "onnx")
    dec = OnnxVocoder(folder)
    with pytest.raises(OnnxDecoderError, match=r"\(80, frames\)"):
        dec.decode(np.zeros((40, 10), np.float32))
    bad = _mel()[0]
    bad[3, 4] = np.nan
    with pytest.raises(OnnxDecoderError, match="NaN"):
        dec.decode(bad)
    with pytest.raises(OnnxDecoderError, match="fewer noise draws"):
        dec.decode(_mel()[0], noises=[np.zeros((1, 13 * HOP), np.float32)])
    meta = json.loads((folder / "decoder.json").read_text())
    (folder / "decoder.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(OnnxDecoderError, match="export the model again"):
        OnnxVocoder(folder)
    (folder / "decoder.json").write_text("{not json")
    with pytest.raises(OnnxDecoderError, match="not readable"):
        OnnxVocoder(folder)
    # the decoder's CLI: one line and exit 2, no output file
    (folder / "decoder.json").write_text(json.dumps(meta))
    np.save(tmp_path / "short.npy", np.zeros((40, 10), np.float32))
    # a tiny file declaring a huge array: refused from its header, nothing allocated
    with open(tmp_path / "huge.npy", "wb") as f:  # 320 GB declared, 64 bytes held
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (80, 10 ** 9)})
        f.write(bytes(64))
    for name, message in (("short.npy", "(80, frames)"), ("huge.npy", "truncated")):
        run = subprocess.run([sys.executable, str(folder / "decode_onnx.py"), str(folder),
                              str(tmp_path / name), str(tmp_path / "o.wav")],
                             capture_output=True, text=True)
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert "error:" in run.stderr and message in run.stderr
        assert not (tmp_path / "o.wav").exists()


def test_what_the_decoder_cannot_run_is_refused_at_export(tmp_path):
    with pytest.raises(ConfigError, match="samplers"):
        export_onnx(_vocoder({"sampler": "ddim"}), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_export_cli_writes_the_folder(tmp_path):
    voc = _vocoder()
    voc.save_pretrained(tmp_path / "model")
    run = wavediff_cli("export", "--checkpoint", str(tmp_path / "model"), "--format", "onnx",
                       "--outdir", str(tmp_path / "onnx"))
    assert run.returncode == 0 and "decode_onnx.py" in run.stdout, run.stderr
    meta = json.loads((tmp_path / "onnx" / "decoder.json").read_text())
    assert meta["plan"]["betas"] == pytest.approx([1e-4, 0.05, 0.3])
    assert not list((tmp_path / "onnx").glob("*.part"))


@pytest.mark.parametrize("case", list(CASES))
def test_the_exported_decoder_streams_what_it_decodes_whole(case, tmp_path):
    diffusion, model = CASES[case]
    voc = _vocoder(diffusion, **model)
    dec = OnnxVocoder(export_onnx(voc, tmp_path / "onnx"), threads=1)
    mel = _mel(1, 60, seed=3)[0]
    whole = dec.decode(mel, seed=4)
    rng = np.random.default_rng(0)
    sizes = list(rng.choice([0, 1, 2, 5, 9], size=30))
    chunks, i = [], 0
    for k in sizes:
        chunks.append(mel[:, i:i + k])
        i += k
    chunks.append(mel[:, i:])
    got = np.concatenate(list(dec.stream(chunks, seed=4)))
    assert got.shape == whole.shape
    # the same numpy and onnxruntime arithmetic on segments of other lengths
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-4)
    streamer = dec.streaming_decoder(seed=4)
    assert streamer.lookahead == streamer.lookahead_exact > 0
    with pytest.raises(OnnxDecoderError, match="NaN"):
        streamer.push(np.full((80, 3), np.nan, dtype=np.float32))



def test_a_frames_magnitudes_do_not_depend_on_the_piece_it_is_decoded_in(tmp_path):
    # the projection's magnitudes (FISTA over matrix products) of a frame decoded alone, in
    # a piece of 7 or 16 frames, or in the whole mel: float32 products rounded a column by
    # up to 1e6 ulps differently with the number of columns (enough for Griffin-Lim's
    # phase, where a bin nearly cancels, to move a streamed decode 1e-4 off the whole
    # one); in float64 at most the last float32 bit of a rare value may differ
    from wavediff.onnx_decoder import mel_to_magnitude

    folder = export_onnx(_vocoder({"consistency_iters": 1}), tmp_path / "onnx")
    audio = json.loads((folder / "decoder.json").read_text())["audio"]
    basis = np.load(folder / "filterbank.npy")
    mel = np.random.default_rng(0).normal(-5.0, 2.0, (1, 80, 120)).astype(np.float32)
    whole = mel_to_magnitude(audio, basis, mel)
    ulp = np.spacing(np.maximum(whole, np.finfo(np.float32).tiny))
    for size in (1, 7, 16):
        pieces = np.concatenate([mel_to_magnitude(audio, basis, mel[..., i:i + size])
                                 for i in range(0, mel.shape[-1], size)], axis=-1)
        assert pieces.dtype == np.float32 and pieces.shape == whole.shape
        assert (np.abs(pieces - whole) <= ulp).all()
        assert (pieces != whole).mean() < 1e-3


def test_a_long_mel_is_decoded_in_pieces_equal_to_the_whole(tmp_path):
    # past twice chunk_frames each item goes through the streaming scheduler (memory flat
    # in the length): the same audio as one graph run, for every item of a batch
    dec = OnnxVocoder(export_onnx(_vocoder({"consistency_iters": 1}), tmp_path / "onnx"),
                      threads=1)
    mel = _mel(2, 50, seed=6)
    whole = dec.decode(mel, seed=3, chunk_frames=None)
    pieces = dec.decode(mel, seed=3, chunk_frames=7)
    assert pieces.shape == whole.shape == (2, 50 * HOP)
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-4)
    assert not np.allclose(pieces[0], pieces[1])  # each item its own noise
    # the first item of a batch draws what a single mel of the same seed draws
    np.testing.assert_allclose(dec.decode(mel[0], seed=3, chunk_frames=7), pieces[0],
                               rtol=0, atol=1e-4)


def test_the_exported_folder_streams_from_its_own_files(tmp_path):
    """decode_onnx.py imports the scheduler copied beside it, not wavediff's."""
    folder = export_onnx(_vocoder(), tmp_path / "onnx")
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import decode_onnx as d; "
            "v = d.OnnxVocoder(sys.argv[1]); m = np.full((80, 20), -6.0, np.float32); "
            "a = np.concatenate(list(v.stream([m[:, :7], m[:, 7:]], seed=1))); "
            "b = v.decode(m, seed=1); print(float(np.abs(a - b).max()), "
            "'torch' in sys.modules, 'wavediff' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    diff, torch_loaded, wavediff_loaded = r.stdout.split()
    assert float(diff) < 1e-4 and torch_loaded == "False" and wavediff_loaded == "False"
