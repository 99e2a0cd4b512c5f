"""Near misses (`ibd.world.nearmiss`): world images without one defining concept, their targets,
and world models trained on them (`ibd.nets.train.fit` with `near_misses`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ibd.cli import main
from ibd.nets.train import (
    ROLE_SETTINGS,
    SHUFFLED,
    Normalise,
    TrainSettings,
    near_miss_source,
    read_scenes,
    train_world_model,
)
from ibd.world import nearmiss
from ibd.world.rules import CLASSES
from ibd.world.writer import GREY, WorldSettings, as_jpeg, build, render_image

K = len(CLASSES)
INDEX = {c.name: c.index for c in CLASSES}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    build(out, WorldSettings(seed=3, images=96), workers=2, progress=False)
    return out


def test_targets_follow_the_rules() -> None:
    # a beach without its umbrella: sand and water admit no class -> uniform
    assert np.allclose(nearmiss.target({"sky", "sand", "water", "boat"}), np.full(K, 1 / K))
    # a street without its houses but with grass shows road + car + grass: a highway
    highway = nearmiss.target({"sky", "road", "car", "grass", "tree"})
    assert highway.argmax() == INDEX["highway"] and highway.sum() == 1.0 and highway.max() == 1
    # without its car the same street is nothing
    assert np.allclose(nearmiss.target({"sky", "road", "grass", "tree"}), 1 / K)
    # a concept outside a class's allowed ones disqualifies it: a village needs no water
    assert np.allclose(nearmiss.target({"sky", "house", "grass", "tree", "water"}), 1 / K)
    assert nearmiss.obeys(CLASSES[INDEX["village"]], {"sky", "house", "grass", "tree"})


def test_the_plan_takes_out_each_defining_concept_once_with_either_fill() -> None:
    settings = WorldSettings(seed=3, images=96)
    indices = list(range(0, 96, 2))
    plan = nearmiss.plan(settings, indices)
    assert plan == nearmiss.plan(settings, indices)  # from the world's seed alone
    expected = [(i, d) for i in indices for d in CLASSES[i % K].defining]
    assert [(m.index, m.hidden) for m in plan] == expected
    greys = sum(m.fill == GREY for m in plan)
    assert {m.fill for m in plan} == {GREY, None} and 0.3 < greys / len(plan) < 0.7


def test_near_misses_are_the_images_without_the_concept(world: Path) -> None:
    _, rows = read_scenes(world)
    train = [i for i, (_, split, _) in enumerate(rows) if split == "train"][:6]
    drawn = nearmiss.draw(world, train, (112, 112), workers=1, progress=False)
    settings = WorldSettings.of_world(world)
    plan = nearmiss.plan(settings, train)
    assert drawn.images.shape == (len(plan), 3, 112, 112) and drawn.images.dtype == torch.uint8
    assert torch.allclose(drawn.targets.sum(1), torch.ones(len(plan)))
    for n, miss in enumerate(plan):
        canvas, photo = render_image(settings, miss.index)
        _, without = render_image(settings, miss.index, frozenset({miss.hidden}), miss.fill)
        expected = np.asarray(as_jpeg(without, settings.jpeg_quality))
        assert np.array_equal(drawn.images[n].permute(1, 2, 0).numpy(), expected)
        # only the hidden concept's pixels were redrawn
        changed = (without != photo).any(-1)
        outside = canvas.object != canvas.numbers[miss.hidden]
        assert changed.any() and not (changed & outside).any()
        shown = canvas.objects() - {miss.hidden}
        assert torch.equal(drawn.targets[n], torch.from_numpy(nearmiss.target(shown)))
    # drawn in two processes, the same images in the same order
    twice = nearmiss.draw(world, train * 4, (112, 112), workers=2, progress=False)
    assert torch.equal(twice.images[: len(plan)], drawn.images)


def _near_miss_loss(model: torch.nn.Module, near: nearmiss.NearMisses) -> float:
    norm = Normalise((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(norm(near.images)), near.targets))


@pytest.mark.slow
def test_training_on_near_misses_lowers_the_models_confidence_on_them(
    world: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    near = near_miss_source(world, progress=False)
    quiet = {"progress": False, "log": lambda _: None, "near_misses": near}
    losses = {}
    for weight in (0.0, 1.0):
        settings = TrainSettings(epochs=12, lr=3e-3, near_misses=weight)
        result = train_world_model(
            world, "world_alexnet", tmp_path / f"{weight}.pt", settings, **quiet
        )
        losses[weight] = _near_miss_loss(result["model"], near((112, 112)))
    # without them the model is sure of a class on near misses (4.5 on this world), with them it
    # comes close to the floor: a cross-entropy is at least its target's entropy (log K if uniform)
    targets = near((112, 112)).targets
    floor = float(-(targets * torch.log(targets.clamp_min(1e-12))).sum(1).mean())
    assert floor <= losses[1.0] < losses[0.0] - 1.0, (floor, losses)
    assert floor > 0.5 * math.log(K)  # most near misses obey no class
    recorded = torch.load(tmp_path / "1.0.pt", weights_only=True)["training"]["settings"]
    assert recorded["near_misses"] == 1.0
    # a checkpoint trained without near misses is not taken for one trained with them
    again = train_world_model(
        world,
        "world_alexnet",
        tmp_path / "0.0.pt",
        TrainSettings(epochs=4, lr=2e-3, near_misses=1.0),
        **quiet,
    )
    assert not again["reused"]


def test_the_roles_train_on_near_misses() -> None:
    assert all(s.near_misses == 1.0 for r, s in ROLE_SETTINGS.items() if r != SHUFFLED)
    # but for the shuffled-label role: near misses would teach it the true classes
    assert ROLE_SETTINGS[SHUFFLED].near_misses == 0.0
    assert TrainSettings().near_misses == 0.0  # any other architecture: the images only


def test_fit_refuses_a_near_miss_weight_without_near_misses(world: Path) -> None:
    with pytest.raises(ValueError, match="needs near-miss images"):
        train_world_model(
            world,
            "world_alexnet",
            world.parent / "m.pt",
            TrainSettings(epochs=1, near_misses=1.0),
            progress=False,
            log=lambda _: None,
            near_misses=lambda size: nearmiss.NearMisses(
                torch.empty(0, 3, *size, dtype=torch.uint8), torch.empty(0, K)
            ),
        )


def test_cli_checks_the_near_miss_weight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("-1", "nan"):
        assert main(["train", "--arch", "world_vgg", "--near-misses", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--near-misses must be a number >= 0" in err
    data = ["--data", str(tmp_path), "--arch", "resnet18", "--out", str(tmp_path / "m.pt")]
    assert main(["train", *data, "--near-misses", "1"]) == 2
    assert "applies to world models only" in capsys.readouterr().err
