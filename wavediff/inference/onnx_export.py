"""Export a model's decoding to ONNX: the network as two graphs, the rest as data.

The folder :func:`export_onnx` writes decodes without torch: :mod:`wavediff.onnx_decoder`
(copied in as ``decode_onnx.py``) runs the graphs with onnxruntime and the sampler, the
prior and the spectral-consistency projection in numpy.

* ``conditioning.onnx``: ``mel (B, n_mels, F)`` -> ``cond_0 ... cond_{L-1}`` (each
  ``(B, 2C, F * hop / subbands)``), everything of the network that depends only on the mel
  (computed once per utterance);
* ``denoiser.onnx``: ``x (B, F * hop)``, ``steps (B,)`` float32 (fractional training
  steps), ``cond_0 ...`` -> ``eps (B, F * hop)``: one network evaluation;
* ``decoder.json``: the mel convention, the sampling plan (betas, alpha-bars, network
  steps of the model's default sampler), the prior, the projections per step and the
  Griffin-Lim start; ``filterbank.npy``: the mel filterbank ``(n_mels, n_fft // 2 + 1)``.

Batch and length are dynamic axes. Exporting needs the ``onnx`` package (the ``export``
extra); the exported folder needs numpy and onnxruntime only.

:func:`export_torch` writes the same folder with the two graphs as ``torch.export``
programs (``conditioning.pt2``, ``denoiser.pt2``) instead: the route for a torch user, who
then needs torch and numpy but neither wavediff, onnx nor onnxruntime; the same
``decode_onnx.py`` runs it (``decoder.json`` names the runtime).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from wavediff.diffusion.prior import SHAPE_FLOOR, SHAPE_LIFTER
from wavediff.errors import ConfigError, WavediffError
from wavediff.inference.decode import require_one_griffin_lim
from wavediff.inference.denoisers import receptive_field
from wavediff.version import __version__

OPSET = 17
EXPORTABLE_SAMPLERS = ("fast", "ddpm")  # the ancestral chain the numpy decoder runs


class _Conditioning(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: Tensor, wave: Optional[Tensor] = None) -> tuple:
        # wave: the mel's Griffin-Lim waveform, an input of this graph only for a model
        # with model.gl_condition (the decoder computes it with numpy)
        return tuple(self.model.conditioning(mel, wave))


class _Denoiser(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, steps: Tensor, *conds: Tensor) -> Tensor:
        # one input per layer: a stacked tensor would be split again, a copy of every
        # layer's conditioning in each network evaluation (37% of onnxruntime's kernel
        # time in a one-thread profile of joe)
        return self.model.denoise(x, steps, list(conds))


RUNTIMES = {"onnxruntime": ("conditioning.onnx", "denoiser.onnx"),
            "torch": ("conditioning.pt2", "denoiser.pt2")}


def decoder_metadata(voc, runtime: str = "onnxruntime") -> dict:
    """What the numpy decoder needs besides the graphs (``decoder.json``)."""
    config = voc.config
    d = config.diffusion
    chosen = voc.plan()
    require_one_griffin_lim(d.start_iters, config.model.gl_condition, "the exported decoder")
    if chosen.sampler not in EXPORTABLE_SAMPLERS:
        raise ConfigError(f"the ONNX decoder runs the {' and '.join(EXPORTABLE_SAMPLERS)} "
                          f"samplers; this model's default is {chosen.sampler!r}: set "
                          f"diffusion.sampler=fast (wavediff export --set is not needed for "
                          f"decoding with wavediff itself)")
    audio = dataclasses.asdict(config.audio)
    prior = None
    if d.prior != "none":
        prior = {"kind": d.prior, "energy": [float(v) for v in d.prior_energy],
                 "floor": float(d.prior_floor)}
        if d.prior == "specgrad":
            prior.update(lifter=SHAPE_LIFTER, shape_floor=SHAPE_FLOOR)
    return {
        "format": "wavediff-onnx-1",
        "wavediff": __version__,
        # what runs the two graphs (absent in folders of before: onnxruntime)
        "runtime": runtime,
        "graphs": dict(zip(("conditioning", "denoiser"), RUNTIMES[runtime])),
        "step": int(voc.step or 0),
        "audio": audio,
        "plan": {"sampler": chosen.sampler, "betas": [float(b) for b in chosen.betas],
                 "alpha_bars": [float(a) for a in chosen.alpha_bars],
                 "network_steps": [float(s) for s in chosen.network_steps]},
        "prior": prior,
        "consistency": int(voc.consistency_for(chosen, None)),
        "start_iters": int(d.start_iters),
        "start_noise": float(d.start_noise),
        # projections of the Griffin-Lim waveform the conditioning graph also takes ("wave")
        "gl_condition": int(config.model.gl_condition),
        "gl_init": d.gl_init,
        "prediction": d.prediction,
        "model": dataclasses.asdict(config.model),
        # samples each side one network evaluation sees (for streaming)
        "receptive_field": int(receptive_field(voc.model)),
    }


def export_onnx(voc, outdir, *, opset: int = OPSET, frames: int = 8) -> Path:
    """Write ``voc``'s model as an ONNX decoding folder at ``outdir`` (see the module);
    ``frames``: the mel length the graphs are traced with (any length decodes)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise WavediffError("ONNX export needs the onnx package: pip install onnx "
                            "(or pip install 'wavediff[export]')") from None

    def write(model, cond_args, x, steps, conds, cond_path, den_path):
        names = [f"cond_{i}" for i in range(len(conds))]
        cond_axes = {name: {0: "batch", 2: "samples"} for name in names}
        inputs = ["mel", "wave"][:len(cond_args)]
        torch.onnx.export(_Conditioning(model), cond_args, str(cond_path),
                          dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=names,
                          dynamic_axes={"mel": {0: "batch", 2: "frames"},
                                        "wave": {0: "batch", 1: "length"}, **cond_axes}
                          if len(cond_args) > 1 else
                          {"mel": {0: "batch", 2: "frames"}, **cond_axes})
        torch.onnx.export(_Denoiser(model), (x, steps, *conds), str(den_path),
                          dynamo=False, opset_version=opset,
                          input_names=["x", "steps", *names], output_names=["eps"],
                          dynamic_axes={"x": {0: "batch", 1: "length"},
                                        "steps": {0: "batch"}, **cond_axes,
                                        "eps": {0: "batch", 1: "length"}})

    return _export(voc, outdir, "onnxruntime", write, frames=frames, batch=1)


