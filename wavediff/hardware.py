"""What the running machine can do fast: native bf16, the CPU's name and flags, allocator tuning.

Precision is decided from what the machine reports, never from a constant: the same code
runs on CPUs with native bf16 arithmetic (AVX512_BF16, AMX), where bf16 matrix products are
several times faster than float32, and on CPUs without it, where torch emulates bf16 and
it is slower than float32. :func:`resolve_precision` turns a user's choice (the
vocabulary of :mod:`wavediff.precision`) into a dtype for a device, with the reason in
words for the log; the environment variable ``WAVEDIFF_PRECISION=fp32|bf16`` fixes what
``auto`` means. :func:`machine_summary` is the line every benchmark result carries.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from typing import Optional, Union

import torch

from wavediff.errors import ConfigError
from wavediff.precision import RESOLVED, canonical, torch_dtype



@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    """The CPU feature flags the kernel reports (``/proc/cpuinfo``); empty where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512_BF16 or AMX-BF16).

    torch's own probe is asked first; the kernel's flags are the fallback. Without native
    support torch emulates bf16 on CPU, several times slower than float32.
    """
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        if probe is not None and probe():
            return True
        if amx is not None and amx():
            return True
    except Exception:  # a probe that cannot run says nothing either way
        pass
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def native_bf16(device: Union[str, torch.device]) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA with bf16 support, or a bf16 CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_native_bf16()
    return False


def resolve_precision(choice: Optional[str], device: Union[str, torch.device],
                      what: str = "train.amp") -> tuple[Optional[torch.dtype], str]:
    """The autocast dtype for ``choice`` on ``device`` (None: float32) and why, in words.

    ``auto`` picks bf16 where the device computes it natively and float32 elsewhere;
    ``bf16`` is honoured everywhere (with a note when it will be emulated, i.e. slow);
    ``fp16`` needs CUDA.
    """
    device = torch.device(device)
    choice = canonical(choice, what)
    if choice == "fp32":
        return None, "float32 (as configured)"
    where = describe_device(device)
    if choice == "auto" and auto_override():
        return resolve_precision(auto_override(), device, what)
    if choice == "auto":
        if native_bf16(device):
            return torch.bfloat16, f"bf16 autocast: {where} computes bf16 natively ({what}=auto)"
        return None, f"float32: {where} has no native bf16 ({what}=auto)"
    if choice == "fp16" and device.type != "cuda":
        raise ConfigError(f"{what}=fp16 needs a CUDA device; use bf16, fp32 or auto on {where}")
    if choice == "bf16" and not native_bf16(device):
        return torch.bfloat16, (f"bf16 autocast as configured, but {where} has no native bf16: "
                                f"it is emulated and usually slower than float32 (use auto)")
    return torch_dtype(choice), f"{choice} autocast (as configured)"


def auto_override() -> Optional[str]:
    """``fp32`` or ``bf16`` from the environment variable ``WAVEDIFF_PRECISION``: what
    ``auto`` means in this process (e.g. ``fp32`` for bit-stable test runs), else None."""
    value = os.environ.get("WAVEDIFF_PRECISION", "").strip().lower()
    if not value or value == "auto":
        return None
    if value not in RESOLVED[:2]:
        raise ConfigError(f"WAVEDIFF_PRECISION must be auto, fp32 or bf16, got {value!r}")
    return value


def pick_device(device: Union[str, torch.device, None]) -> torch.device:
    """``"auto"`` (or None): CUDA when available, else CPU; CUDA without CUDA is refused."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} was asked for but CUDA is not available here; "
                          f"use device cpu or auto")
    return device


def describe_device(device: Union[str, torch.device]) -> str:
    """``cuda:0 (NVIDIA H100 ...)`` or ``cpu (AMD EPYC ..., 2 threads)``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    return str(device)


def machine_summary() -> dict:
    """The facts a speed figure needs beside it: CPU, flags that matter, threads, versions."""
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
              "amx_tile", "asimd", "sve", "bf16")
    info = {
        "cpu": cpu_name(),
        "cpu_flags": [f for f in wanted if f in flags],
        "native_bf16": cpu_native_bf16(),
        "cpu_capability": _capability(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _capability() -> str:
    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    try:
        return str(get()) if get is not None else "unknown"
    except Exception:
        return "unknown"


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Ask glibc's malloc to reuse large freed blocks instead of unmapping them.

    By default glibc serves allocations above a (dynamic, at most 32 MB) threshold with
    ``mmap`` and returns them with ``munmap`` when freed, so every training step pays page
    faults to zero-fill fresh pages for each large activation. Raising the mmap and trim
    thresholds keeps that memory in the heap for the next step. Returns whether it applied
    (False off glibc). Process-wide; call it once before training starts.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, int(threshold_bytes)) == 1
    ok = mallopt(m_trim_threshold, int(2 * threshold_bytes)) == 1 and ok
    return ok
