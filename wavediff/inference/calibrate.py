"""Decoding precision chosen by measurement on the running machine, cached per machine.

On a CPU with native bf16 (AVX512_BF16, AMX) the bf16 engine is usually faster than
float32, but not always (small models, few threads, other kernels): both engines are timed
on the model itself, once per machine, model shape and thread count, and the result is
cached in ``$XDG_CACHE_HOME/wavediff/calibration.json`` (``~/.cache`` by default;
``WAVEDIFF_CACHE_DIR`` overrides). ``auto`` then decodes in float32 either way, saying how
much faster bf16 measured: bf16 costs quality where no projection sets the magnitudes
(above the mel's fmax, quiet cells; ``--precision bf16`` for its speed). On a CPU without
native bf16 float32 is used without measuring; on CUDA bf16 is used where the GPU supports
it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from wavediff.errors import ConfigError
from wavediff.hardware import auto_override, cpu_flags, cpu_name, cpu_native_bf16, native_bf16
from wavediff.model import DiffWave
from wavediff.precision import canonical

log = logging.getLogger("wavediff.inference")
CALIBRATION_SECONDS = 0.5  # of audio per timed call


def cache_path() -> Path:
    root = os.environ.get("WAVEDIFF_CACHE_DIR")
    if root:
        return Path(root) / "calibration.json"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wavediff" / "calibration.json"


def resolve_decode_precision(precision: str, model: DiffWave,
                             device: torch.device) -> tuple[str, str]:
    """The resolved decoding precision (``fp32``, ``bf16`` or ``fp16``) for ``precision``
    (any spelling of :mod:`wavediff.precision`) and why, in words."""
    precision = canonical(precision)
    if precision == "auto" and auto_override():
        precision = auto_override()
    if precision == "fp32":
        return "fp32", "float32 (as asked)"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32, bf16 or auto on the CPU")
    if precision in ("bf16", "fp16"):
        return precision, f"{precision} (as asked)"
    if device.type == "cuda":
        if native_bf16(device):
            return "bf16", "bf16: the GPU computes it natively (precision auto)"
        return "fp32", "float32: the GPU has no bf16 (precision auto)"
    if device.type != "cpu" or not cpu_native_bf16():
        return "fp32", "float32: this CPU has no native bf16 (precision auto)"
    return _calibrated_cpu_choice(model)


def _key(model: DiffWave) -> str:
    c = model.config
    flags = ",".join(sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f or "avx512" in f))
    return (f"{cpu_name()}|{flags}|torch {torch.__version__}|{torch.get_num_threads()} threads|"
            f"{c.residual_layers}x{c.residual_channels}k{c.kernel_size}|{model.n_mels} mels"
            + (f"|{model.subbands} bands" if model.subbands != 1 else ""))


def _calibrated_cpu_choice(model: DiffWave) -> tuple[str, str]:
    path, key = cache_path(), _key(model)
    cache = _read(path)
    entry = cache.get(key)
    if not isinstance(entry, dict) or entry.get("choice") not in ("fp32", "bf16"):
        times = {name: _time_step(model, name) for name in ("fp32", "bf16")}
        entry = {"choice": min(times, key=times.get), "seconds_per_step": times,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        cache[key] = entry
        _write(path, cache)
        how = "measured now"
    else:
        how = f"measured {entry.get('measured', 'earlier')}, cached in {path}"
    t = entry.get("seconds_per_step", {})
    detail = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items()) if t else ""
    if entry["choice"] == "bf16":
        # bf16's rounding stays wherever no projection sets the magnitudes: above the mel's
        # fmax in every decode, and in the quiet cells of a decode without projections (the
        # shipped joe on four dev clips, AMD EPYC Zen 5: default decode MCD 6.27 dB in bf16
        # against 5.38 in float32, DNSMOS level; network alone log-mel L1 0.648 against 0.484)
        return "fp32", (f"float32, although bf16 is faster on this CPU ({detail}; {how}): bf16 "
                        f"costs MCD above the mel's fmax and quiet-cell detail (precision auto; "
                        f"--precision bf16 for its speed)")
    return "fp32", f"fp32: faster on this CPU ({detail}; {how}; precision auto)"


def _time_step(model: DiffWave, precision: str) -> float:
    """Seconds of one denoiser call on CALIBRATION_SECONDS of audio (best of 3)."""
    from wavediff.inference.denoisers import EngineDenoiser
    from wavediff.inference.engine import InferenceEngine

    frames = max(1, int(CALIBRATION_SECONDS * 22050) // model.hop_length)
    mel = torch.full((1, model.n_mels, frames), -5.0)
    engine = InferenceEngine(model, precision=precision)
    den = EngineDenoiser(engine, mel, steps=[10.0])
    x = torch.randn(1, frames * model.hop_length, generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([10.0])
    best = float("inf")
    with torch.inference_mode():
        den(x, steps, mel)  # warm-up
        for _ in range(3):
            t0 = time.perf_counter()
            den(x, steps, mel)
            best = min(best, time.perf_counter() - t0)
    return best


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict) -> None:
    """Best effort: a read-only home only costs a new measurement next time."""
    from wavediff._files import atomic_write_text

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1))
    except OSError as e:
        log.debug("could not cache the calibration in %s: %s", path, e)
