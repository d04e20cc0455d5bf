"""Objective evaluation of generated speech and the HTML listening report.

Imported lazily: ``import wavediff.evaluation`` loads nothing heavy, and the cheap metrics
(:mod:`wavediff.evaluation.spectral`) need only torch and numpy. PESQ, STOI, MCD/F0 and
DNSMOS use the optional ``eval`` extra (``pip install 'wavediff[eval]'``)::

    from wavediff.evaluation import evaluate_pair
    scores = evaluate_pair(reference, generated, sample_rate=22050)   # {"pesq": ..., ...}
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "METRICS": "wavediff.evaluation.metrics",
    "METRIC_NAMES": "wavediff.evaluation.metrics",
    "MetricInfo": "wavediff.evaluation.metrics",
    "Evaluator": "wavediff.evaluation.metrics",
    "available_metrics": "wavediff.evaluation.metrics",
    "evaluate_pair": "wavediff.evaluation.metrics",
    "select_metrics": "wavediff.evaluation.metrics",
    "multi_resolution_stft_distance": "wavediff.evaluation.spectral",
    "log_mel_l1": "wavediff.evaluation.spectral",
    "snr": "wavediff.evaluation.spectral",
    "si_sdr": "wavediff.evaluation.spectral",
    "Summary": "wavediff.evaluation.stats",
    "summarise": "wavediff.evaluation.stats",
    "run_evaluation": "wavediff.evaluation.runner",
    "EvaluationResult": "wavediff.evaluation.runner",
    "write_report": "wavediff.evaluation.report",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wavediff.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
