"""The concept world: determinism, rules, masks against the pixels, the Broden round trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion, label

from ibd.cli import main
from ibd.data.broden import BrodenDataset, decode_plane
from ibd.errors import UserError
from ibd.evaluation.scoring import lenient_correct
from ibd.world.canvas import Canvas
from ibd.world.rules import CLASSES, SceneClass, check_consistent, check_exclusive
from ibd.world.scenes import render
from ibd.world.vocabulary import COLOURS, OBJECTS, PARTS, PARTS_OF, SHADES
from ibd.world.writer import WorldSettings, assign_splits, build, labels, render_image

TINY = WorldSettings(seed=3, images=48)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    assert build(out, TINY, workers=2, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _numbers(world: Path) -> dict[str, int]:
    return {
        c["name"]: c["number"] for c in json.loads((world / "world.json").read_text())["concepts"]
    }


def test_vocabulary_and_rules_are_well_formed() -> None:
    assert len(CLASSES) >= 10
    assert check_exclusive(CLASSES) == [] and check_consistent(CLASSES) == []
    assert all(name in COLOURS for shades in SHADES.values() for name, _ in shades)
    names = [lb.name for lb in labels()]
    assert len(names) == len(set(names))
    # classes share concepts, as in the paper's Fig. 3
    defining = [c for k in CLASSES for c in k.defining]
    assert defining.count("water") >= 3 and "cliff" in defining and defining.count("house") >= 2


def test_every_class_can_score_full_precision_at_3() -> None:
    """A top 3 drawn from the defining concepts and their parts exists for every class, so
    precision@3 = 1 is reachable (`ibd evaluate`'s lenient score)."""
    for k in CLASSES:
        assert len(lenient_correct(k.defining, PARTS_OF)) >= 3, k.name
    short = [k.name for k in CLASSES if len(k.defining) < 3]
    assert short == ["forest"]  # tree's trunk and foliage fill its third slot


def test_exclusivity_check_catches_overlapping_rules() -> None:
    lake = SceneClass(0, "lake", ("water",), ("boat",), ())
    harbor = SceneClass(1, "harbor", ("water", "boat"), (), ())
    assert check_exclusive([lake, harbor]) == [
        "an image of lake can satisfy harbor",
        "an image of harbor can satisfy lake",
    ]
    lake = SceneClass(0, "lake", ("water",), (), ("boat",))
    assert check_exclusive([lake, harbor]) == []


def test_canvas_paints_colour_and_labels_on_the_same_pixels() -> None:
    numbers = {n: k for k, n in enumerate([*COLOURS, *OBJECTS, *PARTS], start=1)}
    cv = Canvas(20, 30, numbers)
    cv.paint(cv.band(0, 20), ("blue", (10, 20, 200)), "sky")
    cv.paint(cv.rect(5, 5, 15, 10), ("red", (200, 0, 0)), "house", "roof")
    cv.paint(cv.ellipse(12, 8, 3, 3), ("yellow", (250, 250, 0)), "sun")
    roof = cv.part == numbers["roof"]
    sun = cv.object == numbers["sun"]
    assert roof.sum() == 50 - (sun & cv.rect(5, 5, 15, 10)).sum()
    assert (cv.object[roof] == numbers["house"]).all()
    assert (cv.rgb[roof] == [200, 0, 0]).all() and (cv.colour[roof] == numbers["red"]).all()
    assert (cv.rgb[sun] == [250, 250, 0]).all() and (cv.part[sun] == 0).all()
    sky = cv.object == numbers["sky"]
    assert (cv.rgb[sky] == [10, 20, 200]).all() and sky.sum() == 600 - 50 - sun.sum() + (
        sun & cv.rect(5, 5, 15, 10)
    ).sum()
    assert cv.objects() == {"sky", "house", "sun"} and cv.parts() == {"roof"}


def test_same_seed_gives_identical_files_and_another_seed_differs(
    world: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    assert build(again, TINY, workers=1, progress=False)
    assert _files(again) == _files(world)
    other = tmp_path / "other"
    build(other, WorldSettings(seed=4, images=48), workers=1, progress=False)
    assert (other / "images/00000.jpg").read_bytes() != (world / "images/00000.jpg").read_bytes()
    assert _files(other) != _files(world)


def test_every_image_obeys_its_class_rules_and_no_other(world: Path) -> None:
    spec = json.loads((world / "world.json").read_text())
    classes = {c["index"]: c for c in spec["classes"]}
    by_number = {c["number"]: c["name"] for c in spec["concepts"]}
    min_pixels = spec["settings"]["min_pixels"]
    scenes = _rows(world / "scenes.csv")
    assert len(scenes) == 48
    for row in scenes:
        stem = row["image"].removeprefix("images/").removesuffix(".jpg")
        plane = decode_plane(world / "images" / f"{stem}_object.png")
        numbers, counts = np.unique(plane, return_counts=True)
        area = {by_number[n]: int(k) for n, k in zip(numbers, counts, strict=True) if n}
        own = classes[int(row["class_index"])]
        assert own["name"] == row["class_name"]
        assert all(area.get(c, 0) >= min_pixels for c in own["defining"]), (stem, area)
        assert not set(area) & set(own["forbidden"]), stem
        assert set(area) <= set(own["defining"]) | set(own["optional"]), stem
        admitted = [
            c["name"]
            for c in classes.values()
            if set(c["defining"]) <= set(area) and not set(c["forbidden"]) & set(area)
        ]
        assert admitted == [own["name"]], stem


def _pieces(region: np.ndarray, min_pixels: int = 12) -> list[np.ndarray]:
    """Connected components of the region's interior (eroded by one pixel, away from JPEG
    ringing at edges) with at least `min_pixels` pixels: one painted instance each."""
    parts, n = label(binary_erosion(region, structure=np.ones((3, 3), dtype=bool)))
    pieces = [parts == k for k in range(1, n + 1)]
    return [piece for piece in pieces if piece.sum() >= min_pixels]


def _near(pixels: np.ndarray, shades: list[tuple[int, int, int]]) -> float:
    """Fraction of the pixels (N x 3) that one of the shades explains, allowing for exposure
    and colour cast (x0.81..1.18), texture (up to +-18%), jitter, noise and JPEG error."""
    rgb = np.asarray(shades, dtype=np.float32)[None, :, :]
    px = pixels.astype(np.float32)[:, None, :]
    inside = ((px >= 0.66 * rgb - 32) & (px <= 1.4 * rgb + 32)).all(axis=2)
    return float(inside.any(axis=1).mean())


# concepts whose unlabelled-part pixels (or part pixels) are painted with their own shades
BODY_KEYS = (
    "sky",
    "cloud",
    "sun",
    "mountain",
    "cliff",
    "water",
    "grass",
    "road",
    "sand",
    "snow",
    "house",
    "car",
    "bird",
    "fence",
    "rock",
    "tent",
    "cactus",
    "flower",
)
PART_KEYS = (
    "roof",
    "door",
    "window",
    "chimney",
    "trunk",
    "foliage",
    "hull",
    "sail",
    "wheel",
    "lamp",
    "pole",
)


def test_masks_lie_where_the_renderer_drew_each_concept(world: Path) -> None:
    numbers = _numbers(world)
    by_colour = {
        name: [rgb for shades in SHADES.values() for n, rgb in shades if n == name]
        for name in COLOURS
    }
    checked = 0
    for stem in [f"{i:05d}" for i in range(48)]:
        photo = np.asarray(Image.open(world / "images" / f"{stem}.jpg").convert("RGB"))
        obj = decode_plane(world / "images" / f"{stem}_object.png")
        col = decode_plane(world / "images" / f"{stem}_color.png")
        part_path = world / "images" / f"{stem}_part_1.png"
        part = decode_plane(part_path) if part_path.exists() else np.zeros_like(obj)
        assert (part > 0).sum() == ((part > 0) & (obj > 0)).sum()  # parts lie on objects
        regions = [(k, (obj == numbers[k]) & (part == 0)) for k in BODY_KEYS]
        regions += [(k, part == numbers[k]) for k in PART_KEYS]
        for key, region in regions:
            for piece in _pieces(region):
                assert _near(photo[piece], [rgb for _, rgb in SHADES[key]]) > 0.9, (stem, key)
                checked += 1
        for name in COLOURS:
            for number in np.unique(obj):
                for piece in _pieces((col == numbers[name]) & (obj == number)) if number else []:
                    assert _near(photo[piece], by_colour[name]) > 0.9, (stem, name)
    assert checked > 48 * 5


def test_written_files_match_a_fresh_render(world: Path) -> None:
    spec = json.loads((world / "world.json").read_text())
    numbers = _numbers(world)
    for i in (0, 13, 47):
        k = i % len(spec["classes"])
        cv, photo = render(
            CLASSES[k],
            np.random.default_rng([TINY.seed, i]),
            TINY.image_size,
            numbers,
            TINY.min_pixels,
            TINY.noise,
        )
        assert (decode_plane(world / f"images/{i:05d}_object.png") == cv.object).all()
        assert (decode_plane(world / f"images/{i:05d}_color.png") == cv.colour).all()
        written = np.asarray(Image.open(world / f"images/{i:05d}.jpg"), dtype=np.float32)
        # 4 x 4 block means cancel the sensor noise, which JPEG partly smooths away
        blocks = [a.reshape(28, 4, 28, 4, 3).mean(axis=(1, 3)) for a in (written, photo)]
        assert np.abs(blocks[0] - blocks[1]).mean() < 2.0


def test_world_reads_back_through_the_broden_reader(world: Path) -> None:
    spec = json.loads((world / "world.json").read_text())
    ds = BrodenDataset(world, min_images=1, mask_size=(7, 7))
    expected = sorted(
        (c["number"], c["name"]) for c in spec["concepts"] if c["category"] in ("object", "part")
    )
    got = sorted((c.number, c.name) for c in ds.concepts + ds.dropped)
    assert [n for _, n in got] == [n for _, n in expected if n in {name for _, name in got}]
    assert {"house", "roof", "window", "boat", "sail"} <= {c.name for c in ds.concepts}
    assert len(ds) == 48
    full = BrodenDataset(world, min_images=1)
    for i in (0, 5):
        item = full[i]
        obj = decode_plane(world / "images" / f"{i:05d}_object.png")
        for concept in full.concepts:
            if concept.category == "object":
                assert (item["mask"][concept.index].numpy() == (obj == concept.number)).all()
        assert item["image"].shape == (3, 112, 112)
        small = ds[i]["mask"].numpy()
        centres = [8, 24, 40, 56, 72, 88, 104]  # nearest neighbour 112 -> 7
        house = next(c for c in ds.concepts if c.name == "house").index
        assert (small[house] == (obj[np.ix_(centres, centres)] == _numbers(world)["house"])).all()
    scenes = BrodenDataset(world, categories=("scene",), min_images=1)
    rows = _rows(world / "scenes.csv")
    for i in (0, 1, 2):
        on = [c.name for c in scenes.concepts if scenes[i]["mask"][c.index].all()]
        assert on == [rows[i]["class_name"]]
    train = BrodenDataset(world, split="train", min_images=1)
    assert len(train) == sum(r["split"] == "train" for r in rows)


def test_world_json_and_splits(world: Path) -> None:
    spec = json.loads((world / "world.json").read_text())
    assert spec["format"] == "concept-world-1" and spec["seed"] == 3
    assert spec["image_size"] == [112, 112]
    house = next(c for c in spec["concepts"] if c["name"] == "house")
    assert house["category"] == "object" and house["parts"] == list(PARTS_OF["house"])
    window = next(c for c in spec["concepts"] if c["name"] == "window")
    assert window["part_of"] == ["house", "car"]
    rows = _rows(world / "scenes.csv")
    splits = [r["split"] for r in rows]
    # 4 images per class: 70% of 4 rounds to 3 train, the 4th falls in val
    assert {s: splits.count(s) for s in set(splits)} == {"train": 36, "val": 12}
    index = _rows(world / "index.csv")
    for scene, entry in zip(rows, index, strict=True):
        assert scene["image"] == f"images/{entry['image']}"
        assert entry["split"] == ("train" if scene["split"] == "train" else "val")
        assert (world / scene["image"]).is_file()
    labels_csv = {r["name"]: r for r in _rows(world / "label.csv")}
    assert labels_csv["sky"]["category"] == f"object({labels_csv['sky']['frequency']})"
    sky_images = sum(
        (
            decode_plane(world / "images" / f"{i:05d}_object.png")
            == int(labels_csv["sky"]["number"])
        ).any()
        for i in range(48)
    )
    assert int(labels_csv["sky"]["frequency"]) == sky_images


def test_splits_are_stratified_by_class() -> None:
    plan = assign_splits(WorldSettings(images=1200), len(CLASSES))
    for k in range(len(CLASSES)):
        mine = [split for c, split in plan if c == k]
        assert [mine.count(s) for s in ("train", "val", "test", "explain")] == [70, 10, 10, 10]
    assert [k for k, _ in plan[:13]] == [*range(12), 0]


def test_cli_builds_reuses_and_refuses_foreign_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w"
    assert main(["world", "build", "--out", str(out), "--images", "24", "--workers", "1"]) == 0
    first = (out / "images/00000.jpg").read_bytes()
    assert main(["world", "build", "--out", str(out), "--images", "24"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["world", "build", "--out", str(out), "--images", "24", "--seed", "1"]) == 0
    assert json.loads((out / "world.json").read_text())["seed"] == 1
    assert (out / "images/00000.jpg").read_bytes() != first
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["world", "build", "--out", str(foreign), "--images", "24"]) == 2
    assert "is not a concept world" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert main(["world", "build", "--out", str(out), "--images", "5"]) == 2


def test_category_and_dense_code_tables_follow_broden(world: Path) -> None:
    """category.csv: each category's first and last global label number, its label count and
    the number of images that carry it; c_<cat>.csv: dense codes 1.. in label-number order
    with the label's image frequency (the same as label.csv's)."""
    table = {r["name"]: r for r in _rows(world / "category.csv")}
    spans = {"color": (1, 11), "object": (12, 35), "part": (36, 47), "scene": (48, 59)}
    index = _rows(world / "index.csv")
    for category, (first, last) in spans.items():
        row = table[category]
        assert (int(row["first"]), int(row["last"]), int(row["count"])) == (
            first,
            last,
            last - first + 1,
        )
        assert int(row["frequency"]) == sum(1 for r in index if r[category])
    label_rows = {int(r["number"]): r for r in _rows(world / "label.csv")}
    for category, (first, last) in spans.items():
        codes = _rows(world / f"c_{category}.csv")
        assert [(int(r["code"]), int(r["number"])) for r in codes] == [
            (n - first + 1, n) for n in range(first, last + 1)
        ]
        for r in codes:
            assert r["name"] == label_rows[int(r["number"])]["name"]
            assert r["frequency"] == label_rows[int(r["number"])]["frequency"]
    # a scene label's frequency is its class's image count (whole-image labels)
    scene_rows = _rows(world / "scenes.csv")
    harbor = next(r for r in label_rows.values() if r["name"] == "harbor")
    assert int(harbor["frequency"]) == sum(r["class_name"] == "harbor" for r in scene_rows)


def test_bad_seeds_and_unwritable_places_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w"
    assert main(["world", "build", "--out", str(out), "--images", "12", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "ibd world: error: --seed must be a non-negative integer, not -1\n"
    (tmp_path / "file").write_text("")
    assert main(["world", "build", "--out", str(tmp_path / "file" / "w"), "--images", "12"]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["world", "build", "--out", str(out), "--images", "x"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err == "ibd world build: error: argument --images: invalid int value: 'x'\n"
    assert not out.exists()


def test_a_rebuild_replaces_the_old_world_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "w"
    build(out, WorldSettings(seed=1, images=12), workers=1, progress=False)
    (out / "stale.txt").write_text("from the old world")
    assert build(out, WorldSettings(seed=2, images=12), workers=1, progress=False)
    assert json.loads((out / "world.json").read_text())["seed"] == 2
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_counterfactual_changes_only_the_hidden_concepts_pixels(world: Path) -> None:
    settings = WorldSettings.of_world(world)
    assert settings == TINY
    grey = (124.0, 116.0, 104.0)
    numbers = _numbers(world)
    checked = 0
    for i in range(24):
        cv, photo = render_image(settings, i)
        assert (render_image(settings, i, frozenset())[1] == photo).all()
        for name, plane in (("house", cv.object), ("roof", cv.part), ("tree", cv.object)):
            shown = plane == numbers[name]
            if shown.sum() < 20:
                continue
            checked += 1
            cv_hidden, removed = render_image(settings, i, frozenset({name}))
            assert (cv_hidden.object == cv.object).all()  # the canvas is the image's
            assert (removed[~shown] == photo[~shown]).all()  # same layout, lighting, noise
            assert (removed[shown] != photo[shown]).any(axis=1).mean() > 0.5
            _, filled = render_image(settings, i, frozenset({name}), fill=grey)
            assert (filled[~shown] == photo[~shown]).all()
            # flat grey under the image's exposure (x0.8..1.18) and noise (sd <= 8)
            inside = filled[shown].astype(np.float64)
            assert np.abs(inside.mean(0) / np.asarray(grey) - 1).max() < 0.2
            assert inside.std(0).max() < 16
    assert checked >= 10


def test_settings_of_a_world_from_another_generator_are_refused(tmp_path: Path) -> None:
    data = {"format": "concept-world-1", "settings": {**TINY.to_json(), "generator": 2}}
    (tmp_path / "world.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="generator 2"):
        WorldSettings.of_world(tmp_path)
    (tmp_path / "world.json").write_text("{}")
    with pytest.raises(UserError, match="not a concept world"):
        WorldSettings.of_world(tmp_path)
