"""`ibd explain --method cam|gradcam` writes the contract's files with the right values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ibd.cli import main
from ibd.data.images import load_batch
from ibd.explain import cam
from ibd.nets import hooks
from ibd.nets.load import load_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "arch": "resnet18", "state_dict": state}, root / "r18.pth.tar")
    (root / "labels.txt").write_text("beach\nharbor\nforest\nstreet\n")
    rng = np.random.default_rng(0)
    for i in range(3):
        array = (rng.random((80 + 10 * i, 90, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).save(root / f"img{i}.png")
    return root


def explain(root: Path, method: str, *extra: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    out = root / f"out-{method}"
    images = [str(root / f"img{i}.png") for i in range(3)]
    code = main(
        [
            "explain",
            "--method",
            method,
            "--weights",
            str(root / "r18.pth.tar"),
            "--labels",
            str(root / "labels.txt"),
            "--out",
            str(out),
            *extra,
            *images,
        ]
    )
    assert code == 0
    records = json.loads((out / "explanations.json").read_text())
    with np.load(out / "heatmaps.npz") as npz:
        return records, {k: npz[k] for k in npz.files}


def test_cam_files_follow_the_contract(setup: Path) -> None:
    records, maps = explain(setup, "cam")
    loaded = load_model(None, setup / "r18.pth.tar", labels=setup / "labels.txt")
    batch, _ = load_batch([r["image"] for r in records], (224, 224), loaded.mean, loaded.std)
    fwd = hooks.run(loaded.model, "layer4", batch)
    weight, bias = loaded.model.fc.weight.detach(), loaded.model.fc.bias.detach()
    expected = cam.cam(fwd.features, weight, fwd.targets)
    assert len(records) == 3
    for i, rec in enumerate(records):
        assert rec["method"] == "cam" and rec["model"] == "r18" and rec["residual"] is None
        assert rec["class_index"] == int(fwd.targets[i])
        assert rec["class_name"] == ["beach", "harbor", "forest", "street"][rec["class_index"]]
        assert rec["heatmap_shape"] == [7, 7]
        (component,) = rec["components"]
        assert component["label"] == rec["class_name"]
        heat = maps[component["heatmap"]]
        assert heat.dtype == np.float32 and heat.shape == (7, 7)
        np.testing.assert_allclose(heat, expected[i].numpy(), rtol=1e-5, atol=1e-5)
        # contribution = w_k . GAP(A); adding the bias gives the logit
        k = rec["class_index"]
        assert component["contribution"] + float(bias[k]) == pytest.approx(rec["score"], abs=1e-4)


def test_gradcam_target_and_relu(setup: Path) -> None:
    records, maps = explain(setup, "gradcam", "--target", "forest", "--relu")
    for rec in records:
        assert rec["class_name"] == "forest"
        heat = maps[rec["components"][0]["heatmap"]]
        assert heat.min() >= 0
    raw, raw_maps = explain(setup, "cam", "--target", "2")
    for rec, rec_raw in zip(records, raw, strict=True):
        heat = maps[rec["components"][0]["heatmap"]]
        cam_map = raw_maps[rec_raw["components"][0]["heatmap"]]
        np.testing.assert_allclose(heat, np.maximum(cam_map / 49, 0), rtol=1e-4, atol=1e-6)


def test_cam_refuses_a_non_gap_head(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(torchvision.models.alexnet(num_classes=4).state_dict(), setup / "alex.pth")
    code = main(
        [
            "explain",
            "--method",
            "cam",
            "--arch",
            "alexnet",
            "--weights",
            str(setup / "alex.pth"),
            "--out",
            str(setup / "x"),
            str(setup / "img0.png"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith("ibd explain: error:") and "CAM does not apply" in err


def test_errors_are_one_line_without_traceback(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = ["--weights", str(setup / "r18.pth.tar")]
    cases = [
        (["--weights", str(setup / "missing.pth")], "weights file not found"),
        ([*weights, "--num-classes", "9"], "shape mismatch"),
        ([*weights, "--target", "moon"], "unknown class 'moon'"),
        ([*weights, "--top", "0"], "--top must be at least 1"),
        ([*weights, "--limit", "-1"], "--limit must be at least 1"),
        ([*weights, "--out", str(setup / "img0.png")], "is a file; it must be a directory"),
    ]
    # in process (an exception other than UserError would fail the test with its traceback)
    for flags, message in cases:
        assert main(["explain", "--method", "cam", *flags, str(setup / "img0.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("ibd explain: error:") and message in err[-1], err
        assert not any("Traceback" in line for line in err)


@pytest.mark.slow
def test_console_error_is_one_line_without_traceback(setup: Path) -> None:
    (setup / "bad.jpg").write_text("garbage")
    weights = ["--weights", str(setup / "r18.pth.tar")]
    args = [sys.executable, "-m", "ibd.cli", "explain", "--method", "cam", *weights]
    result = subprocess.run([*args, str(setup / "bad.jpg")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ibd explain: error:") and "not a readable image" in last, last


def test_info_shows_what_the_checkpoint_holds(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", "--weights", str(setup / "r18.pth.tar")]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "layer4" in out and "512 features" in out and "epoch" in out
    assert main(["info", "--archs"]) == 0
    names = capsys.readouterr().out.split()
    assert {"resnet50", "alexnet_gap", "vgg16_gap"} <= set(names)
