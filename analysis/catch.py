"""Catch trials: how often each worker gave a passing answer, and who is excluded for it.

A catch item has a known answer (contracts.md section 7): "identical" pairs expect "equal" (3);
"wrong" pairs expect the robot whose explanation is right ([1, 2] or [4, 5]). A worker's pass
rate is passed / answered over their catch items, the answers of rejected assignments included
(rejecting a failed catch assignment must not clear the failure). The exclusion rule drops
every rating of a worker whose failure rate, 1 - pass rate, is strictly above `max_fail`
(default 0.5: failing more than half of their catch trials). A worker who saw no catch trial
is never excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.errors import UserError
from analysis.ratings import WORKER


@dataclass(frozen=True)
class ExclusionRule:
    """Exclude workers who failed more than `max_fail` of their catch trials."""

    max_fail: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_fail <= 1.0:
            raise UserError(f"--max-catch-fail {self.max_fail}: must be between 0 and 1")

    def describe(self) -> str:
        return f"workers who failed {self.short()} are excluded"

    def short(self) -> str:
        return f"more than {100 * self.max_fail:g}% of their catch trials"


def pass_rates(ratings: pd.DataFrame) -> pd.DataFrame:
    """One row per worker who rated anything: `n_catch`, `n_catch_passed`, `catch_pass_rate`
    (NaN for a worker without catch trials), indexed by the worker label (`WORKER`), which
    tells apart the same id on two platforms."""
    catch = ratings[ratings["is_catch"]]
    per = catch.groupby(WORKER)["passed"].agg(
        n_catch="size", n_catch_passed=lambda p: int(sum(bool(x) for x in p))
    )
    workers = pd.Index(sorted(ratings[WORKER].unique()), name=WORKER)
    table = per.reindex(workers).fillna(0).astype(int)
    table["catch_pass_rate"] = table["n_catch_passed"] / table["n_catch"].where(
        table["n_catch"] > 0
    )
    return table


def excluded(rates: pd.DataFrame, rule: ExclusionRule) -> pd.Series:
    """Boolean per worker (same index as `rates`): does the rule exclude them?"""
    fail = 1.0 - rates["catch_pass_rate"]
    # The tolerance keeps a failure rate of exactly max_fail (2 of 4 at 0.5, 1 of 3 at 1/3) in.
    return (rates["n_catch"] > 0) & (fail > rule.max_fail + 1e-12)
