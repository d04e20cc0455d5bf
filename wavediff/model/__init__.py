"""The denoiser network."""

from wavediff.model.diffwave import DiffWave, count_parameters

__all__ = ["DiffWave", "count_parameters"]
