"""Percentiles and summaries of timing samples, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0 to 100), nearest-rank on sorted samples; NaN when there are none."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarise(samples: Sequence[float], points: Sequence[float] = (50, 99)) -> dict[str, Any]:
    """{"n", "p50", "p99", ..., "max", "mean"}, rounded to microseconds."""
    summary: dict[str, Any] = {"n": len(samples)}
    for q in points:
        summary[f"p{q:g}".replace(".", "")] = _round(percentile(samples, q))
    summary["max"] = _round(max(samples) if samples else math.nan)
    summary["mean"] = _round(sum(samples) / len(samples) if samples else math.nan)
    return summary


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator rounded, or None when it cannot be computed."""
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return None
    return round(numerator / denominator, 3)


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)
