"""Agreement between workers: Krippendorff's alpha with the ordinal metric.

alpha = 1 - D_o / D_e, the observed disagreement between ratings of the same item over the
disagreement expected by chance from all pairable ratings (Krippendorff 2011). The ordinal
metric weighs a disagreement between values c < k by the ratings lying between them:
d(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2. Computed with the `krippendorff` package on a
raters x items matrix of scores s (-2..+2, missing where a worker did not rate an item); items
with a single rating are not pairable and do not count. The value domain is fixed to the five
scores so that the scale is the same in every comparison.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import krippendorff
import numpy as np
import pandas as pd

from analysis.likert import SCORES
from analysis.ratings import WORKER

VALUE_DOMAIN: list[int] = sorted(SCORES)


@dataclass(frozen=True)
class Agreement:
    alpha: float
    n_items: int
    """Items rated by at least two workers (the pairable ones)."""


def reliability_matrix(ratings: pd.DataFrame) -> np.ndarray:
    """Raters (rows, by worker label: one id on two platforms is two raters) x items
    (columns) of scores, NaN where missing."""
    table = ratings.pivot(index=WORKER, columns="item_id", values="s")
    return table.to_numpy(dtype=float)


def ordinal_alpha(ratings: pd.DataFrame) -> Agreement:
    """Krippendorff's ordinal alpha of the scores; NaN when no item has two ratings, or when
    every rating is the same value (no disagreement is possible, so alpha is undefined)."""
    pairable = int((ratings.groupby("item_id").size() >= 2).sum())
    if pairable == 0:
        return Agreement(math.nan, 0)
    with warnings.catch_warnings():
        # A single observed value makes D_e zero; the package warns and returns NaN.
        warnings.simplefilter("ignore", RuntimeWarning)
        alpha = krippendorff.alpha(
            reliability_data=reliability_matrix(ratings),
            level_of_measurement="ordinal",
            value_domain=VALUE_DOMAIN,
        )
    return Agreement(float(alpha), pairable)
