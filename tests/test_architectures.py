"""The registered architectures: one factory, one protocol, every one trainable and
decodable through the engine the samplers use."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config_dict
from wavediff.config import ARCHITECTURE_NAMES, Config
from wavediff.errors import ConfigError
from wavediff.model import ARCHITECTURES, DenoiserModel, build_model
from wavediff.vocoder import Vocoder


def test_the_registry_and_the_config_name_the_same_architectures():
    assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES
    assert Config.from_dict(tiny_config_dict()).model.architecture == "diffwave"  # the default
    with pytest.raises(ConfigError, match="model.architecture"):
        Config.from_dict({**tiny_config_dict(), "model": {"architecture": "wavenet9000"}})


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_each_architecture_keeps_the_protocol_and_decodes_on_the_fast_engine(name):
    d = tiny_config_dict()
    d["model"]["architecture"] = name
    cfg = Config.from_dict(d)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, DenoiserModel) and isinstance(model, ARCHITECTURES[name])
    assert (model.n_mels, model.hop_length) == (cfg.audio.n_mels, cfg.audio.hop_length)
    torch.nn.init.normal_(model.output_projection.weight, std=0.1)  # not the zero init
    mel = torch.randn(1, cfg.audio.n_mels, 6) - 4
    fast = Vocoder(model, cfg, engine="fused").decode(mel, steps=3, seed=0, input_preset=None,
                                                     consistency=0)
    readable = Vocoder(model, cfg, engine="reference").decode(mel, steps=3, seed=0,
                                                              input_preset=None, consistency=0)
    # the engine rearranges the float32 arithmetic (blocked GEMMs, folded biases): equal to
    # rounding, which 3 steps of a 4-layer network amplify to about 1e-6 of the unit range
    torch.testing.assert_close(fast, readable, rtol=0, atol=1e-4)
    assert float(fast.abs().max()) > 0


def test_the_configured_ddim_eta_reaches_the_sampler():
    # diffusion.ddim_eta is part of the plan, which reaches the DDIM sampler whole
    d = tiny_config_dict()
    cfg0 = Config.from_dict({**d, "diffusion": {"sampler": "ddim", "ddim_eta": 0.0}})
    cfg1 = Config.from_dict({**d, "diffusion": {"sampler": "ddim", "ddim_eta": 1.0}})
    torch.manual_seed(0)
    model = build_model(cfg0)
    torch.nn.init.normal_(model.output_projection.weight, std=0.1)
    mel = torch.randn(1, 80, 4) - 4
    seen = []
    import wavediff.diffusion.samplers as samplers

    real = samplers.sample_ddim

    def spy(*args, **kwargs):
        seen.append(kwargs["schedule"].eta)
        return real(*args, **kwargs)

    samplers.SAMPLERS["ddim"] = spy
    try:
        Vocoder(model, cfg0).decode(mel, steps=3, seed=0, input_preset=None, consistency=0)
        Vocoder(model, cfg1).decode(mel, steps=3, seed=0, input_preset=None, consistency=0)
    finally:
        samplers.SAMPLERS["ddim"] = real
    assert seen == [0.0, 1.0]
