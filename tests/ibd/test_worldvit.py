"""world_vit, the concept world's vision transformer: its GAP-linear head over the patch tokens,
near-miss training and caching like the other roles, its checkpoint through the real loader, and
the explanation invariants at its default layer (the final norm's tokens seen as a 7 x 7 map)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ibd.cli import main
from ibd.explain import cam as cam_lib
from ibd.nets import architectures, hooks
from ibd.nets.load import load_model
from ibd.nets.train import ROLE_SETTINGS, ROLES, TrainSettings, read_scenes, train_world_model
from ibd.world.writer import WorldSettings, build

from .basisfiles import write_basis

FAST = TrainSettings(epochs=1, batch_size=16, lr=1e-3, weight_decay=0.05, near_misses=1.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vitworld") / "w"
    # four images per class: two to train on, one each for val and test
    splits = (("train", 0.5), ("val", 0.25), ("test", 0.25))
    build(out, WorldSettings(seed=7, images=48, splits=splits), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("vitmodels") / "world_vit.pt"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_world_model(world, "world_vit", out, FAST, progress=False, log=print)
    finally:
        torch.set_num_threads(before)
    return out, result


def _explain_images(world: Path, n: int = 4) -> list[str]:
    _, rows = read_scenes(world)
    return [str(world / path) for path, split, _ in rows if split == "val"][:n]


def _token_map(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """N x (1 + side^2) x D tokens, class token first -> N x D x side x side."""
    patches = tokens[:, 1:]
    return patches.transpose(1, 2).reshape(len(tokens), -1, side, side)


def test_world_vit_is_a_role_with_a_gap_linear_head_over_its_patch_tokens() -> None:
    assert "world_vit" in ROLES and ROLE_SETTINGS["world_vit"].near_misses == 1.0
    spec = architectures.get("world_vit")
    assert spec.layer == "encoder.ln" and spec.input_size == (112, 112)
    torch.manual_seed(0)
    model = spec.build(12).eval()
    assert 5e5 < sum(p.numel() for p in model.parameters()) < 1e6
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision zero-inits the head
    captured: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(spec.layer).register_forward_hook(
        lambda _m, _i, out: captured.update(a=out)
    )
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    tokens = captured["a"]
    assert tokens.shape == (3, 1 + 7 * 7, 128)  # class token + 7 x 7 patch tokens of width 128
    a = _token_map(tokens, 7)
    head = model.heads.head
    # logits = W . GAP(A) + b with A the patch-token map: the form CAM and IBD decompose
    expected = a.mean(dim=(2, 3)) @ head.weight.T + head.bias
    assert torch.allclose(logits, expected, atol=1e-5)
    # the class token is not read by the head: replacing it after the norm changes no logit
    handle = model.get_submodule(spec.layer).register_forward_hook(
        lambda _m, _i, out: torch.cat([torch.randn_like(out[:, :1]) * 9, out[:, 1:]], dim=1)
    )
    with torch.no_grad():
        assert torch.equal(model(x), logits)
    handle.remove()


@pytest.mark.slow
def test_world_vit_trains_with_near_misses_is_cached_and_loads(
    world: Path, trained: tuple[Path, dict]
) -> None:
    out, result = trained
    assert not result["reused"] and result["seconds"] > 0
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert saved["arch"] == "world_vit" and saved["layer"] == "encoder.ln"
    assert saved["training"]["settings"]["near_misses"] == 1.0
    assert saved["training"]["settings"]["weight_decay"] == 0.05
    assert set(saved["accuracy"]) == {"val", "test"}
    # training moved the zero-initialised head
    assert saved["state_dict"]["heads.head.weight"].abs().sum() > 0
    # the real loader rebuilds it: same predictions as the model that was trained
    loaded = load_model(None, out)
    assert loaded.arch == "world_vit" and loaded.layer == "encoder.ln"
    assert loaded.input_size == (112, 112) and loaded.classes[0] == "harbor"
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), result["model"](x))
    # cached like the other roles: the same settings on the same world reuse the file
    messages: list[str] = []
    again = train_world_model(world, "world_vit", out, FAST, progress=False, log=messages.append)
    assert again["reused"] and "up to date" in messages[0]


@pytest.mark.slow
def test_cam_is_gradcam_times_hw_at_its_default_layer(trained: tuple[Path, dict]) -> None:
    loaded = load_model(None, trained[0])
    x = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    fwd = hooks.run(loaded.model, loaded.layer, x, gradients=True)
    assert fwd.features.shape == (3, 128, 7, 7) and fwd.gradients is not None
    head = loaded.model.heads.head
    assert cam_lib.is_gap_linear(fwd.features, fwd.logits, head.weight, head.bias)
    cam = cam_lib.cam(fwd.features, head.weight.detach(), fwd.targets)
    gradcam = cam_lib.gradcam(fwd.features, fwd.gradients)
    assert torch.allclose(cam, gradcam * 49, atol=1e-5, rtol=1e-4)
    # and the CAM's mean plus the bias is the logit
    scores = fwd.logits.gather(1, fwd.targets[:, None])[:, 0]
    assert torch.allclose(cam.mean(dim=(1, 2)) + head.bias[fwd.targets], scores, atol=1e-4)


@pytest.mark.slow
def test_ibd_contributions_and_residual_sum_to_the_logit(
    world: Path, trained: tuple[Path, dict], tmp_path: Path
) -> None:
    weights = trained[0]
    images = _explain_images(world)
    basis = tmp_path / "basis.npz"
    q = np.random.default_rng(0).normal(size=(10, 128))
    q -= q.mean(axis=1, keepdims=True)
    write_basis(basis, q / np.linalg.norm(q, axis=1, keepdims=True), layer="encoder.ln")
    common = ["--weights", str(weights), "--batch-size", "2", *images]
    ibd_args = ["explain", "--method", "ibd", "--basis", str(basis), "--out", str(tmp_path / "i")]
    assert main([*ibd_args, *common]) in (0, None)
    records = json.loads((tmp_path / "i" / "explanations.json").read_text())
    assert len(records) == len(images)
    for record in records:
        assert record["method"] == "ibd" and record["heatmap_shape"] == [7, 7]
        total = sum(c["contribution"] for c in record["components"]) + record["residual"]
        assert total == pytest.approx(record["score"], abs=1e-4)
    # CAM and Grad-CAM through the command: the same maps up to the factor HW = 49
    maps = {}
    for method in ("cam", "gradcam"):
        out = tmp_path / method
        assert main(["explain", "--method", method, "--out", str(out), *common]) in (0, None)
        with np.load(out / "heatmaps.npz") as npz:
            maps[method] = {k: npz[k] for k in npz.files}
    assert maps["cam"].keys() == maps["gradcam"].keys()
    for key, cam in maps["cam"].items():
        assert cam.shape == (7, 7)
        np.testing.assert_allclose(cam, maps["gradcam"][key] * 49, rtol=1e-4, atol=1e-5)
