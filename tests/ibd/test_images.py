"""Image loading: every mode to RGB, EXIF orientation, per-model normalisation, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ibd.data.images import load_batch, load_rgb, to_tensor
from ibd.errors import UserError


def test_modes_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (4, 3), 128).save(tmp_path / "gray.png")
    Image.new("RGBA", (4, 3), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert load_rgb(tmp_path / "gray.png").getpixel((0, 0)) == (128, 128, 128)
    assert load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # on white
    r, g, b = load_rgb(tmp_path / "cmyk.jpg").getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (6, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    upright = load_rgb(tmp_path / "rot.jpg")
    assert upright.size == (2, 6)
    assert sum(upright.getpixel((1, 0))) > 600  # the white corner moved to the top right


def test_normalisation_is_a_model_setting() -> None:
    image = Image.fromarray(np.full((2, 2, 3), 255, dtype=np.uint8))
    t = to_tensor(image, (2, 2), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    assert t[:, 0, 0].tolist() == pytest.approx([2.0, 1.0, 0.5])
    assert to_tensor(image, (3, 5), (0, 0, 0), (1, 1, 1)).shape == (3, 3, 5)


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(UserError, match="text.jpg is not a readable image"):
        load_rgb(tmp_path / "text.jpg")
    with pytest.raises(UserError, match="image not found"):
        load_rgb(tmp_path / "missing.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.png"):
        load_batch([tmp_path / "ok.png", tmp_path / "cut.png"], (8, 8), (0, 0, 0), (1, 1, 1))
    batch, sizes = load_batch([tmp_path / "ok.png"], (4, 4), (0, 0, 0), (1, 1, 1))
    assert batch.shape == (1, 3, 4, 4) and sizes == [(8, 8)]
    assert torch.all(batch == 0)


def test_a_decompression_bomb_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGB", (10, 10)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow refuses more than twice this
    with pytest.raises(UserError, match="big.png is too large to decode safely"):
        load_rgb(tmp_path / "big.png")


def test_sixteen_bit_grey_is_scaled_by_its_peak(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    rgb = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert rgb[:, :, 0].tolist() == [[0, 63], [127, 255]] and (rgb[..., 0] == rgb[..., 2]).all()
