"""Photos are decoded exactly as `ibd explain` decodes them (ibd/data/images.py `load_rgb`), so that
the heatmaps, which are in the coordinates of that decoded picture, land where they belong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from explanation_dirs import explanation_dir
from PIL import Image

from hitgen.cli import main
from hitgen.images import load_photo
from ibd.data.images import load_rgb  # a test may compare with ibd; the hitgen package may not


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 32 high x 40 wide, with EXIF Orientation 6: upright it is 40 high x 32 wide."""
    stored = np.random.default_rng(0).integers(64, 256, (32, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    return path


def rgba_png(path: Path) -> Path:
    pixels = np.array(
        [[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]] * 2, dtype=np.uint8
    )  # transparent red, opaque blue, half-transparent black
    Image.fromarray(pixels, mode="RGBA").save(path)
    return path


def grey16_png(path: Path) -> Path:
    Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)).save(path)
    return path


def palette_png(path: Path) -> Path:
    image = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.save(path, transparency=0)  # palette entry 0 is transparent
    return path


MAKERS: dict[str, Callable[[Path], Path]] = {
    "exif.jpg": exif_rotated_jpeg,
    "rgba.png": rgba_png,
    "grey16.png": grey16_png,
    "palette.png": palette_png,
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_photos_decode_to_the_same_pixels_as_ibd(tmp_path: Path, name: str) -> None:
    path = MAKERS[name](tmp_path / name)
    expected = np.asarray(load_rgb(path))
    np.testing.assert_array_equal(load_photo(path, None), expected)


def test_decoding_by_hand(tmp_path: Path) -> None:
    assert load_photo(exif_rotated_jpeg(tmp_path / "a.jpg"), None).shape == (40, 32, 3)
    rgba = load_photo(rgba_png(tmp_path / "b.png"), None)
    assert rgba[0, :2].tolist() == [[255, 255, 255], [0, 0, 255]]  # transparent -> white
    assert abs(int(rgba[0, 2, 0]) - 127) <= 1 and len(set(rgba[0, 2].tolist())) == 1
    grey = load_photo(grey16_png(tmp_path / "c.png"), None)
    # scaled by the peak 4000 (Pillow alone would clip 1000 to 255)
    assert grey[..., 0].tolist() == [[0, 63], [127, 255]]
    assert (grey[..., 0] == grey[..., 2]).all()
    palette = load_photo(palette_png(tmp_path / "d.png"), None)
    assert palette.tolist() == [[[255, 255, 255], [200, 100, 50]], [[200, 100, 50], [255] * 3]]


def test_masks_of_an_exif_rotated_photo_are_in_upright_coordinates(tmp_path: Path) -> None:
    photo = exif_rotated_jpeg(tmp_path / "phone.jpg")
    # ibd explains the upright 40 x 32 picture: a 5 x 4 map rising towards its bottom
    heat = np.repeat(np.arange(5, dtype=np.float32)[:, None], 4, axis=1)
    rows = [(photo, "harbor", [("floor", 1.0, heat)])]
    dirs = [str(explanation_dir(tmp_path / m, m, rows)) for m in ("ibd", "cam")]
    out = tmp_path / "batch"
    args = ["--pair", "ibd,cam", "--explanations", *dirs, "--catch-rate", "0", "--max-side", "0"]
    assert main(["build", "--jobs", "1", *args, "--out", str(out)]) == 0
    with np.load(out / "masks.npz") as npz:
        mask = npz["images/0001-a-0.png.npy"]
    expected = np.zeros((40, 32), dtype=bool)
    expected[32:] = True  # the bottom fifth of the upright picture: rows 32..39
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(("size", "ok"), [([32, 40], True), ([40, 32], False)])
def test_image_size_is_checked_against_the_decoded_photo(
    world, tmp_path: Path, capsys, size: list[int], ok: bool
) -> None:
    heat = np.random.default_rng(0).standard_normal((4, 5))
    rows = [(world.image(0), "harbor", [("boat", 1.0, heat)])]
    ibd = explanation_dir(tmp_path / "ibd", "ibd", rows, image_size=size)
    cam = explanation_dir(tmp_path / "cam", "cam", rows)
    out = tmp_path / "batch"
    args = ["--pair", "ibd,cam", "--explanations", str(ibd), str(cam), "--out", str(out)]
    code = main(["build", "--jobs", "1", *args])
    err = capsys.readouterr().err
    if ok:
        assert code == 0
        return
    assert code == 2 and not out.exists() and not list(tmp_path.glob(".batch*"))
    assert err.strip().splitlines() == [
        f"hitgen build: error: {ibd}/explanations.json: entry 0: image_size is [40, 32] but "
        f"{world.image(0).resolve()} decodes to [32, 40] (height, width, after EXIF orientation)"
    ]
    assert json.loads((ibd / "explanations.json").read_text())[0]["image_size"] == size
