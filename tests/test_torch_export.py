"""torch.export route: `wavediff export --format torch-export` writes the ONNX folder's
decoder with torch.export programs; it decodes equal to wavediff's own decode given the same
noise draws, streams what it decodes whole, and runs without wavediff, onnx or onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import EXPORT_CASES, random_mel, tiny_vocoder, torch_noise_draws, wavediff_cli
from wavediff.inference.onnx_export import export_torch
from wavediff.onnx_decoder import OnnxDecoderError, OnnxVocoder

HOP = 256


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_the_torch_export_folder_decodes_as_wavediff_does(case, tmp_path):
    diffusion, model = EXPORT_CASES[case]
    voc = tiny_vocoder(diffusion, **model)
    folder = export_torch(voc, tmp_path / "pt2")
    assert sorted(p.name for p in folder.iterdir()) == [
        "conditioning.pt2", "decode_onnx.py", "decoder.json", "denoiser.pt2", "filterbank.npy",
        "phase_vocoder.py", "streaming_core.py"]
    meta = json.loads((folder / "decoder.json").read_text())
    assert meta["runtime"] == "torch"
    dec = OnnxVocoder(folder)
    assert dec.runtime == "torch"
    for batch, frames in ((1, 13), (3, 5)):  # other batches and lengths than traced (2, 8)
        mel = random_mel(batch, frames)
        # wavediff's decode after the export: tracing left nothing behind in the model
        expected = voc.decode(torch.from_numpy(mel), seed=5, input_preset=None).numpy()
        got = dec.decode(mel, noises=torch_noise_draws(dec.meta, expected.shape, 5))
        assert got.shape == expected.shape and float(np.abs(expected).max()) > 0.01
        # the same float32 torch kernels, the sampler and projection in numpy (float64 FFTs)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # and it streams what it decodes whole (the scheduler of the ONNX folder)
    mel = random_mel(1, 40, seed=3)[0]
    whole = dec.decode(mel, seed=4)
    chunks = [mel[:, :1], mel[:, 1:1], mel[:, 1:12], mel[:, 12:29], mel[:, 29:]]
    streamed = np.concatenate(list(dec.stream(chunks, seed=4)))
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-4)


def test_the_folder_runs_with_torch_alone(tmp_path):
    # the CLI writes it; the copied script runs with wavediff, onnx and onnxruntime
    # unimportable
    tiny_vocoder({"consistency_iters": 1}).save_pretrained(tmp_path / "model")
    run = wavediff_cli("export", "--checkpoint", str(tmp_path / "model"), "--format",
                       "torch-export", "--outdir", str(tmp_path / "pt2"))
    assert run.returncode == 0 and "torch.export" in run.stdout, run.stderr
    folder = tmp_path / "pt2"
    assert not list(folder.glob("*.part")) and not list(folder.glob("*.onnx"))
    np.save(tmp_path / "mel.npy", random_mel()[0])
    code = ("import sys, runpy; sys.modules['onnxruntime'] = None; sys.modules['onnx'] = None; "
            "sys.modules['wavediff'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code, str(folder / "decode_onnx.py"),
                          str(folder), str(tmp_path / "mel.npy"), str(tmp_path / "out.wav"),
                          "--threads", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    import soundfile as sf

    wav, sr = sf.read(tmp_path / "out.wav")
    assert sr == 22050 and wav.shape == (13 * HOP,) and np.abs(wav).max() > 0


def test_a_broken_torch_export_folder_is_refused_in_one_line(tmp_path):
    folder = export_torch(tiny_vocoder(), tmp_path / "pt2")
    meta = json.loads((folder / "decoder.json").read_text())
    # a graph name that leaves the folder is never opened
    (folder / "decoder.json").write_text(json.dumps(
        {**meta, "graphs": {**meta["graphs"], "denoiser": "../elsewhere.pt2"}}))
    with pytest.raises(OnnxDecoderError, match="export the model again"):
        OnnxVocoder(folder)
    (folder / "decoder.json").write_text(json.dumps({**meta, "conditioning_outputs": 10 ** 12}))
    with pytest.raises(OnnxDecoderError, match="conditioning outputs"):
        OnnxVocoder(folder)  # refused before any list of that size is made
    (folder / "decoder.json").write_text(json.dumps({**meta, "runtime": "tensorflow"}))
    with pytest.raises(OnnxDecoderError, match="runtime 'tensorflow'"):
        OnnxVocoder(folder)
    (folder / "decoder.json").write_text(json.dumps(meta))
    (folder / "denoiser.pt2").write_bytes(b"not a program")
    with pytest.raises(OnnxDecoderError, match="cannot load .*denoiser.pt2"):
        OnnxVocoder(folder)
    np.save(tmp_path / "mel.npy", random_mel()[0])
    run = subprocess.run([sys.executable, str(folder / "decode_onnx.py"), str(folder),
                          str(tmp_path / "mel.npy"), str(tmp_path / "o.wav")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "denoiser.pt2" in run.stderr and not (tmp_path / "o.wav").exists()
