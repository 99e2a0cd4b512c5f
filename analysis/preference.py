"""Preference for `first` among the ratings that were not ties: rate, Wilson interval, sign test.

With k ratings favouring `first` (s > 0), l favouring `second` (s < 0) and t ties (s = 0), the
preference rate is p = k / n over the n = k + l non-tied ratings; ties are reported beside it
(t and t / (n + t)), never hidden. Its Wilson score interval at level 1 - a, with
z = Phi^-1(1 - a/2):

    centre = (k + z^2/2) / (n + z^2)
    half   = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4)

The sign test is the exact two-sided binomial test of k successes in n trials against 1/2
(`scipy.stats.binomtest(k, n, 0.5)`). It treats ratings as independent; the item-level Wilcoxon
test and the cluster bootstrap account for ratings of the same item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Preference:
    prefer_first: int
    prefer_second: int
    ties: int
    rate: float
    low: float
    high: float
    p_value: float

    @property
    def tie_rate(self) -> float:
        total = self.prefer_first + self.prefer_second + self.ties
        return self.ties / total if total else math.nan


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (NaN, NaN when n == 0)."""
    if n == 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(k: int, n: int) -> float:
    """Exact two-sided binomial p-value of k of n against 1/2 (NaN when n == 0)."""
    if n == 0:
        return math.nan
    return float(stats.binomtest(k, n, 0.5, alternative="two-sided").pvalue)


def preference(prefer_first: int, prefer_second: int, ties: int, confidence: float) -> Preference:
    n = prefer_first + prefer_second
    low, high = wilson_interval(prefer_first, n, confidence)
    return Preference(
        prefer_first=prefer_first,
        prefer_second=prefer_second,
        ties=ties,
        rate=prefer_first / n if n else math.nan,
        low=low,
        high=high,
        p_value=sign_test(prefer_first, n),
    )
