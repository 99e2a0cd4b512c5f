"""`ibd evaluate` end to end with the measures beside the deletion / insertion curves: ROAD,
Average Drop / Increase in Confidence, the share of the logit and Yeh's completeness score, on
test_evaluate's two-image world, with a resnet18 whose head is set so that it classifies both
images right and a basis that holds its class vectors (so the projection keeps every prediction;
the completeness score itself is n/a here: 2 of 2 right is not above chance by the binomial test,
tests/ibd/test_completeness.py checks its values)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from ibd.cli import main
from ibd.evaluation.completeness import pooled_features
from ibd.nets.load import LoadedModel, save_checkpoint

from .basisfiles import write_basis
from .test_evaluate import write_explanations, write_world

CLASSES = ["harbor", "street"]
NEW_SUMMARY = [
    "road_morf",
    "road_lerf",
    "road_morf_top1",
    "road_lerf_top1",
    "average_drop",
    "increase_in_confidence",
    "logit_share",
]
NEW_EXPLANATION = [
    "road_morf",
    "road_lerf",
    "road_morf_top1",
    "road_lerf_top1",
    "confidence",
    "explanation_map_confidence",
    "drop_in_confidence",
    "increase_in_confidence",
    "logit",
    "named_contribution",
    "logit_share",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The head's class vectors are d and -d, d = GAP(a) - GAP(b) of the two images, so a is
    harbor and b street whenever GAP(a) . GAP(b) is below both squared norms (checked)."""
    root = tmp_path_factory.mktemp("measures")
    world = write_world(root)
    write_explanations(root, world)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=2)
    spec = {"layer": "layer4", "input_size": (32, 32), "mean": (0.5,) * 3, "std": (0.25,) * 3}
    loaded = LoadedModel(net, "tiny", "resnet18", CLASSES, **spec)
    pooled = pooled_features(loaded, [world / "images" / f"{n}.png" for n in "ab"], 2)
    d = pooled[0] - pooled[1]
    assert d @ pooled[0] > 0 > d @ pooled[1]
    with torch.no_grad():
        net.fc.weight.copy_(torch.as_tensor(np.stack([d, -d]), dtype=torch.float32))
        net.fc.bias.zero_()
    save_checkpoint(root / "models" / "tiny.pt", net, arch="resnet18", classes=CLASSES, **spec)
    other = np.random.default_rng(0).standard_normal(512)
    (root / "basis").mkdir()
    write_basis(root / "basis" / "tiny.npz", np.stack([d, -d, other]), ["boat", "car", "sky"])
    return root


def rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def run(home: Path, monkeypatch: pytest.MonkeyPatch, name: str, *extra: str) -> Path:
    monkeypatch.setenv("IBD_HOME", str(home))
    out = home / name
    argv = ["evaluate", "--steps", "4", "--road-percentages", "25,50", "--out", str(out)]
    assert main([*argv, *extra]) == 0
    return out


def finite(value: str) -> bool:
    return value != "" and math.isfinite(float(value))


