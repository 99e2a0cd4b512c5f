"""Ground-truth scoring on the concept world: rules vs decompositions, presence and pointing on
hand-made masks and heatmaps, deletion / insertion curves on a linear model whose curve is
known, the seeded random control, and `ibd evaluate` end to end on a two-image world written
here in the real formats."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from ibd.cli import main
from ibd.data.broden import encode_plane
from ibd.errors import UserError
from ibd.evaluation import faithfulness
from ibd.evaluation import scoring as ev
from ibd.explain import records as explanations
from ibd.explain.records import Component, Explanation
from ibd.nets.load import load_model, save_checkpoint

WORLD = {
    "format": "concept-world-1",
    "seed": 0,
    "image_size": [8, 8],
    "classes": [
        {
            "index": 0,
            "name": "harbor",
            "defining": ["boat", "water", "sky"],
            "optional": ["bird"],
            "forbidden": ["road"],
        },
        {
            "index": 1,
            "name": "street",
            "defining": ["road", "car"],
            "optional": [],
            "forbidden": [],
        },
    ],
    "concepts": [
        {"name": "sky", "category": "object", "number": 1, "parts": []},
        {"name": "water", "category": "object", "number": 2, "parts": []},
        {"name": "boat", "category": "object", "number": 3, "parts": ["hull", "sail"]},
        {"name": "road", "category": "object", "number": 4, "parts": []},
        {"name": "car", "category": "object", "number": 5, "parts": ["wheel", "window"]},
        {"name": "sail", "category": "part", "number": 6, "parts": []},
        {"name": "hull", "category": "part", "number": 7, "parts": []},
        {"name": "grass", "category": "object", "number": 8, "parts": []},
    ],
    "settings": {},
}


def decomposition_doc() -> dict:
    """harbor ranked by coefficient: sail 2.0, grass 1.0, water 0.5, sky 0.2 (listed in the
    order chosen, not by coefficient); street: car, road only."""
    return {
        "classes": [
            {
                "index": 0,
                "name": "harbor",
                "concepts": [
                    {"name": "water", "index": 1, "coefficient": 0.5},
                    {"name": "sail", "index": 5, "coefficient": 2.0},
                    {"name": "grass", "index": 7, "coefficient": 1.0},
                    {"name": "sky", "index": 0, "coefficient": 0.2},
                ],
                "residual_fraction": 0.3,
            },
            {
                "index": 1,
                "name": "street",
                "concepts": [
                    {"name": "road", "index": 3, "coefficient": 0.9},
                    {"name": "car", "index": 4, "coefficient": 1.5},
                ],
                "residual_fraction": 0.2,
            },
        ],
        "meta": {"mean_residual_fraction": 0.25},
    }


# -- rules vs decomposition -------------------------------------------------------------------


def test_precision_recall_from_files(tmp_path: Path) -> None:
    (tmp_path / "world.json").write_text(json.dumps(WORLD))
    (tmp_path / "dec.json").write_text(json.dumps(decomposition_doc()))
    world = ev.read_world(tmp_path / "world.json")
    ranked = ev.read_decomposition(tmp_path / "dec.json")
    assert [n for n, _ in ranked["harbor"]] == ["sail", "grass", "water", "sky"]

    harbor = ev.match_rules(
        [n for n, _ in ranked["harbor"]], ["boat", "water", "sky"], world.parts, 3
    )
    assert harbor.top == ("sail", "grass", "water")
    # strict: only water is defining; lenient: sail is a part of boat
    assert harbor.precision_strict == pytest.approx(1 / 3)
    assert harbor.precision_lenient == pytest.approx(2 / 3)
    assert harbor.recall_strict == pytest.approx(1 / 3)  # water
    assert harbor.recall_lenient == pytest.approx(2 / 3)  # boat (via sail), water

    street = ev.match_rules([n for n, _ in ranked["street"]], ["road", "car"], world.parts, 3)
    assert street.top == ("car", "road")  # only two listed: scored on those
    assert (street.precision_strict, street.recall_strict) == (1.0, 1.0)

    top1 = ev.match_rules(["sail", "water"], ["boat", "water", "sky"], world.parts, 1)
    assert (top1.precision_strict, top1.precision_lenient) == (0.0, 1.0)
    assert (top1.recall_strict, top1.recall_lenient) == (0.0, pytest.approx(1 / 3))


def test_match_rules_edge_cases() -> None:
    empty = ev.match_rules([], ["boat"], {}, 3)
    assert empty.precision_strict == 0.0 and empty.recall_strict == 0.0
    assert math.isnan(ev.match_rules(["boat"], [], {}, 3).recall_strict)
    with pytest.raises(ValueError):
        ev.match_rules(["boat"], ["boat"], {}, 0)


def test_read_world_rejects_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    with pytest.raises(UserError, match="not found"):
        ev.read_world(path)
    path.write_text("{")
    with pytest.raises(UserError, match="not JSON"):
        ev.read_world(path)
    path.write_text(json.dumps({**WORLD, "format": "other"}))
    with pytest.raises(UserError, match="format"):
        ev.read_world(path)
    bad = {**WORLD, "classes": [{**WORLD["classes"][0], "defining": "boat"}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"classes\[0\]\.defining"):
        ev.read_world(path)
    (tmp_path / "dec.json").write_text(json.dumps({"classes": [{"name": "x"}]}))
    with pytest.raises(UserError, match="not a decompose.json"):
        ev.read_decomposition(tmp_path / "dec.json")


# -- pointing -----------------------------------------------------------------------------------


def corner_heatmap() -> torch.Tensor:
    """2x2 map peaked bottom-right. Upsampled bilinearly to 4x4 (align_corners=False) its
    bottom-right 2x2 block is [[0.5625, 0.75], [0.75, 1]] and every other value is <= 0.25, so
    the top 20% (ceil(3.2) = 4 pixels) is exactly that block."""
    return torch.tensor([[0.0, 0.0], [0.0, 1.0]])


def test_top_region_of_upsampled_corner() -> None:
    big = torch.nn.functional.interpolate(
        corner_heatmap()[None, None], size=(4, 4), mode="bilinear", align_corners=False
    )[0, 0]
    region = ev.top_region(big)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[2:, 2:] = True
    assert torch.equal(region, expected)
    assert ev.top_region(torch.ones(3, 3)).all()  # ties: a constant map points everywhere


def test_top_region_of_a_sparse_map_is_its_raised_part() -> None:
    """A ReLU'd map that is zero on 46 of 49 cells: the 20% threshold (the 10th largest value)
    is 0, and counting every tied zero would make the region the whole map."""
    heatmap = torch.zeros(7, 7)
    heatmap[0, 0], heatmap[0, 1], heatmap[1, 0] = 3.0, 2.0, 1.0
    region = ev.top_region(heatmap)
    assert torch.equal(region, heatmap > 0)
    far = torch.zeros(7, 7, dtype=torch.bool)
    far[5:, 5:] = True
    assert ev.point(heatmap, far).hit is False
    # ties within the fraction stay in: 10 equal cells of 49 are exactly the top ceil(9.8)
    heatmap[3, :] = 1.0
    assert int(ev.top_region(heatmap).sum()) == 10


def test_pointing_hits_and_misses() -> None:
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True  # top-left: disjoint from the region
    miss = ev.point(corner_heatmap(), mask)
    assert (miss.hit, miss.precision) == (False, 0.0)
    mask[3, 3] = True  # one pixel of the 4-pixel region
    hit = ev.point(corner_heatmap(), mask)
    assert (hit.hit, hit.precision) == (True, 0.25)
    full = ev.point(corner_heatmap(), torch.ones(4, 4, dtype=torch.bool))
    assert full.precision == 1.0
    # upsampled, the next values are 0.25 at (1, 3), (3, 1) and 0.1875 at (1, 2), (2, 1): a 40%
    # region (ceil(6.4) = 7 pixels, the tie at 0.1875 makes 8) reaches (1, 3), the 20% one not
    beside = torch.zeros(4, 4, dtype=torch.bool)
    beside[1, 3] = True
    assert not ev.point(corner_heatmap(), beside).hit
    wide = ev.point(corner_heatmap(), beside, 0.4)
    assert (wide.hit, wide.precision) == (True, 1 / 8)


def test_score_explanation_concepts_and_class_maps() -> None:
    world = rules()
    index = {"sky": 0, "water": 1, "boat": 2, "road": 3}
    masks = torch.zeros(4, 4, 4, dtype=torch.bool)
    masks[0, :2] = True  # sky on top
    masks[1, 2:, :2] = True  # water bottom-left
    masks[2, 3, 3] = True  # a one-pixel boat bottom-right
    heat = corner_heatmap()
    boat = ev.score_explanation("ibd", "boat", "harbor", heat, masks, index, world)
    assert (boat.present, boat.hit, boat.precision) == (True, True, 0.25)
    # a 1-pixel boat covers 1/16 of the image: a quarter of the region is 4 times chance
    assert (boat.coverage, boat.lift) == (1 / 16, 4.0)
    road = ev.score_explanation("netdissect", "road", "harbor", heat, masks, index, world)
    assert (road.present, road.hit, road.coverage) == (False, False, 0.0)
    assert math.isnan(road.lift)
    unknown = ev.score_explanation("netdissect", "zebra", "harbor", heat, masks, index, world)
    assert (unknown.present, unknown.hit) == (False, False)
    # CAM aims at boat | water | sky: the bottom-right block holds the boat pixel only
    cam = ev.score_explanation("cam", None, "harbor", heat, masks, index, world)
    assert (cam.present, cam.hit, cam.precision, cam.target) == (None, True, 0.25, "boat+water+sky")
    assert cam.coverage == (8 + 4 + 1) / 16
    top_left = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    cam_sky = ev.score_explanation("gradcam", None, "harbor", top_left, masks, index, world)
    assert cam_sky.precision == 1.0
    with pytest.raises(UserError, match="'forest'"):
        ev.score_explanation("cam", None, "forest", heat, masks, index, world)


def test_peak_hit_is_the_upsampled_maximum() -> None:
    # corner_heatmap upsampled to 4x4 peaks (value 1) at (3, 3) only
    at = torch.zeros(4, 4, dtype=torch.bool)
    at[3, 3] = True
    assert ev.peak_hit(corner_heatmap(), at)
    beside = torch.zeros(4, 4, dtype=torch.bool)
    beside[2:, 2:] = True
    beside[3, 3] = False  # the rest of the top-20% block: overlap would hit, the peak misses
    assert ev.point(corner_heatmap(), beside).hit
    assert not ev.peak_hit(corner_heatmap(), beside)
    # a constant map's maximum is the first pixel in raster order
    first = torch.zeros(3, 3, dtype=torch.bool)
    first[0, 0] = True
    assert ev.peak_hit(torch.ones(2, 2), first)
    assert not ev.peak_hit(torch.ones(2, 2), ~first)


def test_concept_trials_one_per_defining_concept_present() -> None:
    world = rules()  # harbor: boat, water, sky
    index = {"sky": 0, "water": 1, "boat": 2, "road": 3}
    masks = torch.zeros(4, 4, 4, dtype=torch.bool)
    masks[0, :2] = True  # sky on top
    masks[2, 3, 3] = True  # a one-pixel boat bottom-right; no water: no water trial
    top_left = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    maps = {"boat": corner_heatmap(), "road": top_left}
    ibd = ev.concept_trials(maps, None, "harbor", masks, index, world)
    assert ibd == [
        ev.ConceptTrial("boat", shown=True, peak=True, overlap=True),
        ev.ConceptTrial("sky", shown=False, peak=False, overlap=False),  # no sky component
    ]
    # a class map answers every trial with the same map: its peak is in the boat, not the sky
    cam = ev.concept_trials(None, corner_heatmap(), "harbor", masks, index, world)
    assert [(t.concept, t.peak, t.overlap) for t in cam] == [
        ("boat", True, True),
        ("sky", False, False),
    ]
    sky_map = ev.concept_trials(None, top_left, "harbor", masks, index, world)
    assert [(t.concept, t.peak) for t in sky_map] == [("boat", False), ("sky", True)]
    with pytest.raises(UserError, match="'forest'"):
        ev.concept_trials(None, top_left, "forest", masks, index, world)


def test_rank_by_contribution_means_over_the_class_explanations() -> None:
    decomposition = {
        "harbor": [("sail", 2.0), ("water", 0.5), ("sky", 0.2)],
        "street": [("car", 1.0)],
    }
    explained = [
        ("harbor", {"sail": 0.1, "water": 0.9, "sky": 0.3}),
        ("harbor", {"sail": 0.3, "water": 0.5}),  # sky not listed: its mean is over one
        ("harbor", {"grass": 5.0}),  # not in the decomposition: ignored
        ("forest", {"tree": 1.0}),  # a class the decomposition lacks: ignored
    ]
    ranked = ev.rank_by_contribution(decomposition, explained)
    assert ranked == {"harbor": [("water", 0.7), ("sky", 0.3), ("sail", 0.2)]}


def rules() -> ev.World:
    classes = tuple(
        ev.WorldClass(c["index"], c["name"], tuple(c["defining"]), (), ()) for c in WORLD["classes"]
    )
    return ev.World(classes, {c["name"]: tuple(c["parts"]) for c in WORLD["concepts"]})


# -- deletion / insertion ------------------------------------------------------------------------


class PixelSum(nn.Module):
    """Logit 0 = the sum of every input value, logit 1 = minus it: linear in the pixels."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(size, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([torch.ones(size), -torch.ones(size)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def linear_case() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1 x 3 x 2 x 2 image whose pixels' channel sums are 4, 3, 2, 1 (row-major), and a
    saliency equal to those sums."""
    sums = torch.tensor([[4.0, 3.0], [2.0, 1.0]])
    image = torch.stack([sums * 0.5, sums * 0.25, sums * 0.25])[None]
    return image, sums[None]


def test_deletion_and_insertion_on_a_linear_model() -> None:
    image, saliency = linear_case()
    score = faithfulness.class_score(PixelSum(12), "logit")
    zeros = torch.zeros_like(image)
    result = faithfulness.curves(
        score, image, saliency, torch.tensor([0]), steps=4, insertion_baseline=zeros
    )
    np.testing.assert_allclose(result.fractions, [0, 0.25, 0.5, 0.75, 1])
    # deleting the most salient pixel first: 10 -> 6 -> 3 -> 1 -> 0
    np.testing.assert_allclose(result.deletion[0], [10, 6, 3, 1, 0], atol=1e-5)
    np.testing.assert_allclose(result.insertion[0], [0, 4, 7, 9, 10], atol=1e-5)
    # trapezoids of width 1/4: (8 + 4.5 + 2 + 0.5) / 4 and (2 + 5.5 + 8 + 9.5) / 4
    np.testing.assert_allclose(result.deletion_auc, [3.75], atol=1e-5)
    np.testing.assert_allclose(result.insertion_auc, [6.25], atol=1e-5)
    # the reversed (least faithful) map deletes 1, 2, 3, 4: a larger deletion area
    reverse = faithfulness.curves(
        score, image, -saliency, torch.tensor([0]), steps=4, insertion_baseline=zeros
    )
    np.testing.assert_allclose(reverse.deletion_auc, [6.25], atol=1e-5)
    # class 1 is minus the sum; two steps change two pixels each: -10 -> -3 -> 0
    two = faithfulness.curves(score, image, saliency, torch.tensor([1]), steps=2)
    np.testing.assert_allclose(two.deletion[0], [-10, -3, 0], atol=1e-5)


def test_curves_do_not_depend_on_batching() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 5, 5, generator=generator)
    saliency = torch.rand(3, 5, 5, generator=generator)
    model = PixelSum(75)
    score = faithfulness.class_score(model, "probability")
    targets = torch.tensor([0, 1, 0])
    one = faithfulness.curves(score, images, saliency, targets, steps=6, batch_size=1)
    many = faithfulness.curves(score, images, saliency, targets, steps=6, batch_size=100)
    np.testing.assert_allclose(one.deletion, many.deletion, atol=1e-6)
    np.testing.assert_allclose(one.insertion, many.insertion, atol=1e-6)
    # 25 pixels in 6 steps: floor(t * 25 / 6) changed
    assert list(faithfulness.step_counts(25, 6)) == [0, 4, 8, 12, 16, 20, 25]
    # the insertion curve ends, and the deletion curve starts, at the clean image's score
    clean = score(images, targets).numpy()
    np.testing.assert_allclose(one.deletion[:, 0], clean, atol=1e-6)
    np.testing.assert_allclose(one.insertion[:, -1], clean, atol=1e-6)


class NormedPixels(nn.Module):
    """batch norm (running statistics set) on the input, then a linear layer on its pixels."""

    def __init__(self, size: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.BatchNorm2d(3)
        self.fc = nn.Linear(size, 2)
        with torch.no_grad():
            self.norm.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
            self.norm.running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x).flatten(1))


def test_class_score_runs_a_model_in_training_mode_as_in_eval_mode() -> None:
    # In training mode batch norm would score each perturbed input by its batch's statistics
    # (the curves would depend on --batch-size) and overwrite the running statistics.
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 4, 4, generator=generator)
    saliency = torch.rand(2, 4, 4, generator=generator)
    targets = torch.tensor([0, 1])
    model = NormedPixels(48)
    with torch.no_grad():
        clean = torch.softmax(model.eval()(images), dim=1)[[0, 1], [0, 1]]
    model.train()
    running = model.norm.running_mean.clone()
    score = faithfulness.class_score(model, "probability")
    np.testing.assert_allclose(score(images, targets).numpy(), clean.numpy(), rtol=1e-6)
    one = faithfulness.curves(score, images, saliency, targets, steps=4, batch_size=1)
    many = faithfulness.curves(score, images, saliency, targets, steps=4, batch_size=20)
    np.testing.assert_allclose(one.deletion, many.deletion, rtol=1e-6)
    np.testing.assert_allclose(one.deletion[:, 0], clean.numpy(), rtol=1e-6)
    assert model.training and torch.equal(model.norm.running_mean, running)


def test_blur_baseline_keeps_a_constant_image() -> None:
    flat = torch.full((1, 3, 16, 16), 0.7)
    torch.testing.assert_close(faithfulness.blur(flat), flat)


def test_combine_weights_normalised_maps() -> None:
    first = np.array([[0.0, 2.0], [4.0, 4.0]])  # -> [[0, .5], [1, 1]]
    second = np.array([[5.0, 5.0], [5.0, 7.0]])  # -> [[0, 0], [0, 1]]
    combined = faithfulness.combine([first, second], [2.0, -1.0])
    np.testing.assert_allclose(combined, [[0.0, 1.0], [2.0, 1.0]])


def test_random_control_is_seeded() -> None:
    a = faithfulness.random_heatmap((7, 7), seed=3, position=5)
    assert a.dtype == np.float32 and a.shape == (7, 7) and a.min() >= 0 and a.max() < 1
    np.testing.assert_array_equal(a, faithfulness.random_heatmap((7, 7), seed=3, position=5))
    assert not np.array_equal(a, faithfulness.random_heatmap((7, 7), seed=4, position=5))
    assert not np.array_equal(a, faithfulness.random_heatmap((7, 7), seed=3, position=6))


# -- ibd evaluate end to end --------------------------------------------------------------------

LABELS = [(n, c["name"], c["category"]) for c in WORLD["concepts"] for n in [c["number"]]]


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_world(root: Path) -> Path:
    """Two 8x8 images. a (harbor): sky rows 0-3, water rows 4-7, a boat at rows 4-7 cols 0-3
    whose bottom half is hull (part plane). b (street): road rows 4-7 with a car at rows 4-7
    cols 4-7, grass on top."""
    world = root / "world"
    images = world / "images"
    images.mkdir(parents=True)
    a_object = np.zeros((8, 8), dtype=np.int64)
    a_object[:4], a_object[4:], a_object[4:, :4] = 1, 2, 3
    a_part = np.zeros((8, 8), dtype=np.int64)
    a_part[6:, :4] = 7
    b_object = np.full((8, 8), 8, dtype=np.int64)
    b_object[4:], b_object[4:, 4:] = 4, 5
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{name}.png")
    encode_plane(a_object).save(images / "a_object.png")
    encode_plane(a_part).save(images / "a_part.png")
    encode_plane(b_object).save(images / "b_object.png")
    _csv(
        world / "index.csv",
        ["image", "split", "ih", "iw", "sh", "sw", "object", "part"],
        [
            ["a.png", "val", 8, 8, 8, 8, "a_object.png", "a_part.png"],
            ["b.png", "val", 8, 8, 8, 8, "b_object.png", ""],
        ],
    )
    counts = {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 0, 7: 1, 8: 1}
    _csv(
        world / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        [[0, "-", "-", 0, 0, ""]]
        + [[n, name, f"{cat}({counts[n]})", counts[n], 1.0, ""] for n, name, cat in LABELS],
    )
    _csv(
        world / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [["object", 1, 8, 6, 2], ["part", 6, 7, 2, 1]],
    )
    _csv(
        world / "scenes.csv",
        ["image", "split", "class_index", "class_name"],
        [["images/a.png", "explain", 0, "harbor"], ["images/b.png", "explain", 1, "street"]],
    )
    (world / "world.json").write_text(json.dumps(WORLD))
    return world


BOTTOM_LEFT = np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
BOTTOM_RIGHT = np.array([[0.0, 0.0], [0.0, 1.0]], dtype=np.float32)
TOP_RIGHT = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)


def write_explanations(home: Path, world: Path) -> None:
    """ibd: a boat map on the boat (hit), a car map on the car (hit). netdissect: 'road' on
    image a (absent: miss), 'grass' on b pointing at the grass (hit). cam: a sky-ward map on a
    (inside boat | water | sky: hit), a top map on b (grass: outside road | car: miss)."""
    a, b = str(world / "images" / "a.png"), str(world / "images" / "b.png")
    plans = {
        "ibd": [(a, 0, "harbor", ["boat", "sky"], [BOTTOM_LEFT, TOP_RIGHT]),
                (b, 1, "street", ["car"], [BOTTOM_RIGHT])],
        "netdissect": [(a, 0, "harbor", ["road"], [BOTTOM_LEFT]),
                       (b, 1, "street", ["grass"], [TOP_RIGHT])],
        "cam": [(a, 0, "harbor", ["harbor"], [TOP_RIGHT]),
                (b, 1, "street", ["street"], [TOP_RIGHT])],
    }  # fmt: skip
    for method, plan in plans.items():
        records, maps = [], {}
        for n, (image, k, name, labels, heat) in enumerate(plan):
            components = []
            for j, (label, h) in enumerate(zip(labels, heat, strict=True)):
                maps[f"{n}-{j}"] = h
                components.append(Component(label, 1.0 - 0.5 * j, f"{n}-{j}"))
            residual = None if method == "cam" else 0.25
            records.append(
                Explanation(image, "tiny", method, k, name, 1.5, components, residual, (2, 2))
            )
        explanations.write(home / "explanations" / "tiny" / method, records, maps)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    world = write_world(root)
    (root / "decompose").mkdir()
    (root / "decompose" / "world_resnet.json").write_text(json.dumps(decomposition_doc()))
    write_explanations(root, world)
    torch.manual_seed(0)
    save_checkpoint(
        root / "models" / "tiny.pt",
        torchvision.models.resnet18(num_classes=2),
        arch="resnet18",
        classes=["harbor", "street"],
        layer="layer4",
        input_size=(32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def evaluate(home: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Path:
    monkeypatch.setenv("IBD_HOME", str(home))
    out = home / f"out{len(list(home.glob('out*')))}"
    assert main(["evaluate", "--steps", "4", "--out", str(out), *extra]) == 0
    return out


@pytest.mark.slow
def test_evaluate_command_scores_the_fixture(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = evaluate(home, monkeypatch)
    printed = capsys.readouterr().out
    assert "| harbor | boat, water, sky | sail, grass, water |" in printed
    decomposition = {r["class"]: r for r in read_rows(out / "decomposition.csv")}
    assert float(decomposition["harbor"]["precision_lenient"]) == pytest.approx(2 / 3)
    assert float(decomposition["street"]["recall_strict"]) == 1.0

    summary = {r["method"]: r for r in read_rows(out / "summary.csv")}
    assert set(summary) == {"ibd", "netdissect", "cam", "random"}
    assert (float(summary["ibd"]["present"]), float(summary["ibd"]["pointing"])) == (1.0, 1.0)
    assert float(summary["netdissect"]["present"]) == 0.5  # road absent from a, grass in b
    assert float(summary["netdissect"]["pointing"]) == 0.5
    assert summary["cam"]["present"] == ""  # n/a for class maps
    assert float(summary["cam"]["pointing"]) == 0.5
    assert float(summary["ibd"]["accuracy"]) == 1.0
    for method in summary:
        for key in ("deletion_auc", "insertion_auc"):
            assert 0.0 <= float(summary[method][key]) <= 1.0
    rows = read_rows(out / "explanations.csv")
    assert len(rows) == 8  # 3 methods x 2 images + one random control per image
    ibd_a = next(r for r in rows if r["method"] == "ibd" and r["image"].endswith("a.png"))
    assert (ibd_a["top_label"], ibd_a["present"], ibd_a["hit"]) == ("boat", "True", "True")
    # the boat map's top 13 pixels (ceil(0.2 * 64)) lie in the boat's rows 4-7, cols 0-3
    assert float(ibd_a["region_precision"]) == 1.0
    # the boat covers 16 of 64 pixels: lift 4; ibd on b: the car, also 16 of 64
    assert (float(ibd_a["coverage"]), float(ibd_a["lift"])) == (0.25, 4.0)
    assert float(summary["ibd"]["lift"]) == 4.0
    curves = read_rows(out / "curves.csv")
    assert [float(r["fraction"]) for r in curves if r["method"] == "ibd"] == [0, 0.25, 0.5, 0.75, 1]
    # concept pointing game, 5 trials (a: boat, water, sky; b: road, car). ibd: boat and sky
    # on a and car on b are shown and hit, water and road are not shown. cam's top-right maps
    # point at a's sky only. netdissect shows no defining concept.
    game = {
        m: (float(summary[m]["concept_pointing"]), float(summary[m]["concept_overlap"]))
        for m in ("ibd", "cam", "netdissect")
    }
    assert game == {"ibd": (0.6, 0.6), "cam": (0.2, 0.2), "netdissect": (0.0, 0.0)}
    assert int(summary["ibd"]["concept_trials"]) == 5
    assert float(summary["ibd"]["concept_shown"]) == 0.6
    assert (ibd_a["concept_trials"], ibd_a["concept_peak"]) == ("3", "2")
    report = (out / "report.md").read_text()
    assert (
        "Target IBD pointing above CAM's on tiny (concept pointing game): 0.600 vs 0.200 (met); "
        "top-component overlap 1.000 vs 0.500." in report
    )
    assert not (out / "decomposition_by_contribution.csv").exists()  # no meta.model to match
    document = json.loads((out / "evaluate.json").read_text())
    assert document["settings"]["steps"] == 4
    # a hand-written world has no generator settings: no counterfactuals, and a note says why
    assert document["counterfactual"] is None and not (out / "counterfactual.csv").exists()
    assert "Note: no counterfactual images:" in report and summary["ibd"]["cf_measured"] == ""


def test_evaluate_ranks_by_contribution(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Coefficients rank harbor sail, sky, boat; the tiny model's IBD explanation of image a
    gives boat 1.0 and sky 0.5 and does not list sail: by contribution, boat then sky."""
    doc = decomposition_doc()
    doc["classes"][0]["concepts"] = [
        {"name": "sail", "index": 5, "coefficient": 2.0},
        {"name": "sky", "index": 0, "coefficient": 1.0},
        {"name": "boat", "index": 2, "coefficient": 0.1},
    ]
    doc["meta"]["model"] = "tiny"
    path = tmp_path / "decompose.json"
    path.write_text(json.dumps(doc))
    out = evaluate(home, monkeypatch, "--decomposition", str(path), "--no-faithfulness")
    by_coefficient = {r["class"]: r for r in read_rows(out / "decomposition.csv")}
    by_contribution = {r["class"]: r for r in read_rows(out / "decomposition_by_contribution.csv")}
    assert by_coefficient["harbor"]["top"] == "sail;sky;boat"
    assert float(by_coefficient["harbor"]["precision_strict"]) == pytest.approx(2 / 3)
    assert by_contribution["harbor"]["top"] == "boat;sky"
    assert float(by_contribution["harbor"]["precision_strict"]) == 1.0
    assert by_contribution["street"]["top"] == "car"
    document = json.loads((out / "evaluate.json").read_text())
    assert document["decomposition_by_contribution"]["mean"]["precision_strict"] == 1.0
    assert document["decomposition_by_contribution"]["missing_classes"] == []
    assert "top 3 by mean contribution" in (out / "report.md").read_text()

    # Only image a (harbor) explained: street cannot be ranked by contribution. The mean, and
    # the target's verdict, cover harbor alone, and the report says so.
    out = evaluate(
        home, monkeypatch, "--decomposition", str(path), "--no-faithfulness", "--limit", "1"
    )
    assert [r["class"] for r in read_rows(out / "decomposition_by_contribution.csv")] == ["harbor"]
    document = json.loads((out / "evaluate.json").read_text())["decomposition_by_contribution"]
    assert document["missing_classes"] == ["street"]
    assert document["mean"]["precision_lenient"] == 1.0  # harbor's boat, sky
    report = (out / "report.md").read_text().splitlines()
    # the ranking by coefficient covers both classes; the one by contribution says it does not
    assert [line for line in report if line.startswith(("Target precision", "Left out"))] == [
        "Target precision@3 (lenient) >= 0.8, by coefficient: 1.000 (met).",
        "Target precision@3 (lenient) >= 0.8, by contribution: 1.000 (met, over 1 of 2 classes).",
        "Left out of the mean, no IBD explanation of the class: street.",
    ]


