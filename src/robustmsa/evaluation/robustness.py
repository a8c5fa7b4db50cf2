"""One-number summaries of a metric-vs-rate robustness curve (PROTOCOLS.md section 3).

A method is evaluated at several missing rates; tables report the mean over those rates and
AUILC, the area under the curve normalised by the rate range, so that protocols with
different rate grids stay comparable.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _curve(rates: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    rate_array = np.asarray(rates, dtype=np.float64).reshape(-1)
    value_array = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(rate_array) != len(value_array):
        raise ValueError(
            f"rates and values differ in length: {len(rate_array)} vs {len(value_array)}"
        )
    if len(rate_array) == 0:
        raise ValueError("a robustness curve needs at least one rate")
    order = np.argsort(rate_array, kind="stable")
    return rate_array[order], value_array[order]


def mean_over_rates(rates: Any, values: Any) -> float:
    """Plain mean of the metric over the evaluated rates.

    >>> from robustmsa.evaluation.robustness import mean_over_rates
    >>> mean_over_rates([0.0, 0.5, 1.0], [80.0, 70.0, 60.0])
    70.0
    """
    _, value_array = _curve(rates, values)
    return float(np.mean(value_array))


def auilc(rates: Any, values: Any) -> float:
    """Trapezoid area under the metric-vs-rate curve divided by the rate range.

    Unlike the plain mean it weights each rate by the gap it covers, so an uneven rate grid
    does not over-count its dense end. A single rate returns its value.

    >>> from robustmsa.evaluation.robustness import auilc
    >>> auilc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0])
    0.5
    """
    rate_array, value_array = _curve(rates, values)
    if len(rate_array) == 1:
        return float(value_array[0])
    rate_range = rate_array[-1] - rate_array[0]
    if rate_range == 0.0:
        raise ValueError("all rates are equal; AUILC needs a non-zero rate range")
    segment_areas = 0.5 * (value_array[1:] + value_array[:-1]) * np.diff(rate_array)
    return float(np.sum(segment_areas) / rate_range)


def summarize_curve(rates: Any, values: Any) -> dict[str, float]:
    """Both summaries of one curve, keyed "mean" and "auilc"."""
    return {"mean": mean_over_rates(rates, values), "auilc": auilc(rates, values)}
