"""Holm's step-down correction across the comparisons of one figure.

With the m defined p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted values are

    p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)),

which controls the family-wise error rate at the nominal level. Undefined (NaN) p-values are
left out of m and stay NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given."""
    defined = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(defined)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(defined)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
