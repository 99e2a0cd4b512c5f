"""IBD explanations on a hand-built basis and model where the decomposition is known."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ibd.concept_explain import ibd_splitter, splitter_for
from ibd.errors import UserError
from ibd.explain import explain_images
from ibd.models import LoadedModel


def standardise(v: np.ndarray) -> np.ndarray:
    v = v - v.mean()
    return v / np.linalg.norm(v)


# Three standardised concept vectors in R^5 (each has mean 0 and norm 1, as q_c must).
Q = np.stack(
    [
        standardise(np.array(v, dtype=np.float64))
        for v in ([3, -1, 0, 1, 0], [0, 2, -1, 0, 1], [1, 0, 0, -2, 4])
    ]
)
NAMES = ["boat", "water", "sky"]


class TinyGap(nn.Module):
    """1x1 conv 3 -> 5 channels, GAP, linear with w_0 = 2 q_boat + 0.5 q_sky, w_1 = q_water."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU())
        self.fc = nn.Linear(5, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(np.stack([2 * Q[0] + 0.5 * Q[2], Q[1]])))
            self.fc.bias.copy_(torch.tensor([0.3, -0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class TinyNonGap(TinyGap):
    """Same trunk, but the logits are a nonlinear function of the feature map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        return self.fc((a**2).mean(dim=(2, 3)))


def loaded(model: nn.Module) -> LoadedModel:
    return LoadedModel(
        model.eval(),
        "tiny",
        "tiny",
        ["harbor", "beach"],
        "features",
        (6, 6),
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
    )


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    np.savez(
        tmp_path / "basis.npz",
        names=np.array(NAMES),
        categories=np.array(["object"] * 3),
        weight=Q.astype(np.float32),
        bias=np.zeros(3, np.float32),
        q=Q.astype(np.float32),
        ap=np.ones(3, np.float32),
        meta=np.array(json.dumps({"model": "tiny"})),
    )
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def images(root: Path) -> list[str]:
    return [str(root / f"{i}.png") for i in range(4)]


def features_of(model: nn.Module, path: str) -> torch.Tensor:
    array = np.asarray(Image.open(path), dtype=np.float32) / 255
    x = torch.from_numpy(array).permute(2, 0, 1)[None]
    with torch.no_grad():
        return model.features(x)[0]


def test_ibd_contributions_on_a_known_decomposition(files: Path) -> None:
    lm = loaded(TinyGap())
    split, needs_grad = ibd_splitter(lm, files / "basis.npz", None)
    assert not needs_grad
    records, heatmaps = explain_images(
        lm, images(files), "ibd", split, needs_gradients=False, targets=0, progress=False
    )
    q = torch.tensor(Q, dtype=torch.float32)
    for rec in records:
        a_map = features_of(lm.model, rec.image)
        a = a_map.mean(dim=(1, 2))
        expected = {"boat": 2 * float(q[0] @ a), "sky": 0.5 * float(q[2] @ a)}
        got = {c.label: c.contribution for c in rec.components}
        assert got.keys() == expected.keys()
        for label in expected:
            assert got[label] == pytest.approx(expected[label], abs=1e-5)
        contributions = [c.contribution for c in rec.components]
        assert contributions == sorted(contributions, reverse=True)
        # r_0 = 0, so the residual is exactly the bias, and everything sums to the logit
        assert rec.residual == pytest.approx(0.3, abs=1e-5)
        assert sum(contributions) + rec.residual == pytest.approx(rec.score, abs=1e-4)
        for comp in rec.components:
            c = NAMES.index(comp.label)
            expected_map = torch.einsum("d,dhw->hw", q[c], a_map).numpy()
            np.testing.assert_allclose(heatmaps[comp.heatmap], expected_map, atol=1e-5)


def test_ibd_sums_to_the_logit_for_every_class_and_the_residual_is_r_dot_a(files: Path) -> None:
    lm = loaded(TinyGap())
    split, _ = ibd_splitter(lm, files / "basis.npz", None)
    records, _ = explain_images(
        lm, images(files), "ibd", split, needs_gradients=False, targets=1, progress=False
    )
    for rec in records:
        assert [c.label for c in rec.components] == ["water"]
        assert rec.components[0].contribution + rec.residual == pytest.approx(rec.score, abs=1e-4)
        assert rec.residual == pytest.approx(-0.2, abs=1e-5)  # w_1 = q_water exactly


def test_gradient_decomposition_for_a_non_gap_head(files: Path) -> None:
    lm = loaded(TinyNonGap())
    split, needs_grad = ibd_splitter(lm, files / "basis.npz", None)
    assert needs_grad
    records, _ = explain_images(
        lm, images(files), "ibd", split, needs_gradients=True, progress=False
    )
    for rec in records:
        assert rec.components, "the pooled gradient has concept components"
        total = sum(c.contribution for c in rec.components) + rec.residual
        assert total == pytest.approx(rec.score, abs=1e-4)


def test_decomposition_file_is_used_and_checked(files: Path) -> None:
    lm = loaded(TinyGap())
    doc = {
        "classes": [
            {
                "index": 0,
                "name": "harbor",
                "concepts": [{"name": "sky", "index": 2, "coefficient": 1.0}],
                "residual_fraction": 0.5,
            },
            {"index": 1, "name": "beach", "concepts": [], "residual_fraction": 1.0},
        ],
        "meta": {},
    }
    (files / "dec.json").write_text(json.dumps(doc))
    split, _ = ibd_splitter(lm, files / "basis.npz", files / "dec.json")
    records, _ = explain_images(
        lm, images(files)[:1], "ibd", split, needs_gradients=False, targets=0, progress=False
    )
    assert [c.label for c in records[0].components] == ["sky"]
    doc["classes"][0]["concepts"][0]["name"] = "boat"
    (files / "dec.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="another basis"):
        ibd_splitter(lm, files / "basis.npz", files / "dec.json")


def test_missing_inputs_are_clear(files: Path) -> None:
    lm = loaded(TinyGap())
    args = argparse.Namespace(
        basis=str(files / "none.npz"),
        decomposition=None,
        top=7,
        gradient_decomposition=False,
        tally=None,
    )
    with pytest.raises(UserError, match="basis not found"):
        splitter_for("ibd", lm, args)
    args.tally = str(files / "none.csv")
    with pytest.raises(UserError, match="dissection not found"):
        splitter_for("netdissect", lm, args)
