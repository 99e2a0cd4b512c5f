"""Catch-trial pass rates and the exclusion rule, and results with and without it."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import catch, summary
from analysis.errors import UserError
from analysis.study import Sources, load

# worker: (catch answers passed, failed)
CATCH = {"half": (2, 2), "most": (1, 3), "none": (0, 0), "one": (0, 1), "good": (4, 0)}


def _study(files, make_item, rule: catch.ExclusionRule):
    items = [make_item(f"i{k}", robot_a="first") for k in range(2)]
    items += [make_item(f"c{k}", expected=[3]) for k in range(4)]
    files.manifest("b1", "method-vs-method", items)
    rows = []
    for worker, (passed, failed) in CATCH.items():
        answers = [3] * passed + [1] * failed
        rows += [("b1", f"c{k}", worker, a) for k, a in enumerate(answers)]
        # Every worker rates both items; "most" and "one" always say `first` is clearly worse.
        choice = 5 if worker in ("most", "one") else 1
        rows += [("b1", "i0", worker, choice), ("b1", "i1", worker, choice)]
    export = files.ratings(rows)
    return load(Sources(responses=export, manifests=(files.root / "batches",)), rule)


def test_pass_rates(files, make_item) -> None:
    study = _study(files, make_item, catch.ExclusionRule())
    w = study.workers
    assert w.loc["half", ["n_catch", "n_catch_passed"]].tolist() == [4, 2]
    assert w.loc["most", "catch_pass_rate"] == 0.25
    assert pd.isna(w.loc["none", "catch_pass_rate"])
    assert w.loc["good", "catch_pass_rate"] == 1.0


@pytest.mark.parametrize(
    ("max_fail", "excluded"),
    [
        # Default: more than half failed. Exactly half (2 of 4) stays; no catch trials stays.
        (0.5, ["most", "one"]),
        (0.25, ["half", "most", "one"]),
        (0.75, ["one"]),
        (1.0, []),
        (0.0, ["half", "most", "one"]),
    ],
)
def test_exclusion_rule(files, make_item, max_fail, excluded) -> None:
    study = _study(files, make_item, catch.ExclusionRule(max_fail))
    assert study.excluded_workers == excluded


def test_results_with_and_without_exclusion(files, make_item) -> None:
    study = _study(files, make_item, catch.ExclusionRule())
    table = summary.comparison_table(study, seed=0, n_resamples=200).set_index("setting")
    after, everyone = table.loc["after exclusion"], table.loc["all workers"]
    assert (after["n_ratings"], after["n_workers"]) == (6, 3)
    assert (everyone["n_ratings"], everyone["n_workers"]) == (10, 5)
    # The excluded workers were the only ones to rate `first` worse.
    assert after["preference_rate"] == 1.0
    assert everyone["preference_rate"] == 0.6
    assert (everyone["n_clearly_more"], everyone["n_clearly_less"]) == (6, 4)


def test_rule_bounds() -> None:
    with pytest.raises(UserError, match="between 0 and 1"):
        catch.ExclusionRule(1.5)
