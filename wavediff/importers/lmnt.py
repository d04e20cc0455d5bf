"""Conversion of lmnt-com/diffwave checkpoints (the ``diffwave`` package) to wavediff.

lmnt's ``weights-<step>.pt`` holds ``{"step", "model", "optimizer", "params", ...}``; its
network is the same DiffWave as :class:`~wavediff.model.DiffWave` with the same parameter
names, except the mel upsampler's two convolutions (``conv1``/``conv2`` there,
``convs.0``/``convs.1`` here). Its hyper-parameters (``params``) give the config: the
``diffwave-lmnt`` mel preset, the layer sizes, the training and the fast inference
schedules. lmnt's upsampler is fixed to 16 x 16, i.e. a hop of 256 samples.

The file is read with ``torch.load(weights_only=True)``: nothing in it is executed.
"""

from __future__ import annotations

import os
import re
from typing import Any, Union

import torch
from torch import Tensor

from wavediff.audio.presets import get_preset
from wavediff.config import Config, DiffusionConfig, ModelConfig, TrainConfig
from wavediff.errors import CheckpointError
from wavediff.checkpoint import safe_torch_load

# lmnt's diffwave/params.py defaults, used where a checkpoint lacks ``params``.
LMNT_DEFAULTS: dict[str, Any] = {
    "batch_size": 16, "learning_rate": 2e-4, "sample_rate": 22050, "n_mels": 80,
    "n_fft": 1024, "hop_samples": 256, "crop_mel_frames": 62, "residual_layers": 30,
    "residual_channels": 64, "dilation_cycle_length": 10,
    "noise_schedule": [1e-4 + i * (0.05 - 1e-4) / 49 for i in range(50)],
    "inference_noise_schedule": [0.0001, 0.001, 0.01, 0.05, 0.2, 0.5],
}
LMNT_UPSAMPLE_FACTORS = [16, 16]
_UPSAMPLER = re.compile(r"^spectrogram_upsampler\.conv(\d+)\.(weight|bias)$")

PathLike = Union[str, os.PathLike]


def read_lmnt_checkpoint(path: PathLike) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file, or a directory holding ``weights.pt``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "weights.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"lmnt checkpoint {path} does not exist; give the weights .pt "
                              f"file or the model directory holding weights.pt")
    state = safe_torch_load(
        path, "cpu",
        refused="re-save it with the model state and params as plain dicts",
        unreadable="download or copy it again")
    if isinstance(state, dict) and state.get("format") == "wavediff-checkpoint":
        raise CheckpointError(f"{path} is already a wavediff checkpoint, not lmnt's; use it "
                              f"directly (wavediff vocode --checkpoint {path})")
    if isinstance(state, dict) and "model" not in state and any(
            str(k).startswith(("residual_layers.", "module.residual_layers.")) for k in state):
        state = {"model": state}  # a bare state dict
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} is not an lmnt DiffWave checkpoint (no 'model' state "
                              f"dict); expected the weights-<step>.pt of diffwave's trainer")
    return state


def convert_lmnt_state(state: dict[str, Any], source: str = "checkpoint") -> tuple[Config, dict[str, Tensor]]:
    """``(config, wavediff state dict)`` of an lmnt checkpoint read by :func:`read_lmnt_checkpoint`."""
    params = {**LMNT_DEFAULTS, **dict(state.get("params") or {})}
    weights = {k[len("module."):] if k.startswith("module.") else k: v
               for k, v in state["model"].items()}
    if not any(k.startswith("spectrogram_upsampler.") for k in weights):
        raise CheckpointError(f"{source} is an unconditional lmnt model (no mel upsampler); "
                              f"only mel-conditioned vocoders can be imported")
    out: dict[str, Tensor] = {}
    for key, value in weights.items():
        if not isinstance(value, Tensor):
            continue
        m = _UPSAMPLER.match(key)
        if m:
            key = f"spectrogram_upsampler.convs.{int(m.group(1)) - 1}.{m.group(2)}"
        elif key == "diffusion_embedding.embedding":
            continue  # lmnt's sinusoid table; wavediff computes it
        out[key] = value.detach().to(torch.float32).clone()

    layers = sorted({int(k.split(".")[1]) for k in out if k.startswith("residual_layers.")})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"{source}: residual layers are missing or not numbered 0..N-1")
    channels = out["input_projection.weight"].shape[0]
    n_mels = out["residual_layers.0.conditioner_projection.weight"].shape[1]
    if not state.get("params"):  # a bare state dict: the sizes come from the weights
        params.update(residual_layers=len(layers), residual_channels=channels, n_mels=n_mels)
    for name, have, want in (("residual_layers", len(layers), params["residual_layers"]),
                             ("residual_channels", channels, params["residual_channels"]),
                             ("n_mels", n_mels, params["n_mels"])):
        if have != want:
            raise CheckpointError(f"{source}: the weights have {name} = {have} but its params "
                                  f"say {want}; the checkpoint is inconsistent")
    hop = int(params["hop_samples"])
    if hop != 256:
        raise CheckpointError(f"{source}: params.hop_samples is {hop}, but lmnt's upsampler "
                              f"always stretches by 256; such a model cannot be converted")
    cycle = int(params["dilation_cycle_length"])
    for i in layers:
        got = out[f"residual_layers.{i}.dilated_conv.weight"].shape
        if got[0] != 2 * channels or got[2] != 3:
            raise CheckpointError(f"{source}: layer {i} has a dilated conv of shape {tuple(got)}, "
                                  f"expected ({2 * channels}, {channels}, 3)")
    sr = int(params["sample_rate"])
    audio = get_preset("diffwave-lmnt", sample_rate=sr, n_fft=int(params["n_fft"]),
                       win_length=hop * 4, hop_length=hop, n_mels=n_mels, fmax=sr / 2.0)
    config = Config(
        audio=audio,
        model=ModelConfig(residual_layers=len(layers), residual_channels=channels,
                          dilation_cycle=cycle, kernel_size=3,
                          step_embedding_dim=out["diffusion_embedding.projection1.weight"].shape[1],
                          step_hidden_dim=out["diffusion_embedding.projection1.weight"].shape[0],
                          upsample_factors=list(LMNT_UPSAMPLE_FACTORS)),
        diffusion=DiffusionConfig(num_steps=len(params["noise_schedule"]),
                                  betas=[float(b) for b in params["noise_schedule"]],
                                  fast_schedule=[float(b) for b in params["inference_noise_schedule"]],
                                  sampler="fast"),
        train=TrainConfig(batch_size=int(params["batch_size"]),
                          crop_samples=int(params["crop_mel_frames"]) * hop, loss="l1",
                          learning_rate=float(params["learning_rate"])),
    )
    return config, out
