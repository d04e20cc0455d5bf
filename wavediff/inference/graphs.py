"""CUDA graphs for the fixed-shape step loop: one capture per batch shape, replayed per step.

At batch 1 a DiffWave step on a large GPU is bound by kernel launches (30 layers, about ten
kernels each); replaying a captured graph removes that cost. The graph reads its inputs from
static buffers, so each call copies ``x`` and the step vectors in and the result out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wavediff.inference.engine import Conditioning, InferenceEngine, StepBias

WARMUP_CALLS = 2


class GraphedNetwork:
    """:meth:`InferenceEngine.denoise` for one conditioning, replayed from a CUDA graph.

    Args:
        engine: an engine on a CUDA device.
        cond: the conditioning of the utterance batch (kept as a static input).
        batch: ``B``.
    """

    def __init__(self, engine: InferenceEngine, cond: Conditioning, batch: int) -> None:
        if engine.device.type != "cuda":
            raise RuntimeError("CUDA graphs need an engine on a CUDA device")
        L, C = engine.num_layers, engine.channels
        dev = engine.device
        self.engine, self.cond = engine, cond
        self.x = torch.zeros(batch, cond.length * engine.bands, device=dev)
        self.step = torch.zeros(batch, L, C, device=dev)
        static = StepBias(bias=self.step.new_zeros(0), taps=self.step.new_zeros(0), step=self.step)
        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                engine.denoise(self.x, static, cond)
        torch.cuda.current_stream(dev).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = engine.denoise(self.x, static, cond)

    def __call__(self, x: Tensor, steps: StepBias) -> Tensor:
        self.x.copy_(x)
        self.step.copy_(steps.step.expand_as(self.step))
        self.graph.replay()
        return self.out.clone()
