"""`hitgen build` end to end on the hand-written world of conftest.py: manifest values,
determinism, placement balance, catch trials, the same-decision filter, images and files."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hitgen import __version__
from hitgen.cli import main

Tree = dict[str, bytes]


def build(*args: str) -> int:
    return main(["build", "--jobs", "1", *args])


def manifest(batch: Path) -> dict:
    return json.loads((batch / "manifest.json").read_text())


def tree(root: Path) -> Tree:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def source_index(item: dict) -> int:
    return int(Path(item["source_image"]).stem[3:])


@pytest.fixture(scope="module")
def fig8(shared_world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fig8") / "batch"
    args = ["--pair", "ibd,cam", "--model", "ref", "--n", "10", "--seed", "3"]
    assert build(*args, "--explanations", str(shared_world.dir("ref", "ibd")),
                 str(shared_world.dir("ref", "cam")), "--out", str(out)) == 0  # fmt: skip
    return out


def test_manifest_describes_a_method_vs_method_batch(fig8: Path, shared_world) -> None:
    world = shared_world
    m = manifest(fig8)
    assert m["format"] == "hitgen-manifest-1"
    assert m["batch"] == "fig8-ref-ibd-vs-cam"
    assert m["experiment"] == "method-vs-method"
    assert m["focus"] == {"method": "ibd", "model": "ref"}
    assert (m["seed"], m["version"], m["skipped"]) == (3, __version__, [])
    assert m["created_with"] == (
        "hitgen build --pair ibd,cam --model ref --n 10 --seed 3 --catch-rate 0.1 "
        "--catch-types identical,wrong --max-side 256"
    )
    items = m["items"]
    # 10 regular items + floor(10 * 0.1 / 0.9 + 0.5) = 1 catch trial
    assert len(items) == 11
    assert [it["id"] for it in items] == [f"fig8-ref-ibd-vs-cam-{k:04d}" for k in range(1, 12)]
    regular = [it for it in items if it["catch"] is None]
    assert len(regular) == 10 and len({source_index(it) for it in regular}) == 10
    for k, item in enumerate(items, 1):
        i = source_index(item)
        cls = world.ref_class(i)
        assert item["source_image"] == f"../../../world/images/img{i:02d}.png"  # as written
        assert (item["class_name"], item["class_index"]) == (cls, i % 3)
        assert item["image"] == f"images/{k:04d}.png"
        assert item["page"] == f"pages/{item['id']}.html"
        first, second = item["first"], item["second"]
        assert (first["model"], first["method"], first["class_name"]) == ("ref", "ibd", cls)
        assert first["concepts"] == world.ranked(cls)[:4]  # ranked by contribution, top four
        if item["kind"] == "method-vs-method":
            assert (second["model"], second["method"], second["concepts"]) == ("ref", "cam", [cls])
        a, b = ("first", "second") if item["robot_a"] == "first" else ("second", "first")
        assert item[a]["masks"] == [
            f"images/{k:04d}-a-{j}.png" for j in range(len(item[a]["masks"]))
        ]
        assert item[b]["masks"] == [
            f"images/{k:04d}-b-{j}.png" for j in range(len(item[b]["masks"]))
        ]
        for path in [item["image"], item["page"], *first["masks"], *second["masks"]]:
            assert (fig8 / path).is_file(), path


def test_photo_is_copied_and_masks_highlight_the_top_fifth(fig8: Path, shared_world) -> None:
    world = shared_world
    item = next(it for it in manifest(fig8)["items"] if it["kind"] != "catch")
    original = world.photo(source_index(item))
    assert (pixels(fig8 / item["image"]) == original).all()
    # the top IBD component is a right ramp, CAM a left ramp (conftest): masks are known columns
    for side, columns in (("first", slice(32, 40)), ("second", slice(0, 8))):
        shown = pixels(fig8 / item[side]["masks"][0])
        unchanged = (shown == original).all(axis=2)
        assert unchanged.mean() == pytest.approx(0.2)
        assert unchanged[:, columns].all()


def test_same_inputs_and_seed_give_byte_identical_batches(world, tmp_path: Path) -> None:
    args = ["--pair", "ibd,netdissect", "--model", "ref", "--n", "8", "--catch-rate", "0.3"]
    assert main(["build", *args, "--out", str(tmp_path / "one"), "--jobs", "1"]) == 0
    assert main(["build", *args, "--out", str(tmp_path / "two"), "--jobs", "2"]) == 0
    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert one == two
    assert len([name for name in one if name.startswith("pages/")]) == 11
    # no absolute path leaks into any output except the source images as written
    for name, data in one.items():
        text = data.decode("utf-8", errors="ignore")
        assert str(tmp_path) not in text, name
    assert build(*args, "--seed", "1", "--out", str(tmp_path / "three")) == 0
    assert tree(tmp_path / "three")["manifest.json"] != one["manifest.json"]


@pytest.mark.parametrize("seed", range(6))
def test_left_right_placement_is_balanced_and_seeded(world, tmp_path: Path, seed: int) -> None:
    n = 7 + seed  # odd and even counts
    out = tmp_path / "b"
    assert build("--pair", "ibd,cam", "--model", "ref", "--n", str(n), "--seed", str(seed),
                 "--catch-rate", "0.25", "--out", str(out)) == 0  # fmt: skip
    items = manifest(out)["items"]
    regular = [it["robot_a"] for it in items if it["catch"] is None]
    assert len(regular) == n
    assert Counter(regular)["first"] in (n // 2, (n + 1) // 2)
    for kind in ("identical", "wrong"):
        sides = [it["robot_a"] for it in items if (it["catch"] or {}).get("type") == kind]
        assert Counter(sides)["first"] in (len(sides) // 2, (len(sides) + 1) // 2)


def test_placement_differs_between_seeds(world, tmp_path: Path) -> None:
    placements = set()
    for seed in range(4):
        out = tmp_path / str(seed)
        assert build("--pair", "ibd,cam", "--model", "ref", "--n", "12", "--seed", str(seed),
                     "--catch-rate", "0", "--out", str(out)) == 0  # fmt: skip
        items = manifest(out)["items"]
        placements.add(tuple((source_index(it), it["robot_a"]) for it in items))
    assert len(placements) == 4


@pytest.mark.parametrize(("rate", "n", "expected"), [(0.0, 20, 0), (0.1, 20, 2), (0.2, 20, 5),
                                                     (0.5, 10, 10), (0.25, 9, 3)])  # fmt: skip
def test_catch_trials_make_up_the_requested_fraction(
    world, tmp_path: Path, rate: float, n: int, expected: int
) -> None:
    out = tmp_path / "b"
    assert build("--pair", "ibd,cam", "--model", "ref", "--n", str(n), "--catch-rate", str(rate),
                 "--out", str(out)) == 0  # fmt: skip
    items = manifest(out)["items"]
    catches = [it for it in items if it["catch"] is not None]
    assert len(items) == n + expected and len(catches) == expected
    assert abs(len(catches) / len(items) - rate) <= 1 / len(items)
    assert all(it["kind"] == "catch" for it in catches)
    types = Counter(it["catch"]["type"] for it in catches)
    assert types["identical"] - types["wrong"] in (0, 1)


def test_catch_trials_have_expected_answers_and_stay_off_the_pages(world, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert build("--pair", "ibd,cam", "--model", "ref", "--n", "6", "--catch-rate", "0.5",
                 "--out", str(out)) == 0  # fmt: skip
    items = manifest(out)["items"]
    catches = [it for it in items if it["catch"]]
    assert Counter(it["catch"]["type"] for it in catches) == {"identical": 3, "wrong": 3}
    for item in catches:
        first, second, catch = item["first"], item["second"], item["catch"]
        cls = item["class_name"]
        assert first["concepts"] == world.ranked(cls)[:4]
        assert (first["model"], first["method"]) == ("ref", "ibd")
        if catch["type"] == "identical":
            assert catch["expected_choices"] == [3]
            assert second == {**first, "masks": second["masks"]}
            a_masks = [pixels(out / p) for p in first["masks"]]
            assert all(
                (x == pixels(out / p)).all() for x, p in zip(a_masks, second["masks"], strict=True)
            )
        else:
            assert catch["wrong_side"] == "second"
            assert catch["expected_choices"] == ([1, 2] if item["robot_a"] == "first" else [4, 5])
            # looks like a regular item: a CAM explanation, but of another image and class ...
            donor = int(Path(second["wrong_from"]).stem[3:])
            assert (second["model"], second["method"]) == ("ref", "cam")
            assert world.ref_class(donor) != cls and second["concepts"] == [world.ref_class(donor)]
            # ... whose heatmap (the left ramp) is drawn on this item's photo
            shown = pixels(out / second["masks"][0])
            unchanged = (shown == world.photo(source_index(item))).all(axis=2)
            assert unchanged[:, :8].all() and unchanged.mean() == pytest.approx(0.2)
    scripts = set()
    for page in (out / "pages").iterdir():
        before, script = page.read_text().split("<script>")
        scripts.add(script)  # the same static script on every page
        text = before.lower().replace("refer", "")
        for secret in ("catch", "identical", "wrong", "first", "second", "ref", "ibd", "cam"):
            assert secret not in text, (page.name, secret)
    assert len(scripts) == 1


def test_wrong_catch_trials_of_model_vs_model_borrow_from_the_second_model(
    world, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    assert build("--models", "ref,other", "--method", "ibd", "--n", "4", "--catch-rate", "0.5",
                 "--catch-types", "wrong", "--out", str(out)) == 0  # fmt: skip
    catches = [it for it in manifest(out)["items"] if it["catch"]]
    assert len(catches) == 4
    for item in catches:
        second = item["second"]
        donor = int(Path(second["wrong_from"]).stem[3:])  # written absolute by `other`
        assert Path(second["wrong_from"]).is_absolute()
        assert (second["model"], second["method"]) == ("other", "ibd")
        assert world.other_class(donor) != item["class_name"]
        assert second["concepts"] == world.ranked(world.other_class(donor))[:4]


def test_model_vs_model_keeps_only_shared_decisions(world, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert build("--models", "ref,other", "--method", "ibd", "--catch-rate", "0",
                 "--out", str(out)) == 0  # fmt: skip
    m = manifest(out)
    assert m["batch"] == "fig9-ibd-ref-vs-other"
    assert m["experiment"] == "model-vs-model"
    assert m["focus"] == {"method": "ibd", "model": "ref"}
    expected_skips = [
        {
            "image": f"../../../world/images/img{i:02d}.png",
            "reason": f"models disagree: {world.ref_class(i)} vs {world.other_class(i)}",
        }
        for i in world.disagree
    ]
    missing = f"../../../world/images/img{world.missing:02d}.png"
    expected_skips.append({"image": missing, "reason": "no other explanation"})
    assert sorted(m["skipped"], key=lambda s: s["image"]) == expected_skips
    shown = sorted(source_index(it) for it in m["items"])
    assert shown == [i for i in range(world.n_images) if i not in (*world.disagree, world.missing)]
    for item in m["items"]:
        assert item["kind"] == "model-vs-model"
        assert (item["first"]["model"], item["second"]["model"]) == ("ref", "other")
        assert item["first"]["class_name"] == item["second"]["class_name"] == item["class_name"]


def test_input_csv_and_index_list_every_item(fig8: Path) -> None:
    items = manifest(fig8)["items"]
    with (fig8 / "input.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["item_id"] for r in rows] == [it["id"] for it in items]
    for row, item in zip(rows, items, strict=True):
        a = item[item["robot_a"]]
        b = item["second" if item["robot_a"] == "first" else "first"]
        cls = item["class_name"]
        assert row["robot_a_explanation"] == f"{cls} because: " + " ".join(
            f"{i}. {c}" for i, c in enumerate(a["concepts"], 1)
        )
        assert [row[f"robot_a_concept_{i}"] for i in range(1, len(a["concepts"]) + 1)] == a[
            "concepts"
        ]
        assert [row[f"robot_b_mask_{i}"] for i in range(1, len(b["masks"]) + 1)] == b["masks"]
        assert (row["page"], row["image"], row["class_name"]) == (item["page"], item["image"], cls)
    index = (fig8 / "index.html").read_text()
    for item in items:
        assert f'href="{item["page"]}"' in index and f'src="{item["image"]}"' in index


def test_standalone_pages_inline_the_same_images(world, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert build("--pair", "ibd,cam", "--model", "ref", "--n", "2", "--catch-rate", "0",
                 "--standalone", "--out", str(out)) == 0  # fmt: skip
    item = manifest(out)["items"][0]
    html = (out / item["page"]).read_text()
    assert "../images/" not in html
    import base64

    mask = (out / item["first"]["masks"][0]).read_bytes()
    assert "data:image/png;base64," + base64.b64encode(mask).decode() in html


def test_max_side_shrinks_photos_and_masks(world, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert build("--pair", "ibd,cam", "--model", "ref", "--n", "1", "--catch-rate", "0",
                 "--max-side", "20", "--out", str(out)) == 0  # fmt: skip
    item = manifest(out)["items"][0]
    assert pixels(out / item["image"]).shape == (16, 20, 3)
    mask = pixels(out / item["first"]["masks"][0])
    assert mask.shape == (16, 20, 3)
    assert (mask == pixels(out / item["image"])).all(axis=2).sum() == 64  # 20% of 320


def test_masks_npz_records_exactly_what_each_robot_shows(fig8: Path) -> None:
    items = manifest(fig8)["items"]
    with np.load(fig8 / "masks.npz") as npz:
        masks = {name.removesuffix(".npy"): npz[name] for name in npz.files}
    listed = {
        path for item in items for side in ("first", "second") for path in item[side]["masks"]
    }
    assert set(masks) == listed
    for item in items:
        original = pixels(fig8 / item["image"])
        for side in ("first", "second"):
            paths, coverages = item[side]["masks"], item[side]["mask_coverage"]
            for path, coverage in zip(paths, coverages, strict=True):
                mask = masks[path]
                assert mask.dtype == bool and mask.shape == original.shape[:2]
                # bilinear upsampling copies the border cells, so equal pixels come in groups
                # that join the mask together: about 20%, and exactly what the manifest says
                assert abs(mask.sum() - 0.2 * mask.size) <= 16
                assert coverage == mask.mean()
                # the picture keeps exactly the mask's pixels unchanged
                unchanged = (pixels(fig8 / path) == original).all(axis=2)
                assert unchanged[mask].all()
