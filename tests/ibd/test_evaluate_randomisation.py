"""`ibd evaluate --sanity --data-randomisation MODEL=SHUFFLED` end to end on test_evaluate's
two-image world: the pair's table, figure, report section and evaluate.json; a model compared
with itself is identical and fails; the random pair is the sanity checks' own; bad flags."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from ibd.cli import main
from ibd.nets.load import save_checkpoint

from .basisfiles import write_basis
from .test_evaluate import write_explanations, write_world

SPEC = {
    "arch": "resnet18",
    "classes": ["harbor", "street"],
    "layer": "layer4",
    "input_size": (64, 64),
    "mean": (0.5, 0.5, 0.5),
    "std": (0.25, 0.25, 0.25),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world and explanations of model 'tiny', its network and basis, and 'shuffled': another
    resnet18 (other random weights) with its own basis."""
    root = tmp_path_factory.mktemp("randomisation")
    world = write_world(root)
    write_explanations(root, world)
    (root / "basis").mkdir()
    names = ["sky", "water", "boat", "road"]
    for seed, name in ((0, "tiny"), (1, "shuffled")):
        torch.manual_seed(seed)
        save_checkpoint(
            root / "models" / f"{name}.pt", torchvision.models.resnet18(num_classes=2), **SPEC
        )
        q = np.random.default_rng(seed).standard_normal((4, 512))
        write_basis(root / "basis" / f"{name}.npz", q, names, "layer4")
    return root


def run(home: Path, monkeypatch: pytest.MonkeyPatch, out: str, *extra: str) -> int:
    monkeypatch.setenv("IBD_HOME", str(home))
    argv = ["evaluate", "--no-faithfulness", "--counterfactual", "none", "--no-completeness"]
    return main([*argv, "--sanity-images", "2", "--out", str(home / out), *extra])


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_data_randomisation_through_evaluate(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(home, monkeypatch, "pair", "--sanity", "--data-randomisation", "tiny=shuffled") == 0
    out = home / "pair"
    found = {(r["method"], r["test"]): r for r in rows(out / "data_randomisation_tiny.csv")}
    assert set(found) == {
        (m, t) for m in ("cam", "ibd") for t in ("data_randomisation", "random_pair")
    }
    assert {r["randomised_model"] for r in found.values()} == {"shuffled"}
    # the random pair is the trained model's own, as in the model-randomisation table
    sanity = {(r["method"], r["test"]): r for r in rows(out / "sanity.csv")}
    for method in ("cam", "ibd"):
        ours, theirs = found[(method, "random_pair")], sanity[(method, "random_pair")]
        assert float(ours["spearman_abs"]) == pytest.approx(float(theirs["spearman_abs"]))
    # two different networks: their class maps are not the same
    assert float(found[("cam", "data_randomisation")]["spearman_abs"]) < 0.99
    assert (out / "data_randomisation_tiny.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Data randomisation: tiny against shuffled" in capsys.readouterr().out
    document = json.loads((out / "evaluate.json").read_text())
    (pair,) = document["data_randomisation"]
    assert (pair["model"], pair["randomised_model"], len(pair["rows"])) == ("tiny", "shuffled", 4)


def test_a_model_against_itself_is_identical_and_fails(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = str(home / "models" / "tiny.pt")  # a path works as well as a name
    flags = ["--sanity", "--data-randomisation", f"tiny={weights}"]
    assert run(home, monkeypatch, "self", *flags) == 0
    found = {
        (r["method"], r["test"]): r for r in rows(home / "self" / "data_randomisation_tiny.csv")
    }
    for method in ("cam", "ibd"):
        same = found[(method, "data_randomisation")]
        assert [float(same[m]) for m in ("spearman_abs", "spearman", "ssim")] == pytest.approx(
            [1.0, 1.0, 1.0]
        )
    # IBD's two images differ (random pair Spearman of |map| 0 on 2 x 2 maps), so 1.0 fails;
    # this untrained network's class maps of the two images are alike, so CAM's pair is 1 too
    ibd = found[("ibd", "data_randomisation")]
    assert float(ibd["random_pair_spearman_abs"]) < 0.9 and ibd["passes"] == "no"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-randomisation", "tiny=shuffled"], "add --sanity"),
        (["--sanity", "--data-randomisation", "tiny"], "takes MODEL=SHUFFLED, got 'tiny'"),
        (["--sanity", "--data-randomisation", "tiny=nowhere"], "no checkpoint"),
    ],
)
def test_bad_data_randomisation_flags(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert run(home, monkeypatch, "bad", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
