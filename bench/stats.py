"""Medians, extremes and percentiles of repeated measurements."""

from __future__ import annotations

import statistics
from typing import Iterable, TypedDict

__all__ = ["Summary", "summarize", "percentile"]


class Summary(TypedDict):
    median: float
    min: float
    max: float
    n: int


def summarize(values: Iterable[float]) -> Summary | None:
    vals = sorted(float(v) for v in values)
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "n": len(vals)}


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty list."""
    vals = sorted(values)
    rank = max(1, min(len(vals), int(-(-pct * len(vals) // 100))))
    return vals[rank - 1]
