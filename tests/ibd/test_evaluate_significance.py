"""`ibd evaluate --significance`: the p-values a decompose.json carries (from `ibd decompose
--significance`), scored against test_evaluate's two-class world, end to end through the
command: significance.csv, the report section and evaluate.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ibd.cli import main

from .test_evaluate import decomposition_doc, write_explanations, write_world

# harbor's terms (water, sail, grass, sky) and street's (road, car): which beat the null
SIGNIFICANT = {
    "water": True,
    "sail": False,
    "grass": False,
    "sky": True,
    "road": True,
    "car": False,
}


def with_p_values(document: dict) -> dict:
    for cls in document["classes"]:
        for term in cls["concepts"]:
            significant = SIGNIFICANT[term["name"]]
            p = 0.001 if significant else 0.4
            term.update(p_value=p, p_error=0.001, p_adjusted=p, significant=significant)
    document["meta"]["significance"] = {"alpha": 0.05, "correction": "holm"}
    return document


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("significance")
    world = write_world(root)
    (root / "decompose").mkdir()
    (root / "decompose" / "plain.json").write_text(json.dumps(decomposition_doc()))
    tested = with_p_values(decomposition_doc())
    (root / "decompose" / "world_resnet.json").write_text(json.dumps(tested))
    write_explanations(root, world)
    return root


def run(home: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.setenv("IBD_HOME", str(home))
    argv = ["evaluate", "--no-faithfulness", "--counterfactual", "none", "--no-completeness"]
    return main([*argv, "--significance", "--out", str(home / "out"), *extra])


def test_evaluate_scores_the_significant_terms(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(home, monkeypatch) == 0
    out = home / "out"
    with (out / "significance.csv").open(newline="") as handle:
        rows = {(r["scope"], r["name"]): r for r in csv.DictReader(handle)}
    harbor = rows[("class", "harbor")]
    assert (harbor["components"], harbor["significant"]) == ("4", "2")
    # by coefficient: sail 2.0, grass 1.0, water 0.5, sky 0.2; significant: water, sky
    assert harbor["top_all"] == "sail;grass;water" and harbor["top_significant"] == "water;sky"
    assert float(harbor["precision_significant"]) == 1.0  # water and sky both define harbor
    assert float(harbor["precision_all"]) == pytest.approx(2 / 3)
    street = rows[("class", "street")]
    assert (street["components"], street["significant"], street["top_significant"]) == (
        "2",
        "1",
        "road",
    )
    # the fixture's explanations carry no p-values: shown but untested
    ibd = rows[("explanations", "tiny")]
    assert ibd["significant"] == "0" and ibd["share_significant"] == ""
    report = (out / "report.md").read_text()
    assert "## Significance of the concepts" in report and "3 of 6 terms" in report
    document = json.loads((out / "evaluate.json").read_text())
    classes = {c["name"]: c for c in document["significance"]["classes"]}
    assert classes["harbor"]["top_significant"] == ["water", "sky"]


def test_evaluate_significance_without_p_values_is_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = str(home / "decompose" / "plain.json")
    assert run(home, monkeypatch, "--decomposition", plain) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no p-values: run `ibd decompose --significance`" in err[0]