@pytest.mark.slow
def test_evaluate_writes_road_confidence_and_completeness(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run(home, monkeypatch, "all")
    header, summary = rows(out / "summary.csv")
    assert header[-len(NEW_SUMMARY) :] == NEW_SUMMARY
    assert header[:3] == ["model", "method", "explanations"]
    by_method = {r["method"]: r for r in summary}
    for method, row in by_method.items():
        assert all(finite(row[c]) for c in NEW_SUMMARY[:-1]), method
        assert (
            0 <= float(row["road_morf"]) <= 1 and 0 <= float(row["increase_in_confidence"]) <= 100
        )
    # the records' contributions are 1.0 and 0.5 of a logit 1.5 (ibd on a), 1.0 of 1.5 otherwise
    assert float(by_method["ibd"]["logit_share"]) == pytest.approx((1 + 2 / 3) / 2)
    assert float(by_method["netdissect"]["logit_share"]) == pytest.approx(2 / 3)
    assert by_method["cam"]["logit_share"] == "" and by_method["random"]["logit_share"] == ""

    header, explained = rows(out / "explanations.csv")
    assert header[-len(NEW_EXPLANATION) :] == NEW_EXPLANATION
    assert header.index("cf_mean_effect") == len(header) - len(NEW_EXPLANATION) - 1
    for row in explained:
        assert all(finite(row[c]) for c in NEW_EXPLANATION[:7])
        assert row["increase_in_confidence"] in ("True", "False")
        drop = max(0.0, float(row["confidence"]) - float(row["explanation_map_confidence"]))
        assert float(row["drop_in_confidence"]) == pytest.approx(
            drop / (float(row["confidence"]) + 1e-7) * 100, rel=1e-6
        )
    _, road = rows(out / "road.csv")
    assert [(r["method"], r["percentage"]) for r in road if r["method"] in ("ibd", "cam")] == [
        ("cam", "25"),
        ("cam", "50"),
        ("ibd", "25"),
        ("ibd", "50"),
    ]
    assert all(finite(r[c]) for r in road for c in ("morf", "lerf", "morf_top1", "lerf_top1"))

    _, shares = rows(out / "logit_shares.csv")
    ibd = {r["class"]: float(r["share"]) for r in shares if r["method"] == "ibd"}
    assert ibd == {"harbor": pytest.approx(1.0), "street": pytest.approx(2 / 3)}
    _, complete = rows(out / "completeness.csv")
    (tiny,) = complete
    assert (float(tiny["accuracy"]), float(tiny["projected_accuracy"])) == (1.0, 1.0)
    assert tiny["completeness"] == "" and "not above chance" in tiny["note"]
    assert tiny["named_concepts"] == "boat;car"

    document = json.loads((out / "evaluate.json").read_text())
    assert document["settings"]["road_percentages"] == [25, 50]
    assert document["completeness"]["models"][0]["projected_accuracy"] == 1.0
    assert {e["method"] for e in document["explanations"]} == set(by_method)
    assert all("road_morf" in e for e in document["explanations"])
    report = (out / "report.md").read_text()
    assert "## Faithfulness to the model" in report and "| ROAD MoRF | ROAD LeRF |" in report
    assert "## Completeness of the named concepts" in report


@pytest.mark.slow
def test_evaluate_without_road_or_completeness(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = run(home, monkeypatch, "none", "--no-road", "--no-completeness")
    _, summary = rows(out / "summary.csv")
    assert all(r["road_morf"] == "" and finite(r["average_drop"]) for r in summary)
    assert not (out / "road.csv").exists() and not (out / "completeness.csv").exists()
    assert (out / "logit_shares.csv").exists()  # read from the files: always
    assert json.loads((out / "evaluate.json").read_text())["settings"]["road_percentages"] is None
    # another basis, without the class vectors: the completeness score is reported lower
    write_basis(home / "other.npz", np.random.default_rng(1).standard_normal((3, 512)))
    out = run(home, monkeypatch, "other", "--no-faithfulness", "--basis", str(home / "other.npz"))
    _, (tiny,) = rows(out / "completeness.csv")
    assert tiny["named_concepts"] == "concept0;concept1;concept2"
    assert float(tiny["projected_accuracy"]) < 1.0 and tiny["completeness"] == ""


@pytest.mark.slow
def test_faithfulness_limit_measures_the_first_explanations_of_each_method(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run(home, monkeypatch, "none", "--no-road", "--faithfulness-limit", "1")
    _, explained = rows(out / "explanations.csv")
    measured: dict[str, list[str]] = {}
    for row in explained:
        if finite(row["deletion_auc"]):
            measured.setdefault(row["method"], []).append(row["image"])
    methods = {row["method"] for row in explained}
    assert set(measured) == methods and all(len(v) == 1 for v in measured.values())
    assert (
        "Measured on the first 1 explanations of each model and method"
        in (out / "report.md").read_text()
    )
    first = {}
    for row in explained:
        first.setdefault(row["method"], row["image"])
    assert {m: v[0] for m, v in measured.items()} == first  # the first one, in file order


def test_first_per_method_keeps_order_and_counts() -> None:
    from ibd.evaluation.pipeline import _first_per_method

    class Fake:
        def __init__(self, method: str) -> None:
            self.method = method

    items = [Fake(m) for m in ("a", "b", "a", "a", "b", "c")]
    assert _first_per_method(range(6), items, 2) == [0, 1, 2, 4, 5]
    assert _first_per_method([2, 3, 5], items, 1) == [2, 5]
    assert _first_per_method([4, 0], items, None) == [4, 0]
