"""Simulated raters: ground truth read from Broden files, judgement and answers by hand, and
whole runs against live servers (reproducible from the seed)."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from hitserver.cli import main
from hitserver.database import make_engine, upgrade
from hitserver.errors import UserError
from hitserver.loading import load_batch
from hitserver.simulate import (
    Rater,
    Study,
    WorldTruth,
    choose,
    overlap,
    quality,
    simulate,
)


def plane(numbers: np.ndarray) -> Image.Image:
    """A Broden segmentation plane: label number as R + 256 * G."""
    rgb = np.zeros((*numbers.shape, 3), dtype=np.uint8)
    rgb[..., 0] = numbers % 256
    rgb[..., 1] = numbers // 256
    return Image.fromarray(rgb)


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n0,-,,0,0,\n"
        "1,boat,object(1),1,0.1,boat\n2,water,object(1),1,0.5,water\n300,sail,part(1),1,0.1,sail\n"
    )
    (tmp_path / "index.csv").write_text(
        "image,split,ih,iw,sh,sw,color,object,part,scene\n"
        "00001.jpg,val,4,4,4,4,,00001_object.png,00001_part_1.png,7\n"
    )
    objects = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [2, 2, 2, 2], [2, 2, 2, 2]])
    parts = np.zeros((4, 4), dtype=np.int64)
    parts[0, 0] = 300
    plane(objects).save(tmp_path / "images" / "00001_object.png")
    plane(parts).save(tmp_path / "images" / "00001_part_1.png")
    rules = {"classes": [{"index": 0, "name": "harbor", "defining": ["boat", "water"]}]}
    (tmp_path / "world.json").write_text(json.dumps(rules))
    return tmp_path


def test_world_truth_decodes_r_plus_256_g(world: Path) -> None:
    masks = WorldTruth(world).masks("ibd-data/world/images/00001.jpg")
    assert set(masks) == {"boat", "water", "sail"}
    assert masks["boat"].sum() == 4 and masks["boat"][:2, :2].all()
    assert masks["water"][2:].all() and masks["water"].sum() == 8
    assert masks["sail"].sum() == 1 and masks["sail"][0, 0]  # number 300 = R 44 + 256 * G 1
    with pytest.raises(UserError, match="not an image of the world"):
        WorldTruth(world).masks("elsewhere/99.jpg")


def test_quality_rewards_present_and_covered_concepts(world: Path) -> None:
    truth = WorldTruth(world).masks("00001.jpg")
    on_boat = np.zeros((4, 4), bool)
    on_boat[:2, :2] = True
    on_water = ~on_boat & (np.arange(16).reshape(4, 4) >= 8)
    assert overlap(on_boat, truth["boat"]) == 1.0
    assert overlap(on_boat, truth["water"]) == 0.0
    good = {"method": "ibd", "concepts": ["boat", "water"]}
    score, _ = quality(good, [on_boat, on_water], truth, ["boat", "water"])
    assert score == pytest.approx(1.0)
    swapped, worst = quality(good, [on_water, on_boat], truth, ["boat", "water"])
    assert swapped == pytest.approx(0.5)  # both present, neither mask on its concept
    absent = {"method": "ibd", "concepts": ["boat", "car"]}
    score, worst = quality(absent, [on_boat, on_boat], truth, ["boat", "water"])
    assert score == pytest.approx(0.5) and worst == "car"  # (1 + 0) / 2
    cam = {"method": "cam", "concepts": ["harbor"]}
    score, worst = quality(cam, [on_boat], truth, ["boat", "water"])
    assert score == pytest.approx(1.0) and worst is None  # inside the defining union


def mirrored_study(tmp_path: Path, world: Path) -> Study:
    """One IBD explanation (boat on the boat, water off the water: q 0.75) against one CAM map
    (on the water: q 1.0), as the same pair in four items: IBD as Robot A or B, listed first or
    second in the manifest, and with other model names and Grad-CAM for CAM."""
    on_boat = np.zeros((4, 4), bool)
    on_boat[:2, :2] = True
    off_water = np.zeros((4, 4), bool)
    off_water[:2, 2:] = True
    masks = {"boat.png": on_boat, "off.png": off_water, "cam.png": ~on_boat & ~off_water}
    ibd = {"method": "ibd", "model": "m", "concepts": ["boat", "water"]}
    ibd["masks"] = ["boat.png", "off.png"]
    cam = {"method": "cam", "model": "m", "concepts": ["harbor"], "masks": ["cam.png"]}
    renamed = (dict(ibd, model="other"), dict(cam, method="gradcam", model="other"))
    pairs = {  # id: (first, second, robot_a)
        "ibd-is-a": (ibd, cam, "first"),
        "ibd-is-b": (ibd, cam, "second"),
        "ibd-is-a-listed-second": (cam, ibd, "second"),
        "ibd-is-a-renamed": (*renamed, "first"),
    }
    items = [
        {"id": name, "source_image": "00001.jpg", "class_name": "harbor", "catch": None,
         "first": first, "second": second, "robot_a": robot_a}
        for name, (first, second, robot_a) in pairs.items()
    ]  # fmt: skip
    batch = tmp_path / "mirrored"
    batch.mkdir()
    (batch / "manifest.json").write_text(json.dumps({"items": items}))
    np.savez(batch / "masks.npz", **masks)
    return Study([batch], world)


def test_the_rater_is_symmetric_in_robot_a_and_b(tmp_path: Path, world: Path) -> None:
    """Swapping Robot A and B mirrors the choice (1 <-> 5, 2 <-> 4); where a pair is listed in
    the manifest and what its models are called change nothing: only the masks, the concepts
    and the world's truth enter the judgement (and a rater's own position bias, here 0)."""
    study = mirrored_study(tmp_path, world)
    steady = Rater("r", bias=0.0, noise=0.0, slight=0.05, clear=0.3, careless=False)
    rng = random.Random(0)
    choices = {item: study.judge(item, steady, rng)[0] for item in study.items}
    assert choices["ibd-is-a"] == 4 and choices["ibd-is-b"] == 2  # q 0.75 against 1.0
    assert choices["ibd-is-a-listed-second"] == choices["ibd-is-a-renamed"] == 4
    noisy = Rater("n", bias=0.0, noise=0.3, slight=0.05, clear=0.3, careless=False)
    draws = 4000
    answers = {
        item: np.array([study.judge(item, noisy, random.Random(i))[0] for i in range(draws)])
        for item in study.items
    }
    # same random draws, same pair: the same answers wherever it is listed and however named
    assert np.array_equal(answers["ibd-is-a"], answers["ibd-is-a-listed-second"])
    assert np.array_equal(answers["ibd-is-a"], answers["ibd-is-a-renamed"])
    as_a = np.bincount(answers["ibd-is-a"], minlength=6)[1:] / draws
    as_b = np.bincount(6 - answers["ibd-is-b"], minlength=6)[1:] / draws
    assert np.abs(as_a - as_b).max() < 0.03, (as_a, as_b)  # mirrored distributions
    assert as_a[3:].sum() > 0.6  # and CAM, the better mask here, is preferred


def test_choices_follow_the_thresholds_and_careless_raters_are_random() -> None:
    steady = Rater("r", bias=0.0, noise=0.0, slight=0.05, clear=0.3, careless=False)
    rng = random.Random(0)
    assert [choose(steady, qa, 0.5, rng) for qa in (0.9, 0.6, 0.52, 0.4, 0.1)] == [1, 2, 3, 4, 5]
    leaning = Rater("r", bias=0.1, noise=0.0, slight=0.05, clear=0.3, careless=False)
    assert choose(leaning, 0.5, 0.5, rng) == 2  # position bias towards Robot A
    careless = Rater("c", bias=0.0, noise=0.0, slight=0.05, clear=0.3, careless=True)
    answers = {choose(careless, 1.0, 0.0, random.Random(i)) for i in range(50)}
    assert answers == {1, 2, 3, 4, 5}


def test_raters_are_reproducible_from_the_seed() -> None:
    crowd = [Rater.draw(i, seed=3, careless_rate=0.1) for i in range(40)]
    assert crowd == [Rater.draw(i, seed=3, careless_rate=0.1) for i in range(40)]
    assert len({r.worker_id for r in crowd}) == 40
    assert 1 <= sum(r.careless for r in crowd) <= 10


def simulation_ready(tmp_path: Path, write_batch, n_items: int) -> tuple[Path, Path]:
    """A batch (batchfixture) with the `masks.npz` hitgen writes beside it, and a concept world
    whose images show a boat and water in different places, so that the two robots' masks
    score differently from item to item."""
    batch = write_batch(tmp_path, "sim", n_items)
    world = tmp_path / "world"
    (world / "images").mkdir(parents=True)
    (world / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n0,-,,0,0,\n"
        "1,boat,object(1),1,0.1,boat\n2,water,object(1),1,0.5,water\n"
    )
    rows = ["image,split,ih,iw,sh,sw,color,object,part,scene"]
    masks: dict[str, np.ndarray] = {}
    manifest = json.loads((batch / "manifest.json").read_text())
    for index, item in enumerate(manifest["items"]):
        image = Path(item["source_image"]).name
        objects = np.full((8, 8), 2)  # water everywhere but the boat
        objects[index % 4 : index % 4 + 3, index % 5 : index % 5 + 3] = 1
        plane(objects).save(world / "images" / f"{index}_object.png")
        rows.append(f"{image},val,8,8,8,8,,{index}_object.png,,7")
        for side in ("first", "second"):
            for number, name in enumerate(item[side]["masks"]):
                mask = np.zeros((8, 8), bool)
                mask[(index + number) % 6 : (index + number) % 6 + 2, (3 * index) % 7 :] = True
                masks[name] = mask
    (world / "index.csv").write_text("\n".join(rows) + "\n")
    rules = {"classes": [{"index": 3, "name": "harbor", "defining": ["boat", "water"]}]}
    (world / "world.json").write_text(json.dumps(rules))
    np.savez(batch / "masks.npz", **masks)
    return batch, world


def simulated_answers(live, tmp_path: Path, batch: Path, world: Path, seed: int) -> set[tuple]:
    """Run `simulate` against a fresh server (SQLite, 2 gunicorn processes); its answers."""
    run = tmp_path / f"run-{uuid.uuid4().hex[:8]}"
    run.mkdir()
    url = f"sqlite:///{run / 'db.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    load_batch(engine, batch, assignments_per_item=3)
    with live.running_server(url, run / "server.log") as server:
        outcome = simulate(
            f"http://127.0.0.1:{server.port}",
            [batch],
            world,
            raters=6,
            seed=seed,
            careless_rate=0.5,
            threads=6,
            progress=False,
        )
    assert outcome.errors == []
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT worker_id, item_id, choice, reason FROM ratings")).all()
    engine.dispose()
    assert outcome.answered == len(rows) == 5 * 3
    return {tuple(row) for row in rows}


@pytest.mark.slow
def test_simulate_is_reproducible_from_its_seed(live, write_batch, tmp_path: Path) -> None:
    """Raters used to claim concurrently, so who got which item (and so every statistic of a
    demo) depended on thread timing."""
    batch, world = simulation_ready(tmp_path, write_batch, 5)
    first = simulated_answers(live, tmp_path, batch, world, seed=7)
    assert simulated_answers(live, tmp_path, batch, world, seed=7) == first
    assert {choice for _, _, choice, _ in first} != {3}  # the answers say something
    other = simulated_answers(live, tmp_path, batch, world, seed=8)
    # Another seed: other raters (their ids name the seed), so other answers.
    strip = {(w.rsplit("-", 1)[1], item, choice) for w, item, choice, _ in other}
    assert strip != {(w.rsplit("-", 1)[1], item, choice) for w, item, choice, _ in first}


def test_an_unreachable_server_is_a_one_line_error(
    live, write_batch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch, world = simulation_ready(tmp_path, write_batch, 1)
    url = f"http://127.0.0.1:{live.free_port()}"  # nothing listens there
    argv = ["simulate", str(batch), "--world", str(world), "--url", url, "--raters", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # The last line after the (closed) progress bar's.
    assert err.splitlines()[-1] == (
        f"hitserver simulate: error: the server at {url} cannot be reached "
        "([Errno 111] Connection refused)"
    )
