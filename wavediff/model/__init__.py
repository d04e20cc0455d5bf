"""The denoiser network: the registered architectures and the one factory."""

from wavediff.model.diffwave import DiffWave, count_parameters
from wavediff.model.registry import ARCHITECTURES, DenoiserModel, build_model

__all__ = ["ARCHITECTURES", "DenoiserModel", "DiffWave", "build_model", "count_parameters"]
