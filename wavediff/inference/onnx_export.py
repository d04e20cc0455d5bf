"""Export a model's decoding to ONNX: the network as two graphs, the rest as data.

The folder :func:`export_onnx` writes decodes without torch: :mod:`wavediff.onnx_decoder`
(copied in as ``decode_onnx.py``) runs the graphs with onnxruntime and the sampler, the
prior and the spectral-consistency projection in numpy.

* ``conditioning.onnx``: ``mel (B, n_mels, F)`` -> ``conds (L, B, 2C, F * hop / subbands)``,
  everything of the network that depends only on the mel (computed once per utterance);
* ``denoiser.onnx``: ``x (B, F * hop)``, ``steps (B,)`` float32 (fractional training
  steps), ``conds`` -> ``eps (B, F * hop)``: one network evaluation;
* ``decoder.json``: the mel convention, the sampling plan (betas, alpha-bars, network
  steps of the model's default sampler), the prior, the projections per step and the
  Griffin-Lim start; ``filterbank.npy``: the mel filterbank ``(n_mels, n_fft // 2 + 1)``.

Batch and length are dynamic axes. Exporting needs the ``onnx`` package (the ``export``
extra); the exported folder needs numpy and onnxruntime only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from wavediff.diffusion.prior import SHAPE_FLOOR, SHAPE_LIFTER
from wavediff.errors import ConfigError, WavediffError
from wavediff.inference.denoisers import receptive_field
from wavediff.version import __version__

OPSET = 17
EXPORTABLE_SAMPLERS = ("fast", "ddpm")  # the ancestral chain the numpy decoder runs


class _Conditioning(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: Tensor) -> Tensor:
        return torch.stack(self.model.conditioning(mel))


class _Denoiser(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, steps: Tensor, conds: Tensor) -> Tensor:
        return self.model.denoise(x, steps, list(conds.unbind(0)))


def decoder_metadata(voc) -> dict:
    """What the numpy decoder needs besides the graphs (``decoder.json``)."""
    config = voc.config
    d = config.diffusion
    chosen = voc.plan()
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
        "step": int(voc.step or 0),
        "audio": audio,
        "plan": {"sampler": chosen.sampler, "betas": [float(b) for b in chosen.betas],
                 "alpha_bars": [float(a) for a in chosen.alpha_bars],
                 "network_steps": [float(s) for s in chosen.network_steps]},
        "prior": prior,
        "consistency": int(voc.consistency_for(chosen, None)),
        "start_iters": int(d.start_iters),
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
    from wavediff.audio.mel import mel_filterbank

    meta = decoder_metadata(voc)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    model = voc.model.float().eval()
    device = next(model.parameters()).device
    hop, n_mels = voc.hop_length, voc.n_mels
    mel = torch.full((1, n_mels, frames), float(voc.config.audio.floor), device=device)
    mel = mel + 0.1 * torch.randn(mel.shape, generator=torch.Generator().manual_seed(0)).to(device)
    x = torch.zeros(1, frames * hop, device=device)
    steps = torch.ones(1, device=device)
    written = []

    def target(name: str) -> Path:
        path = out / (name + ".part")
        written.append((path, out / name))
        return path

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape checks
            conds = _Conditioning(model)(mel)
            torch.onnx.export(_Conditioning(model), (mel,), str(target("conditioning.onnx")),
                              dynamo=False, opset_version=opset, input_names=["mel"],
                              output_names=["conds"],
                              dynamic_axes={"mel": {0: "batch", 2: "frames"},
                                            "conds": {1: "batch", 3: "samples"}})
            torch.onnx.export(_Denoiser(model), (x, steps, conds), str(target("denoiser.onnx")),
                              dynamo=False, opset_version=opset,
                              input_names=["x", "steps", "conds"], output_names=["eps"],
                              dynamic_axes={"x": {0: "batch", 1: "length"},
                                            "steps": {0: "batch"},
                                            "conds": {1: "batch", 3: "samples"},
                                            "eps": {0: "batch", 1: "length"}})
        with open(target("filterbank.npy"), "wb") as f:  # a handle: np.save adds no suffix
            np.save(f, mel_filterbank(voc.config.audio).numpy(), allow_pickle=False)
        target("decoder.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        package = Path(__file__).resolve().parents[1]
        shutil.copyfile(package / "onnx_decoder.py", target("decode_onnx.py"))
        shutil.copyfile(package / "streaming_core.py", target("streaming_core.py"))
        for part, final in written:
            os.replace(part, final)
    finally:
        for part, _ in written:
            part.unlink(missing_ok=True)
    return out
