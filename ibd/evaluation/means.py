"""Means that skip what was not measured (None, nan), as every table of the evaluation reads."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def mean(values: Iterable[Any]) -> float:
    """The mean of the values that are neither None nor nan; nan when none is."""
    kept = [float(v) for v in values if v is not None and not isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan
