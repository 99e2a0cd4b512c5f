"""Completeness: the share of the logit from a hand-written explanations.json, the projection
onto the named concepts' span, and Yeh's completeness score on features and heads whose
predictions are known, then on a small network with a basis file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ibd.errors import UserError
from ibd.evaluation import completeness as cp
from ibd.nets.load import LoadedModel

from .basisfiles import write_basis


def write_records(directory: Path, records: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "explanations.json").write_text(json.dumps(records))
    np.savez(directory / "heatmaps.npz", h=np.zeros((2, 2), dtype=np.float32))


def record(method: str, image: str, k: int, score: float, contributions: list[float]) -> dict:
    return {
        "image": image,
        "model": "m",
        "method": method,
        "class_index": k,
        "class_name": f"c{k}",
        "score": score,
        "components": [{"label": "x", "contribution": c, "heatmap": "h"} for c in contributions],
        "residual": None if method == "cam" else score - sum(contributions),
        "heatmap_shape": [2, 2],
    }


def test_share_of_the_logit_from_a_hand_written_file(tmp_path: Path) -> None:
    """Logit 2 with contributions 0.5 and 0.3: share 0.4; logit -1 with 0.5: -0.5; logit 0:
    undefined; a CAM record has no residual and no share."""
    (tmp_path / "a.png").touch()
    (tmp_path / "b.png").touch()
    write_records(
        tmp_path / "ibd",
        [
            record("ibd", str(tmp_path / "a.png"), 0, 2.0, [0.5, 0.3]),
            record("ibd", str(tmp_path / "b.png"), 0, -1.0, [0.5]),
            record("ibd", str(tmp_path / "a.png"), 1, 0.0, [0.5]),
        ],
    )
    shares = cp.read_shares(tmp_path / "ibd", None)
    a = shares[("m", "ibd", (tmp_path / "a.png").resolve(), 0)]
    assert (a.logit, a.named, a.share) == (2.0, pytest.approx(0.8), pytest.approx(0.4))
    assert shares[("m", "ibd", (tmp_path / "b.png").resolve(), 0)].share == -0.5
    assert math.isnan(shares[("m", "ibd", (tmp_path / "a.png").resolve(), 1)].share)
    assert len(cp.read_shares(tmp_path / "ibd", 1)) == 1
    write_records(tmp_path / "cam", [record("cam", str(tmp_path / "a.png"), 0, 2.0, [2.0])])
    assert cp.read_shares(tmp_path / "cam", None) == {}
    broken = record("ibd", str(tmp_path / "a.png"), 0, 2.0, [0.5])
    del broken["score"]
    write_records(tmp_path / "bad", [broken])
    with pytest.raises(UserError, match="record 0"):
        cp.read_shares(tmp_path / "bad", None)

    rows = cp.class_shares(
        [("m", "ibd", "c0", share) for share in list(shares.values())[:2]]
        + [("m", "ibd", "c1", cp.LogitShare(0.0, 0.5))]
    )
    c0, c1 = rows
    # mean of 0.4 and -0.5; pooled (0.8 + 0.5) / (2 - 1)
    assert (c0.explanations, c0.share, c0.pooled_share) == (2, pytest.approx(-0.05), 1.3)
    assert math.isnan(c1.share) and math.isnan(c1.pooled_share)


def test_projector() -> None:
    vectors = np.array([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 3.0]])  # a dependent row
    p = cp.projector(vectors)
    np.testing.assert_allclose(p @ p, p, atol=1e-12)
    np.testing.assert_allclose(p @ np.array([1.0, -1.0, 5.0]), [0.0, 0.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(cp.projector(np.zeros((0, 3))), np.zeros((3, 3)))


# two classes in D = 3: w_0 = e1 + e2, w_1 = e1 - e2, b = (0.1, 0). Class 1 wins when
# w_1 . a > w_0 . a + 0.1, that is a_2 < -0.05: the labels are the head's own predictions.
WEIGHT = np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0]])
BIAS = np.array([0.1, 0.0])
POOLED = np.array([[1.0, 2.0, 5.0], [2.0, -1.0, -3.0], [0.0, 3.0, 1.0], [3.0, -1.0, 0.0]])
LABELS = [0, 1, 0, 1]


# the four images twice: 8 of 8 right is above chance (0.5) by the binomial test (p 0.004),
# 4 of 4 would not be (p 0.0625)
TWICE = (np.tile(POOLED, (2, 1)), np.tile(LABELS, 2))


def test_completeness_is_one_when_the_concepts_span_the_class_vectors() -> None:
    assert ((POOLED @ WEIGHT.T + BIAS).argmax(axis=1) == LABELS).all()
    score = cp.completeness_score(*TWICE, WEIGHT, BIAS, np.array([[1.0, 0, 0], [0, 1, 0]]))
    assert (score.accuracy, score.projected_accuracy, score.random_accuracy) == (1.0, 1.0, 0.5)
    assert score.eta == 1.0


def test_completeness_falls_when_the_concepts_miss_the_class_vectors() -> None:
    """e1 named: P a = (a_1, 0, 0), logits (a_1 + 0.1, a_1): class 0 always, half the images
    right, eta (0.5 - 0.5) / (1 - 0.5) = 0. e3 (orthogonal to both w_k): the bias decides, also
    0. e1 + e2: logits (a_1 + a_2 + 0.1, 0): class 0 always here, 0."""
    for named in ([[1.0, 0, 0]], [[0, 0, 1.0]], [[1.0, 1.0, 0]]):
        score = cp.completeness_score(*TWICE, WEIGHT, BIAS, np.array(named))
        assert (score.projected_accuracy, score.eta) == (0.5, 0.0)
    # e2 alone misses both w_k, but the logits differ by 2 a_2 + 0.1 with or without the
    # projection: every prediction is kept, eta 1 (completeness is about the predictions)
    score = cp.completeness_score(*TWICE, WEIGHT, BIAS, np.array([[0, 1.0, 0]]))
    assert score.eta == 1.0
    # u = (0, 3, -1): P a = t (0, 3, -1) with t = (3 a_2 - a_3) / 10, logits (3t + 0.1, -3t),
    # class 1 iff t < -1/60. t = 0.1, 0, 0.8, -0.3: image 1 (t = 0) is lost, 3 of 4 right,
    # eta (0.75 - 0.5) / (1 - 0.5) = 0.5
    score = cp.completeness_score(*TWICE, WEIGHT, BIAS, np.array([[0, 3.0, -1.0]]))
    assert score.projected_accuracy == 0.75 and score.eta == pytest.approx(0.5)
    # a model within sampling noise of chance: undefined (4 of 4 right against 0.5: p 0.0625;
    # 30 of 300 against 1/12, as the shuffled-label role: p 0.17)
    assert math.isnan(cp.completeness_score(POOLED, LABELS, WEIGHT, BIAS, np.eye(3)).eta)
    assert not cp.above_chance(30 / 300, 300, 1 / 12) and cp.above_chance(40 / 300, 300, 1 / 12)
    # a model no better than chance: undefined
    wrong = cp.completeness_score(POOLED, [1, 0, 1, 0], WEIGHT, BIAS, np.eye(3))
    assert wrong.accuracy == 0.0 and math.isnan(wrong.eta)
    with pytest.raises(ValueError):
        cp.completeness_score(POOLED, [0], WEIGHT, BIAS, np.eye(3))


class ColourNet(nn.Module):
    """features: identity 1 x 1 convolution on the 3 colour channels (A = x); then GAP and a
    linear head (`gap=True`), or max pooling, which is not linear in GAP(A)."""

    def __init__(self, weight: np.ndarray, gap: bool = True) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 3, kernel_size=1, bias=False)
        self.fc = nn.Linear(3, 2)
        self.gap = gap
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
            self.fc.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        pooled = a.mean(dim=(2, 3)) if self.gap else a.amax(dim=(2, 3))
        return self.fc(pooled)


def colour_images(root: Path) -> list[Path]:
    """Four flat 4 x 4 images (red, green, orange, chartreuse); with mean 0 and std 1 their
    pooled features are their colours / 255."""
    colours = [(255, 0, 0), (0, 255, 0), (255, 128, 0), (128, 255, 0)]
    paths = []
    for n, colour in enumerate(colours):
        path = root / f"{n}.png"
        Image.new("RGB", (4, 4), colour).save(path)
        paths.append(path)
    return paths


def loaded(net: nn.Module) -> LoadedModel:
    return LoadedModel(
        net, "colours", "custom", ["a", "b"], "features", (4, 4), (0, 0, 0), (1, 1, 1)
    )


def test_model_completeness_reads_the_basis_and_decomposes_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Head w_a = red - green, w_b = green - red: red and orange are a, green and chartreuse
    b. A basis that holds w_a and w_b names both: eta 1. A basis of blue alone names nothing
    (its vector is orthogonal to both w_k, so nnls gives it no positive coefficient): the
    projected logits are all 0, every image a tie read as a, right for 2 of 4: eta 0."""
    monkeypatch.setenv("IBD_HOME", str(tmp_path / "home"))
    weight = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]])
    images = colour_images(tmp_path)
    labels = [0, 1, 0, 1]
    write_basis(tmp_path / "span.npz", np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]))
    write_basis(tmp_path / "blue.npz", np.array([[0.0, 0.0, 1.0]]))
    net = loaded(ColourNet(weight))
    features = cp.pooled_features(net, images, 3)
    np.testing.assert_allclose(features[2], [1.0, 128 / 255, 0.0], atol=1e-6)

    # each image twice: 8 of 8 right is above chance by the binomial test, 4 of 4 is not
    images, labels = images * 2, labels * 2
    found = cp.model_completeness(net, images, labels, cp.CompletenessInputs(tmp_path / "span.npz"))
    assert found.note is None and found.accuracy == 1.0 and found.eta == pytest.approx(1.0)
    assert found.concepts == ("concept0", "concept1") and found.source.startswith("made here")
    blue = cp.model_completeness(net, images, labels, cp.CompletenessInputs(tmp_path / "blue.npz"))
    assert blue.concepts == () and blue.projected_accuracy == 0.5 and blue.eta == 0.0

    missing = cp.model_completeness(net, images, labels, cp.CompletenessInputs())
    assert math.isnan(missing.eta) and "no basis" in (missing.note or "")
    maxed = loaded(ColourNet(weight, gap=False))
    not_gap = cp.model_completeness(
        maxed, images, labels, cp.CompletenessInputs(tmp_path / "span.npz")
    )
    assert math.isnan(not_gap.eta) and "no GAP -> linear head" in (not_gap.note or "")
