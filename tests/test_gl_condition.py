"""``model.gl_condition``: the denoiser conditioned on the mel's Griffin-Lim waveform. The
network sees the waveform (its sub-bands join the mel's channels), the fast engine and
chunked decoding equal the readable forward, the decode conditions on exactly the
Griffin-Lim decode of the same seed, and the model trains, saves and loads (streaming and
export: tests/test_stream.py, tests/test_onnx_export.py, tests/test_torch_export.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_dump, randomize_outputs, tiny_config_dict, tiny_vocoder
from wavediff.config import Config
from wavediff.errors import ConfigError, MelError
from wavediff.inference import InferenceEngine
from wavediff.inference.decode import chain_inputs
from wavediff.model import build_model
from wavediff.train.trainer import Trainer
from wavediff.vocoder import Vocoder

HOP = 256
# see tests/test_inference.py: the engine regroups float32 arithmetic (~1e-6 of the scale)
EPS_TOL = 1e-5
DECODE_ATOL = 5e-5


def _mel(frames: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 80, frames, generator=g) * 1.5 - 6.0


def _wave(frames: int = 7, seed: int = 1) -> torch.Tensor:
    return 0.3 * torch.randn(1, frames * HOP, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bands", [1, 4])
def test_the_waveform_joins_the_mel_and_the_engine_computes_the_same(bands):
    voc = tiny_vocoder(gl_condition=3, subbands=bands)
    model = voc.model
    assert model.wave_channels == bands
    assert model.residual_layers[0].conditioner_projection.in_channels == 80 + bands
    mel, wave = _mel(), _wave()
    x = torch.randn(1, 7 * HOP, generator=torch.Generator().manual_seed(2))
    steps = torch.tensor([5.5])
    with torch.no_grad():
        out = model(x, steps, mel, wave=wave)
        other = model(x, steps, mel, wave=-wave)
    scale = float(out.abs().max())
    assert scale > 0.1
    # the waveform reaches the output: another waveform, another prediction
    assert float((out - other).abs().max()) > 1e-2 * scale
    engine = InferenceEngine(model, block_size=64)
    sb = engine.step_bias(steps)
    for cond in (engine.conditioning(mel, wave=wave), engine.conditioning(mel, wave=wave, lazy=True)):
        torch.testing.assert_close(engine.denoise(x, sb, cond), out, atol=EPS_TOL * scale, rtol=0)


def test_a_missing_or_unexpected_waveform_is_refused():
    cond_model = tiny_vocoder(gl_condition=2).model
    plain = tiny_vocoder().model
    mel, wave = _mel(), _wave()
    steps = torch.tensor([1.0])
    x = torch.zeros(1, 7 * HOP)
    with pytest.raises(ConfigError, match="gl_condition: 2"):
        cond_model(x, steps, mel)
    with pytest.raises(ConfigError, match="gl_condition: 0"):
        plain(x, steps, mel, wave=wave)
    with pytest.raises(MelError, match="conditioning waveform"):
        cond_model(x, steps, mel, wave=wave[:, :-HOP])
    for bad in (-1, 101):
        with pytest.raises(ConfigError, match="model.gl_condition"):
            Config.from_dict({"model": {"gl_condition": bad}})


def test_the_decode_conditions_on_the_griffin_lim_decode_of_its_seed():
    voc = tiny_vocoder(gl_condition=3)
    mel = _mel(9)
    gl = voc.decode(mel, steps=0, consistency=3, seed=4, input_preset=None)  # no network
    inputs = chain_inputs(mel, generator=torch.Generator().manual_seed(4), audio=voc.config.audio,
                          condition_iters=3)
    assert inputs.init is None  # the chain itself starts from noise
    torch.testing.assert_close(inputs.wave, gl, atol=1e-6, rtol=0)
    # with a start of as many projections, one Griffin-Lim decode serves both
    both = chain_inputs(mel, generator=torch.Generator().manual_seed(4), audio=voc.config.audio,
                        start_iters=3, condition_iters=3)
    assert both.init is both.wave

    fused = voc.decode(mel, seed=0, input_preset=None)
    reference = Vocoder(voc.model, voc.config, engine="reference", precision="fp32").decode(
        mel, seed=0, input_preset=None)
    assert fused.std() > 0.01
    torch.testing.assert_close(fused, reference, atol=DECODE_ATOL, rtol=0)
    chunked = voc.decode(mel, seed=0, input_preset=None, chunk_seconds=2 * HOP / voc.sample_rate)
    torch.testing.assert_close(chunked, fused, atol=DECODE_ATOL, rtol=0)
    # the network is given that waveform: zeroing its columns of the conditioner changes the audio
    blind = Vocoder(_without_wave(voc.model), voc.config, precision="fp32")
    assert float((blind.decode(mel, seed=0, input_preset=None) - fused).abs().max()) > 1e-3


def _without_wave(model):
    import copy

    model = copy.deepcopy(model)
    with torch.no_grad():
        for layer in model.residual_layers:
            layer.conditioner_projection.weight[:, 80:] = 0.0
    return model


def test_a_stream_and_an_export_need_one_griffin_lim_waveform(tmp_path):
    """(tests/test_stream.py and the export tests: a conditioned model streams and exports
    exactly as it decodes.) A start of another count than the conditioning is refused."""
    voc = tiny_vocoder({"start_iters": 3}, gl_condition=2)
    with pytest.raises(ConfigError, match="start_iters to 0 or to model.gl_condition"):
        list(voc.stream([_mel(4)[0].numpy()], input_preset=None))
    from wavediff.inference.onnx_export import export_torch

    with pytest.raises(ConfigError, match="start_iters to 0 or to model.gl_condition"):
        export_torch(voc, tmp_path / "exported")
    assert not (tmp_path / "exported").exists() or not any((tmp_path / "exported").iterdir())


@pytest.mark.slow  # trains (3 steps of a tiny model, twice)
@pytest.mark.parametrize("objective", ["diffusion", "few_step"])
def test_a_conditioned_model_trains_saves_and_loads(tmp_path, objective):
    dump = make_dump(tmp_path, n=3, seconds=0.4)
    data = tiny_config_dict(max_steps=3, save_interval=3, log_interval=1, eval_interval=3)
    data["model"] = {**data["model"], "gl_condition": 2}
    if objective == "few_step":
        data["train"].update(objective="few_step", mel_loss_weight=45.0, diffusion_loss_weight=1.0)
        data["diffusion"] = {"fast_schedule": [1e-4, 0.05]}
    config = Config.from_dict(data)
    trainer = Trainer(config, dump, dump, tmp_path / "exp", progress=False)
    before = trainer.model.residual_layers[0].conditioner_projection.weight[:, 80:].detach().clone()
    trainer.run()
    voc = Vocoder.from_pretrained(tmp_path / "exp")
    assert voc.model.config.gl_condition == 2 and voc.engine == "fused"
    # the waveform's columns of the conditioner were trained: not the trainer's own start
    after = voc.model.residual_layers[0].conditioner_projection.weight[:, 80:]
    assert after.shape == before.shape and not torch.equal(after, before)
    voc.save_pretrained(tmp_path / "pretrained")
    again = Vocoder.from_pretrained(tmp_path / "pretrained")
    for (name, a), b in zip(voc.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    mel = np.load(next(dump.glob("*.npz")))["mel"]
    a, b = voc.decode(mel, seed=0), again.decode(mel, seed=0)
    assert a.shape == (mel.shape[-1] * HOP,) and torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_a_run_adding_the_condition_starts_from_the_source_network(tmp_path):
    """--init-checkpoint from a model without model.gl_condition: the waveform's columns
    start at zero, so the widened network computes what the source did."""
    from wavediff.train.gta import apply_init_checkpoint

    dump = make_dump(tmp_path, n=2, seconds=0.3)
    source_config = Config.from_dict(tiny_config_dict())
    torch.manual_seed(3)
    source = randomize_outputs(build_model(source_config)).eval()
    state = {"config": source_config, "model": source.state_dict(), "ema": None, "step": 7}
    data = tiny_config_dict()
    data["model"] = {**data["model"], "gl_condition": 4}
    trainer = Trainer(Config.from_dict(data), dump, dump, tmp_path / "exp", progress=False)
    apply_init_checkpoint(trainer, state, "the source")
    widened = trainer.model.eval()
    w = widened.residual_layers[1].conditioner_projection.weight.detach()
    assert w.shape[1] == 81 and float(w[:, 80:].abs().max()) == 0.0
    mel, wave = _mel(5), _wave(5)
    x = torch.randn(1, 5 * HOP, generator=torch.Generator().manual_seed(5))
    steps = torch.tensor([9.0])
    with torch.no_grad():
        torch.testing.assert_close(widened(x, steps, mel, wave=wave), source(x, steps, mel))
    # any other change of the model section is still refused
    data["model"]["residual_channels"] = 8
    other = Trainer(Config.from_dict(data), dump, dump, tmp_path / "exp2", progress=False)
    with pytest.raises(Exception, match="'model' config differs"):
        apply_init_checkpoint(other, state, "the source")
