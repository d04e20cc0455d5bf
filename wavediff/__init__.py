"""wavediff: diffusion vocoders for speech.

The public API, imported lazily so that ``import wavediff`` stays cheap::

    from wavediff import Vocoder, MelSpectrogram, Config
"""

from __future__ import annotations

import importlib
from typing import Any

from wavediff.version import __version__

_EXPORTS = {
    "Vocoder": "wavediff.vocoder",
    "MelSpectrogram": "wavediff.audio.mel",
    "MelConfig": "wavediff.audio.presets",
    "get_preset": "wavediff.audio.presets",
    "PRESET_NAMES": "wavediff.audio.presets",
    "load_audio": "wavediff.audio.io",
    "save_audio": "wavediff.audio.io",
    "read_mel": "wavediff.audio.formats",
    "load_mel_file": "wavediff.audio.formats",
    "read_stats": "wavediff.audio.formats",
    "MelConverter": "wavediff.audio.convert",
    "prepare_mel": "wavediff.audio.prepare",
    "ESPnetVocoder": "wavediff.compat",
    "Config": "wavediff.config",
    "DiffWave": "wavediff.model",
    "GaussianDiffusion": "wavediff.diffusion",
    "get_sampler": "wavediff.diffusion",
    "SamplingPlan": "wavediff.diffusion.schedule",
    "plan": "wavediff.diffusion.schedule",
    "WavediffError": "wavediff.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wavediff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
