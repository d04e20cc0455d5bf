"""Fast decoding: the inference engine, chunked long-audio decoding, length bucketing."""

from wavediff.inference.batching import length_buckets
from wavediff.inference.denoisers import ChunkedDenoiser, EngineDenoiser, receptive_field
from wavediff.inference.engine import Conditioning, InferenceEngine, StepBias

__all__ = ["ChunkedDenoiser", "Conditioning", "EngineDenoiser", "InferenceEngine", "StepBias",
           "length_buckets", "receptive_field"]
