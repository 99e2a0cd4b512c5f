"""Undoing the left/right placement, from files in the real formats to scores."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import likert
from analysis.catch import ExclusionRule
from analysis.errors import UserError
from analysis.study import Sources, Study, load

# A hand-written table: (item, who is Robot A, the raw choice, the score toward `first`).
# Choice 1 means "Robot A clearly more reasonable": that is `first` when robot_a == "first".
TABLE = [
    ("i1", "first", 1, +2),
    ("i1", "first", 2, +1),
    ("i1", "first", 3, 0),
    ("i1", "first", 4, -1),
    ("i1", "first", 5, -2),
    ("i2", "second", 1, -2),
    ("i2", "second", 2, -1),
    ("i2", "second", 3, 0),
    ("i2", "second", 4, +1),
    ("i2", "second", 5, +2),
]


def test_score_formula_on_hand_table() -> None:
    frame = pd.DataFrame(TABLE, columns=["item", "robot_a", "choice", "s"])
    assert likert.score(frame["choice"], frame["robot_a"]).tolist() == frame["s"].tolist()


def test_files_to_scores(files, make_item) -> None:
    files.manifest(
        "b1",
        "method-vs-method",
        [
            make_item("i1", robot_a="first"),
            make_item("i2", robot_a="second"),
            make_item("c1", robot_a="first", expected=[3]),
        ],
    )
    rows = [("b1", item, f"w{n}", choice) for n, (item, _, choice, _) in enumerate(TABLE)]
    rows += [("b1", "c1", "w0", 3), ("b1", "c1", "w1", 1)]
    export = files.ratings(rows)
    study = load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())
    real = study.ratings[~study.ratings["is_catch"]].sort_values("worker_id", key=_num)
    assert real["s"].tolist() == [s for *_, s in TABLE]
    # Same explanation pair everywhere, so the comparison counts are the table's.
    assert likert.score_counts(real["s"]) == {2: 2, 1: 2, 0: 2, -1: 2, -2: 2}
    catch = study.ratings[study.ratings["is_catch"]].set_index("worker_id")
    assert catch.loc["w0", "passed"] is True
    assert catch.loc["w1", "passed"] is False
    assert study.workers.loc["w1", "catch_pass_rate"] == 0.0
    assert study.workers.loc["w5", "n_catch"] == 0


def _num(ids: pd.Series) -> pd.Series:
    return ids.str[1:].astype(int)


def test_simulated_and_rejected_are_left_out_unless_asked(files, make_item, make_row) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    export = files.root / "export.csv"
    rows = [
        make_row("b1", "i1", "w1", 1, 0),
        make_row("b1", "i1", "w2", 2, 1, simulated=True),
        make_row("b1", "i1", "w3", 5, 2, status="rejected"),
    ]
    pd.DataFrame(rows).to_csv(export, index=False)
    manifests = (files.root / "batches",)
    default = load(Sources(responses=export, manifests=manifests), ExclusionRule())
    assert default.ratings["worker_id"].tolist() == ["w1"]
    assert default.selection.n_simulated_dropped == 1
    assert default.selection.n_rejected_dropped == 1
    assert not default.simulated
    everything = load(
        Sources(
            responses=export, manifests=manifests, include_simulated=True, include_rejected=True
        ),
        ExclusionRule(),
    )
    assert sorted(everything.ratings["worker_id"]) == ["w1", "w2", "w3"]
    assert everything.simulated


def test_only_simulated_answers_is_an_error_without_the_flag(files, make_item) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    export = files.ratings([("b1", "i1", "w1", 1)], simulated=True)
    with pytest.raises(UserError, match="no answers to analyse.*1 simulated left out"):
        load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())


def test_ratings_of_other_batches_are_set_aside(files, make_item) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    export = files.ratings([("b1", "i1", "w1", 1), ("zz", "z1", "w1", 1)])
    study = load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())
    assert study.ratings["item_id"].tolist() == ["i1"]
    assert study.other_batches == ("zz",)


def test_unknown_item_of_a_known_batch_is_an_error(files, make_item) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    export = files.ratings([("b1", "i9", "w1", 1)])
    with pytest.raises(UserError, match="'i9'.*no such item"):
        load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"robot_a": "left"}, "robot_a: 'left' is neither"),
        ({"kind": "odd"}, "kind: 'odd' is not one of"),
        ({"first": {"method": "ibd"}}, "first: missing field 'model'"),
    ],
)
def test_bad_manifest_items_name_the_field(files, make_item, change, message) -> None:
    files.manifest("b1", "method-vs-method", [{**make_item("i1"), **change}])
    export = files.ratings([("b1", "i1", "w1", 1)])
    with pytest.raises(UserError, match=message):
        load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())


def test_bad_choice_names_the_row(files, make_item) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1"), make_item("i2")])
    export = files.ratings([("b1", "i1", "w1", 1), ("b1", "i2", "w1", 7)])
    with pytest.raises(UserError, match=r"row 3: choice '7' is not 1..5"):
        load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())


def test_a_worker_rating_an_item_twice_is_an_error(files, make_item) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    export = files.ratings([("b1", "i1", "w1", 1), ("b1", "i1", "w1", 2)])
    with pytest.raises(UserError, match="'w1' rated item 'i1' 2 times"):
        load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())


def _export(files, rows: list[dict], extra: dict[str, str] | None = None):
    """Write `rows` (from `make_row`) as an export, with `extra` columns set on every row."""
    export = files.root / "export.csv"
    pd.DataFrame([{**row, **(extra or {})} for row in rows]).to_csv(export, index=False)
    return export


def _load(files, export, **flags) -> Study:
    return load(Sources(responses=export, manifests=(files.root / "batches",), **flags),
                ExclusionRule())  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        # A wrong side: the file says Robot A was `first` everywhere, the manifest says not.
        {"robot_a": "first"},
        # Empty or foreign values of manifest fields: a KeyError or a lost comparison before.
        {"kind": ""},
        {"experiment": "pilot-2024", "class_name": "kitchen", "expected_choices": ""},
    ],
)
def test_manifest_fields_in_the_answers_are_ignored(files, make_item, make_row, extra) -> None:
    files.manifest(
        "b1",
        "method-vs-method",
        [make_item("i1", robot_a="first"), make_item("i2", robot_a="second")],
    )
    rows = [make_row("b1", item, "w1", 1, n) for n, item in enumerate(("i1", "i2"))]
    study = _load(files, _export(files, rows, extra))
    # Choice 1 = Robot A clearly: `first` on i1 (+2), `second` on i2 (-2).
    assert study.ratings.set_index("item_id")["s"].to_dict() == {"i1": 2, "i2": -2}
    assert study.ratings["experiment"].tolist() == ["method-vs-method"] * 2
    assert study.ignored_columns == tuple(extra)


def test_status_is_read_whatever_its_case(files, make_item, make_row) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    rows = [
        make_row("b1", "i1", "w1", 1, 0, status=" Approved"),
        make_row("b1", "i1", "w2", 5, 1, status="Rejected"),
        make_row("b1", "i1", "w3", 5, 2, status="REJECTED "),
    ]
    study = _load(files, _export(files, rows))
    assert study.ratings["worker_id"].tolist() == ["w1"]
    assert study.ratings["status"].tolist() == ["approved"]
    assert study.selection.n_rejected_dropped == 2


def test_unknown_status_is_an_error(files, make_item, make_row) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    rows = [make_row("b1", "i1", "w1", 1, 0), make_row("b1", "i1", "w2", 1, 1, status="paid")]
    with pytest.raises(
        UserError,
        match=r"row 3: status 'paid' is not one of accepted, submitted, approved, rejected, "
        r"returned, expired$",
    ):
        _load(files, _export(files, rows))


def test_the_same_worker_id_on_two_platforms_is_two_workers(files, make_item, make_row) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1"), make_item("c1", expected=[3])])
    rows = [
        make_row("b1", "i1", "w1", 1, 0),
        make_row("b1", "c1", "w1", 3, 1),
        make_row("b1", "i1", "w2", 1, 2),
        make_row("b1", "c1", "w2", 3, 3),
        # Another person on Prolific whose id is also "w1": fails the catch item.
        {**make_row("b1", "i1", "w1", 5, 4), "platform": "prolific"},
        {**make_row("b1", "c1", "w1", 1, 5), "platform": "prolific"},
    ]
    study = _load(files, _export(files, rows))
    w = study.workers
    assert list(w.index) == ["local:w1", "prolific:w1", "w2"]
    assert w[["worker_id", "platform"]].values.tolist() == [
        ["w1", "local"],
        ["w1", "prolific"],
        ["w2", "local"],
    ]
    assert w["n_catch_passed"].tolist() == [1, 0, 1]
    assert study.excluded_workers == ["prolific:w1"]
    kept = study.subset("after exclusion")
    assert kept.loc[~kept["is_catch"], "s"].tolist() == [2, 2]


def test_duplicates_are_checked_after_simulated_and_rejected_are_set_aside(
    files, make_item, make_row
) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    rows = [
        make_row("b1", "i1", "w1", 1, 0),
        make_row("b1", "i1", "w1", 2, 1, status="rejected"),
        # A simulated rater with the same id: another worker, and left out anyway.
        make_row("b1", "i1", "w1", 5, 2, simulated=True),
        make_row("b1", "i1", "w1", 5, 3, simulated=True),
    ]
    export = _export(files, rows)
    study = _load(files, export)
    assert study.ratings["choice"].tolist() == [1]
    with pytest.raises(UserError, match="worker 'w1' rated item 'i1' 2 times"):
        _load(files, export, include_rejected=True)
    with pytest.raises(UserError, match="worker 'simulated:w1' rated item 'i1' 2 times"):
        _load(files, _export(files, rows[:1] + rows[2:]), include_simulated=True)


def test_without_a_platform_column_workers_are_keyed_by_id(files, make_item, make_row) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1"), make_item("i2")])
    rows = [make_row("b1", item, "w1", 1, n) for n, item in enumerate(("i1", "i2"))]
    export = _export(files, [{k: v for k, v in r.items() if k != "platform"} for r in rows])
    study = _load(files, export)
    assert list(study.workers.index) == ["w1"]
    assert list(study.workers.columns[:2]) == ["worker_id", "n_catch"]