@pytest.mark.slow
def test_evaluate_random_control_reproducible(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def random_rows(out: Path) -> list[dict[str, str]]:
        return [r for r in read_rows(out / "explanations.csv") if r["method"] == "random"]

    first = random_rows(evaluate(home, monkeypatch, "--seed", "7"))
    again = random_rows(evaluate(home, monkeypatch, "--seed", "7"))
    other = random_rows(evaluate(home, monkeypatch, "--seed", "8", "--no-faithfulness"))
    assert first == again and len(first) == 2
    assert [r["region_precision"] for r in first] != [r["region_precision"] for r in other]


@pytest.mark.slow
def test_insertion_from_the_mean_colour(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Insertion from the mean colour starts at the score of the all-mean image (zero after
    normalisation) and ends at the clean image's; deletion runs the other way."""
    cam_dir = home / "explanations" / "tiny" / "cam"
    out = evaluate(home, monkeypatch, "--insertion-from", "mean", "--explanations", str(cam_dir))
    loaded = load_model(None, home / "models" / "tiny.pt")
    with torch.no_grad():
        blank = torch.softmax(loaded.model(torch.zeros(1, 3, 32, 32)), dim=1)[0]
    expected_start = float(blank[[0, 1]].mean())  # the two images explain classes 0 and 1
    rows = [r for r in read_rows(out / "curves.csv") if r["method"] == "cam"]
    assert float(rows[0]["insertion"]) == pytest.approx(expected_start, abs=1e-5)
    assert float(rows[-1]["deletion"]) == pytest.approx(expected_start, abs=1e-5)
    assert float(rows[-1]["insertion"]) == pytest.approx(float(rows[0]["deletion"]), abs=1e-5)
    settings = json.loads((out / "evaluate.json").read_text())["settings"]
    assert settings["insertion_baseline"] == "mean colour"


def test_items_carry_each_explanation_s_own_saliency(home: Path) -> None:
    """Deletion and insertion remove pixels in the order of the explanation's own map: the
    class map for cam, sum_i c_i norm(h_i) for ibd (faithfulness.combine)."""
    from ibd.evaluation.items import read_items

    world = home / "world"
    lookup = {(world / "images" / f"{n}.png").resolve(): i for i, n in enumerate("ab")}
    cam, _ = read_items(home / "explanations" / "tiny" / "cam", None, lookup, {}, "sum")
    assert all(np.array_equal(item.saliency, TOP_RIGHT) for item in cam)
    ibd, _ = read_items(home / "explanations" / "tiny" / "ibd", None, lookup, {}, "sum")
    np.testing.assert_allclose(ibd[0].saliency, 1.0 * BOTTOM_LEFT + 0.5 * TOP_RIGHT)
    top, _ = read_items(home / "explanations" / "tiny" / "ibd", None, lookup, {}, "top")
    np.testing.assert_allclose(top[0].saliency, BOTTOM_LEFT)


@pytest.mark.parametrize(
    ("heatmap", "message"),
    [
        (np.zeros((2, 2, 2), np.float32), "must be 2-D and of one shape"),
        (np.full((2, 2), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_evaluate_refuses_bad_heatmaps(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    heatmap: np.ndarray,
    message: str,
) -> None:
    image = str(home / "world" / "images" / "a.png")
    record = Explanation(
        image, "tiny", "ibd", 0, "harbor", 1.0, [Component("boat", 1.0, "h")], 0.0, (2, 2)
    )
    explanations.write(tmp_path / "bad", [record], {"h": heatmap})
    monkeypatch.setenv("IBD_HOME", str(home))
    argv = ["evaluate", "--out", str(tmp_path / "o"), "--explanations", str(tmp_path / "bad")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ibd evaluate: error:") and message in err[0]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda h: ["--world", str(h / "nowhere")], "world rules not found"),
        (lambda h: ["--explanations", str(h / "nowhere")], "not an explanation directory"),
        (lambda h: ["--decomposition", str(h / "nowhere.json")], "decomposition not found"),
        (lambda h: ["--k", "0"], "--k must be at least 1"),
        (lambda h: ["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        (lambda h: ["--road-percentages", "0,50"], "--road-percentages must be integers from 1"),
        (lambda h: ["--road-percentages", "ten"], "--road-percentages must be integers from 1"),
        (lambda h: ["--road-noise", "-1"], "--road-noise must be >= 0, got -1.0"),
        (lambda h: ["--faithfulness-limit", "0"], "--faithfulness-limit must be at least 1, got 0"),
        (lambda h: ["--weights", str(h / "models" / "tiny.pt"), "--name", "other"], "not other"),
        # a hand-written world cannot be drawn again without a concept
        (lambda h: ["--counterfactual", "grey"], "is not a concept world's world.json"),
    ],
)
def test_evaluate_user_errors(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setup,
    message: str,
) -> None:
    monkeypatch.setenv("IBD_HOME", str(home))
    assert main(["evaluate", "--out", str(home / "err"), *setup(home)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ibd evaluate: error:") and message in err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "scenes.csv",
            b"image,split\nimages/a.png,explain\n",
            "scenes.csv has no column(s) class_name",
        ),
        ("category.csv", b"\xff\xfe\x00name\n\x81\n", "category.csv is not a readable CSV file"),
    ],
)
def test_evaluate_bad_world_csv_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    message: str,
) -> None:
    world = write_world(tmp_path)
    write_explanations(tmp_path, world)
    (world / name).write_bytes(content)
    monkeypatch.setenv("IBD_HOME", str(tmp_path))
    argv = ["evaluate", "--no-faithfulness", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ibd evaluate: error:") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_class_the_model_does_not_have_before_any_curve(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # tiny's class 0 is harbor; an explanation saying class 0 is street is of another model
    image = str(home / "world" / "images" / "b.png")
    record = Explanation(
        image, "tiny", "cam", 0, "street", 1.0, [Component("street", 1.0, "h")], None, (2, 2)
    )
    explanations.write(tmp_path / "swapped", [record], {"h": TOP_RIGHT})
    monkeypatch.setenv("IBD_HOME", str(home))
    out = tmp_path / "o"
    argv = ["evaluate", "--out", str(out), "--explanations", str(tmp_path / "swapped")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith("class 0 'street' is not that class of model tiny")
    assert "ground truth" not in captured.err + captured.out and not out.exists()
