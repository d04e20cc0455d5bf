"""Diffusion math: noise schedules, the Gaussian process and its samplers."""

from wavediff.diffusion.process import LOSS_TYPES, Denoiser, GaussianDiffusion
from wavediff.diffusion.samplers import (
    SAMPLERS,
    get_sampler,
    sample_ddim,
    sample_ddpm,
    sample_fast,
)
from wavediff.diffusion.schedule import (
    SamplingPlan,
    align_fast_schedule,
    alpha_bar,
    ddim_timesteps,
    linear_betas,
    noise_levels,
    plan,
    posterior_variance,
)

__all__ = [
    "LOSS_TYPES",
    "SAMPLERS",
    "Denoiser",
    "GaussianDiffusion",
    "SamplingPlan",
    "align_fast_schedule",
    "alpha_bar",
    "ddim_timesteps",
    "get_sampler",
    "linear_betas",
    "noise_levels",
    "plan",
    "posterior_variance",
    "sample_ddim",
    "sample_ddpm",
    "sample_fast",
]
