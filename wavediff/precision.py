"""The precision vocabulary, in one place.

What a user may ask for (:data:`PRECISIONS`: ``auto``, ``fp32``, ``bf16``, ``fp16``), the
older spellings still read (``none`` and ``float32`` for ``fp32``: configs' ``train.amp``
and ``--autocast`` used them), and the torch dtype each computes in. Training
(``train.amp``), decoding (``Vocoder(precision=...)``, ``wavediff vocode --precision``), the
engine and the calibration all read it from here; how ``auto`` is resolved on the running
machine lives in :mod:`wavediff.hardware` (training) and
:mod:`wavediff.inference.calibrate` (decoding). Importing this module loads no torch.
"""

from __future__ import annotations

from typing import Any, Optional

from wavediff.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FP32_SPELLINGS = ("fp32", "none", "float32")  # older configs and --autocast said "none"
ACCEPTED = PRECISIONS + tuple(s for s in FP32_SPELLINGS if s not in PRECISIONS)
RESOLVED = ("fp32", "bf16", "fp16")  # what "auto" becomes on a machine


def canonical(value: Any, what: str = "precision", *, allow_auto: bool = True) -> str:
    """``value`` as one of :data:`PRECISIONS` (None and the float32 spellings: ``fp32``).

    ``allow_auto=False``: a resolved precision is needed (``auto`` is refused). Raises
    :class:`ConfigError` naming ``what`` and the choices.
    """
    name = "fp32" if value is None else str(value).strip().lower()
    if name in FP32_SPELLINGS:
        return "fp32"
    choices = PRECISIONS if allow_auto else RESOLVED
    if name not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return name


def torch_dtype(precision: str) -> Optional[Any]:
    """The autocast dtype of a resolved precision: None for float32 (no autocast),
    ``torch.bfloat16`` or ``torch.float16``."""
    name = canonical(precision, allow_auto=False)
    if name == "fp32":
        return None
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
