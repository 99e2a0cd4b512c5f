"""Simulated raters: ground truth read from Broden files, judgement and answers by hand."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hitserver.errors import UserError
from hitserver.simulate import Rater, WorldTruth, choose, overlap, quality


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
