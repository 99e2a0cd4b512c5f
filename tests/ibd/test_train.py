"""Training on a tiny concept world and on an image folder; checkpoints, caching, the mirror."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ibd import architectures
from ibd.cli import main
from ibd.models import load_model
from ibd.train import (
    Normalise,
    TrainSettings,
    accuracy,
    augment,
    load_world_split,
    train_roles,
    train_world_model,
)
from ibd.world.writer import WorldSettings, build

FAST = {
    "world_resnet": TrainSettings(epochs=1, lr=3e-3),
    "world_vgg": TrainSettings(epochs=1, lr=1e-3),
    "world_alexnet": TrainSettings(epochs=1, lr=1e-3),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    build(out, WorldSettings(seed=5, images=144), workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def roles(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    train_roles(world, models, progress=False, log=lambda _: None, settings=FAST)
    return models


def test_world_networks_have_a_gap_head_and_a_large_enough_feature_map() -> None:
    for name, channels, side in (
        ("world_resnet", 128, 7),
        ("world_vgg", 96, 14),
        ("world_alexnet", 64, 14),
    ):
        spec = architectures.get(name)
        model = spec.build(12).eval()
        captured = {}
        layer = model.get_submodule(spec.layer)
        hook = layer.register_forward_hook(lambda _m, _i, out, store=captured: store.update(a=out))
        x = torch.randn(2, 3, *spec.input_size)
        with torch.no_grad():
            logits = model(x)
        hook.remove()
        a = captured["a"]
        assert a.shape == (2, channels, side, side)
        # logits = W . GAP(A) + b exactly: the form IBD decomposes
        expected = a.mean(dim=(2, 3)) @ model.fc.weight.T + model.fc.bias
        assert torch.allclose(logits, expected, atol=1e-5)


def test_augment_flips_and_shifts_per_image() -> None:
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    gen = torch.Generator().manual_seed(0)
    flipped = augment(images, flip=True, shift=0, gen=gen)
    for i in range(2):
        assert torch.equal(flipped[i], images[i]) or torch.equal(flipped[i], images[i].flip(-1))
    shifted = augment(images, flip=False, shift=1, gen=torch.Generator().manual_seed(1)).byte()
    padded = torch.nn.functional.pad(images.float(), (1, 1, 1, 1), mode="replicate").byte()
    for i in range(2):
        windows = [padded[i, :, y : y + 4, x : x + 5] for y in range(3) for x in range(3)]
        assert any(torch.equal(shifted[i], w) for w in windows)


@pytest.mark.slow
def test_a_tiny_model_learns_the_tiny_world(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "alex.pt"
    result = train_world_model(
        world,
        "world_alexnet",
        out,
        TrainSettings(epochs=8, lr=2e-3),
        progress=False,
        log=lambda _: None,
    )
    held_out = (result["accuracy"]["val"] + result["accuracy"]["test"]) / 2
    assert held_out > 2.5 / 12, result  # chance is 1/12
    # the reloaded checkpoint predicts exactly as the trained model did
    loaded = load_model(None, out)
    x = torch.randn(4, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), result["model"](x))
    assert loaded.arch == "world_alexnet" and loaded.layer == "features"
    assert loaded.classes[0] == "harbor" and loaded.input_size == (112, 112)
    norm = Normalise(loaded.mean, loaded.std)
    test = load_world_split(world, "test", loaded.input_size, progress=False)
    assert accuracy(loaded.model, norm, test, torch.device("cpu")) == result["accuracy"]["test"]


@pytest.mark.slow
def test_roles_are_cached_until_their_inputs_change(world: Path, roles: Path) -> None:
    files = {p.name: p.read_bytes() for p in roles.glob("*.pt")}
    assert sorted(files) == sorted(
        ["world_resnet.pt", "world_resnet_mirror.pt", "world_vgg.pt", "world_alexnet.pt"]
    )
    messages: list[str] = []
    again = train_roles(world, roles, progress=False, log=messages.append, settings=FAST)
    assert all(r["reused"] for r in again.values())
    assert all("up to date" in m for m in messages)
    assert {p.name: p.read_bytes() for p in roles.glob("*.pt")} == files
    # another training seed retrains the role (and its mirror)
    changed = train_roles(
        world,
        roles,
        ["world_resnet_mirror"],
        seed=1,
        progress=False,
        log=lambda _: None,
        settings=FAST,
    )
    assert not changed["world_resnet"]["reused"] and not changed["world_resnet_mirror"]["reused"]
    assert (roles / "world_resnet.pt").read_bytes() != files["world_resnet.pt"]
    assert torch.load(roles / "world_resnet.pt", weights_only=True)["seed"] == 1


@pytest.mark.slow
def test_the_mirror_is_the_reference_with_flipped_kernels(world: Path, roles: Path) -> None:
    ref = torch.load(roles / "world_resnet.pt", weights_only=True)
    twin = torch.load(roles / "world_resnet_mirror.pt", weights_only=True)
    assert twin["arch"] == "world_resnet" and twin["mirrored"] is True and not ref["mirrored"]
    for key, value in ref["state_dict"].items():
        expected = value.flip(-1) if value.ndim == 4 else value
        assert torch.equal(twin["state_dict"][key], expected), key
    # loading the mirrored checkpoint does not flip again; --mirror on the reference agrees
    loaded = load_model(None, roles / "world_resnet_mirror.pt")
    flipped = load_model(None, roles / "world_resnet.pt", mirrored=True)
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), flipped.model(x))
    acc = twin["accuracy"]
    assert set(acc) == {"val", "test"} and all(0 <= v <= 1 for v in acc.values())


def test_world_fingerprint_change_retrains(tmp_path: Path) -> None:
    world = tmp_path / "w"
    build(world, WorldSettings(seed=1, images=24), workers=1, progress=False)
    out = tmp_path / "m.pt"
    settings = TrainSettings(epochs=1)
    quiet = {"progress": False, "log": lambda _: None}
    assert not train_world_model(world, "world_alexnet", out, settings, **quiet)["reused"]
    assert train_world_model(world, "world_alexnet", out, settings, **quiet)["reused"]
    build(world, WorldSettings(seed=2, images=24), workers=1, progress=False)
    assert not train_world_model(world, "world_alexnet", out, settings, **quiet)["reused"]


def _write_folder(root: Path, per_class: int, size: int = 112) -> None:
    rng = np.random.default_rng(0)
    for name, colour in (("reds", (200, 40, 40)), ("blues", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 30, size=(size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.mark.slow
def test_cli_trains_any_architecture_on_an_image_folder(tmp_path: Path) -> None:
    _write_folder(tmp_path / "data", 12)
    out = tmp_path / "folder.pt"
    args = [
        "train",
        "--data",
        str(tmp_path / "data"),
        "--arch",
        "world_alexnet",
        "--out",
        str(out),
        "--epochs",
        "4",
    ]
    assert main(args) == 0
    loaded = load_model(None, out)
    assert loaded.classes == ["blues", "reds"]
    assert torch.load(out, weights_only=True)["accuracy"]["val"] == 1.0


def test_cli_init_from_and_train_head_keep_the_trunk(tmp_path: Path) -> None:
    _write_folder(tmp_path / "data", 3, size=64)
    trunk = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(trunk, tmp_path / "alexnet.pth")
    out = tmp_path / "gap.pt"
    args = [
        "train",
        "--data",
        str(tmp_path / "data"),
        "--arch",
        "alexnet_gap",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--init-from",
        str(tmp_path / "alexnet.pth"),
        "--train",
        "head",
    ]
    assert main(args) == 0
    state = torch.load(out, weights_only=True)["state_dict"]
    assert torch.equal(state["features.0.weight"], trunk["features.0.weight"])
    assert torch.equal(state["features.10.weight"], trunk["features.10.weight"])
    assert load_model(None, out).arch == "alexnet_gap"


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--world", str(tmp_path / "none"), "--arch", "world_vgg"]) == 2
    assert "no concept world at" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path)]) == 2
    assert "--data needs --arch and --out" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path),
                "--arch",
                "resnet18",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
        == 2
    )
    assert "needs one sub-folder per class" in capsys.readouterr().err
    _write_folder(tmp_path / "data", 1, size=8)
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "data"),
                "--arch",
                "nonsense_net",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
        == 2
    )
    assert "unknown architecture 'nonsense_net'" in capsys.readouterr().err
