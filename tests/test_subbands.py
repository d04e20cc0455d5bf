"""Sub-band denoisers (2, 4, 8 Haar wavelet-packet bands): the split itself against closed
forms, the fused engine and chunked decoding against the readable model, and a sub-band
model trained a few steps, saved and loaded again."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_dump, randomize_outputs, tiny_config_dict
from wavediff.config import Config, ModelConfig
from wavediff.errors import ConfigError
from wavediff.model import DiffWave
from wavediff.model.subbands import SUBBAND_CHOICES, analysis, synthesis, walsh_matrix
from wavediff.train.trainer import Trainer
from wavediff.vocoder import Vocoder

BANDS = [2, 4, 8]


@pytest.mark.parametrize("bands", BANDS)
def test_split_is_orthonormal_and_reconstructs(bands):
    w = walsh_matrix(bands, torch.float64)
    # entries +-1/sqrt(n): every product in W W^T is exactly 1/n; sums of n of them round
    # at most ~n ulps of 1: 1e-12 leaves room
    torch.testing.assert_close(w @ w.T, torch.eye(bands, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.all(w[0] > 0)  # band 0: the block mean (times sqrt(n))
    # the rows are in sequency order: band k changes sign k times within a block
    assert [int((r[1:] * r[:-1] < 0).sum()) for r in w] == list(range(bands))
    x = torch.randn(3, 64 * bands, generator=torch.Generator().manual_seed(bands),
                    dtype=torch.float64)
    z = analysis(x, bands)
    assert z.shape == (3, bands, 64)
    # float64, n products and sums per value of size ~4: 1e-12 is ~1,000 ulps
    torch.testing.assert_close(synthesis(z), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(z.square().sum(dim=(1, 2)), x.square().sum(dim=1))  # energy kept
    block_means = x.reshape(3, 64, bands).mean(-1)
    torch.testing.assert_close(z[:, 0], block_means * math.sqrt(bands), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bands", BANDS)
def test_white_noise_stays_white_in_every_band(bands):
    """What lets a sub-band denoiser share the waveform's chain: each band of N(0, s^2)
    noise is N(0, s^2) noise, uncorrelated with the others."""
    s = 0.7
    z = analysis(s * torch.randn(4, bands * 2 ** 16, generator=torch.Generator().manual_seed(0),
                                 dtype=torch.float64), bands)
    flat = z.transpose(0, 1).reshape(bands, -1)
    cov = flat @ flat.T / flat.shape[1]
    # N = 2^18 samples per band: a variance estimate has std s^2 sqrt(2 / N) = 1.4e-3, a
    # covariance s^2 / sqrt(N) = 1e-3; 1e-2 is 7 or more of those std, while a split that
    # is not orthonormal (e.g. unnormalised Haar) is off by 0.49 or more
    torch.testing.assert_close(cov, s * s * torch.eye(bands, dtype=torch.float64),
                               rtol=0, atol=1e-2)


def test_the_two_band_split_is_the_haar_dwt():
    from wavediff.model.diffwave import haar_analysis

    x = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    pairs = x.reshape(2, 16, 2)
    low = (pairs[..., 0] + pairs[..., 1]) / math.sqrt(2.0)
    high = (pairs[..., 0] - pairs[..., 1]) / math.sqrt(2.0)
    # float32: two roundings each way
    torch.testing.assert_close(haar_analysis(x), torch.stack([low, high], 1))


def test_band_counts_are_checked():
    assert SUBBAND_CHOICES == (1, 2, 4, 8)
    for bands, hop in ((3, 256), (16, 256), (8, 300)):
        with pytest.raises(ConfigError, match="subbands"):
            DiffWave(80, hop, ModelConfig(residual_layers=2, residual_channels=4, subbands=bands))
    with pytest.raises(ValueError, match="split"):
        analysis(torch.zeros(1, 30), 4)


def _random_subband_vocoder(bands: int) -> Vocoder:
    config = Config.from_dict({**tiny_config_dict(), "model": {
        "residual_layers": 3, "residual_channels": 8, "dilation_cycle": 3,
        "step_embedding_dim": 16, "step_hidden_dim": 32, "subbands": bands}})
    torch.manual_seed(bands)
    model = randomize_outputs(DiffWave.from_config(config).eval())
    return Vocoder(model, config, precision="fp32")


@pytest.mark.parametrize("bands", BANDS)
def test_layers_run_at_the_band_rate_and_the_engine_decodes_them(bands):
    voc = _random_subband_vocoder(bands)
    hop = voc.config.audio.hop_length
    mel = torch.randn(1, 80, 6, generator=torch.Generator().manual_seed(2)) - 5  # (B, n_mels, F)
    assert voc.model.conditioning(mel)[0].shape == (1, 16, 6 * hop // bands)
    assert voc.engine == "fused"
    fused = voc.decode(mel, seed=0, input_preset=None)
    reference = Vocoder(voc.model, voc.config, engine="reference", precision="fp32").decode(
        mel, seed=0, input_preset=None)
    assert fused.shape == (1, 6 * hop) and reference.std() > 0.05
    # the engine's float32 GEMMs against the model's convolutions over 6 steps (3 layers):
    # ~1e-6 measured; a wrong band order or split changes samples by ~0.1
    torch.testing.assert_close(fused, reference, atol=5e-5, rtol=0)
    chunked = voc.decode(mel, seed=0, input_preset=None, chunk_seconds=2 * hop / voc.sample_rate)
    torch.testing.assert_close(chunked, fused, atol=5e-5, rtol=0)


@pytest.mark.slow  # trains (3 steps of a tiny model)
def test_a_four_band_model_trains_saves_and_loads(tmp_path):
    dump = make_dump(tmp_path, n=3, seconds=0.4)
    data = tiny_config_dict(max_steps=3, save_interval=3, log_interval=1, eval_interval=3)
    data["model"] = {**data["model"], "residual_channels": 24, "subbands": 4}
    Trainer(Config.from_dict(data), dump, dump, tmp_path / "exp", progress=False).run()
    voc = Vocoder.from_pretrained(tmp_path / "exp")
    assert voc.model.subbands == 4 and voc.engine == "fused"
    voc.save_pretrained(tmp_path / "pretrained")
    again = Vocoder.from_pretrained(tmp_path / "pretrained")
    assert again.model.subbands == 4
    for (name, a), b in zip(voc.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name  # safetensors round trip: bit for bit
    # the trained output layer is no longer the zero it starts as
    assert float(again.model.output_projection.weight.abs().max()) > 0
    mel = np.load(next(dump.glob("*.npz")))["mel"]
    a, b = voc.decode(mel, seed=0), again.decode(mel, seed=0)
    assert a.shape == (mel.shape[-1] * 256,) and torch.isfinite(a).all()
    assert torch.equal(a, b)  # same weights, same seed, same process: same audio
