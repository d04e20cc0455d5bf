"""The DiffWave denoiser: size, shapes for any hop, step embedding, conditioning, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from wavediff.config import Config, ModelConfig
from wavediff.errors import ConfigError, MelError
from wavediff.model import DiffWave, count_parameters
from wavediff.model.layers import StepEmbedding, sinusoidal_embedding, upsample_factors_for
from wavediff.inference.decode import ConditionedDenoiser

N_MELS = 8


def tiny_config(**changes) -> ModelConfig:
    base = dict(residual_layers=4, residual_channels=8, dilation_cycle=2,
                step_embedding_dim=16, step_hidden_dim=32)
    base.update(changes)
    return ModelConfig(**base)


def tiny_model(hop: int = 16, seed: int = 0, **changes) -> DiffWave:
    """A tiny DiffWave whose zero-initialised output layer is randomised."""
    torch.manual_seed(seed)
    model = DiffWave(N_MELS, hop, tiny_config(**changes))
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.5)
        model.output_projection.bias.fill_(0.1)
    return model


def inputs(model: DiffWave, batch: int = 2, frames: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames * model.hop_length, generator=g)
    mel = torch.randn(batch, model.n_mels, frames, generator=g)
    steps = torch.randint(0, 50, (batch,), generator=g).float()
    return x, steps, mel


# ---------------------------------------------------------------------- size
def test_base_parameter_count():
    n = count_parameters(DiffWave.from_config(Config()))
    assert 2_500_000 <= n <= 2_700_000  # DiffWave reports about 2.6M


def test_structure_follows_config():
    model = DiffWave(N_MELS, 256, tiny_config(residual_layers=6, dilation_cycle=3))
    assert len(model.residual_layers) == 6
    assert [layer.dilated_conv.dilation[0] for layer in model.residual_layers] == [
        1, 2, 4, 1, 2, 4]
    assert model.spectrogram_upsampler.factors == [16, 16]


# ---------------------------------------------------------------------- shapes
@pytest.mark.parametrize("hop", [64, 128, 200, 256, 300, 275])
@pytest.mark.parametrize("frames", [1, 3, 7])
def test_output_shape_for_any_hop(hop, frames):
    model = tiny_model(hop)
    x, steps, mel = inputs(model, batch=2, frames=frames)
    out = model(x, steps, mel)
    assert out.shape == (2, frames * hop)
    assert torch.isfinite(out).all()
    assert math.prod(model.spectrogram_upsampler.factors) == hop
    up = model.spectrogram_upsampler(mel)
    assert up.shape == (2, N_MELS, frames * hop)


@pytest.mark.parametrize(
    "hop, factors",
    [(256, [16, 16]), (300, [15, 20]), (128, [8, 16]), (64, [8, 8]), (200, [10, 20]),
     (275, [11, 25]), (16, [4, 4]), (32, [4, 8]), (2, [2]), (1, [1])],
)
def test_upsample_factors_for_hop(hop, factors):
    assert upsample_factors_for(hop) == factors


@pytest.mark.parametrize("hop", [251, 997, 2 * 37])
def test_unsplittable_hop_raises(hop):
    with pytest.raises(ConfigError, match="upsample_factors"):
        DiffWave(N_MELS, hop, tiny_config())


def test_explicit_upsample_factors():
    with pytest.raises(ConfigError, match="upsample_factors"):
        DiffWave(N_MELS, 256, tiny_config(upsample_factors=[8, 16]))
    with pytest.raises(ConfigError, match="upsample_factors"):
        DiffWave(N_MELS, 256, tiny_config(upsample_factors=[-16, -16]))
    model = tiny_model(256, upsample_factors=[4, 8, 8])
    assert model.spectrogram_upsampler.factors == [4, 8, 8]
    assert len(model.spectrogram_upsampler.convs) == 3
    x, steps, mel = inputs(model, frames=3)
    assert model(x, steps, mel).shape == (2, 3 * 256)
    # a hop that cannot be split in two works with explicit factors
    model = tiny_model(251, upsample_factors=[251])
    x, steps, mel = inputs(model, frames=2)
    assert model(x, steps, mel).shape == (2, 2 * 251)


# ---------------------------------------------------------------------- initialisation
def test_untrained_output_is_exactly_zero():
    torch.manual_seed(0)
    model = DiffWave(N_MELS, 16, tiny_config())
    assert torch.count_nonzero(model.output_projection.weight) == 0
    x, steps, mel = inputs(model)
    out = model(x, steps, mel)
    assert torch.equal(out, torch.zeros_like(out))  # zero weights and bias: exactly 0


# ---------------------------------------------------------------------- step embedding
def test_integer_steps_match_closed_form():
    dim = 16
    emb = StepEmbedding(dim, 32)
    steps = torch.tensor([0.0, 1.0, 7.0, 49.0])
    got = emb.encode(steps)
    half = dim // 2
    for b, t in enumerate(steps.tolist()):
        for j in range(half):
            arg = t * 10.0 ** (j * 4.0 / (half - 1))
            tol = 1e-5 + 3e-7 * arg  # float32 rounding of the argument (up to 4.9e5 here)
            assert got[b, j].item() == pytest.approx(math.sin(arg), abs=tol)
            assert got[b, half + j].item() == pytest.approx(math.cos(arg), abs=tol)
    # integer steps: the interpolation adds (high - low) * 0.0, exactly nothing
    assert torch.equal(sinusoidal_embedding(steps, dim), got)


def test_fractional_steps_interpolate_linearly():
    emb = StepEmbedding(16, 32)
    e2, e3 = emb.encode(torch.tensor([2.0])), emb.encode(torch.tensor([3.0]))
    mid = emb.encode(torch.tensor([2.5]))
    # e2 + (e3 - e2) * f vs the mix written here: 2-3 float32 roundings of values <= 1
    # (<= 2e-7); 1e-6 is slack and the sinusoid at 2.5 itself is 1e-3+ away (checked below)
    torch.testing.assert_close(mid, (e2 + e3) / 2, atol=1e-6, rtol=0)
    quarter = emb.encode(torch.tensor([2.25]))
    torch.testing.assert_close(quarter, 0.75 * e2 + 0.25 * e3, atol=1e-6, rtol=0)
    # the interpolation is not the sinusoid at 2.5 itself
    assert not torch.allclose(mid, sinusoidal_embedding(torch.tensor([2.5]), 16), atol=1e-3)


def test_step_embedding_output_shape_and_odd_dim_refused():
    emb = StepEmbedding(16, 32)
    assert emb(torch.tensor([0.0, 1.5, 3.0])).shape == (3, 32)
    with pytest.raises(ConfigError, match="step_embedding_dim"):
        StepEmbedding(15, 32)


def test_step_changes_output():
    model = tiny_model()
    x, _, mel = inputs(model)
    a = model(x, torch.tensor([3.0, 3.0]), mel)
    b = model(x, torch.tensor([30.0, 30.0]), mel)
    assert not torch.allclose(a, b)
    # a scalar step is broadcast over the batch: the same computation (default tolerance)
    torch.testing.assert_close(model(x, torch.tensor(3.0), mel), a)


# ---------------------------------------------------------------------- input checks
def test_wrong_mel_bins_raise():
    model = tiny_model()
    x, steps, _ = inputs(model)
    with pytest.raises(MelError, match=str(N_MELS)):
        model(x, steps, torch.randn(2, N_MELS + 1, 5))
    with pytest.raises(MelError):
        model(x, steps, torch.randn(N_MELS, 5))


def test_mismatched_waveform_length_raises():
    model = tiny_model()
    x, steps, mel = inputs(model, frames=5)
    with pytest.raises(MelError, match="does not match"):
        model(x[:, :-1], steps, mel)
    with pytest.raises(MelError, match="does not match"):
        model(x[0], steps, mel)


# ---------------------------------------------------------------------- conditioning
def test_conditioned_denoiser_equals_model():
    model = tiny_model()
    x, steps, mel = inputs(model)
    with torch.no_grad():
        expected = model(x, steps, mel)
        assert expected.abs().max() > 1e-3
        den = ConditionedDenoiser(model, mel)
        assert den.hop_length == model.hop_length
        # forward() is conditioning() then denoise(): the same computation, bit-identical
        torch.testing.assert_close(den(x, steps, mel), expected, atol=0, rtol=0)
        torch.testing.assert_close(den(x, torch.tensor(7.0), mel),
                                   model(x, torch.full((2,), 7.0), mel), atol=0, rtol=0)


def test_mel_changes_output():
    model = tiny_model()
    x, steps, mel = inputs(model)
    with torch.no_grad():
        assert not torch.allclose(model(x, steps, mel), model(x, steps, mel + 1.0))


def test_batch_consistency():
    model = tiny_model()
    x, steps, mel = inputs(model, batch=4, frames=6)
    steps = torch.tensor([0.0, 2.5, 17.0, 49.0])
    with torch.no_grad():
        batched = model(x, steps, mel)
        for i in range(4):
            alone = model(x[i:i + 1], steps[i:i + 1], mel[i:i + 1])
            # batch size changes the conv kernels' blocking: float32 (u = 6e-8) over 4 layers
            # of <= 3 * 8 + 8-term sums is ~u * sqrt(4 * 32) ~ 7e-7 of the output (~1.4
            # here); 1e-5 is ~10x that, and another item's output is ~0.1+ away
            torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=0)


def test_output_is_local_in_time():
    """A receptive field shorter than the input: a change at the end leaves the start."""
    model = tiny_model(hop=16)
    x, steps, mel = inputs(model, batch=1, frames=20)
    x2 = x.clone()
    x2[:, -1] += 5.0
    with torch.no_grad():
        a, b = model(x, steps, mel), model(x2, steps, mel)
    # outside the changed sample's receptive field every output is the same arithmetic on the
    # same inputs: bit-identical
    assert torch.equal(a[:, :100], b[:, :100])
    assert not torch.equal(a[:, -1], b[:, -1])


def test_gradient_reaches_every_parameter():
    model = tiny_model()
    x, steps, mel = inputs(model)
    loss = model(x, steps, mel).square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
