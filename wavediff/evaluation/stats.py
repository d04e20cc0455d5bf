"""Aggregation of per-utterance values: mean with a 95% confidence interval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

import numpy as np

__all__ = ["Summary", "summarise"]


@dataclass(frozen=True)
class Summary:
    """Mean of the finite values with the half-width of its 95% confidence interval.

    ``ci95`` is ``t(0.975, n - 1) * std / sqrt(n)`` (Student's t, sample standard deviation
    with ``n - 1``); NaN when fewer than two values. ``missing`` counts the NaN values left out.
    """

    mean: float
    ci95: float
    std: float
    n: int
    missing: int = 0

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in asdict(self).items()}


def summarise(values: Iterable[Optional[float]]) -> Summary:
    """The :class:`Summary` of ``values`` (None and NaN are counted as missing)."""
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n, missing = int(finite.size), int(arr.size - finite.size)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0, missing)
    mean = float(finite.mean())
    if n < 2:
        return Summary(mean, math.nan, math.nan, 1, missing)
    from scipy.stats import t

    std = float(finite.std(ddof=1))
    return Summary(mean, float(t.ppf(0.975, n - 1) * std / math.sqrt(n)), std, n, missing)


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
