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

from ibd.commands.explain import explainer_for
from ibd.decomposition import solve
from ibd.errors import UserError
from ibd.explain.basis_decomposition import IBD
from ibd.explain.netdissect import NetDissect
from ibd.nets.load import LoadedModel


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
    explainer = IBD(lm, files / "basis.npz")
    assert not explainer.needs_gradients
    records = explainer(images(files), targets=0)
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
            np.testing.assert_allclose(comp.heatmap.numpy(), expected_map, atol=1e-5)


def test_ibd_sums_to_the_logit_for_every_class_and_the_residual_is_r_dot_a(files: Path) -> None:
    lm = loaded(TinyGap())
    records = IBD(lm, files / "basis.npz")(images(files), targets=1)
    for rec in records:
        assert [c.label for c in rec.components] == ["water"]
        assert rec.components[0].contribution + rec.residual == pytest.approx(rec.score, abs=1e-4)
        assert rec.residual == pytest.approx(-0.2, abs=1e-5)  # w_1 = q_water exactly


def test_gradient_decomposition_for_a_non_gap_head(files: Path) -> None:
    lm = loaded(TinyNonGap())
    explainer = IBD(lm, files / "basis.npz")
    assert explainer.needs_gradients
    records = explainer(images(files))
    q = torch.tensor(Q, dtype=torch.float32)
    for rec in records:
        # h = fc(mean A^2): dh/dA_ij = 2 w_k A_ij / HW, so w_k(A) = 2 w_k * mean(A) / HW
        a_map = features_of(lm.model, rec.image)
        w_k = lm.model.fc.weight.detach()[rec.class_index]
        pooled_grad = (2 * w_k * a_map.mean(dim=(1, 2)) / 36).double().numpy()
        dec = solve(Q, pooled_grad[None])
        expected = {NAMES[c]: s * float(q[c] @ a_map.sum(dim=(1, 2))) for c, s in dec.terms(0)}
        got = {c.label: c.contribution for c in rec.components}
        assert got.keys() == expected.keys() and got
        for label in expected:
            assert got[label] == pytest.approx(expected[label], rel=1e-4, abs=1e-6)
            comp = next(c for c in rec.components if c.label == label)
            expected_map = torch.einsum("d,dhw->hw", q[NAMES.index(label)], a_map).numpy()
            np.testing.assert_allclose(comp.heatmap.numpy(), expected_map, atol=1e-5)
        total = sum(c.contribution for c in rec.components) + rec.residual
        assert total == pytest.approx(rec.score, abs=1e-4)


def test_gradient_decomposition_of_a_gap_model_equals_the_class_decomposition(
    files: Path,
) -> None:
    """On a GAP network w_k(A) = w_k / HW: eq. 12's contributions are exactly eq. 9's."""
    lm = loaded(TinyGap())
    plain = IBD(lm, files / "basis.npz")
    per_image = IBD(lm, files / "basis.npz", gradient=True)
    assert per_image.needs_gradients and not plain.needs_gradients
    a, b = plain(images(files)), per_image(images(files))
    for x, y in zip(a, b, strict=True):
        assert [c.label for c in x.components] == [c.label for c in y.components]
        for cx, cy in zip(x.components, y.components, strict=True):
            assert cy.contribution == pytest.approx(cx.contribution, rel=1e-4, abs=1e-6)
        assert y.residual == pytest.approx(x.residual, abs=1e-4)


class TinyFlatHead(TinyGap):
    """Same 5-channel trunk, then flatten (5 x 6 x 6 = 180 inputs) and a linear layer, as
    AlexNet's and VGG's fc heads: the classifier's input is not the channel count."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(180, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def test_a_flattening_head_takes_a_basis_of_the_channel_count(files: Path) -> None:
    lm = loaded(TinyFlatHead())
    explainer = IBD(lm, files / "basis.npz")
    assert explainer.needs_gradients
    for rec in explainer(images(files)):
        total = sum(c.contribution for c in rec.components) + rec.residual
        assert total == pytest.approx(rec.score, abs=1e-4)
    (files / "dec.json").write_text("{}")
    with pytest.raises(UserError, match="pooled gradient .paper eq. 12.: drop it"):
        IBD(lm, files / "basis.npz", files / "dec.json")


class TinyConvHead(TinyGap):
    """Same trunk; the classifier is a 1x1 convolution before GAP, as SqueezeNet's: no
    nn.Linear anywhere. Then h_k = mean_ij (v_k . A_ij) + c_k, so w_k(A) = v_k / HW exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(5, 2, 1)
        with torch.no_grad():
            self.head.weight.copy_(self.fc.weight[:, :, None, None])
            self.head.bias.copy_(self.fc.bias)
        del self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).mean(dim=(2, 3))


