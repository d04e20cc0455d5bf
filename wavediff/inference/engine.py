"""The inference engine: DiffWave's arithmetic rearranged for decoding, same results.

:class:`~wavediff.model.DiffWave` is the readable reference. :class:`InferenceEngine`
computes the same function (up to float rounding) faster, for every sub-band split the
model runs on (the layers see ``model.subbands`` channels at ``1/subbands`` of the sample
rate; the engine splits and merges with the model's own :mod:`wavediff.model.subbands`):

* everything that depends only on the mel (the upsampler and every layer's conditioner
  projection, with the constant biases folded in) is computed once per utterance by
  :meth:`InferenceEngine.conditioning`; the step embedding of each denoising step is
  turned into per-layer biases once by :meth:`InferenceEngine.step_bias`;
* on CPU, activations are time-major ``(T, C)`` and each residual layer runs over blocks
  of ``block_size`` samples that fit in the L2 cache: the dilated convolution is ``k``
  accumulating GEMMs over shifted row ranges (no padding copies), followed by the gated
  activation in place and two GEMMs that write the next layer's input and accumulate
  the skip sum, with the 1/sqrt(2) residual scale and the output biases folded into the
  weights (the folded biases become a per-layer shift of the stored activations);
* on CUDA, the channels-first formulation (cuDNN convolutions) with the same
  precomputation, optionally under bf16/fp16 autocast and replayed from CUDA graphs
  (:mod:`wavediff.inference.graphs`).

The step bias ``e`` is added before the zero-padded dilated convolution. With the padded
taps written out, ``conv(h + e) = conv(h) + sum_j W_j e`` except in the first and last
``dilation`` samples, where the taps that fall outside the signal are subtracted again
(``edge corrections``); so no pass over the activations adds it.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wavediff.errors import ConfigError, MelError
from wavediff.model import DiffWave
from wavediff.model.subbands import analysis, synthesis
from wavediff.precision import canonical, torch_dtype

# Samples per block of the CPU layer loop: ~1.5 MB of working set per block at 64 channels.
DEFAULT_BLOCK_SIZE = 2048


@dataclass
class Conditioning:
    """The mel-only part of the network for one batch of mels.

    Attributes:
        cond: CPU layout ``(B, L, T, 2C)`` time-major, channels-first layout
            ``(L, B, 2C, T)`` otherwise; every constant bias of the dilated convolution and
            the conditioner is included. None when ``lazy``.
        length: ``T``, samples at the layers' rate (the waveform's ``T * subbands``).
        mel_up: with ``lazy``, the upsampled mel, ``(B, T, n_mels)`` time-major or
            ``(B, n_mels, T)``; each layer projects it when it runs (16 times less memory
            than ``cond``, a third more arithmetic per step).
    """

    cond: Optional[Tensor]
    length: int
    mel_up: Optional[Tensor] = None

    @property
    def lazy(self) -> bool:
        return self.cond is None


@dataclass
class StepBias:
    """Per-step vectors of one denoiser call, each for the ``B`` items of the batch.

    Attributes:
        bias: ``(B, L, 2C)`` ``sum_j W_j step``, added to the dilated convolution's output.
        taps: ``(B, L, k, 2C)`` ``W_j (step + shift)``, subtracted where tap ``j`` falls
            into the zero padding.
        step: ``(B, L, C)`` the step projection itself (channels-first path).
    """

    bias: Tensor
    taps: Tensor
    step: Tensor


class InferenceEngine:
    """DiffWave rearranged for decoding. Holds its own copies of the weights (no autograd).

    Args:
        model: the trained network; later changes to it are not seen.
        block_size: samples per block of the CPU layer loop.
        precision: ``"fp32"`` (default; matches the model to float rounding), ``"bf16"``
            or ``"fp16"`` (CUDA): run the network under autocast in that precision
            (:mod:`wavediff.precision`; a resolved choice, not ``auto``).
        threads: CPU threads of the layer loop (default: ``torch.get_num_threads()``).
    """

    def __init__(self, model: DiffWave, *, block_size: int = DEFAULT_BLOCK_SIZE,
                 precision: str = "fp32", threads: Optional[int] = None) -> None:
        precision = canonical(precision, "the engine's precision", allow_auto=False)
        if block_size < 1:
            raise ConfigError(f"block_size must be positive, got {block_size}")
        # a frozen copy: the folded weights, the upsampler, the step embedding and the
        # CUDA path all read the same snapshot, so training the model on changes nothing here
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        model = self.model
        self.precision = precision
        self.amp_dtype = torch_dtype(precision)  # None: float32, no autocast
        self.block_size = int(block_size)
        self.threads = max(1, int(threads if threads is not None else torch.get_num_threads()))
        self._executor: Optional[ThreadPoolExecutor] = None
        self.hop_length = model.hop_length  # waveform samples per mel frame
        self.bands = int(getattr(model, "subbands", 1))
        self.layer_hop = self.hop_length // self.bands  # samples per frame at the layers' rate
        self.n_mels = model.n_mels
        p = next(model.parameters())
        self.device = p.device
        self.time_major = self.device.type == "cpu" and self.amp_dtype is None
        self.channels = model.config.residual_channels
        self.kernel_size = model.config.kernel_size
        self.dilations = [layer.dilated_conv.dilation[0] for layer in model.residual_layers]
        self.num_layers = len(self.dilations)
        with torch.no_grad():
            self._fold_weights(model)

    # ------------------------------------------------------------------ weights
    def _fold_weights(self, model: DiffWave) -> None:
        C, L = self.channels, self.num_layers
        s = 1.0 / math.sqrt(2.0)
        layers = model.residual_layers
        f64 = torch.float64
        # Dilated conv taps as (C, 2C) GEMM operands: out[t] = sum_j y[t + o_j] @ taps[j].
        self.taps = torch.stack([l.dilated_conv.weight.permute(2, 1, 0) for l in layers]).contiguous()
        # Conditioner (n_mels, 2C) per layer and the constant biases of the pre-activation.
        self.cond_weight = torch.stack(
            [l.conditioner_projection.weight[:, :, 0].t() for l in layers]).contiguous()
        out_w = torch.stack([l.output_projection.weight[:, :, 0].t() for l in layers])  # (L, C, 2C)
        out_b = torch.stack([l.output_projection.bias for l in layers])  # (L, 2C)
        self.res_weight = (out_w[:, :, :C] * s).contiguous()
        self.skip_weight = out_w[:, :, C:].contiguous()
        # Residual biases as a shift of the stored activations: h_l = stored_l + shift_l,
        # shift_0 = 0, shift_{l+1} = (shift_l + b_l) / sqrt(2).
        shift = torch.zeros(L, C, dtype=f64, device=self.device)
        for i in range(1, L):
            shift[i] = (shift[i - 1] + out_b[i - 1, :C].to(f64)) * s
        self.shift = shift.float()
        tap_sum = self.taps.sum(dim=1)  # (L, C, 2C)
        const = torch.stack([l.dilated_conv.bias + l.conditioner_projection.bias for l in layers])
        self.cond_bias_ref = const.clone()
        self.cond_bias = (const.to(f64) + torch.einsum("lc,lcd->ld", shift, tap_sum.to(f64))).float()
        self.tap_sum = tap_sum.contiguous()
        # Step projection of every layer as one (hidden, L*C) matrix.
        self.step_weight = torch.cat([l.diffusion_projection.weight for l in layers]).t().contiguous()
        self.step_proj_bias = torch.cat([l.diffusion_projection.bias for l in layers])
        # Output head with the skip scale and the summed skip biases folded in.
        sp = model.skip_projection.weight[:, :, 0].t() / math.sqrt(L)  # (C, C)
        skip_bias_sum = out_b[:, C:].to(f64).sum(0)
        self.head_weight = sp.contiguous()
        self.head_bias = (model.skip_projection.bias.to(f64)
                          + skip_bias_sum @ sp.to(f64)).float()
        self.out_weight = model.output_projection.weight[:, :, 0].t().contiguous()  # (C, bands)
        self.out_bias = model.output_projection.bias.clone()
        self.in_weight = model.input_projection.weight[:, :, 0].t().contiguous()  # (bands, C)
        self.in_bias = model.input_projection.bias.clone()

    # ------------------------------------------------------------------ mel part
    def check_mel(self, mel: Tensor) -> None:
        self.model.check_mel(mel)

    @torch.inference_mode()
    def upsample(self, mel: Tensor, wave: Optional[Tensor] = None) -> Tensor:
        """The model's upsampled mel ``(B, n_mels, F) -> (B, n_mels, F * layer_hop)`` (the
        layers' rate); with ``model.gl_condition`` the sub-bands of ``wave`` ``(B, F * hop)``
        (the mel's Griffin-Lim waveform) are further channels
        (:meth:`~wavediff.model.DiffWave.condition_input`)."""
        self.check_mel(mel)
        return self.model.condition_input(
            mel.to(self.device, torch.float32),
            None if wave is None else wave.to(self.device, torch.float32))

    @torch.inference_mode()
    def conditioning(self, mel: Optional[Tensor] = None, mel_up: Optional[Tensor] = None,
                     *, lazy: bool = False, wave: Optional[Tensor] = None) -> Conditioning:
        """Everything of the network that depends only on ``mel`` ``(B, n_mels, F)``.

        ``mel_up`` (``(B, n_mels, T)``, a slice of :meth:`upsample`'s output, at the layers'
        rate) may be given
        instead of ``mel``. ``lazy`` keeps only the upsampled mel and leaves the per-layer
        projections to each network evaluation (bounded memory for long chunks). ``wave``:
        the mel's Griffin-Lim waveform, for a model with ``model.gl_condition`` (with
        ``mel_up``, it is already in it: see :meth:`upsample`).
        """
        if mel_up is None:
            if mel is None:
                raise TypeError("conditioning() needs mel or mel_up")
            mel_up = self.upsample(mel, wave)
        T = mel_up.shape[-1]
        if lazy:
            if self.time_major:
                mel_up = mel_up.transpose(1, 2)
            return Conditioning(None, T, mel_up.contiguous())
        if self.time_major:
            # (1, L, n_mels, 2C) x (B, 1, T, n_mels) -> (B, L, T, 2C)
            cond = torch.matmul(mel_up.transpose(1, 2).unsqueeze(1), self.cond_weight.unsqueeze(0))
            cond += self.cond_bias[None, :, None, :]
        else:
            cond = torch.einsum("bmt,lmd->lbdt", mel_up, self.cond_weight)
            cond += self.cond_bias_ref[:, None, :, None]
        return Conditioning(cond.contiguous(), T)

    # ------------------------------------------------------------------ step part
    @torch.inference_mode()
    def step_bias(self, steps: Tensor) -> StepBias:
        """The per-layer step vectors for ``steps`` ``(B,)`` (fractional allowed)."""
        emb = self.model.diffusion_embedding(steps.to(self.device, torch.float32))  # (B, H)
        B, L, C = emb.shape[0], self.num_layers, self.channels
        step = (emb @ self.step_weight + self.step_proj_bias).view(B, L, C)
        e = step + self.shift  # what is added to the stored activations
        bias = torch.einsum("blc,lcd->bld", step, self.tap_sum)  # the shift's part is in cond
        taps = torch.einsum("blc,ljcd->bljd", e, self.taps)
        return StepBias(bias.contiguous(), taps.contiguous(), step)

    # ------------------------------------------------------------------ network
    @torch.inference_mode()
    def denoise(self, x: Tensor, steps: StepBias, cond: Conditioning,
                keep: Optional[tuple[int, int]] = None) -> Tensor:
        """One network evaluation: ``x`` ``(B, T)`` -> predicted noise ``(B, T)`` float32.

        ``steps`` holds one row per item (or one row for all); ``cond`` is the
        :meth:`conditioning` of the batch's mel (``T / subbands`` samples at the layers' rate).
        ``keep`` ``(lo, hi)``: only the output samples ``[lo, hi)`` are wanted (multiples of
        the sub-bands); the CPU engine then computes each layer only where those samples
        depend on it (the receptive cone), and the rest of the output is meaningless.
        """
        if x.dim() != 2 or x.shape[-1] != cond.length * self.bands:
            raise MelError(f"waveform of shape {tuple(x.shape)} does not match the "
                           f"conditioning of {cond.length * self.bands} samples")
        if self.time_major:
            return self._denoise_cpu(x, steps, cond, keep)
        if self.amp_dtype is None:
            return self._denoise_channels_first(x, steps, cond)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            return self._denoise_channels_first(x, steps, cond).float()

    def _denoise_cpu(self, x: Tensor, steps: StepBias, cond: Conditioning,
                     keep: Optional[tuple[int, int]] = None) -> Tensor:
        """Time-major, cache-blocked layers; the blocks of a layer are shared out among
        ``threads`` Python threads, each running single-threaded kernels (one barrier per
        layer instead of one per kernel). ``keep``: see :meth:`denoise`."""
        B, T = x.shape[0], cond.length
        C, bs, bands = self.channels, self.block_size, self.bands
        pad = max(self.dilations) * (self.kernel_size // 2)
        # the rows of each layer the kept output depends on: the cone narrows layer by layer
        lo, hi = (0, T) if keep is None else (keep[0] // bands, -(-keep[1] // bands))
        after = [sum(self.dilations[li + 1:]) * (self.kernel_size // 2)
                 for li in range(self.num_layers)]
        spans = [(max(0, lo - r), min(T, hi + r)) for r in after]
        x = x.to(torch.float32)
        if bands == 1:
            out = torch.empty(B, T, device=x.device)
        else:  # the layers' input and output: (T, bands) per item, split and merged here
            z = analysis(x, bands).transpose(1, 2)
            out = torch.empty(B, T, bands, device=x.device)
        h_a = x.new_zeros(T + 2 * pad, C)
        h_b = x.new_zeros(T + 2 * pad, C)
        skip = x.new_empty(T, C)
        # as many blocks per worker, each at most block_size samples (balanced threads)
        workers = max(1, min(self.threads, math.ceil(T / 64)))
        per_worker = math.ceil(math.ceil(T / bs) / workers)
        bs = math.ceil(T / (per_worker * workers))
        starts = list(range(0, T, bs))
        workers = min(workers, len(starts))
        shares = [starts[w * len(starts) // workers:(w + 1) * len(starts) // workers]
                  for w in range(workers)]
        scratch = [(x.new_empty(min(bs, T), 2 * C), x.new_empty(min(bs, T), C))
                   for _ in range(workers)]
        pool = self._pool() if workers > 1 else None
        previous = torch.get_num_threads()
        if pool is not None:
            torch.set_num_threads(1)
        try:
            for b in range(B):
                sb = 0 if steps.bias.shape[0] == 1 else b
                h_in, h_out = h_a, h_b
                # input projection + ReLU, written into the padded buffer's interior
                if bands == 1:
                    torch.addr(self.in_bias.expand(T, C), x[b], self.in_weight[0],
                               out=h_in[pad:pad + T])
                else:
                    torch.addmm(self.in_bias, z[b], self.in_weight, out=h_in[pad:pad + T])
                h_in[pad:pad + T].relu_()
                skip.zero_()
                for li in range(self.num_layers):
                    args = (b, sb, li, h_in, h_out, skip, cond, steps, T, pad, bs, spans[li])
                    if pool is None:
                        self._layer_blocks(starts, *scratch[0], *args)
                    else:
                        jobs = [pool.submit(self._layer_blocks, share, *scratch[w], *args)
                                for w, share in enumerate(shares)]
                        for job in jobs:
                            job.result()
                    h_in, h_out = h_out, h_in
                hidden = torch.addmm(self.head_bias, skip, self.head_weight).relu_()
                if bands == 1:
                    torch.addmv(self.out_bias, hidden, self.out_weight[:, 0], out=out[b])
                else:
                    torch.addmm(self.out_bias, hidden, self.out_weight, out=out[b])
        finally:
            if pool is not None:
                torch.set_num_threads(previous)
        return out if bands == 1 else synthesis(out.transpose(1, 2))

    @torch.inference_mode()  # thread-local: worker threads enter it themselves
    def _layer_blocks(self, starts: list[int], pre: Tensor, gated: Tensor, b: int, sb: int,
                      li: int, h_in: Tensor, h_out: Tensor, skip: Tensor, cond: Conditioning,
                      steps: StepBias, T: int, pad: int, bs: int,
                      span: tuple[int, int]) -> None:
        """Residual layer ``li`` of item ``b`` over the blocks of ``bs`` samples starting
        at ``starts``, each cut to the rows ``span``."""
        C, k = self.channels, self.kernel_size
        half, d = k // 2, self.dilations[li]
        cond_l = None if cond.lazy else cond.cond[b, li]
        taps_l = self.taps[li]
        bias_l = steps.bias[sb, li]
        last = li == self.num_layers - 1
        for t0 in starts:
            t0, t1 = max(t0, span[0]), min(t0 + bs, T, span[1])
            if t0 >= t1:
                continue
            y = pre[:t1 - t0]
            if cond_l is None:
                torch.addmm(bias_l + self.cond_bias[li], cond.mel_up[b, t0:t1],
                            self.cond_weight[li], out=y)
            else:
                torch.add(cond_l[t0:t1], bias_l, out=y)
            for j in range(k):
                o = (j - half) * d
                y.addmm_(h_in[pad + t0 + o:pad + t1 + o], taps_l[j])
            if t0 < half * d or t1 > T - half * d:
                self._edge_fix(y, t0, t1, T, d, steps.taps[sb, li])
            g = torch.mul(y[:, :C].sigmoid_(), y[:, C:].tanh_(), out=gated[:t1 - t0])
            skip[t0:t1].addmm_(g, self.skip_weight[li])
            if not last:
                torch.addmm(h_in[pad + t0:pad + t1], g, self.res_weight[li],
                            beta=1.0 / math.sqrt(2.0), out=h_out[pad + t0:pad + t1])

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="wavediff",
                                                initializer=torch.set_num_threads,
                                                initargs=(1,))
        return self._executor

    def _edge_fix(self, y: Tensor, t0: int, t1: int, T: int, d: int, taps: Tensor) -> None:
        """Remove the step bias of taps that fall outside ``[0, T)`` (zero padding)."""
        half = self.kernel_size // 2
        for j in range(self.kernel_size):
            o = (j - half) * d
            if o < 0:  # rows t with t + o < 0
                lo, hi = t0, min(t1, -o)
            elif o > 0:  # rows t with t + o >= T
                lo, hi = max(t0, T - o), t1
            else:
                continue
            if lo < hi:
                y[lo - t0:hi - t0] -= taps[j]

    def _denoise_channels_first(self, x: Tensor, steps: StepBias, cond: Conditioning) -> Tensor:
        """The reference formulation with the precomputed conditioning (CUDA, autocast)."""
        model = self.model
        h = F.relu(model.input_projection(analysis(x, self.bands)))
        skip = None
        for li, layer in enumerate(model.residual_layers):
            y = h + steps.step[:, li, :, None]
            y = F.conv1d(y, layer.dilated_conv.weight, None,
                         padding=layer.dilated_conv.padding, dilation=layer.dilated_conv.dilation)
            if cond.lazy:
                c = F.conv1d(cond.mel_up, self.cond_weight[li].t().unsqueeze(-1),
                             self.cond_bias_ref[li])
            else:
                c = cond.cond[li]
            y = y + c.to(y.dtype)
            g = _gate(y)
            r = layer.output_projection(g)
            residual, s = torch.chunk(r, 2, dim=1)
            skip = s if skip is None else skip + s
            h = (h + residual) * (1.0 / math.sqrt(2.0))
        h = skip * (1.0 / math.sqrt(self.num_layers))
        h = F.relu(model.skip_projection(h))
        return synthesis(model.output_projection(h))


def _gate(y: Tensor) -> Tensor:
    gate, filt = torch.chunk(y, 2, dim=1)
    return torch.sigmoid(gate) * torch.tanh(filt)
