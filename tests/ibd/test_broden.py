"""The Broden reader on a small directory written here in the real format: multi-plane parts,
scalar (whole-image) labels, a label spanning two categories, label numbers above 255 (so the
G channel matters), checked pixel by pixel."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ibd.data.broden import BrodenDataset, decode_plane, encode_plane, nearest_indices
from ibd.errors import UserError

# number, name, {category: image count}
LABELS = [
    (1, "sky", {"object": 3}),
    (2, "house", {"object": 2}),
    (3, "wood", {"object": 1, "material": 2}),  # spans two categories
    (4, "roof", {"part": 1}),
    (5, "door", {"part": 1}),
    (300, "window", {"part": 1}),  # > 255: encoded in R and G
    (7, "harbor", {"scene": 2}),
    (8, "street", {"scene": 1}),
    (9, "kite", {"object": 1}),
]
CATEGORIES = ["object", "part", "material", "scene"]

# 4 x 4 label planes
A_OBJECT = np.array([[1, 1, 1, 1], [1, 2, 2, 1], [3, 2, 2, 0], [3, 3, 0, 9]])
A_PART_1 = np.array([[0, 0, 0, 0], [0, 4, 4, 0], [0, 5, 300, 0], [0, 0, 0, 0]])
A_PART_2 = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 300, 0, 0], [0, 0, 0, 0]])  # door+window
B_OBJECT = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]])
B_MATERIAL = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [3, 3, 0, 0], [3, 0, 0, 0]])
C_OBJECT = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])

IMAGE_COLOURS = {"a.jpg": (200, 40, 40), "b.jpg": (40, 200, 40), "c.jpg": (40, 40, 200)}


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_fixture(root: Path) -> Path:
    """A three-image Broden directory (image size 8 x 8, segmentation 4 x 4)."""
    images = root / "images"
    images.mkdir(parents=True)
    for name, colour in IMAGE_COLOURS.items():
        Image.new("RGB", (8, 8), colour).save(images / name, quality=100)
    planes = {
        "a_object.png": A_OBJECT,
        "a_part_1.png": A_PART_1,
        "a_part_2.png": A_PART_2,
        "b_object.png": B_OBJECT,
        "b_material.png": B_MATERIAL,
        "c_object.png": C_OBJECT,
    }
    for name, plane in planes.items():
        encode_plane(plane).save(images / name)
    _write_csv(
        root / "index.csv",
        ["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES],
        [
            ["a.jpg", "train", 8, 8, 4, 4, "a_object.png", "a_part_1.png;a_part_2.png", "", "7"],
            ["b.jpg", "val", 8, 8, 4, 4, "b_object.png", "", "b_material.png", "7;8"],
            ["c.jpg", "train", 8, 8, 4, 4, "c_object.png", "", "", ""],
        ],
    )
    _write_csv(
        root / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        [[0, "-", "-", 0, 0.0, ""]]
        + [
            [n, name, ";".join(f"{c}({k})" for c, k in cats.items()), max(cats.values()), 1.0, ""]
            for n, name, cats in LABELS
        ],
    )
    _write_csv(
        root / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [[c, 1, 1, 1, 1] for c in CATEGORIES],
    )
    for category in CATEGORIES:
        members = [(n, name, cats[category]) for n, name, cats in LABELS if category in cats]
        _write_csv(
            root / f"c_{category}.csv",
            ["code", "number", "name", "frequency", "coverage"],
            [[code, n, name, k, 1.0] for code, (n, name, k) in enumerate(members, start=1)],
        )
    return root


@pytest.fixture
def broden(tmp_path: Path) -> Path:
    return write_fixture(tmp_path / "broden")


def _masks(ds: BrodenDataset, i: int) -> dict[str, np.ndarray]:
    mask = ds[i]["mask"].numpy()
    return {c.name: mask[c.index] for c in ds.concepts}


def test_plane_codec_uses_red_plus_256_green(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 255], [256, 300, 65535]])
    encode_plane(labels).save(tmp_path / "p.png")
    rgb = np.asarray(Image.open(tmp_path / "p.png"))
    assert rgb[1, 1].tolist() == [44, 1, 0]  # 300 = 44 + 256 * 1
    assert decode_plane(tmp_path / "p.png").tolist() == labels.tolist()


def test_concepts_are_selected_by_category_and_image_count(broden: Path) -> None:
    ds = BrodenDataset(broden, min_images=1)
    names = [(c.index, c.number, c.name, c.category, c.image_count) for c in ds.concepts]
    assert names == [
        (0, 1, "sky", "object", 3),
        (1, 2, "house", "object", 2),
        (2, 3, "wood", "object", 1),
        (3, 4, "roof", "part", 1),
        (4, 5, "door", "part", 1),
        (5, 9, "kite", "object", 1),
        (6, 300, "window", "part", 1),
    ]
    ds2 = BrodenDataset(broden, min_images=2)
    assert [c.name for c in ds2.concepts] == ["sky", "house"]
    assert [c.index for c in ds2.concepts] == [0, 1]
    assert sorted(c.name for c in ds2.dropped) == ["door", "kite", "roof", "window", "wood"]
    # with material selected, wood's primary category is the one with more images
    ds3 = BrodenDataset(broden, categories=("object", "material"), min_images=2)
    wood = next(c for c in ds3.concepts if c.name == "wood")
    assert (wood.category, wood.categories, wood.image_count) == (
        "material",
        ("object", "material"),
        2,
    )


def test_masks_pixel_by_pixel_with_multi_plane_parts(broden: Path) -> None:
    ds = BrodenDataset(broden, min_images=1)
    assert len(ds) == 3
    m = _masks(ds, 0)
    assert (m["sky"] == (A_OBJECT == 1)).all()
    assert (m["house"] == (A_OBJECT == 2)).all()
    assert (m["kite"] == (A_OBJECT == 9)).all()
    assert (m["roof"] == (A_PART_1 == 4)).all()
    assert (m["door"] == (A_PART_1 == 5)).all()
    # window lies in both part planes; (2, 1) is door in plane 1 and window in plane 2
    assert (m["window"] == ((A_PART_1 == 300) | (A_PART_2 == 300))).all()
    assert m["door"][2, 1] and m["window"][2, 1]
    assert m["window"].sum() == 2
    # object and part labels overlap: a pixel can be house and roof at once
    assert m["house"][1, 1] and m["roof"][1, 1]


def test_label_spanning_two_categories_reads_only_selected_planes(broden: Path) -> None:
    objects_parts = BrodenDataset(broden, min_images=1)
    assert not _masks(objects_parts, 1)["wood"].any()  # wood is only in b's material plane
    assert (_masks(objects_parts, 0)["wood"] == (A_OBJECT == 3)).all()
    with_material = BrodenDataset(broden, categories=("object", "material"), min_images=1)
    assert (_masks(with_material, 1)["wood"] == (B_MATERIAL == 3)).all()
    assert (_masks(with_material, 0)["wood"] == (A_OBJECT == 3)).all()


def test_scalar_labels_are_whole_image_masks(broden: Path) -> None:
    ds = BrodenDataset(broden, categories=("scene",), min_images=1)
    assert [c.name for c in ds.concepts] == ["harbor", "street"]
    assert _masks(ds, 0)["harbor"].all() and not _masks(ds, 0)["street"].any()
    assert _masks(ds, 1)["harbor"].all() and _masks(ds, 1)["street"].all()
    assert not _masks(ds, 2)["harbor"].any()


def test_split_mask_size_and_category_presence(broden: Path) -> None:
    train = BrodenDataset(broden, split="train", min_images=1, mask_size=(2, 2))
    assert len(train) == 2 and train.split_of(1) == "train"
    assert train.image_path(1).name == "c.jpg"
    assert train.segmentation_size(0) == (4, 4)
    # nearest neighbour 4 -> 2 samples source rows/columns 1 and 3
    assert nearest_indices(4, 2).tolist() == [1, 3]
    assert nearest_indices(4, 7).tolist() == [0, 0, 1, 2, 2, 3, 3]
    m = _masks(train, 0)
    assert (m["house"] == (A_OBJECT[np.ix_([1, 3], [1, 3])] == 2)).all()
    assert m["house"].tolist() == [[True, False], [False, False]]
    assert (m["kite"] == [[False, False], [False, True]]).all()
    assert train.category_present(0) == {"object", "part", "scene"}
    assert train.category_present(1) == {"object"}
    val = BrodenDataset(broden, split="val", min_images=1)
    assert len(val) == 1 and val.category_present(0) == {"object", "material", "scene"}


def test_images_are_resized_and_normalised(broden: Path) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    ds = BrodenDataset(broden, min_images=1, image_size=(6, 5), mean=mean, std=std)
    item = ds[0]
    assert item["image"].shape == (3, 6, 5) and item["image"].dtype == torch.float32
    assert item["path"].endswith("images/a.jpg") and item["index"] == 0
    raw = np.asarray(Image.open(broden / "images" / "a.jpg").convert("RGB"), dtype=np.float32)
    expected = (raw.mean(axis=(0, 1)) / 255 - np.array(mean)) / np.array(std)
    assert np.allclose(item["image"].mean(dim=(1, 2)).numpy(), expected, atol=1e-3)
    loader = torch.utils.data.DataLoader(
        BrodenDataset(broden, min_images=1, mask_size=(2, 2)), batch_size=3
    )
    batch = next(iter(loader))
    assert batch["mask"].shape == (3, 7, 2, 2) and batch["mask"].dtype == torch.bool


def _rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


def test_malformed_index_row_names_file_and_line(broden: Path) -> None:
    _rewrite(broden / "index.csv", "c.jpg,train,8,8", "c.jpg,train,8,eight")
    with pytest.raises(UserError, match=r"index\.csv line 4: iw 'eight' is not an integer"):
        BrodenDataset(broden)


def test_short_index_row_names_line(broden: Path) -> None:
    _rewrite(broden / "index.csv", "c.jpg,train,8,8,4,4,c_object.png,,,", "c.jpg,train,8")
    with pytest.raises(UserError, match=r"index\.csv line 4: expected 10 fields"):
        BrodenDataset(broden)


def test_unknown_scalar_label_names_line(broden: Path) -> None:
    _rewrite(broden / "index.csv", ",7\n", ",77\n")
    with pytest.raises(UserError, match=r"line 2: unknown label number 77 in column scene"):
        BrodenDataset(broden)


def test_missing_png_names_file_and_row(broden: Path) -> None:
    (broden / "images" / "a_part_2.png").unlink()
    ds = BrodenDataset(broden)
    with pytest.raises(UserError, match=r"a_part_2\.png \(index\.csv line 2, column part\)"):
        ds[0]


def test_unknown_label_in_png_names_file(broden: Path) -> None:
    encode_plane(np.array([[1, 1, 1, 1]] * 3 + [[1, 1, 1, 511]])).save(
        broden / "images" / "c_object.png"
    )
    ds = BrodenDataset(broden)
    with pytest.raises(UserError, match=r"c_object\.png .*line 4.* label number\(s\) 511 not in"):
        ds[2]


def test_bad_label_csv_and_category(broden: Path) -> None:
    with pytest.raises(UserError, match="has no category texture"):
        BrodenDataset(broden, categories=("object", "texture"))
    _rewrite(broden / "label.csv", "part(1)", "part[1]")
    with pytest.raises(UserError, match=r"label\.csv line \d+: category item 'part\[1\]'"):
        BrodenDataset(broden)


def test_wrong_plane_size_is_reported(broden: Path) -> None:
    encode_plane(np.ones((3, 4), dtype=int)).save(broden / "images" / "c_object.png")
    with pytest.raises(UserError, match=r"c_object\.png is 3x4 but index\.csv line 4"):
        BrodenDataset(broden)[2]


def test_images_decode_as_explain_decodes_them_but_keep_their_stored_orientation(
    broden: Path,
) -> None:
    images = broden / "images"
    # transparent pixels are composited on white (not their hidden colour)
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    rgba.save(images / "a.png")
    # 16-bit greyscale is scaled to its peak (not clipped at 255)
    deep = np.full((8, 8), 4000, dtype=np.uint16)
    deep[:, :4] = 2000
    Image.fromarray(deep).save(images / "b.png")
    # an EXIF rotation is ignored: the segmentation is aligned with the stored pixels
    stripe = np.zeros((8, 8, 3), dtype=np.uint8)
    stripe[:, :2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(stripe).save(images / "c.jpg", quality=100, exif=exif)
    _rewrite(broden / "index.csv", "a.jpg", "a.png")
    _rewrite(broden / "index.csv", "b.jpg", "b.png")
    ds = BrodenDataset(broden, min_images=1, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert np.allclose(ds.load_image(0).numpy(), 1.0)
    b = ds.load_image(1).numpy()
    assert np.allclose(b[:, :, :4], 127 / 255) and np.allclose(b[:, :, 4:], 1.0)
    c = ds.load_image(2).numpy()
    assert c[:, :, :2].mean() > 0.9 and c[:, :, 3:].mean() < 0.1
