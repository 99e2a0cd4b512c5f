"""A vision transformer end to end on a tiny concept world, as a user runs it: a `vit_b_16`
torchvision state dict (random weights), `ibd info`, `ibd basis learn` at its default layer (the
world's 112 px images resized to the 224 px the ViT takes: a 14 x 14 patch grid), `ibd dissect`
from the same feature store, and `ibd explain --method ibd|gradcam|netdissect`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from ibd.cli import main
from ibd.data.images import load_batch
from ibd.explain import cam
from ibd.nets import hooks
from ibd.nets.load import load_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
LAYER = "encoder.layers.encoder_layer_10"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("vit")
    mp = pytest.MonkeyPatch()
    mp.setenv("IBD_HOME", str(home))
    try:
        assert main(["world", "build", "--images", "60", "--seed", "1"]) == 0
        classes = len(json.loads((home / "world/world.json").read_text())["classes"])
        torch.manual_seed(0)
        model = torchvision.models.vit_b_16(num_classes=classes)
        with (
            torch.no_grad()
        ):  # torchvision starts the head at zero (every logit 0): a "trained" one
            model.heads.head.weight.normal_(0, 0.05)
        torch.save(model.state_dict(), home / "vit.pth")
        yield home
    finally:
        mp.undo()


def model_flags(home: Path) -> list[str]:
    return ["--arch", "vit_b_16", "--weights", str(home / "vit.pth")]


def images(home: Path) -> list[str]:
    return [str(p) for p in sorted((home / "world/images").glob("*.jpg"))[:3]]


def test_vit_b_16_from_basis_to_explanations(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IBD_HOME", str(home))
    flags = model_flags(home)
    assert main(["info", *flags]) == 0
    info = capsys.readouterr().out
    assert f"{LAYER} (default)" in info and "768 x 14 x 14" in info
    assert "14 x 14 patch grid, 1 extra token(s) in front dropped" in info
    assert "CAM does not apply" in info

    assert main(["basis", "learn", *flags, "--epochs", "1", "--quiet"]) == 0  # authors (default)
    with np.load(home / "basis/vit.npz") as npz:
        q, names = npz["q"], list(npz["names"])
        assert json.loads(str(npz["meta"]))["layer"] == LAYER
    assert q.shape == (len(names), 768) and len(names) >= 5
    assert main(["dissect", *flags, "--quiet", "--features", str(home / "features/vit")]) == 0
    capsys.readouterr()

    loaded = load_model("vit_b_16", home / "vit.pth")
    batch, _ = load_batch(images(home), loaded.input_size, loaded.mean, loaded.std)
    assert loaded.input_size == (224, 224) and batch.shape[-2:] == (224, 224)
    outputs = {}
    for method in ("ibd", "gradcam", "netdissect"):
        assert main(["explain", "--method", method, *flags, *images(home)]) == 0
        if method != "gradcam":
            assert "paper eq. 12" in capsys.readouterr().err
        out = home / "explanations/vit" / method
        records = json.loads((out / "explanations.json").read_text())
        with np.load(out / "heatmaps.npz") as npz:
            maps = {k: npz[k] for k in npz.files}
        outputs[method] = records, maps

    # Grad-CAM: the map of the token layer read as 14 x 14, as the hook computes it here
    targets = torch.tensor([r["class_index"] for r in outputs["gradcam"][0]])
    fwd = hooks.run(loaded.model, LAYER, batch, targets, gradients=True)
    assert fwd.gradients is not None and fwd.layout.extra == 1
    expected = cam.gradcam(fwd.features, fwd.gradients)
    for i, rec in enumerate(outputs["gradcam"][0]):
        assert rec["heatmap_shape"] == [14, 14]
        assert rec["score"] == pytest.approx(float(fwd.logits[i, targets[i]]), rel=1e-4, abs=1e-5)
        heatmap = outputs["gradcam"][1][rec["components"][0]["heatmap"]]
        np.testing.assert_allclose(heatmap, expected[i].numpy(), rtol=1e-3, atol=1e-6)

    # IBD (gradient route): concept heatmaps q_i^T A, non-negative coefficients, and
    # contributions + residual == the logit
    a = fwd.features
    for i, rec in enumerate(outputs["ibd"][0]):
        total = sum(c["contribution"] for c in rec["components"]) + rec["residual"]
        assert total == pytest.approx(rec["score"], abs=1e-4)
        assert rec["components"]
        for c in rec["components"]:
            heatmap = outputs["ibd"][1][c["heatmap"]]
            concept = torch.as_tensor(q[names.index(c["label"])])
            np.testing.assert_allclose(
                heatmap, torch.einsum("d,dhw->hw", concept, a[i]).numpy(), rtol=1e-3, atol=1e-4
            )
            coefficient = c["contribution"] / float(heatmap.sum())
            assert coefficient >= -1e-6  # nnls

    # NetDissect units: each heatmap is that unit's 14 x 14 activation map
    for i, rec in enumerate(outputs["netdissect"][0]):
        total = sum(c["contribution"] for c in rec["components"]) + rec["residual"]
        assert total == pytest.approx(rec["score"], abs=1e-4)
        for c in rec["components"]:
            unit = a[i, int(c["unit"])].numpy()
            np.testing.assert_allclose(outputs["netdissect"][1][c["heatmap"]], unit, atol=1e-4)
