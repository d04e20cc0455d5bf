"""Pretrained folders (config.yaml + model.safetensors), named models, export, umask."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import wavediff_cli
from wavediff.cli.main import main
from test_checkpoint import mel_input, random_model, state_of, tiny_config
from wavediff import pretrained
from wavediff.errors import CheckpointError
from wavediff.checkpoint import save_checkpoint
from wavediff.vocoder import Vocoder


def test_save_pretrained_round_trip(tmp_path):
    config = tiny_config()
    voc = Vocoder(random_model(config), config, step=42, precision="fp32")
    out = voc.save_pretrained(tmp_path / "m", card={"description": "test"})
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "config.yaml", "model.safetensors"]
    back = Vocoder.from_pretrained(out, precision="fp32")
    assert back.step == 42 and back.config == config
    for k, v in voc.model.state_dict().items():
        assert torch.equal(back.model.state_dict()[k], v), k  # fp32 weights read back exactly
    mel = mel_input(config)
    # the same weights, decode and seed in one process: bit-identical
    torch.testing.assert_close(back.decode(mel, seed=1), voc.decode(mel, seed=1), rtol=0, atol=0)
    # the weight file holds no pickle: its first 8 bytes are the JSON header's length
    raw = (out / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"]["format"] == pretrained.FORMAT


def test_fp16_storage_halves_the_file_and_decodes_close(tmp_path):
    config = tiny_config()
    voc = Vocoder(random_model(config), config, precision="fp32")
    a = voc.save_pretrained(tmp_path / "a") / "model.safetensors"
    b = voc.save_pretrained(tmp_path / "b", dtype="fp16") / "model.safetensors"
    assert b.stat().st_size < 0.6 * a.stat().st_size
    half = Vocoder.from_pretrained(tmp_path / "b", precision="fp32")
    assert next(half.model.parameters()).dtype == torch.float32  # stored fp16, run fp32
    mel = mel_input(config)
    ref, got = voc.decode(mel, seed=3), half.decode(mel, seed=3)
    # fp16 weights are rounded by up to 5e-4 relative: the audio moves by ~1e-3, not 0.05
    assert float((ref - got).abs().max()) < 0.05


def test_foreign_or_damaged_folders_are_refused(tmp_path):
    config = tiny_config()
    out = Vocoder(random_model(config), config).save_pretrained(tmp_path / "m")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(out / "model.safetensors"))  # no wavediff marker
    with pytest.raises(CheckpointError, match="not a wavediff model"):
        Vocoder.from_pretrained(out)
    save_file({"x": torch.zeros(2)}, str(out / "model.safetensors"),
              metadata={"format": pretrained.FORMAT})
    with pytest.raises(CheckpointError, match="do not fit"):
        Vocoder.from_pretrained(out)
    (out / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Vocoder.from_pretrained(out)


def test_names_are_never_paths():
    for name in ("../joe", "/etc", "joe/..", "", "a b"):
        assert pretrained.resolve_named(name) is None
    with pytest.raises(CheckpointError, match="no shipped model"):
        pretrained.model_info("no-such-model")


def test_export_cli_and_vocode_from_the_folder(tmp_path, capsys):
    config = tiny_config()
    model = random_model(config)
    save_checkpoint(tmp_path / "exp" / "checkpoint-5steps.pt",
                    state_of(model, config, step=5, ema=model.state_dict()))
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"description": "tiny"}))
    r = wavediff_cli("export", "--checkpoint", tmp_path / "exp", "--outdir", tmp_path / "m",
                     "--dtype", "fp16", "--card", card)
    assert r.returncode == 0, r.stderr
    assert "exported step 5" in r.stdout
    assert pretrained.read_card(tmp_path / "m") == {"description": "tiny"}
    voc = Vocoder.from_pretrained(tmp_path / "m")
    assert voc.step == 5 and voc.config.diffusion.consistency_iters == 0
    # --consistency stores the decoding default with the model; vocode follows it and says so
    assert main(["export", "--checkpoint", str(tmp_path / "exp"), "--outdir", str(tmp_path / "g"),
                 "--consistency", "2", "-q"]) == 0
    assert Vocoder.from_pretrained(tmp_path / "g").config.diffusion.consistency_iters == 2
    mel = tmp_path / "in" / "a.npy"
    mel.parent.mkdir()
    np.save(mel, np.random.default_rng(0).normal(-5, 1, (config.audio.n_mels, 6)).astype("f4"))
    runs = {}
    for name, extra in (("g", []), ("off", ["--consistency", "0"])):
        assert main(["vocode", "--checkpoint", str(tmp_path / "g"), "--outdir",
                     str(tmp_path / name), "--seed", "0", "--steps", "2", str(mel.parent),
                     *extra]) == 0
        stats = json.loads((tmp_path / name / "vocode_stats.json").read_text())
        runs[name] = sf.read(tmp_path / name / "a.wav")[0]
        assert stats["consistency"] == (2 if name == "g" else 0)
        logged = capsys.readouterr().err
        assert ("2 consistency projection(s) per step" in logged) == (name == "g"), logged
    assert not np.allclose(runs["g"], runs["off"])
    assert main(["vocode", "--checkpoint", str(tmp_path / "g"), "--outdir", str(tmp_path / "x"),
                 "--consistency", "-1", str(mel.parent), "-q"]) == 1
    assert "--consistency must be 0..100" in capsys.readouterr().err


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoints_and_exports_follow_the_umask(tmp_path, umask):
    config = tiny_config()
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "c.pt", state_of(random_model(config), config))
        Vocoder(random_model(config), config).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    for path in (tmp_path / "c.pt", tmp_path / "m" / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