def test_a_head_without_nn_linear_takes_the_gradient_route(files: Path) -> None:
    """It used to be refused ("the model has no nn.Linear classifier layer") although eq. 12
    needs only gradients. This head computes exactly TinyGap's logits, so the explanations
    must be TinyGap's (eq. 12 on a GAP-equivalent head reproduces eq. 9)."""
    lm, reference = loaded(TinyConvHead()), loaded(TinyGap())
    explainer = IBD(lm, files / "basis.npz")
    assert explainer.needs_gradients
    got = explainer(images(files))
    want = IBD(reference, files / "basis.npz")(images(files))
    units = tally(files / "tally.csv", [1, 2, 3, 4, 5])
    dissect = NetDissect(lm, units, top=3)
    assert dissect.needs_gradients
    nd = dissect(images(files))
    nd_want = NetDissect(reference, units, top=3)(images(files))
    for x, y in [*zip(got, want, strict=True), *zip(nd, nd_want, strict=True)]:
        assert x.score == pytest.approx(y.score, abs=1e-5)
        assert [c.label for c in x.components] == [c.label for c in y.components]
        for cx, cy in zip(x.components, y.components, strict=True):
            assert cx.contribution == pytest.approx(cy.contribution, rel=1e-4, abs=1e-6)
        assert x.residual == pytest.approx(y.residual, abs=1e-4)


def tally(path: Path, units: list[int]) -> Path:
    rows = "".join(f"{u},object,concept{u},0.{u}\n" for u in units)
    path.write_text("unit,category,label,score\n" + rows)
    return path


def test_netdissect_ranks_units_by_w_ku_a_u(files: Path) -> None:
    lm = loaded(TinyGap())
    explainer = NetDissect(lm, tally(files / "tally.csv", [1, 2, 3, 4, 5]), top=3)
    assert not explainer.needs_gradients
    records = explainer(images(files), targets=0)
    w_0 = lm.model.fc.weight.detach()[0]
    for rec in records:
        a_map = features_of(lm.model, rec.image)
        unit_terms = (w_0 * a_map.mean(dim=(1, 2))).tolist()
        best = sorted(range(5), key=lambda u: -unit_terms[u])[:3]
        assert [c.label for c in rec.components] == [f"concept{u + 1}" for u in best]
        for comp, u in zip(rec.components, best, strict=True):
            assert comp.contribution == pytest.approx(unit_terms[u], abs=1e-5)
            assert comp.extra["unit"] == u
            np.testing.assert_allclose(comp.heatmap.numpy(), a_map[u].numpy(), atol=1e-6)
        assert rec.residual == pytest.approx(rec.score - sum(unit_terms[u] for u in best), abs=1e-4)


def test_netdissect_refuses_a_tally_of_other_units(files: Path) -> None:
    lm = loaded(TinyGap())
    with pytest.raises(UserError, match="unit 1 is not in it"):
        NetDissect(lm, tally(files / "gap.csv", [2, 3, 4, 5, 6]))
    with pytest.raises(UserError, match="unit 3 is not in it"):
        NetDissect(lm, tally(files / "short.csv", [1, 2, 4, 5]))


def dec_doc(sky: float = 1.0) -> dict:
    """A decompose.json of TinyGap over Q: class 0 as `sky` x q_sky, class 1 with no concepts."""
    w_0 = 2 * Q[0] + 0.5 * Q[2]
    r_0 = w_0 - sky * Q[2]
    return {
        "classes": [
            {
                "index": 0,
                "name": "harbor",
                "concepts": [{"name": "sky", "index": 2, "coefficient": sky}],
                "residual_fraction": float(r_0 @ r_0 / (w_0 @ w_0)),
            },
            {"index": 1, "name": "beach", "concepts": [], "residual_fraction": 1.0},
        ],
        "meta": {},
    }


def test_decomposition_file_is_used_and_checked(files: Path) -> None:
    lm = loaded(TinyGap())
    doc = dec_doc()
    (files / "dec.json").write_text(json.dumps(doc))
    records = IBD(lm, files / "basis.npz", files / "dec.json")(images(files)[:1], targets=0)
    assert [c.label for c in records[0].components] == ["sky"]
    cases = [
        ("another basis", lambda d: d["classes"][0]["concepts"][0].update(name="boat")),
        ("another model", lambda d: d["classes"][1].update(name="forest")),
        ("decomposes 1 classes", lambda d: d["classes"].pop()),
        ("not a decompose.json", lambda d: d["classes"][0].pop("concepts")),
        ("not a decompose.json", lambda d: d["classes"][0]["concepts"][0].pop("coefficient")),
        # the file of another model's weights: right names, wrong residual
        ("rerun `ibd decompose`", lambda d: d["classes"][0].update(residual_fraction=0.5)),
        # NaN compares false with everything: it used to pass the residual check above
        ("NaN or infinite", lambda d: d["classes"][0].update(residual_fraction=float("nan"))),
        ("NaN or infinite", lambda d: d["classes"][0]["concepts"][0].update(coefficient=1e999)),
    ]
    for message, change in cases:
        bad = dec_doc()
        change(bad)
        (files / "dec.json").write_text(json.dumps(bad))
        with pytest.raises(UserError, match=message):
            IBD(lm, files / "basis.npz", files / "dec.json")
    with pytest.raises(UserError, match="cannot read decomposition"):
        IBD(lm, files / "basis.npz", files)  # a directory


def test_missing_inputs_are_clear(files: Path) -> None:
    lm = loaded(TinyGap())
    args = argparse.Namespace(
        method="ibd",
        basis=str(files / "none.npz"),
        decomposition=None,
        top=7,
        gradient_decomposition=False,
        tally=None,
    )
    with pytest.raises(UserError, match="basis not found"):
        explainer_for(args, lm)
    args.method, args.tally = "netdissect", str(files / "none.csv")
    with pytest.raises(UserError, match="dissection not found"):
        explainer_for(args, lm)
