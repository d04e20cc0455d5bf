"""Import of lmnt-com/diffwave checkpoints: same network output, config, CLI and errors."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import wavediff_cli
from wavediff.diffusion.schedule import plan
from wavediff.errors import CheckpointError
from wavediff.importers.lmnt import convert_lmnt_state, read_lmnt_checkpoint
from wavediff.vocoder import Vocoder

lmnt_model = pytest.importorskip("diffwave.model")
lmnt_params = pytest.importorskip("diffwave.params")

TINY = {"residual_layers": 4, "residual_channels": 8, "dilation_cycle_length": 2,
        "noise_schedule": [1e-4 + i * (0.05 - 1e-4) / 19 for i in range(20)],
        "inference_noise_schedule": [1e-4, 1e-2, 0.2]}


def random_lmnt(seed: int = 0, **overrides):
    """A randomly initialised lmnt DiffWave (output layer non-zero) and its params."""
    params = lmnt_params.AttrDict(lmnt_params.params).override({**TINY, **overrides})
    torch.manual_seed(seed)
    model = lmnt_model.DiffWave(params).eval()
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.3)
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.1)
    return model, params


def save_lmnt(path, model, params, step=1234):
    torch.save({"step": step, "model": model.state_dict(), "params": dict(params),
                "optimizer": torch.optim.Adam(model.parameters()).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def lmnt_checkpoint(tmp_path_factory):
    model, params = random_lmnt()
    path = save_lmnt(tmp_path_factory.mktemp("lmnt") / "weights-1234.pt", model, params)
    return model, params, path


def test_converted_network_gives_the_same_epsilon(lmnt_checkpoint, tmp_path):
    model, params, path = lmnt_checkpoint
    r = wavediff_cli("import-lmnt", path, "--outdir", tmp_path / "exp")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "exp" / "config.yaml").is_file()
    voc = Vocoder.from_pretrained(tmp_path / "exp")
    assert voc.step == 1234
    g = torch.Generator().manual_seed(0)
    mel = torch.rand(2, 80, 9, generator=g)
    audio = torch.randn(2, 9 * 256, generator=g)
    for t in (torch.tensor([7]), torch.tensor([3.37])):  # table lookup and interpolation
        with torch.no_grad():
            expected = model(audio, mel, t).squeeze(1)
            ours = voc.model(audio, t.float().expand(2), mel)
        assert expected.abs().max() > 0.05
        # lmnt's network and ours (and the engine's regrouped GEMMs) sum in other orders:
        # float32 (u = 6e-8) over 4 layers of sums of up to 3 * 8 + 80 terms gives
        # ~u * sqrt(4 * 104) ~ 1.2e-6 of the output scale (~1 here); 1e-5 is ~10x that
        # (measured <= 7e-7 with AVX-512 and AVX2 kernels), a wrong tap or step is ~0.01+
        assert (ours - expected).abs().max() <= 1e-5
        engine = voc.inference_engine  # the fused engine too
        got = engine.denoise(audio, engine.step_bias(t.float().expand(2)), engine.conditioning(mel))
        assert (got - expected).abs().max() <= 1e-5


def test_config_follows_the_params(lmnt_checkpoint):
    _, params, path = lmnt_checkpoint
    config, weights = convert_lmnt_state(read_lmnt_checkpoint(path))
    assert config.audio.preset == "diffwave-lmnt"
    assert (config.audio.hop_length, config.audio.n_mels, config.audio.sample_rate) == (256, 80, 22050)
    assert config.audio.fmin == 20.0 and config.audio.fmax == 11025.0  # copied values: exact
    assert config.model.residual_layers == 4 and config.model.residual_channels == 8
    assert config.model.dilation_cycle == 2
    # the same float64 values, converted: approx's rel=1e-6 is slack
    assert config.diffusion.training_betas() == pytest.approx(TINY["noise_schedule"])
    assert config.diffusion.fast_schedule == pytest.approx(TINY["inference_noise_schedule"])
    assert "spectrogram_upsampler.convs.1.weight" in weights
    assert not any("conv1" in k or "conv2" in k for k in weights)


def test_decoding_matches_lmnt_predict_on_the_same_noise(lmnt_checkpoint, tmp_path):
    """Same weights, schedule and noise: wavediff's fast sampler reproduces lmnt's predict()
    once lmnt's clamp after every step is applied too (wavediff clamps only the result)."""
    from diffwave.inference import predict

    # lmnt's predict() builds its default (BASE) network whatever the checkpoint says
    model, params = random_lmnt(seed=3, **{k: lmnt_params.params[k] for k in TINY})
    with torch.no_grad():
        model.output_projection.weight.mul_(0.01)
    path = save_lmnt(tmp_path / "weights.pt", model, params)
    mel = torch.rand(1, 80, 6, generator=torch.Generator().manual_seed(1))
    import diffwave.inference

    diffwave.inference.models[str(path)] = model  # so loading draws no random numbers
    torch.manual_seed(5)
    expected, sr = predict(mel, model_dir=str(path), params=dict(params),
                           device=torch.device("cpu"), fast_sampling=True)
    torch.manual_seed(5)
    x_T = torch.randn(1, 6 * 256)
    zs = [torch.randn(1, 6 * 256) for _ in range(len(params.inference_noise_schedule) - 1)]
    config, weights = convert_lmnt_state(read_lmnt_checkpoint(path))
    from wavediff.model import DiffWave

    ours = DiffWave.from_config(config)
    ours.load_state_dict(weights)
    voc = Vocoder(ours, config)
    draws = iter(zs)
    import wavediff.diffusion.samplers as samplers

    original = samplers.randn
    samplers.randn = lambda shape, generator, device, dtype: next(draws)
    try:
        wav = samplers.sample_fast(voc.denoiser_for(mel), voc.diffusion, mel,
                                   schedule=plan("fast", config.diffusion), noise=x_T,
                                   callback=lambda i, n, x: x.clamp_(-1.0, 1.0))
    finally:
        samplers.randn = original
    assert sr == 22050
    assert expected.std() > 0.1
    # two float32 implementations of the BASE network (30 layers of 64 channels) and of the
    # 3-step chain: ~1e-6 apart (measured 4e-7); 1e-4 is ample and a wrong schedule or
    # noise order differs by ~0.1
    assert (wav - expected).abs().max() <= 1e-4


