"""Training on a tiny concept world and on an image folder; checkpoints, caching, the mirror."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ibd.cli import main
from ibd.data.images import load_rgb
from ibd.errors import UserError
from ibd.nets import architectures
from ibd.nets.load import load_model
from ibd.nets.train import (
    ROLE_SETTINGS,
    ROLES,
    SHUFFLED,
    Normalise,
    TrainSettings,
    _load_rgb,
    accuracy,
    augment,
    init_from,
    load_image_folder,
    load_world_split,
    shuffled_labels,
    train_folder,
    train_roles,
    train_world_model,
    training_set,
)
from ibd.nets.worldnets import world_resnet
from ibd.world.writer import WorldSettings, build

MEMORISE_EPOCHS = 30  # one step each on the tiny world's 24 training images

FAST = {
    "world_resnet": TrainSettings(epochs=1, lr=3e-3),
    "world_vgg": TrainSettings(epochs=1, lr=1e-3),
    "world_alexnet": TrainSettings(epochs=1, lr=1e-3),
    "world_vit": TrainSettings(epochs=1, lr=1e-3),
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
        [
            "world_resnet.pt",
            "world_resnet_mirror.pt",
            "world_vgg.pt",
            "world_alexnet.pt",
            "world_vit.pt",
        ]
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


def test_folder_images_are_decoded_as_explain_decodes_them(tmp_path: Path) -> None:
    """Training sees what `ibd explain` sees: EXIF orientation applied, transparency on
    white (Pillow's own convert("RGB") keeps the colour under a transparent pixel)."""
    clear = np.zeros((4, 6, 4), dtype=np.uint8)
    clear[..., 0] = 255  # red, fully transparent except the first column
    clear[:, 0, 3] = 255
    Image.fromarray(clear, mode="RGBA").save(tmp_path / "clear.png")
    upright = Image.new("RGB", (6, 2), (0, 0, 0))
    upright.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    upright.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    pixels = _load_rgb(tmp_path / "clear.png", (4, 6))
    assert pixels[0, 0].tolist() == [255, 0, 0] and pixels[0, 1].tolist() == [255, 255, 255]
    rotated = _load_rgb(tmp_path / "rot.jpg", (6, 2))
    assert np.array_equal(rotated, np.asarray(load_rgb(tmp_path / "rot.jpg")))
    assert rotated[0, 1].sum() > 600  # the white corner is at the top right once upright


def test_world_images_decode_exactly_as_before(world: Path) -> None:
    """The world's JPEGs have no EXIF and no alpha: the shared decoder gives the very pixels
    the published models were trained on."""
    for i in (0, 7, 100):
        with Image.open(world / "images" / f"{i:05d}.jpg") as img:
            plain = np.asarray(img.convert("RGB"))
        assert np.array_equal(_load_rgb(world / "images" / f"{i:05d}.jpg", (112, 112)), plain)


def _folder(root: Path, splits: tuple[str, ...]) -> None:
    for split in splits:
        for name in ("cats", "dogs"):
            (root / split / name).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(root / split / name / f"{i}.png")


def test_a_train_folder_without_val_is_split_not_taken_for_a_class(tmp_path: Path) -> None:
    _folder(tmp_path / "d", ("train", "test"))
    classes, sets = load_image_folder(tmp_path / "d", (8, 8), seed=0)
    assert classes == ["cats", "dogs"]
    assert (len(sets["train"]), len(sets["val"]), len(sets["test"])) == (8, 2, 10)
    held_out = {p for p, _ in sets["val"].items}
    assert not held_out & {p for p, _ in sets["train"].items}
    assert all(p.parent.parent.name == "train" for p in held_out)
    _folder(tmp_path / "e", ("val",))
    with pytest.raises(UserError, match="has val/ but no train/ folder"):
        load_image_folder(tmp_path / "e", (8, 8), seed=0)


def test_train_head_keeps_every_other_tensor_batch_norm_statistics_included(
    tmp_path: Path, one_torch_thread: None
) -> None:
    _write_folder(tmp_path / "data", 3, size=32)
    torch.manual_seed(9)
    # saved as PyTorch < 0.4 did, without batch-norm step counters (Places365's files)
    start = {k: v for k, v in world_resnet(12).state_dict().items() if "num_batches" not in k}
    torch.save(start, tmp_path / "start.pth")
    settings = TrainSettings(epochs=1, batch_size=4)
    quiet = {"progress": False, "log": lambda _: None}
    out = tmp_path / "head.pt"
    train_folder(
        tmp_path / "data", "world_resnet", out, settings, tmp_path / "start.pth", "head", **quiet
    )
    trained = torch.load(out, weights_only=True)["state_dict"]
    kept = [k for k in start if not k.startswith("fc.")]
    assert "layer1.0.bn1.running_mean" in kept
    assert all(torch.equal(trained[k], start[k]) for k in kept)
    assert not torch.equal(trained["fc.bias"][:2], torch.zeros(2))  # the head did train
    # a file that initialises only part of the kept layers is refused before any training
    partial = {k: v for k, v in start.items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"does not hold layer4\.0\.conv1\.weight"):
        train_folder(
            tmp_path / "data",
            "world_resnet",
            out,
            settings,
            tmp_path / "partial.pth",
            "head",
            **quiet,
        )


def test_the_gap_trunk_must_come_whole_from_the_file(tmp_path: Path) -> None:
    from ibd.nets.gapnets import alexnet_gap

    net = alexnet_gap(3)
    trunk = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    trunk = {k: v for k, v in trunk.items() if int(k.split(".")[1]) < net.trunk_length}
    torch.save({"features.0.weight": trunk["features.0.weight"]}, tmp_path / "part.pth")
    trunk_error = r"conv trunk \(features.0-11\): missing keys: features.0.bias"
    with pytest.raises(UserError, match=trunk_error):
        init_from(net, tmp_path / "part.pth")
    torch.save({**trunk, "features.3.weight": torch.zeros(192, 64, 3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match=r"features.3.weight \(192x64x3x3 in file vs 192x64x5x5"):
        init_from(net, tmp_path / "wrong.pth")
    torch.save(trunk, tmp_path / "trunk.pth")
    assert len(init_from(net, tmp_path / "trunk.pth")) == 10


def test_training_is_reproducible_from_its_seed(tmp_path: Path, one_torch_thread: None) -> None:
    world = tmp_path / "w"
    build(world, WorldSettings(seed=1, images=24), workers=1, progress=False)
    quiet = {"progress": False, "log": lambda _: None, "force": True}
    states = []
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        out = tmp_path / f"{name}.pt"
        train_world_model(world, "world_alexnet", out, TrainSettings(epochs=1, seed=seed), **quiet)
        states.append(torch.load(out, weights_only=True))
    assert states[0]["threads"] == 1 and states[0]["seed"] == 0
    a, b, c = (s["state_dict"] for s in states)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_outputs_and_devices_are_checked_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_folder(tmp_path / "data", 1, size=8)
    (tmp_path / "taken").mkdir()
    data = ["train", "--data", str(tmp_path / "data"), "--arch", "world_alexnet"]
    assert main([*data, "--out", str(tmp_path / "taken")]) == 2
    assert "is a directory; name the checkpoint file" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main([*data, "--out", str(tmp_path / "file" / "m.pt")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*data, "--out", str(tmp_path / "m.pt"), "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "CUDA is not available" in err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_the_mirror_command_mirrors_the_reference_that_is_there(
    tmp_path: Path, one_torch_thread: None
) -> None:
    world, models = tmp_path / "w", tmp_path / "m"
    build(world, WorldSettings(seed=1, images=24), workers=1, progress=False)
    where = ["--world", str(world), "--models", str(models)]
    assert main(["train", *where, "--arch", "world_resnet", "--epochs", "1"]) == 0
    reference = (models / "world_resnet.pt").read_bytes()
    assert main(["train", *where, "--arch", "world_resnet_mirror"]) == 0
    assert (models / "world_resnet.pt").read_bytes() == reference  # not retrained for 10 epochs
    ref = torch.load(models / "world_resnet.pt", weights_only=True)
    twin = torch.load(models / "world_resnet_mirror.pt", weights_only=True)
    assert ref["training"]["settings"]["epochs"] == 1
    assert torch.equal(
        twin["state_dict"]["conv1.weight"], ref["state_dict"]["conv1.weight"].flip(-1)
    )
    # another seed is another reference: trained now (with the role's settings), then mirrored
    assert (
        main(["train", *where, "--arch", "world_resnet_mirror", "--seed", "1", "--epochs", "1"])
        == 0
    )
    assert torch.load(models / "world_resnet.pt", weights_only=True)["seed"] == 1


# -- the shuffled-label role (data randomisation, ibd.evaluation.sanity) ----------------------


def test_shuffled_labels_are_a_seeded_permutation_of_the_labels() -> None:
    labels = torch.arange(240) % 12
    first = shuffled_labels(labels, 0)
    assert torch.equal(first, shuffled_labels(labels, 0))  # reproducible from the seed
    assert not torch.equal(first, shuffled_labels(labels, 1))
    # a permutation: every class keeps its count; an image keeps its label only by chance
    assert torch.equal(torch.bincount(first), torch.bincount(labels))
    assert float((first == labels).float().mean()) < 0.25
    # the settings of every other role are recorded as before (their checkpoints stay cached)
    assert "shuffle_labels" not in TrainSettings().to_json()
    assert ROLE_SETTINGS[SHUFFLED].to_json()["shuffle_labels"] is True


def test_the_shuffled_role_trains_on_permuted_labels_as_a_reference_network(
    tmp_path: Path, one_torch_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    world, models = tmp_path / "w", tmp_path / "m"
    build(world, WorldSettings(seed=1, images=24), workers=1, progress=False)
    where = ["--world", str(world), "--models", str(models)]
    settings = replace(ROLE_SETTINGS[SHUFFLED], seed=4)
    true = load_world_split(world, "train", (112, 112), progress=False).labels
    given = training_set(world, (112, 112), settings, progress=False).labels
    assert torch.equal(given, shuffled_labels(true, 4)) and not torch.equal(given, true)
    assert main(["train", *where, "--arch", SHUFFLED, "--epochs", "1", "--seed", "4"]) == 0
    saved = torch.load(models / f"{SHUFFLED}.pt", weights_only=True)
    assert saved["arch"] == "world_resnet" and saved["training"]["arch"] == SHUFFLED
    recorded = saved["training"]["settings"]
    assert recorded["shuffle_labels"] is True and recorded["near_misses"] == 0.0
    assert (recorded["flip"], recorded["shift"], recorded["seed"]) == (False, 0, 4)
    assert 0.0 <= saved["train_accuracy"] <= 1.0  # (this world is too small for a val split)
    assert load_model(None, models / f"{SHUFFLED}.pt").layer == "layer4"
    # near misses follow the world's rules: they would teach the true classes
    assert main(["train", *where, "--arch", SHUFFLED, "--near-misses", "1"]) == 2
    assert "not with shuffled labels" in capsys.readouterr().err
    # not one of the roles a plain `ibd train` trains, but train_roles takes it by name
    assert SHUFFLED not in ROLES


@pytest.mark.slow
def test_the_shuffled_role_memorises_its_labels(tmp_path: Path, one_torch_thread: None) -> None:
    world = tmp_path / "w"
    build(world, WorldSettings(seed=1, images=24), workers=1, progress=False)
    settings = replace(ROLE_SETTINGS[SHUFFLED], epochs=MEMORISE_EPOCHS)
    result = train_roles(
        world,
        tmp_path,
        [SHUFFLED],
        progress=False,
        log=lambda _: None,
        settings={SHUFFLED: settings},
    )
    saved = torch.load(tmp_path / f"{SHUFFLED}.pt", weights_only=True)
    assert not result[SHUFFLED]["reused"]
    assert saved["train_accuracy"] >= 0.9, saved["train_accuracy"]  # chance: 1/12
