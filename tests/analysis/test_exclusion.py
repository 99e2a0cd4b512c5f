"""Exclusion rules beyond the catch trials: definitions, counts on a hand-made table, the study
config, exports without the quality columns, and a real HIT server database (SQLite and
PostgreSQL)."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import exclusion, tables
from analysis.catch import ExclusionRule
from analysis.cli import main
from analysis.errors import UserError
from analysis.study import Sources, load
from hitserver import quality

QUALITY = ["visible_s", "blur_count", "paste_count", "pasted_chars", "reason_chars"]
SHARED = "Robot A is more reasonable because its regions match the class."


VOCAB = [
    "boat",
    "water",
    "sky",
    "sail",
    "harbor",
    "beach",
    "sand",
    "wave",
    "cloud",
    "road",
    "tree",
    "grass",
    "house",
    "roof",
    "door",
    "window",
    "wall",
    "floor",
    "chair",
    "table",
    "lamp",
    "sofa",
    "stove",
    "sink",
    "cabinet",
    "field",
    "fence",
    "river",
    "bridge",
    "tower",
    "car",
    "bus",
    "street",
    "sign",
    "shop",
    "person",
    "dog",
    "bird",
    "flower",
    "rock",
]


def own(worker: str, k: int) -> str:
    """A reason nobody else writes: eight words drawn for this worker and item."""
    return " ".join(random.Random(f"{worker}-{k}").sample(VOCAB, 8))


# worker: (seconds per task, pasted?, reason) for its three ratings, and its catch answer
WORKERS: dict[str, dict[str, Any]] = {
    "good": {"seconds": [30, 40, 50], "paste": [0, 0, 0], "shared": [], "catch": 3},
    "fast": {"seconds": [2, 3, 4], "paste": [0, 0, 0], "shared": [], "catch": 3},
    "paster": {"seconds": [30, 30, 30], "paste": [1, 0, 0], "shared": [], "catch": 3},
    "copy1": {"seconds": [30, 30, 30], "paste": [0, 0, 0], "shared": [0, 1], "catch": 3},
    "copy2": {"seconds": [30, 30, 30], "paste": [0, 0, 0], "shared": [0], "catch": 3},
    "failer": {"seconds": [1, 1, 1], "paste": [1, 1, 1], "shared": [0, 1, 2], "catch": 1},
    "old": {"seconds": [30, 30, 30], "paste": [None] * 3, "shared": [], "catch": 3},
}


def write_study(files, make_item, make_row, telemetry: bool = True) -> Path:
    items = [make_item(f"i{k}") for k in range(3)] + [make_item("c0", expected=[3])]
    files.manifest("b1", "method-vs-method", items)
    rows = []
    for worker, spec in WORKERS.items():
        for k in range(4):
            row = make_row("b1", f"i{k}" if k < 3 else "c0", worker, 1, len(rows))
            if k == 3:
                row.update(choice=spec["catch"], reason=own(worker, k), duration_s=30)
            else:
                text = SHARED if k in spec["shared"] else own(worker, k)
                pasted = spec["paste"][k]
                row.update(duration_s=spec["seconds"][k], reason=text)
                if pasted is not None:
                    row.update(
                        visible_s=spec["seconds"][k] - 0.5,
                        blur_count=0,
                        paste_count=pasted,
                        pasted_chars=len(text) if pasted else 0,
                        reason_chars=len(text),
                    )
            rows.append(row)
    path = files.root / "export.csv"
    columns = [c for c in rows[0] if c not in QUALITY] + (QUALITY if telemetry else [])
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


RULES = exclusion.Rules(min_seconds=5, max_pasted=0.0, max_near_identical=0.5)


def study_of(files, make_item, make_row, rules=RULES, telemetry=True):
    export = write_study(files, make_item, make_row, telemetry)
    return load(
        Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule(), rules
    )


def test_each_rule_catches_the_workers_it_defines(files, make_item, make_row) -> None:
    s = study_of(files, make_item, make_row)
    w = s.workers
    # median time per task over every task, the catch trial's 30 s included
    assert w.loc["fast", "median_duration_s"] == 3.5  # 2, 3, 4, 30
    assert w.loc["failer", "median_duration_s"] == 1.0  # 1, 1, 1, 30
    assert w.loc["good", "median_duration_s"] == 35.0  # 30, 30, 40, 50
    # over the ratings with telemetry (the catch answers here carry none)
    assert w.loc["paster", "pasted_fraction"] == pytest.approx(1 / 3)
    assert pd.isna(w.loc["old", "pasted_fraction"])  # no telemetry at all
    # copy1 shares 2 of 4 reasons, copy2 1 of 4, failer 3 of 4 (with copy1, copy2 and itself
    # not counting).
    assert w.loc["copy1", "near_identical_fraction"] == 0.5
    assert w.loc["copy2", "near_identical_fraction"] == 0.25
    assert w.loc["failer", "near_identical_fraction"] == 0.75
    caught = {rule: sorted(w.index[w[f"excluded_{rule}"]]) for rule, _ in exclusion.RULES}
    assert caught == {
        "catch": ["failer"],
        "time": ["failer", "fast"],
        "pasted": ["failer", "paster"],
        "near_identical": ["failer"],  # more than 0.5: copy1's exactly 0.5 stays
    }
    assert s.excluded_workers == ["failer", "fast", "paster"]


def test_report_counts_flagged_and_removed_in_rule_order(files, make_item, make_row) -> None:
    s = study_of(files, make_item, make_row)
    table = tables.exclusion_table(s).set_index("rule")
    # three non-catch ratings per worker
    assert table.loc["catch trials", ["workers_flagged", "ratings_flagged"]].tolist() == [1, 3]
    assert table.loc["minimum time per task"].tolist()[1:] == [2, 6, 1, 3]
    assert table.loc["pasted reasons"].tolist()[1:] == [2, 6, 1, 3]
    assert table.loc["near-identical reasons"].tolist()[1:] == [1, 3, 0, 0]
    assert table.loc["any rule"].tolist()[1:] == [3, 9, 3, 9]
    assert "below 5 s" in table.loc["minimum time per task", "definition"]
    after = s.subset("after exclusion")
    assert sorted(after["worker"].unique()) == ["copy1", "copy2", "good", "old"]


def test_rules_are_off_unless_configured(files, make_item, make_row) -> None:
    s = study_of(files, make_item, make_row, rules=exclusion.Rules())
    assert s.excluded_workers == ["failer"]
    table = tables.exclusion_table(s).set_index("rule")
    assert table.loc["pasted reasons", "definition"].startswith("not applied")
    assert table.loc["any rule", "ratings_removed"] == 3


def test_an_export_without_the_quality_columns_still_reads(files, make_item, make_row) -> None:
    s = study_of(files, make_item, make_row, telemetry=False)
    table = tables.exclusion_table(s).set_index("rule")
    assert table.loc["pasted reasons", "definition"] == (
        "not applicable: the answers have no paste_count, pasted_chars column"
    )
    assert table.loc["pasted reasons", "workers_flagged"] == 0
    # time and near-identical need only the contract's columns
    assert table.loc["near-identical reasons", "workers_flagged"] == 1
    assert s.excluded_workers == ["failer", "fast"]


def test_near_identical_definition() -> None:
    base = "Robot A highlights the boat and the water, which fit a harbor."
    reasons = [
        base,
        base.upper() + "!!",  # identical once normalised
        base.replace("boat", "boats"),  # 50 of 57 4-grams shared: 0.877
        "Robot B is better because the sky is not in the picture at all.",
        "the robot sees a boat here",
        "the robot sees a tree here",  # 16 of 30 shared: 0.53
        "same same",
        "same same",  # too short to compare
    ]
    owners = list("abcdefgh")
    assert exclusion.near_identical(reasons, owners, 0.8, 20) == {0, 1, 2}
    assert exclusion.near_identical(reasons, owners, 0.9, 20) == {0, 1}
    assert exclusion.near_identical(reasons, owners, 0.5, 20) == {0, 1, 2, 4, 5}
    assert exclusion.near_identical(reasons, owners, 0.8, 5) == {0, 1, 2, 6, 7}
    assert exclusion.near_identical(reasons[:2], ["a", "a"], 0.8, 20) == set()
    # the server's dashboard uses the same definition
    assert quality.near_identical(reasons, owners) == exclusion.near_identical(
        reasons, owners, quality.SIMILARITY, quality.MIN_CHARS
    )
    assert exclusion.normalise("ﬁne_Print, OK!") == quality.normalise("ﬁne_Print, OK!")


def test_config_file(tmp_path: Path) -> None:
    config = tmp_path / "study.toml"
    config.write_text("n = 10\n[exclusion]\nmin_seconds = 4\nmax_pasted = 0.1\n")
    assert exclusion.rules_from(exclusion.read_config(config)) == exclusion.Rules(
        min_seconds=4, max_pasted=0.1
    )
    config.write_text("[exclusion]\nmin_secs = 4\n")
    with pytest.raises(UserError, match="exclusion.min_secs: unknown setting"):
        exclusion.read_config(config)
    config.write_text('[exclusion]\nmax_pasted = "none"\n')
    with pytest.raises(UserError, match="must be a number"):
        exclusion.read_config(config)
    config.write_text("[exclusion]\nmax_pasted = 2\n")
    with pytest.raises(UserError, match="between 0 and 1"):
        exclusion.rules_from(exclusion.read_config(config))


def test_cli_reports_the_rules_beside_the_figures(files, make_item, make_row, tmp_path, capsys):
    export = write_study(files, make_item, make_row)
    config = tmp_path / "study.toml"
    config.write_text("[exclusion]\nmin_seconds = 5\nmax_pasted = 0\nmax_near_identical = 0.5\n")
    out = tmp_path / "report"
    args = ["--responses", str(export), "--manifest", str(files.root / "batches")]
    assert (
        main(["report", *args, "--config", str(config), "--resamples", "200", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "exclusion: pasted reasons: removed 1 worker(s), 3 rating(s)" in printed
    page = (out / "report.html").read_text()
    figures_end = page.index("<h2>Exclusions</h2>")
    assert page.index("Fig. 8") < figures_end < page.index("<h2>Data</h2>")
    assert "after exclusion: 3 of 7 workers and 9 ratings removed" in page
    assert "<td>pasted reasons</td>" in page
    csv_table = pd.read_csv(out / "exclusions.csv").set_index("rule")
    assert csv_table.loc["any rule", "ratings_removed"] == 9
    md = (out / "stats.md").read_text()
    assert "| near-identical reasons |" in md
    # --max-catch-fail on the command line wins over the file's
    config.write_text("[exclusion]\nmax_catch_fail = 0.0\n")
    stats = tmp_path / "stats"
    run = ["stats", *args, "--config", str(config), "--resamples", "100", "--out", str(stats)]
    assert main(run) == 0
    by_rule = pd.read_csv(stats / "exclusions.csv").set_index("rule")
    assert by_rule.loc["catch trials", "workers_flagged"] == 1
    assert main([*run, "--max-catch-fail", "1"]) == 0
    by_rule = pd.read_csv(stats / "exclusions.csv").set_index("rule")
    assert by_rule.loc["catch trials", "workers_flagged"] == 0


def _jaccard(a: str, b: str) -> float:
    x = {a[k : k + 4] for k in range(len(a) - 3)}
    y = {b[k : k + 4] for k in range(len(b) - 3)}
    return len(x & y) / len(x | y)


@pytest.mark.parametrize("similarity", [0.3, 0.6, 0.8, 0.95, 1.0])
def test_near_identical_finds_exactly_the_pairs_every_pair_comparison_finds(similarity) -> None:
    """The prefix filter skips pairs; it must never skip one that reaches the threshold."""
    rng = random.Random(similarity)
    templates = ["robot {} shows the {} better", "the {} of robot {} is wrong", "{} and {}"]
    reasons = [
        rng.choice(templates).format(*rng.sample(VOCAB, 2)) + " " * rng.randint(0, 1)
        + " ".join(rng.sample(VOCAB, rng.randint(0, 3)))
        for _ in range(150)
    ]  # fmt: skip
    # copies: exact up to case, and one letter more
    reasons += [r.upper() for r in reasons[:10]] + [r + "s" for r in reasons[10:20]]
    owners = [rng.randint(0, 20) for _ in reasons]
    texts = [exclusion.normalise(r) for r in reasons]
    expected = set()
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            comparable = min(len(texts[i]), len(texts[j])) >= 20 and owners[i] != owners[j]
            if comparable and _jaccard(texts[i], texts[j]) >= similarity:
                expected |= {i, j}
    assert 0 < len(expected) < len(reasons)  # the sample has both kinds
    assert exclusion.near_identical(reasons, owners, similarity, 20) == expected
    assert quality.near_identical(reasons, owners, similarity, 20) == expected
