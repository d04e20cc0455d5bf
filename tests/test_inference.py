"""The inference engine against the reference model: same epsilon, same audio, chunked
decoding equal to whole decoding, length bucketing, reduced precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import wavediff_cli
from wavediff.audio.presets import MelConfig
from wavediff.config import Config, ModelConfig
from wavediff.errors import ConfigError
from wavediff.inference import InferenceEngine
from wavediff.inference.batching import length_buckets
from wavediff.inference.denoisers import ChunkedDenoiser, _ramp, receptive_field
from wavediff.model import DiffWave
from wavediff.checkpoint import save_checkpoint
from wavediff.vocoder import Vocoder

HOP = 16
N_MELS = 8


def tiny_config(**model) -> Config:
    m = dict(residual_layers=6, residual_channels=8, dilation_cycle=3, step_embedding_dim=16,
             step_hidden_dim=32)
    m.update(model)
    return Config(audio=MelConfig(preset="custom", sample_rate=8000, n_fft=64, win_length=64,
                                  hop_length=HOP, n_mels=N_MELS, fmax=4000.0),
                  model=ModelConfig(**m))


def random_model(seed: int = 0, **model) -> DiffWave:
    """A tiny DiffWave with every parameter (biases and output layer too) non-trivial."""
    torch.manual_seed(seed)
    net = DiffWave.from_config(tiny_config(**model)).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.2)
        net.output_projection.weight.normal_(0.0, 0.5)
    return net


def random_mel(batch: int = 2, frames: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, N_MELS, frames, generator=torch.Generator().manual_seed(seed)) - 4.0


def reference_eps(model, x, steps, mel):
    with torch.no_grad():
        return model(x, steps, mel)


# Tolerances. The engine regroups the reference network's float32 arithmetic (folded biases
# and scales, blocked GEMMs over time-major rows) and chunks run it on other shapes, so the
# BLAS/oneDNN kernel a CPU picks changes the rounding. One evaluation of a network of L
# layers whose sums have up to K terms differs by about u * sqrt(L * K) of its output scale
# (u = 6e-8): ~1e-6 for the tiny model here (L = 6, K <= 5 * 8 + 8); EPS_TOL, 1e-5 of the
# scale, is ~10x that. A decode adds up its steps' errors, weighted by beta / sqrt(1 -
# alpha_bar) (~1.3 in all over the 50 DDPM steps), to ~5e-6 of the unit range; DECODE_ATOL
# is ~10x that. Measured differences stay 20x or more below both with AVX-512 and AVX2
# kernels, while a wrong block, tap, step or chunk changes values by 1e-3 of the scale or
# more (see test_too_little_overlap_changes_the_audio).
EPS_TOL = 1e-5  # times the largest |eps| of the comparison
DECODE_ATOL = 5e-5  # audio in [-1, 1]


# ---------------------------------------------------------------------- engine
@pytest.mark.parametrize("block_size", [1, 7, 64, 4096])
@pytest.mark.parametrize("model_kw", [{}, {"kernel_size": 5, "dilation_cycle": 4},
                                      {"subbands": 2}, {"subbands": 8}])
def test_engine_matches_the_reference_network(block_size, model_kw):
    model = random_model(**model_kw)
    mel = random_mel(2, 5)  # 80 samples: shorter than the largest padding
    x = torch.randn(2, 5 * HOP, generator=torch.Generator().manual_seed(1))
    steps = torch.tensor([3.25, 17.0])  # a different step per item
    engine = InferenceEngine(model, block_size=block_size)
    got = engine.denoise(x, engine.step_bias(steps), engine.conditioning(mel))
    expected = reference_eps(model, x, steps, mel)
    scale = float(expected.abs().max())
    assert scale > 0.1
    # threads share the blocks out, so the blocks (GEMM shapes) differ: EPS_TOL
    threaded = InferenceEngine(model, block_size=block_size, threads=3)
    torch.testing.assert_close(threaded.denoise(x, threaded.step_bias(steps),
                                                threaded.conditioning(mel)), got,
                               atol=EPS_TOL * scale, rtol=0)
    assert torch.get_num_threads() == 1  # restored after the threaded layer loop
    torch.testing.assert_close(got, expected, atol=EPS_TOL * scale, rtol=0)
    lazy = engine.denoise(x, engine.step_bias(steps), engine.conditioning(mel, lazy=True))
    torch.testing.assert_close(lazy, expected, atol=EPS_TOL * scale, rtol=0)


@pytest.mark.parametrize("model_kw", [{}, {"subbands": 8}])
def test_engine_computes_only_what_a_kept_range_needs(model_kw):
    model = random_model(**model_kw)
    mel = random_mel(1, 40)
    x = torch.randn(1, 40 * HOP, generator=torch.Generator().manual_seed(2))
    engine = InferenceEngine(model, block_size=64, threads=2)
    sb, cond = engine.step_bias(torch.tensor([5.0])), engine.conditioning(mel)
    whole = engine.denoise(x, sb, cond)
    scale = float(whole.abs().max())
    for lo, hi in ((0, 8), (2048, 2560), (5000, 40 * HOP)):
        got = engine.denoise(x, sb, cond, keep=(lo, hi))
        torch.testing.assert_close(got[:, lo:hi], whole[:, lo:hi], atol=EPS_TOL * scale, rtol=0)
    # the cone is narrower than the whole: far from the kept range nothing was computed
    got = engine.denoise(x, sb, cond, keep=(2048, 2560))
    assert not torch.allclose(got[:, :256], whole[:, :256], atol=1e-3 * scale)


def test_engine_matches_diffwave_base():
    """The BASE architecture (30 layers, 64 channels, dilations up to 512), 40 frames."""
    torch.manual_seed(0)
    model = DiffWave.from_config(Config()).eval()
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.1)
    mel = torch.randn(1, 80, 40) - 5.0
    x = torch.randn(1, 40 * 256)
    steps = torch.tensor([12.6])
    engine = InferenceEngine(model)
    got = engine.denoise(x, engine.step_bias(steps), engine.conditioning(mel))
    expected = reference_eps(model, x, steps, mel)
    # as EPS_TOL for L = 30 layers with sums of K = 3 * 64 + 80 terms: u * sqrt(L * K)
    # = 5.4e-6 of the scale; 5e-5 is ~10x that (measured 1e-6)
    torch.testing.assert_close(got, expected, atol=5e-5 * float(expected.abs().max()), rtol=0)
    assert receptive_field(engine) == receptive_field(model) == 3 * 1023


def test_vocoder_fast_engine_gives_the_reference_audio():
    model = random_model()
    fast = Vocoder(model, tiny_config())
    ref = Vocoder(model, tiny_config(), engine="reference")
    mel = random_mel(2, 12)
    for kw in ({}, {"sampler": "ddim", "steps": 4}, {"sampler": "ddpm"}):
        kw["input_preset"] = None  # random values in the model's convention
        a, b = fast.decode(mel, seed=3, **kw), ref.decode(mel, seed=3, **kw)
        assert b.std() > 0.05
        torch.testing.assert_close(a, b, atol=DECODE_ATOL, rtol=0)


def test_engine_follows_new_weights():
    model = random_model()
    voc = Vocoder(model, tiny_config())
    mel = random_mel(1, 6)
    before = voc.decode(mel, seed=0)
    first = voc.inference_engine
    voc.model.load_state_dict(random_model(seed=5).state_dict())
    assert voc.inference_engine is not first
    after = voc.decode(mel, seed=0)
    assert not torch.allclose(before, after)
    # the same weights and decode in one process: bit-identical in fact
    torch.testing.assert_close(after, Vocoder(random_model(seed=5), tiny_config()).decode(mel, seed=0))


def test_bad_options_are_refused():
    model = random_model()
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, fp16"):
        Vocoder(model, tiny_config(), precision="fp8")
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        InferenceEngine(model, precision="auto")  # the engine needs a resolved precision
    # the older keyword still works, with a deprecation warning, and means the same
    with pytest.warns(DeprecationWarning, match="precision="):
        old = Vocoder(model, tiny_config(), autocast="none")
    assert old.precision == "fp32"
    with pytest.warns(DeprecationWarning, match="engine='fused'"):
        assert Vocoder(model, tiny_config(), engine="fast").engine == "fused"
    with pytest.raises(ConfigError, match="engine"):
        Vocoder(model, tiny_config(), engine="turbo")
    with pytest.raises(ConfigError, match="block_size"):
        InferenceEngine(model, block_size=0)


# ---------------------------------------------------------------------- chunked
def test_chunked_decoding_matches_whole_decoding():
    model = random_model()
    rf = receptive_field(model)  # 2 * (1 + 2 + 4) = 14 samples
    voc = Vocoder(model, tiny_config(), chunk_seconds=None)
    mel = random_mel(2, 40)
    whole = voc.decode(mel, seed=7, input_preset=None)
    chunk_seconds = 6 * HOP / voc.sample_rate
    chunked_den = voc.denoiser_for(mel, chunk_seconds=chunk_seconds)
    assert isinstance(chunked_den, ChunkedDenoiser) and len(chunked_den.cores) >= 5
    assert chunked_den.overlap >= rf + chunked_den.crossfade
    chunked = voc.decode(mel, seed=7, chunk_seconds=chunk_seconds, input_preset=None)
    assert whole.std() > 0.05
    torch.testing.assert_close(chunked, whole, atol=DECODE_ATOL, rtol=0)


def test_too_little_overlap_changes_the_audio():
    """The tolerance test above can fail: with context shorter than the receptive field the
    chunk edges differ from whole decoding."""
    model = random_model()
    engine = InferenceEngine(model)
    mel = random_mel(1, 40)
    x = torch.randn(1, 40 * HOP, generator=torch.Generator().manual_seed(2))
    steps = torch.tensor([10.0])
    expected = reference_eps(model, x, steps, mel)
    exact = ChunkedDenoiser(engine, mel, chunk=6 * HOP, crossfade=4)
    torch.testing.assert_close(exact(x, steps, mel), expected,
                               atol=EPS_TOL * float(expected.abs().max()), rtol=0)
    short = ChunkedDenoiser(engine, mel, chunk=6 * HOP, overlap=0, crossfade=0)
    assert (short(x, steps, mel) - expected).abs().max() > 1e-3


def test_chunked_memory_is_bounded_by_the_chunk(monkeypatch):
    model = random_model()
    engine = InferenceEngine(model)
    seen = []
    original = engine.denoise

    def recording(x, steps, cond):
        seen.append((x.shape[-1], cond.lazy))
        return original(x, steps, cond)

    monkeypatch.setattr(engine, "denoise", recording)
    for frames in (60, 600):
        mel = random_mel(1, frames)
        den = ChunkedDenoiser(engine, mel, chunk=8 * HOP)
        seen.clear()
        den(torch.randn(1, frames * HOP), torch.tensor([5.0]), mel)
        window = 8 * HOP + 2 * (den.overlap_frames * HOP)
        assert max(n for n, _ in seen) <= window
        assert all(lazy for _, lazy in seen)  # no per-layer conditioning kept
        assert sum(n for n, _ in seen) >= frames * HOP


def test_crossfade_weights_sum_to_one():
    r = _ramp(10, torch.device("cpu"))
    # (i + 0.5) / n + (n - i - 0.5) / n: one float32 rounding each, within the default
    torch.testing.assert_close(r + r.flip(0), torch.ones(10))
    assert 0 < r[0] < r[-1] < 1


def test_chunk_options_are_checked():
    engine = InferenceEngine(random_model())
    mel = random_mel(1, 20)
    with pytest.raises(ConfigError, match="overlap"):
        ChunkedDenoiser(engine, mel, chunk=64, overlap=8, crossfade=16)
    with pytest.raises(ConfigError, match="twice the crossfade"):
        ChunkedDenoiser(engine, mel, chunk=16, crossfade=16)


# ---------------------------------------------------------------------- batching
def test_length_buckets_cover_every_item_once():
    lengths = [10, 200, 12, 190, 11, 400, 13, 205, 198]
    buckets = length_buckets(lengths, 3, max_padding=0.25)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for b in buckets:
        assert len(b) <= 3
        longest = max(lengths[i] for i in b)
        assert 1 - sum(lengths[i] for i in b) / (len(b) * longest) <= 0.25
    assert length_buckets([10, 200, 12, 190, 11], 4) == [[1, 3], [2, 4, 0]]
    with pytest.raises(ConfigError):
        length_buckets([1], 0)


def test_decode_many_keeps_the_order():
    voc = Vocoder(random_model(), tiny_config())
    mels = [random_mel(1, n, seed=n)[0].numpy() for n in (3, 9, 4, 10)]
    wavs = voc.decode_many(mels, batch_size=2, seed=0)
    assert [w.shape[-1] for w in wavs] == [n * HOP for n in (3, 9, 4, 10)]
    assert all(w.abs().max() > 0 for w in wavs)


# ---------------------------------------------------------------------- precision
def test_bf16_autocast_stays_close_to_float32():
    model = random_model()
    mel = random_mel(1, 8)
    x = torch.randn(1, 8 * HOP, generator=torch.Generator().manual_seed(4))
    steps = torch.tensor([6.0])
    bf16 = InferenceEngine(model, precision="bf16")
    got = bf16.denoise(x, bf16.step_bias(steps), bf16.conditioning(mel))
    expected = reference_eps(model, x, steps, mel)
    err = (got - expected).abs().max() / expected.abs().max()
    assert 0 < err < 0.05  # bf16 rounds (so not equal) but stays within tolerance
    voc = Vocoder(model, tiny_config(), precision="bf16")
    ref = Vocoder(model, tiny_config(), precision="fp32")
    # bf16 keeps 8 significant bits (~4e-3 per operation): decodes stay well within 0.1
    assert (voc.decode(mel, seed=1, input_preset=None) - ref.decode(mel, seed=1, input_preset=None)).abs().max() < 0.1


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_engine_graphs_and_precision(precision, monkeypatch):
    # cuDNN convolutions default to TF32 on Ampere and later (10 mantissa bits, ~1e-3
    # relative): off here, so "fp32" is compared as float32 at 1e-4
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = random_model()
    mel = random_mel(2, 16)
    ref = Vocoder(model, tiny_config()).decode(mel, seed=0)
    voc = Vocoder(random_model(), tiny_config(), device="cuda", precision=precision,
                  cuda_graphs=True)
    out = voc.decode(mel, seed=0).cpu()
    tol = 1e-4 if precision == "fp32" else 0.1
    assert (out - ref).abs().max() < tol


# ---------------------------------------------------------------------- CLI
def saved_random_vocoder(exp: Path) -> Vocoder:
    """A tiny random model (hifigan mels, hop 256; output layer not zero) saved as the
    checkpoint of experiment ``exp`` for the CLI, and its Vocoder."""
    config = Config(model=tiny_config().model)
    torch.manual_seed(0)
    model = DiffWave.from_config(config)
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.5)
    save_checkpoint(exp / "checkpoint-1steps.pt",
                    {"config": config.to_dict(), "step": 1, "model": model.state_dict(),
                     "ema": None})
    return Vocoder(model, config)


def test_vocode_cli_chunked_equals_whole(tmp_path):
    import soundfile as sf

    from wavediff.audio.synth import toy_utterance

    voc = saved_random_vocoder(tmp_path / "exp")
    mel = voc.mel(torch.from_numpy(toy_utterance(22050, 1.0, seed=0))[None])[0]
    np.save(tmp_path / "long.npy", mel.numpy())
    outs = {}
    for name, chunk in (("whole", "0"), ("chunked", str(8 * 256 / 22050))):
        r = wavediff_cli("vocode", "--checkpoint", tmp_path / "exp", "--outdir", tmp_path / name,
                         "--seed", "0", "--chunk-seconds", chunk, tmp_path / "long.npy", "-q")
        assert r.returncode == 0, r.stderr
        outs[name] = sf.read(tmp_path / name / "long.wav", dtype="float32")[0]
    assert len(outs["whole"]) >= (mel.shape[-1] - 1) * 256 and np.abs(outs["whole"]).max() > 0.05
    assert len(outs["chunked"]) == len(outs["whole"])
    # 16-bit files: decodes ~1e-6 apart land on the same step or the next one (2**-15 =
    # 3.1e-5, measured); 1e-4 allows that and fails for a misplaced chunk (~0.1)
    np.testing.assert_allclose(outs["chunked"], outs["whole"], atol=1e-4)


def test_vocode_cli_batches_as_the_facade_does(tmp_path):
    """``wavediff vocode --batch-size`` groups files with Vocoder.batches and seeds each
    batch from --seed and its first file's name: the facade's decode_batch of the same
    groups gives the same audio."""
    import soundfile as sf

    from wavediff.audio.synth import toy_utterance
    from wavediff.distributed import file_seed

    voc = saved_random_vocoder(tmp_path / "exp")
    mels = {}
    for name, seconds in (("a", 0.06), ("b", 0.11), ("c", 0.1)):
        wav = torch.from_numpy(toy_utterance(22050, seconds, seed=len(mels)))
        mels[name] = voc.mel(wav[None])[0].numpy()
        np.save(tmp_path / f"{name}.npy", mels[name])
    r = wavediff_cli("vocode", "--checkpoint", tmp_path / "exp", "--outdir", tmp_path / "out",
                     "--seed", "0", "--batch-size", "2", "--steps", "3", "-q",
                     "--input-preset", "hifigan",
                     *(tmp_path / f"{n}.npy" for n in mels))
    assert r.returncode == 0, r.stderr
    names = sorted(mels, key=lambda n: mels[n].shape[-1])  # the CLI's order: by length
    groups = voc.batches([mels[n] for n in names], 2)
    assert sorted(len(g) for g in groups) == [1, 2]  # b and c together, a alone
    for group in groups:
        batch = [names[i] for i in group]
        wavs = voc.decode_batch([mels[n] for n in batch], input_preset=None, steps=3,
                                seed=file_seed(0, batch[0]))
        for n, wav in zip(batch, wavs):
            got = sf.read(tmp_path / "out" / f"{n}.wav", dtype="float32")[0]
            # the same decode, written as 16-bit: within one or two steps of 2**-15
            np.testing.assert_allclose(got, wav.numpy(), atol=1e-4)


def test_large_batch_keeps_memory_bounded_and_the_audio():
    """A batch whose conditioning would exceed the chunk's budget projects the mel per
    evaluation instead of storing every layer's conditioning; the audio is unchanged."""
    voc = Vocoder(random_model(), tiny_config())
    mel = random_mel(4, 40)
    chunk_seconds = 100 * HOP / voc.sample_rate  # 1600 samples < 4 x 640
    den = voc.denoiser_for(mel, chunk_seconds=chunk_seconds)
    assert isinstance(den, ChunkedDenoiser) and len(den.cores) == 1
    den(torch.randn(4, 40 * HOP), torch.tensor([3.0]), mel)
    assert not den.cache  # 4 x 640 samples of conditioning exceed the budget of 1600
    small = voc.denoiser_for(random_mel(1, 40), chunk_seconds=chunk_seconds)
    assert not isinstance(small, ChunkedDenoiser)
    whole = voc.decode(mel, seed=2, chunk_seconds=None, input_preset=None)
    torch.testing.assert_close(voc.decode(mel, seed=2, chunk_seconds=chunk_seconds, input_preset=None), whole,
                               atol=DECODE_ATOL, rtol=0)


def test_progress_within_one_utterance_counts_steps_times_chunks():
    # a long mel decoded in chunks reports each chunk of each step, not 0/1 until the end
    voc = Vocoder(random_model(), tiny_config())
    mel = random_mel(1, 60)
    seen: list[tuple[int, int]] = []
    chunk_seconds = 10 * HOP / voc.sample_rate  # 10 frames a chunk: 6 chunks
    wav = voc.decode(mel, seed=0, steps=3, chunk_seconds=chunk_seconds, input_preset=None,
                     progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 18) for i in range(1, 19)]  # 3 steps x 6 chunks
    whole_seen: list[tuple[int, int]] = []
    whole = voc.decode(mel, seed=0, steps=3, chunk_seconds=None, input_preset=None,
                       progress=lambda done, total: whole_seen.append((done, total)))
    assert whole_seen == [(1, 3), (2, 3), (3, 3)]  # unchunked: one tick per step
    torch.testing.assert_close(wav, whole, atol=1e-4, rtol=0)  # chunked: 2x DECODE_ATOL