def test_bare_state_dict_and_module_prefix_are_read(tmp_path):
    model, params = random_lmnt(seed=1, residual_layers=2)
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "bare.pt")
    config, weights = convert_lmnt_state(read_lmnt_checkpoint(tmp_path / "bare.pt"))
    # no params: lmnt's defaults, except the sizes, which the weights show
    assert config.model.residual_layers == 2 and config.model.residual_channels == 8
    assert config.diffusion.num_steps == 50
    assert "input_projection.weight" in weights


def test_inconsistent_and_foreign_files_are_refused(tmp_path, lmnt_checkpoint):
    model, params, _ = lmnt_checkpoint
    bad = save_lmnt(tmp_path / "bad.pt", model, {**dict(params), "residual_channels": 64})
    with pytest.raises(CheckpointError, match="residual_channels = 8 but its params say 64"):
        convert_lmnt_state(read_lmnt_checkpoint(bad))
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    r = wavediff_cli("import-lmnt", tmp_path / "foreign.pt", "--outdir", tmp_path / "o")
    assert r.returncode == 1 and "not an lmnt DiffWave checkpoint" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = wavediff_cli("import-lmnt", tmp_path / "missing.pt", "--outdir", tmp_path / "o")
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_force(lmnt_checkpoint, tmp_path):
    _, _, path = lmnt_checkpoint
    assert wavediff_cli("import-lmnt", path, "--outdir", tmp_path / "e").returncode == 0
    r = wavediff_cli("import-lmnt", path, "--outdir", tmp_path / "e")
    assert r.returncode == 1 and "--force" in r.stderr
    assert wavediff_cli("import-lmnt", path, "--outdir", tmp_path / "e", "--force").returncode == 0


def test_wavediff_checkpoint_and_existing_experiment_are_refused(lmnt_checkpoint, trained_exp,
                                                                 tmp_path):
    ckpt = sorted(trained_exp["exp"].glob("checkpoint-*steps.pt"))[-1]
    r = wavediff_cli("import-lmnt", ckpt, "--outdir", tmp_path / "o")
    assert r.returncode == 1 and "already a wavediff checkpoint" in r.stderr
    assert not (tmp_path / "o").exists()
    # an experiment of another step: its config.yaml is not overwritten without --force
    _, _, path = lmnt_checkpoint
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text("model: {}\n")
    r = wavediff_cli("import-lmnt", path, "--outdir", exp)
    assert r.returncode == 1 and "config.yaml" in r.stderr and "--force" in r.stderr
    assert (exp / "config.yaml").read_text() == "model: {}\n"