def export_torch(voc, outdir, *, frames: int = 8) -> Path:
    """Write ``voc``'s model as a decoding folder whose graphs are ``torch.export``
    programs (``conditioning.pt2``, ``denoiser.pt2``; batch and length dynamic): the same
    folder as :func:`export_onnx` otherwise, decoded by the same ``decode_onnx.py`` with
    torch and numpy, without wavediff."""
    from torch.export import Dim

    hop = voc.hop_length
    per_band = hop // voc.config.model.subbands

    def write(model, cond_args, x, steps, conds, cond_path, den_path):
        batch, mel_frames = Dim("batch", min=1, max=4096), Dim("frames", min=1, max=2 ** 24)
        try:
            shapes = {"mel": {0: batch, 2: mel_frames}}
            if len(cond_args) > 1:
                shapes["wave"] = {0: batch, 1: hop * mel_frames}
            cond = torch.export.export(_Conditioning(model), cond_args, strict=False,
                                       dynamic_shapes=shapes)
            cond_dims = {0: batch, 2: per_band * mel_frames}
            den = torch.export.export(
                _Denoiser(model), (x, steps, *conds), strict=False,
                dynamic_shapes=({0: batch, 1: hop * mel_frames}, {0: batch},
                                (cond_dims,) * len(conds)))  # *conds: one tuple
        except Exception as e:  # torch.export's errors run to pages; the first line tells
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WavediffError(f"torch.export could not capture this model ({first}); "
                                f"export it with --format onnx instead") from None
        torch.export.save(cond, str(cond_path))
        torch.export.save(den, str(den_path))

    # batch 2 in the example, so that torch.export does not take the batch for a constant 1
    return _export(voc, outdir, "torch", write, frames=frames, batch=2)


def _export(voc, outdir, runtime: str, write, *, frames: int, batch: int) -> Path:
    from wavediff.audio.mel import mel_filterbank

    meta = decoder_metadata(voc, runtime)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    model = voc.model.float().eval()
    device = next(model.parameters()).device
    hop, n_mels = voc.hop_length, voc.n_mels
    mel = torch.full((batch, n_mels, frames), float(voc.config.audio.floor), device=device)
    mel = mel + 0.1 * torch.randn(mel.shape, generator=torch.Generator().manual_seed(0)).to(device)
    x = torch.zeros(batch, frames * hop, device=device)
    steps = torch.ones(batch, device=device)
    written = []

    def target(name: str) -> Path:
        path = out / (name + ".part")
        written.append((path, out / name))
        return path

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape checks
            cond_args: tuple = (mel,)
            if voc.config.model.gl_condition:  # an example Griffin-Lim waveform
                cond_args = (mel, 0.1 * torch.randn(
                    batch, frames * hop, generator=torch.Generator().manual_seed(1)).to(device))
            conds = _Conditioning(model)(*cond_args)
            # outputs cond_0 ... of the conditioning graph, inputs of the denoiser's
            meta["conditioning_outputs"] = len(conds)
            write(model, cond_args, x, steps, conds,
                  *(target(name) for name in RUNTIMES[runtime]))
        with open(target("filterbank.npy"), "wb") as f:  # a handle: np.save adds no suffix
            np.save(f, mel_filterbank(voc.config.audio).numpy(), allow_pickle=False)
        target("decoder.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        package = Path(__file__).resolve().parents[1]
        shutil.copyfile(package / "onnx_decoder.py", target("decode_onnx.py"))
        shutil.copyfile(package / "streaming_core.py", target("streaming_core.py"))
        shutil.copyfile(package / "phase_vocoder.py", target("phase_vocoder.py"))
        for part, final in written:
            os.replace(part, final)
    finally:
        for part, _ in written:
            part.unlink(missing_ok=True)
    return out
