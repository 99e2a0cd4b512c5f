"""Wilcoxon signed-rank test on per-item mean scores.

Ratings of one item are not independent (same image, same pair of explanations), so the test is
run on one number per item: the mean score m_i of its ratings. Under H0 the distribution of m_i
is symmetric about 0.

`zero_method="zsplit"`: items whose mean is exactly 0 (judged equal on balance) stay in the
ranking, their ranks split evenly between the positive and negative sums. Dropping them
("wilcox") would test only the items that showed a difference, which repeats what the sign test
already reports and overstates the evidence when most items are judged equal (a model against
its own mirror image). Per-item means of Likert data are heavily tied and contain zeros, where
the exact null distribution does not apply, so `method="approx"` (normal approximation with the
tie correction) is used; with fewer than about 20 items treat the p-value as rough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

ZERO_METHOD = "zsplit"
METHOD = "approx"


@dataclass(frozen=True)
class Wilcoxon:
    statistic: float
    p_value: float
    n_items: int


def item_means(ratings: pd.DataFrame) -> pd.Series:
    """Mean score `s` per item."""
    return ratings.groupby("item_id")["s"].mean()


def wilcoxon_items(ratings: pd.DataFrame) -> Wilcoxon:
    """Two-sided signed-rank test of the per-item mean scores against 0 (NaN below 2 items)."""
    means = item_means(ratings).to_numpy(dtype=float)
    if len(means) < 2:
        return Wilcoxon(math.nan, math.nan, len(means))
    res = stats.wilcoxon(means, zero_method=ZERO_METHOD, method=METHOD)
    return Wilcoxon(float(res.statistic), float(res.pvalue), len(means))
