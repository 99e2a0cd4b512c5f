"""Cluster bootstrap over items for the mean score.

The estimate is the mean score over ratings, written per item i with S_i the sum and n_i the
number of its ratings:

    mean_s = sum_i S_i / sum_i n_i

A resample draws items with replacement (each with all its ratings), so the interval reflects
that ratings of one item are correlated. The interval is BCa (bias-corrected and accelerated;
the acceleration from the leave-one-item-out jackknife) via `scipy.stats.bootstrap` on item
indices. On tied Likert data BCa can be undefined (every resample equal, or an infinite
correction); it then falls back to the percentile interval from the same seeded resamples, and
the method used is reported.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    method: str
    """`BCa`, `percentile` (BCa was undefined), or `n/a` (fewer than two items)."""


def cluster_bootstrap(
    ratings: pd.DataFrame,
    seed: int,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> Interval:
    """Interval for the mean of `s`, resampling `item_id` clusters."""
    per_item = ratings.groupby("item_id")["s"].agg(["sum", "size"])
    sums = per_item["sum"].to_numpy(dtype=float)
    sizes = per_item["size"].to_numpy(dtype=float)
    estimate = float(sums.sum() / sizes.sum()) if len(sizes) else math.nan
    if len(sizes) < 2:
        return Interval(estimate, math.nan, math.nan, "n/a")

    def mean_score(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return sums[idx].sum(axis=axis) / sizes[idx].sum(axis=axis)

    items = (np.arange(len(sizes)),)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa's degenerate case is handled below by falling back; the warning is expected.
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap(
                items,
                mean_score,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method,
                vectorized=True,
                rng=np.random.default_rng(seed),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return Interval(estimate, low, high, method)
    # Percentile intervals are finite whenever the statistic is, so this is not reached.
    raise AssertionError("percentile bootstrap interval is not finite")
