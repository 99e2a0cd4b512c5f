"""Catch-trial pass rates and the exclusion rule, and results with and without it."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import catch, summary, tables
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


def _rejected_catch_study(files, make_item, make_row, include_rejected: bool = False):
    """The reviewer's `rejcatch` shape: three workers rate six items and two catch items; w3
    fails both catch items and the requester rejects exactly those two assignments."""
    items = [make_item(f"b-{i}", robot_a=("second", "first")[i % 2]) for i in range(6)]
    items += [make_item("b-c1", expected=[3]), make_item("b-c2", expected=[3])]
    files.manifest("b", "method-vs-method", items)
    rows = []
    for w in ("w1", "w2", "w3"):
        rows += [make_row("b", f"b-{i}", w, 5 if w == "w3" else 2, len(rows)) for i in range(6)]
        for c in ("b-c1", "b-c2"):
            failed = w == "w3"
            status = "rejected" if failed else "submitted"
            rows.append(make_row("b", c, w, 1 if failed else 3, len(rows), status=status))
    export = files.root / "export.csv"
    pd.DataFrame(rows).to_csv(export, index=False)
    sources = Sources(
        responses=export, manifests=(files.root / "batches",), include_rejected=include_rejected
    )
    return load(sources, catch.ExclusionRule())


@pytest.mark.parametrize("include_rejected", [False, True])
def test_rejecting_failed_catch_assignments_does_not_hide_the_failures(
    files, make_item, make_row, include_rejected
) -> None:
    study = _rejected_catch_study(files, make_item, make_row, include_rejected)
    w3 = study.workers.loc["w3"]
    assert (w3["n_catch"], w3["n_catch_passed"], w3["catch_pass_rate"]) == (2, 0, 0.0)
    assert study.excluded_workers == ["w3"]
    # The rejected answers themselves are still left out of what is analysed by default.
    assert study.selection.n_rejected_dropped == (0 if include_rejected else 2)
    assert len(study.ratings) == (24 if include_rejected else 22)
    table = summary.comparison_table(study, seed=0, n_resamples=200).set_index("setting")
    assert (table.loc["after exclusion", "n_ratings"], table.loc["all workers", "n_ratings"]) == (
        12,
        18,
    )
    assert table.loc["after exclusion", "n_workers"] == 2
    bias = summary.position_bias_table(study)
    md = tables.to_markdown(tables.document(study, table.reset_index(), bias, 0.95))
    included = "" if include_rejected else " (rejected assignments included)"
    assert f"3 worker(s); 3 saw catch trials; 4 of 6 catch answers passed{included}." in md
    assert "Excluded: 1 worker(s): `w3`." in md


def test_a_worker_with_only_rejected_answers_is_not_listed(files, make_item, make_row) -> None:
    files.manifest("b", "method-vs-method", [make_item("i1"), make_item("c1", expected=[3])])
    rows = [
        make_row("b", "i1", "w1", 1, 0),
        make_row("b", "i1", "gone", 5, 1, status="rejected"),
        make_row("b", "c1", "gone", 1, 2, status="rejected"),
    ]
    export = files.root / "export.csv"
    pd.DataFrame(rows).to_csv(export, index=False)
    study = load(
        Sources(responses=export, manifests=(files.root / "batches",)), catch.ExclusionRule()
    )
    assert list(study.workers.index) == ["w1"]
    assert study.excluded_workers == []
