"""Streaming decoding: the streamed audio equals the whole decode for any chunking; the
noise is positional; bad streams stop with one line and keep what was yielded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_vocoder
from wavediff.diffusion.noise import PositionalNoise
from wavediff.errors import ConfigError, MelError
from wavediff.vocoder import Vocoder

# float32 kernels on segments of other lengths round differently from the whole decode
# (the convolutions' blocking, the FFT batch, the NNLS's GEMM): measured about 1e-6;
# the bound is 1e-4, and a wrong sample or a missing noise draw is ~0.1
ATOL = 1e-4


def _vocoder(preset: str = "hifigan", diffusion: dict | None = None, **model) -> Vocoder:
    return tiny_vocoder(diffusion, preset, **model)


def _mel(frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float32)
    level = -6.0 + 2.0 * torch.sin(t / 5.0)  # loud and quiet frames, for the priors
    return (torch.randn(80, frames, generator=g) * 1.0 + level).clamp(max=1.0)


def _chunks(mel: torch.Tensor, sizes) -> list[torch.Tensor]:
    out, i = [], 0
    for k in sizes:
        out.append(mel[:, i:i + k])
        i += k
    out.append(mel[:, i:])
    return out


def _random_sizes(frames: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes, total = [], 0
    while total < frames:
        k = int(rng.choice([0, 1, 2, 3, 5, 7, 11, 16]))
        sizes.append(k)
        total += k
    return sizes


def _streamed(voc: Vocoder, chunks, seed: int = 7, **kw) -> torch.Tensor:
    pieces = list(voc.stream(chunks, seed=seed, **kw))
    assert all(p.dim() == 1 and p.numel() > 0 for p in pieces)
    return torch.cat(pieces)


CASES = {
    "hifigan, plain": ("hifigan", {}, {}),
    "tacotron2 framing, projection": ("tacotron2", {"consistency_iters": 2}, {}),
    "priorgrad, griffin-lim start, projection": (
        "hifigan", {"prior": "priorgrad", "prior_energy": [1e-4, 0.5], "start_iters": 3,
                    "conditioning": "noise_level", "consistency_iters": 1}, {}),
    "griffin-lim start with less noise": ("hifigan", {"start_iters": 2, "start_noise": 0.3,
                                                      "consistency_iters": 1}, {}),
    "specgrad, sub-bands": ("hifigan", {"prior": "specgrad", "prior_energy": [1e-4, 0.5],
                                        "consistency_iters": 1}, {"subbands": 2}),
    "residual prediction, network alone": ("hifigan", {"prediction": "residual",
                                                       "start_iters": 2}, {}),
    "griffin-lim conditioning, projection": ("hifigan", {"consistency_iters": 1},
                                             {"gl_condition": 2}),
    "griffin-lim conditioning and start, sub-bands, network alone": (
        "tacotron2", {"start_iters": 2, "start_noise": 0.3}, {"gl_condition": 2, "subbands": 2}),
    "phase-vocoder griffin-lim start, projection": (
        "hifigan", {"start_iters": 2, "gl_init": "phase-vocoder", "consistency_iters": 1}, {}),
    "phase-vocoder griffin-lim conditioning, tacotron2 framing": (
        "tacotron2", {"gl_init": "phase-vocoder", "consistency_iters": 1}, {"gl_condition": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_random_chunkings_equal_the_whole_decode(case):
    preset, diffusion, model = CASES[case]
    voc = _vocoder(preset, diffusion, **model)
    mel = _mel(90)
    whole = voc.decode(mel, seed=7, input_preset=None)
    assert float(whole.abs().max()) > 0.01
    for seed in range(3):
        got = _streamed(voc, _chunks(mel, _random_sizes(90, seed)))
        assert got.shape == whole.shape
        torch.testing.assert_close(got, whole, atol=ATOL, rtol=0)


def test_one_frame_chunks_empty_chunks_and_one_big_chunk():
    voc = _vocoder("hifigan", {"consistency_iters": 1, "start_iters": 2})
    mel = _mel(40, seed=1)
    whole = voc.decode(mel, seed=7, input_preset=None)
    for sizes in ([1] * 40, [0, 0, 40, 0], [39]):  # [39]: the stream ends mid-window
        torch.testing.assert_close(_streamed(voc, _chunks(mel, sizes)), whole, atol=ATOL,
                                   rtol=0)


@pytest.mark.parametrize("sampler, steps, gl_init", [("ddim", 3, "noise"), ("fast", 0, "noise"),
                                                     ("fast", 0, "phase-vocoder")])
def test_ddim_and_griffin_lim_alone_stream_too(sampler, steps, gl_init):
    voc = _vocoder("hifigan", {"ddim_eta": 0.5})
    mel = _mel(50, seed=2)
    opts = {"sampler": sampler, "steps": steps, "consistency": 4 if steps == 0 else 1,
            "gl_init": gl_init}
    whole = voc.decode(mel, seed=7, input_preset=None, **opts)
    got = _streamed(voc, _chunks(mel, _random_sizes(50, 4)), **opts)
    torch.testing.assert_close(got, whole, atol=ATOL, rtol=0)


def test_audio_comes_out_once_the_lookahead_has_arrived_and_memory_stays_bounded():
    voc = _vocoder("hifigan", {"consistency_iters": 1, "start_iters": 2})
    hop = voc.hop_length
    dec = voc.streaming_decoder(seed=0, block=hop)  # every frame that can be, at once
    # 2 start projections + 3 steps x (network + 1 projection), each in whole hops
    assert dec.lookahead == dec.lookahead_exact > 0 and dec.lookahead % hop == 0
    ahead = dec.lookahead // hop
    mel = _mel(ahead + 60, seed=3)
    emitted = [dec.push(mel[:, i:i + 1]).numel() for i in range(mel.shape[-1])]
    # nothing before a whole lookahead's worth has arrived; then each frame frees a hop
    assert sum(emitted[:ahead]) == 0
    assert sum(emitted) == (mel.shape[-1] - ahead) * hop
    # what is kept is bounded by the reaches (the lookahead ahead of the last final
    # sample, a stage's reach behind it), not by the 60 frames that went by
    behind = max(s.reach for s in dec.stages) // hop
    assert dec.mel.shape[-1] <= ahead + behind
    assert max(s.buf.shape[-1] for s in dec.stages if s.buf is not None) <= 2 * dec.lookahead
    assert dec.finish().numel() == ahead * hop


def test_a_shorter_lookahead_gives_audio_earlier_and_close_to_exact():
    voc = _vocoder("hifigan", {"consistency_iters": 1})
    mel = _mel(80, seed=5)
    whole = voc.decode(mel, seed=7, input_preset=None)
    dec = voc.streaming_decoder(seed=7, lookahead=voc.hop_length * 4, block=voc.hop_length)
    assert dec.lookahead <= 4 * voc.hop_length < dec.lookahead_exact
    pieces = [dec.push(mel[:, i:i + 4]) for i in range(0, 80, 4)] + [dec.finish()]
    got = torch.cat(pieces)
    assert got.shape == whole.shape
    first = next(i for i, p in enumerate(pieces) if p.numel())
    assert (first + 1) * 4 * voc.hop_length <= dec.lookahead_exact  # earlier than exact
    diff = float((got - whole).abs().max())
    assert 0 < diff < float(whole.abs().max())


def test_bad_chunks_stop_the_stream_and_keep_what_was_yielded():
    voc = _vocoder()
    mel = _mel(60)
    bad = mel[:, :5].clone()
    bad[3, 2] = float("nan")
    got = []
    with pytest.raises(MelError, match="NaN/Inf.*frame 32"):
        for piece in voc.stream([mel[:, :30], bad], seed=0, lookahead=0):
            got.append(piece)
    assert sum(p.numel() for p in got) > 0
    with pytest.raises(MelError, match="shape \\(64, 5\\) after 30 frames.*n_mels"):
        list(voc.stream([mel[:, :30], torch.zeros(64, 5)], seed=0))
    with pytest.raises(ConfigError, match="cannot be detected"):
        voc.streaming_decoder(input_preset="auto")


@pytest.mark.parametrize("model_preset, input_preset", [
    ("hifigan", "tacotron2"),   # half a hop off: one frame held back, one frame fewer
    ("hifigan", "espnet"),      # another filterbank and log base, and the grid
    ("tacotron2", "hifigan"),   # the other way: one frame more at the end
])
def test_other_conventions_stream_as_the_whole_file_converts(model_preset, input_preset):
    from wavediff.audio.presets import get_preset
    from wavediff.audio.mel import MelSpectrogram

    voc = _vocoder(model_preset, {"consistency_iters": 1})
    wav = torch.sin(torch.arange(40 * 256) * 0.05)[None] * 0.3
    mel = MelSpectrogram(get_preset(input_preset))(wav)[0]  # written by the other system
    whole = voc.decode(mel, seed=7, input_preset=input_preset)
    got = _streamed(voc, _chunks(mel, _random_sizes(mel.shape[-1], 1)),
                    input_preset=input_preset)
    assert got.shape == whole.shape
    torch.testing.assert_close(got, whole, atol=ATOL, rtol=0)


def test_positional_noise_is_the_same_however_it_is_cut():
    noise = PositionalNoise([3, 4])
    whole = noise.draw(5, 0, 10_000)
    parts = torch.cat([noise.draw(5, a, b) for a, b in ((0, 1), (1, 4097), (4097, 10_000))],
                      dim=1)
    assert torch.equal(whole, parts)
    assert not torch.allclose(whole[0], whole[1])  # items differ
    assert not torch.allclose(whole, noise.draw(6, 0, 10_000))  # streams differ
    assert abs(float(whole.mean())) < 0.05 and abs(float(whole.std()) - 1.0) < 0.05
    g = torch.Generator().manual_seed(1)
    assert PositionalNoise.from_generator(g, 2).keys != PositionalNoise.from_generator(g, 2).keys


def test_the_stream_command_writes_what_the_whole_decode_gives(tmp_path):
    import subprocess
    import sys

    import soundfile as sf

    voc = _vocoder("hifigan", {"consistency_iters": 1})
    folder = voc.save_pretrained(tmp_path / "model")
    mel = _mel(45, seed=6)
    whole = voc.decode(mel, seed=3, input_preset=None).numpy()
    raw = mel.numpy().T.astype("<f4").tobytes()

    def stream(*args, data=raw):
        return subprocess.run([sys.executable, "-m", "wavediff", "stream", "--checkpoint",
                               str(folder), "--seed", "3", "--precision", "fp32", *args],
                              input=data, capture_output=True, timeout=120)

    r = stream("--read-frames", "7")  # stdin to raw PCM on stdout
    assert r.returncode == 0, r.stderr.decode()
    np.testing.assert_allclose(np.frombuffer(r.stdout, dtype="<f4"), whole, atol=ATOL, rtol=0)
    assert b"lookahead" in r.stderr and b"first audio after" in r.stderr
    r = stream("--output", str(tmp_path / "out.wav"))
    assert r.returncode == 0, r.stderr.decode()
    got, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == voc.sample_rate and not (tmp_path / "out.partial.wav").exists()
    np.testing.assert_allclose(got, whole, atol=ATOL, rtol=0)
    # a NaN mid-stream: one line, exit 1, the audio before it kept as .partial.wav
    bad = mel.clone()
    bad[5, 40] = float("nan")
    r = stream("--output", str(tmp_path / "bad.wav"), "--lookahead-ms", "0",
               data=bad.numpy().T.astype("<f4").tobytes())
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and err[-1].startswith("error: mel chunk holds 1 NaN/Inf"), err
    assert "kept in" in err[-1] and not (tmp_path / "bad.wav").exists()
    assert sf.info(str(tmp_path / "bad.partial.wav")).frames > 0
    # another system's convention, converted piece by piece
    from wavediff.audio.mel import MelSpectrogram
    from wavediff.audio.presets import get_preset

    wav = torch.sin(torch.arange(30 * 256) * 0.05)[None]
    taco = MelSpectrogram(get_preset("tacotron2"))(wav)[0]
    r = stream("--input-preset", "tacotron2", data=taco.numpy().T.astype("<f4").tobytes())
    assert r.returncode == 0, r.stderr.decode()
    expected = voc.decode(taco, seed=3, input_preset="tacotron2").numpy()
    np.testing.assert_allclose(np.frombuffer(r.stdout, dtype="<f4"), expected, atol=ATOL, rtol=0)
    # a torn last frame, and no frames at all
    r = stream(data=raw[:-6])
    assert r.returncode == 1 and b"ended inside a frame" in r.stderr
    r = stream(data=b"")
    assert r.returncode == 1 and b"no mel frames arrived" in r.stderr


def test_the_stream_command_follows_a_growing_file_until_it_is_done(tmp_path):
    import subprocess
    import sys
    import threading
    import time

    voc = _vocoder()
    folder = voc.save_pretrained(tmp_path / "model")
    mel = _mel(30, seed=8)
    whole = voc.decode(mel, seed=1, input_preset=None).numpy()
    raw = mel.numpy().T.astype("<f4").tobytes()
    growing = tmp_path / "mel.f32"
    growing.write_bytes(b"")

    def producer():  # a TTS model writing frames, a torn frame included, then done
        with open(growing, "ab") as f:
            for i in range(0, len(raw), 1000):
                f.write(raw[i:i + 1000])
                f.flush()
                time.sleep(0.05)
        (tmp_path / "mel.f32.done").touch()

    proc = subprocess.Popen([sys.executable, "-m", "wavediff", "stream", "--checkpoint",
                             str(folder), "--seed", "1", "--precision", "fp32", "--input",
                             str(growing), "--follow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    writer = threading.Thread(target=producer)
    writer.start()
    out, err = proc.communicate(timeout=120)
    writer.join()
    assert proc.returncode == 0, err.decode()
    np.testing.assert_allclose(np.frombuffer(out, dtype="<f4"), whole, atol=ATOL, rtol=0)


def test_streams_shorter_than_the_lookahead_and_a_stream_without_frames():
    voc = _vocoder("hifigan", {"consistency_iters": 1, "start_iters": 1})
    for frames in (1, 3):
        mel = _mel(frames, seed=frames)
        whole = voc.decode(mel, seed=7, input_preset=None)
        got = _streamed(voc, [mel[:, :1], mel[:, 1:]])
        torch.testing.assert_close(got, whole, atol=ATOL, rtol=0)
    dec = voc.streaming_decoder(seed=0)
    assert dec.finish().numel() == 0 and dec.finish().numel() == 0
    with pytest.raises(MelError, match="has ended"):
        dec.push(_mel(2))


def test_the_readable_model_streams_as_it_decodes():
    fused = _vocoder("hifigan", {"consistency_iters": 1}, subbands=2)
    voc = Vocoder(fused.model, fused.config, engine="reference", precision="fp32")
    mel = _mel(40, seed=9)
    whole = voc.decode(mel, seed=2, input_preset=None)
    got = _streamed(voc, _chunks(mel, _random_sizes(40, 9)), seed=2)
    torch.testing.assert_close(got, whole, atol=ATOL, rtol=0)


def test_the_stream_command_says_when_the_disk_is_full(tmp_path, monkeypatch, capsys):
    import soundfile as sf

    from wavediff.cli.main import main

    voc = _vocoder()
    folder = voc.save_pretrained(tmp_path / "model")
    (tmp_path / "mel.f32").write_bytes(_mel(40).numpy().T.astype("<f4").tobytes())

    def full(self, data):
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(sf.SoundFile, "write", full)
    rc = main(["stream", "--checkpoint", str(folder), "--input", str(tmp_path / "mel.f32"),
               "--output", str(tmp_path / "out.wav"), "--lookahead-ms", "0", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("error: cannot write") and "free some space" in err[-1]
    assert not (tmp_path / "out.wav").exists() and not (tmp_path / "out.partial.wav").exists()
