"""Sanity checks (ibd.evaluation.sanity): SSIM and Spearman on hand-computed cases, and the
randomisation tests on a hand-built network whose maps are known: a 1x1 convolution that
copies the red, green and blue planes into three feature channels, ReLU, GAP and a linear head
(class 0 = red - green, class 1 = green - red)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import ibd
from ibd.cli import main
from ibd.dissect import UnitLabel
from ibd.errors import UserError
from ibd.evaluation import sanity as sn
from ibd.explain.maps import normalize, upsample
from ibd.explain.records import Component, Explanation
from ibd.nets.load import save_checkpoint

from .basisfiles import write_basis
from .test_evaluate import write_explanations, write_world

SIZE = 16


class Planted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.ReLU())
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.features[0].weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def planted_images(count: int = 6, seed: int = 0) -> torch.Tensor:
    """Green images with a little seeded noise and a red 6 x 6 square at a seeded place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 3, SIZE, SIZE, generator=g) * 0.2
    x[:, 1] += 0.6
    for n in range(count):
        i, j = torch.randint(0, SIZE - 6, (2,), generator=g).tolist()
        x[n, 0, i : i + 6, j : j + 6] += 1.0
        x[n, 1, i : i + 6, j : j + 6] = 0.0
    return x


def planted_model() -> ibd.Model:
    return ibd.Model.wrap(Planted(), layer="features", labels=["red", "green"], input_size=SIZE)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Tiny tensors: one torch thread (conftest)."""


CAMS = {"cam": ibd.CAM, "gradcam": ibd.GradCAM}


def row(result: sn.Sanity, method: str, test: str, step: int = 0) -> sn.Row:
    found = [r for r in result.rows if (r.method, r.test, r.step) == (method, test, step)]
    assert len(found) == 1
    return found[0]


# ------------------------------------------------------------------------- the measures


def test_ssim_hand_cases() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((20, 20))
    assert sn.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    # two constant maps a, b: (2ab + C1) / (a^2 + b^2 + C1), the structure term C2 / C2
    a, b = np.full((12, 12), 0.5), np.full((12, 12), 0.7)
    assert sn.ssim(a, b) == pytest.approx((0.7 + 1e-4) / (0.74 + 1e-4), rel=1e-12)
    assert sn.ssim(np.zeros((12, 12)), np.ones((12, 12))) == pytest.approx(1e-4 / 1.0001)
    # a constant shift keeps the structure term at 1 and lowers only the luminance term
    shifted = sn.ssim(x * 0.5, x * 0.5 + 0.3)
    assert 0.5 < shifted < 1.0
    # after min-max normalisation (as the sanity checks compare maps) the shift is gone
    both = normalize(torch.tensor(np.stack([x, x + 0.3])))
    assert sn.ssim(both[0], both[1]) == pytest.approx(1.0, abs=1e-6)
    # an inverted map is dissimilar
    assert sn.ssim(x, 1 - x) < 0.0
    # the window is the normalised 11 x 11 Gaussian of sigma 1.5
    w = sn.gaussian_window()
    assert w.shape == (11, 11) and float(w.sum()) == pytest.approx(1.0)
    assert float(w[5, 5] / w[5, 6]) == pytest.approx(math.exp(1 / (2 * 1.5**2)))
    with pytest.raises(ValueError):
        sn.ssim(np.zeros((4, 4)), np.zeros((4, 5)))


def test_spearman_hand_cases() -> None:
    assert sn.spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 400.0]) == pytest.approx(1.0)
    assert sn.spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # 1 - 6 sum d^2 / (n (n^2 - 1)) without ties: ranks (1,2,3,4,5) vs (2,1,4,3,5), sum d^2 = 4
    assert sn.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(1 - 6 * 4 / 120)
    # ties at their average rank: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3): Pearson = sqrt(3)/2
    assert sn.spearman([0.0, 0.0, 5.0], [1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(sn.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    # concept rankings over the union, a missing label counting 0
    a = {"red": 3.0, "green": 1.0, "sky": 2.0}
    b = {"red": 3.0, "green": 2.0}  # sky 0: red 3, green 2, sky 0 vs 3, 1, 2
    assert sn.concept_spearman(a, b) == pytest.approx(sn.spearman([1, 3, 2], [2, 3, 0]))


def test_explained_maps() -> None:
    a, b = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    parts = [Component("sky", 2.0, "0-0", heatmap=a), Component("sea", 1.0, "0-1", heatmap=b)]
    e = Explanation("x", "m", "ibd", 0, "c", 3.5, parts, 0.5, (2, 2))
    got = sn.explained(e)
    # contribution-weighted min-max normalised maps: 2 a / 1 + 1 b / 3
    assert got.heatmap.tolist() == [[2.0, 0.0], [0.0, 1.0]]
    assert got.concepts == {"sky": 2.0, "sea": 1.0}
    none = sn.explained(Explanation("x", "m", "ibd", 0, "c", 3.5, [], 3.5, (2, 2)))
    assert none.heatmap.tolist() == [[0.0, 0.0], [0.0, 0.0]] and none.concepts == {}
    cam = sn.explained(Explanation("x", "m", "cam", 0, "c", 1.0, parts[:1], None, (2, 2)))
    assert torch.equal(cam.heatmap, a.double()) and cam.concepts is None


def test_blocks_and_reinitialise_are_seeded() -> None:
    net = Planted()
    assert sn.blocks(net) == ["fc", "features"]
    one, two = Planted(), Planted()
    state = torch.get_rng_state()
    sn.reinitialise(one, "fc", 7)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is kept
    sn.reinitialise(two, "fc", 7)
    assert torch.equal(one.fc.weight, two.fc.weight)
    assert not torch.equal(one.fc.weight, Planted().fc.weight)
    assert torch.equal(one.features[0].weight, Planted().features[0].weight)
    with pytest.raises(UserError, match="no block named 'head'"):
        sn.reinitialise(net, "head", 0)


# ------------------------------------------------------------------------ the checks


def test_cascading_randomisation_of_the_head() -> None:
    model, images = planted_model(), planted_images()
    result = sn.run_sanity(model, images, CAMS, sn.SanitySettings(seed=3))
    assert result.blocks == ["fc", "features"] and result.images == 6
    for method in CAMS:
        trained = row(result, method, "cascading", 0)
        assert trained.values["spearman_abs"] == 1.0 and trained.values["spearman"] == 1.0
        assert trained.values["ssim"] == pytest.approx(1.0, abs=1e-9)
        assert math.isnan(trained.values["concept_spearman"])
        assert result.passed(trained) is False
    # the head randomised: CAM's map is w'_k . A with the seeded random w' (block 1: seed 3 + 1)
    net = Planted()
    sn.reinitialise(net, "fc", 4)
    features = torch.relu(images)  # the planted layer copies the planes
    predicted = Planted()(images).argmax(1)
    assert predicted.tolist() == [1] * 6  # the green background outweighs the red square
    spearman_abs, ssim = [], []
    for n in range(6):
        old = torch.einsum("d,dhw->hw", torch.tensor([-1.0, 1.0, 0.0]), features[n])
        new = torch.einsum("d,dhw->hw", net.fc.weight[1].detach(), features[n])
        spearman_abs.append(sn.spearman(old.abs(), new.abs()))
        up = normalize(upsample(torch.stack([old, new]), (SIZE, SIZE)))
        ssim.append(sn.ssim(up[0], up[1]))
    head = row(result, "cam", "cascading", 1)
    assert head.block == "fc"
    assert head.values["spearman_abs"] == pytest.approx(np.mean(spearman_abs), abs=1e-6)
    assert head.values["ssim"] == pytest.approx(np.mean(ssim), abs=1e-5)
    assert head.values["ssim"] < 0.9 and head.values["spearman_abs"] < 0.9
    # Grad-CAM on a GAP head is CAM / HW: the same similarities
    grad = row(result, "gradcam", "cascading", 1)
    for m in ("spearman_abs", "spearman", "ssim"):
        assert grad.values[m] == pytest.approx(head.values[m], abs=1e-5)
    # independent randomisation of the top block is the cascade's first step
    alone = row(result, "cam", "independent", 1)
    assert alone.values == pytest.approx(head.values, nan_ok=True)
    # the feature block alone (seed 3 + 2), the trained head kept: w_1 . relu(conv'(x))
    net = Planted()
    sn.reinitialise(net, "features", 5)
    w = torch.tensor([-1.0, 1.0, 0.0])
    expected = []
    with torch.no_grad():
        for n in range(6):
            old = torch.einsum("d,dhw->hw", w, features[n])
            new = torch.einsum("d,dhw->hw", w, net.features(images[n : n + 1])[0])
            expected.append(sn.spearman(old.abs(), new.abs()))
    features_alone = row(result, "cam", "independent", 2)
    assert features_alone.block == "features"
    assert features_alone.values["spearman_abs"] == pytest.approx(np.mean(expected), abs=1e-6)


def test_random_logit_and_random_pair() -> None:
    result = sn.run_sanity(planted_model(), planted_images(), {"cam": ibd.CAM})
    # class 0's map (red - green) is minus class 1's: signed rank correlation -1, |map| 1
    logit = row(result, "cam", "random_logit")
    assert logit.values["spearman"] == pytest.approx(-1.0)
    assert logit.values["spearman_abs"] == pytest.approx(1.0)
    assert logit.values["ssim"] < 0.0
    verdicts = result.passes(logit)
    assert verdicts["spearman"] is True and verdicts["ssim"] is True
    assert verdicts["spearman_abs"] is False  # |map| cannot tell the two classes apart
    pair = row(result, "cam", "random_pair")
    assert pair.values == result.baseline("cam")
    assert result.passed(pair) is None  # the baseline is not judged against itself
    assert -1.0 < pair.values["ssim"] < 0.9
    partner = sn._derangement(6, 0)
    assert sorted(partner) == list(range(6)) and all(p != n for n, p in enumerate(partner))


def test_deterministic_from_the_seed() -> None:
    model, images = planted_model(), planted_images()
    first = sn.run_sanity(model, images, CAMS, sn.SanitySettings(seed=1))
    again = sn.run_sanity(model, images, CAMS, sn.SanitySettings(seed=1))
    other = sn.run_sanity(model, images, CAMS, sn.SanitySettings(seed=2))
    assert sn.table_rows([first]) == sn.table_rows([again])
    assert row(first, "cam", "cascading", 1).values != row(other, "cam", "cascading", 1).values
    # the trained network is left as it was
    assert torch.equal(model.model.fc.weight, Planted().fc.weight)


def test_concept_methods_rank_concepts(tmp_path) -> None:
    basis = tmp_path / "basis.npz"
    # "notred" and "notgreen" (-e_r, -e_g): each class is two concepts, green + notred (class 1)
    q = np.concatenate([np.eye(3), -np.eye(3)[:2]])
    write_basis(basis, q, ["red", "green", "blue", "notred", "notgreen"])
    tally = [UnitLabel(u, name, "colour", 0.5) for u, name in enumerate(["red", "green", "blue"])]
    methods = {
        "ibd": lambda m: ibd.IBD(m, basis),
        "netdissect": lambda m: ibd.NetDissect(m, tally),
    }
    result = sn.run_sanity(planted_model(), planted_images(), methods, sn.SanitySettings(seed=5))
    for method in methods:
        trained = row(result, method, "cascading", 0)
        assert trained.values["concept_spearman"] == pytest.approx(1.0)
        assert trained.values["ssim"] == pytest.approx(1.0, abs=1e-9)
        assert not math.isnan(row(result, method, "cascading", 1).values["concept_spearman"])
    # class 1 = green - red: NetDissect lists green (+), blue (0), red (-); class 0 reverses it
    logit = row(result, "netdissect", "random_logit")
    assert logit.values["concept_spearman"] == pytest.approx(-1.0)
    # a row's verdict is its map measures'; the concept ranking is judged on its own
    for r in result.rows:
        verdicts = result.passes(r)
        maps = [verdicts[m] for m in sn.MAP_MEASURES if verdicts[m] is not None]
        assert result.passed(r) == (all(maps) if maps else None)


def test_outputs(tmp_path) -> None:
    result = sn.run_sanity(planted_model(), planted_images(), CAMS)
    sn.write_table(tmp_path / "sanity.csv", [result])
    lines = (tmp_path / "sanity.csv").read_text().splitlines()
    assert lines[0].split(",") == list(sn.COLUMNS)
    # per method: trained + 2 cascade steps, 2 independent, random logit, random pair
    assert len(lines) == 1 + 2 * 7
    sn.write_figure(tmp_path / "sanity.png", result)
    assert (tmp_path / "sanity.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input() -> None:
    with pytest.raises(UserError, match="margin"):
        sn.run_sanity(planted_model(), planted_images(), CAMS, sn.SanitySettings(margin=-1))
    with pytest.raises(UserError, match="at least two images"):
        sn.run_sanity(planted_model(), planted_images(1), CAMS)


# ------------------------------------------------------------------ `ibd evaluate --sanity`


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_evaluate's two-image world and explanations, a resnet18 'tiny' and a basis."""
    root = tmp_path_factory.mktemp("sanity")
    world = write_world(root)
    write_explanations(root, world)
    torch.manual_seed(0)
    save_checkpoint(
        root / "models" / "tiny.pt",
        torchvision.models.resnet18(num_classes=2),
        arch="resnet18",
        classes=["harbor", "street"],
        layer="layer4",
        input_size=(64, 64),  # 2 x 2 maps at layer4
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    (root / "basis").mkdir()
    q = np.random.default_rng(0).standard_normal((4, 512))
    write_basis(root / "basis" / "tiny.npz", q, ["sky", "water", "boat", "road"], "layer4")
    return root


def test_evaluate_sanity_writes_table_figure_and_report(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IBD_HOME", str(home))
    out = home / "with"
    args = ["evaluate", "--no-faithfulness", "--counterfactual", "none", "--out", str(out)]
    assert main([*args, "--sanity", "--sanity-images", "2"]) == 0
    printed = capsys.readouterr().out
    assert "## Sanity checks: tiny with random weights" in printed
    assert "no netdissect checks" in printed  # no tally for tiny
    with (out / "sanity.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # resnet18's stages are Sequentials of two BasicBlocks: each block is a step
    stages = [f"layer{s}.{b}" for s in (4, 3, 2, 1) for b in (1, 0)]
    blocks = ["fc", *stages, "bn1", "conv1"]
    # per method (cam, ibd): trained + 11 cascade steps, 11 single blocks, random logit and pair
    assert len(rows) == 2 * 25 and {r["method"] for r in rows} == {"cam", "ibd"}
    cascade = [r for r in rows if r["method"] == "cam" and r["test"] == "cascading"]
    assert [r["block"] for r in cascade] == ["", *blocks]
    assert float(cascade[0]["spearman_abs"]) == 1.0 and float(cascade[0]["ssim"]) == 1.0
    assert (out / "sanity_tiny.png").read_bytes()[:4] == b"\x89PNG"
    document = json.loads((out / "evaluate.json").read_text())
    assert document["sanity"][0]["blocks"] == blocks
    assert len(document["sanity"][0]["rows"]) == 50
    # without --sanity: no sanity file, no sanity key
    plain = home / "without"
    assert main([*args[:-1], str(plain)]) == 0
    assert not (plain / "sanity.csv").exists()
    assert "sanity" not in json.loads((plain / "evaluate.json").read_text())


def test_evaluate_sanity_bad_flags(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBD_HOME", str(home))
    out = str(home / "bad")
    assert main(["evaluate", "--sanity", "--sanity-images", "1", "--out", out]) == 2
    assert main(["evaluate", "--sanity", "--sanity-margin", "-0.5", "--out", out]) == 2
