"""Pictures of explanations (paper Fig. 1 / 4 style), the gallery and the Fig. 3 drawing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ibd.decomposition_figure import draw_decomposition
from ibd.errors import UserError
from ibd.explain import records
from ibd.explain.gallery import write_gallery
from ibd.explain.render import (
    _GAP,
    _MARGIN,
    Picture,
    Term,
    explained_map,
    masked,
    overlay,
    panel_origin,
    picture_of_record,
    render,
    share,
    top_mask,
)

SIZE = 64


def photo(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))


def blob(row: int, col: int, shape: tuple[int, int] = (7, 7)) -> np.ndarray:
    heat = np.zeros(shape, dtype=np.float32)
    heat[row, col] = 1.0
    return heat + 0.01


def ibd_picture(first: np.ndarray) -> Picture:
    return Picture(
        method="ibd",
        model="m",
        class_name="harbor",
        score=10.0,
        probability=0.9,
        terms=(Term("boat", 3.1, first), Term("water", 2.2, blob(6, 6)), Term("sky", 0.9,
               blob(0, 6)), Term("sand", 0.5, blob(3, 3))),
        residual=3.3,
    )


def panel(image: Image.Image, index: int) -> np.ndarray:
    """Pixels of panel `index` (0 = the input) of a rendered picture."""
    x, y = panel_origin(index, SIZE)
    return np.asarray(image)[y : y + SIZE, x : x + SIZE]


def test_share_is_the_contribution_over_the_score() -> None:
    assert share(3.1, 10.0) == "31%"
    assert share(-0.5, 10.0) == "-5%"
    assert share(0.25, 0.0) == "+0.25"  # no share of a zero score


def test_ibd_picture_has_input_class_map_top_terms_and_residual() -> None:
    image = render(ibd_picture(blob(0, 0)), photo(), top=3, size=SIZE)
    panels = 1 + 1 + 3 + 1  # input, class map, 3 terms, residual
    assert image.width == 2 * _MARGIN + panels * SIZE + (panels - 1) * _GAP
    # the residual panel is its share in grey on a flat box; the input panel is the photo resized
    residual = panel(image, 5)
    assert (residual[:8] == 235).all() and (residual[:8, :8] == 235).all()
    assert (residual[SIZE // 2 - 6 : SIZE // 2 + 6] < 200).any()  # the "33%" in its middle
    expected = np.asarray(photo().resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(panel(image, 0), expected)


def test_pixels_differ_only_where_the_heatmaps_differ() -> None:
    a = render(ibd_picture(blob(0, 0)), photo(), top=3, size=SIZE)
    b = render(ibd_picture(blob(6, 0)), photo(), top=3, size=SIZE)
    assert a.size == b.size
    for index in (0, 3, 4, 5):  # input, water, sky, residual: unchanged
        np.testing.assert_array_equal(panel(a, index), panel(b, index))
    first_a, first_b = panel(a, 2).astype(int), panel(b, 2).astype(int)
    assert np.abs(first_a - first_b).max() > 100
    # the hot corner moved from top-left to bottom-left: JET's hot end is red, its cold end
    # blue, each blended at half over the same photo, so red minus blue shifts by about 128
    def warmth(pixels: np.ndarray, y: int, x: int) -> int:
        return int(pixels[y, x, 0]) - int(pixels[y, x, 2])

    assert warmth(first_a, 2, 2) - warmth(first_b, 2, 2) > 100
    assert warmth(first_b, SIZE - 3, 2) - warmth(first_a, SIZE - 3, 2) > 100


def test_cam_picture_is_the_input_and_its_map_only() -> None:
    picture = Picture("cam", "m", "harbor", 4.0, None, (Term("harbor", 4.0, blob(3, 3)),), None)
    image = render(picture, photo(), size=SIZE)
    assert image.width == 2 * _MARGIN + 2 * SIZE + _GAP


def test_explained_map_scales_each_term_to_its_contribution() -> None:
    h1, h2 = blob(0, 0), blob(6, 6)
    picture = Picture("ibd", "m", "c", 5.0, None, (Term("a", 2.0, h1), Term("b", 1.0, h2)), 2.0)
    expected = h1 * 2.0 / h1.mean() + h2 * 1.0 / h2.mean()
    np.testing.assert_allclose(explained_map(picture), expected, rtol=1e-5)
    assert explained_map(picture).mean() == pytest.approx(3.0, rel=1e-5)  # = the named terms


def test_top_mask_keeps_the_top_fifth_and_ties_together() -> None:
    heat = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert top_mask(heat, 0.2).sum() == 20 and top_mask(heat, 0.2)[9, 9]
    assert top_mask(np.ones((10, 10)), 0.2).all()  # a flat map: all tied, all in


def test_mask_style_dims_all_but_the_top_fifth() -> None:
    image = Image.new("RGB", (SIZE, SIZE), (200, 200, 200))
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[:, 4:] = np.arange(4, dtype=np.float32) + 1  # hottest on the right
    out = np.asarray(masked(image, heat))
    assert (out[:, -1] == 200).all() and (out[:, 0] < 100).all()
    kept = (out[..., 0] == 200).mean()
    assert 0.15 <= kept <= 0.25


def test_overlay_blends_jet_at_half() -> None:
    image = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[0, 0] = 1.0
    out = np.asarray(overlay(image, heat, alpha=0.5)).astype(int)
    assert tuple(out[0, 0]) == (64, 0, 0)  # jet(1) = dark red (0.5, 0, 0), half of it
    assert tuple(out[-1, -1]) == (0, 0, 64)  # jet(0) = dark blue


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(UserError, match="unknown style"):
        render(ibd_picture(blob(0, 0)), photo(), style="jet")
    with pytest.raises(UserError, match="top >= 1"):
        render(ibd_picture(blob(0, 0)), photo(), top=0)


def test_gallery_renders_a_contract_directory(tmp_path: Path) -> None:
    image_path = tmp_path / "a <b>.png"
    photo().save(image_path)
    heat = {"00000-0": blob(0, 0), "00000-1": blob(6, 6)}
    explanation = records.Explanation(
        image=str(image_path), model="m", method="ibd", class_index=1, class_name="harbor",
        score=4.0, components=[records.Component("boat", 2.0, "00000-0"),
                               records.Component("<water>", 1.0, "00000-1")],
        residual=1.0, heatmap_shape=(7, 7), extra={"probability": 0.8},
    )
    out = tmp_path / "exp"
    records.write(out, [explanation], heat)
    index = write_gallery(out, size=SIZE, progress=False)
    page = index.read_text()
    assert "render/00000-a_b_.png" in page
    assert "harbor because: boat 50%, &lt;water&gt; 25%" in page and "<water>" not in page
    drawn = Image.open(out / "render/00000-a_b_.png")
    found, heatmaps = records.read(out)
    direct = render(picture_of_record(found[0], heatmaps), photo(), size=SIZE)
    assert drawn.size == direct.size
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(direct))


def test_gallery_of_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    records.write(tmp_path, [], {})
    with pytest.raises(UserError, match="no explanations"):
        write_gallery(tmp_path, progress=False)


def test_decomposition_figure(tmp_path: Path) -> None:
    document = {
        "classes": [
            {"index": 0, "name": "harbor", "residual_fraction": 0.4,
             "concepts": [{"name": "boat", "index": 0, "coefficient": 0.6},
                          {"name": "water", "index": 1, "coefficient": 0.3}]},
            {"index": 1, "name": "beach", "residual_fraction": 0.5,
             "concepts": [{"name": "water", "index": 1, "coefficient": 0.5},
                          {"name": "sand", "index": 2, "coefficient": 0.2}]},
        ],
        "meta": {"model": "m"},
    }
    out = draw_decomposition(json.loads(json.dumps(document)), tmp_path / "fig3.png")
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape[1] > 600 and (drawn < 128).any()
    from ibd.decomposition_figure import _classes

    strongest = _classes(document, None, 16, 1)
    assert [[c["name"] for c in e["concepts"]] for e in strongest] == [["boat"], ["water"]]
    with pytest.raises(UserError, match="not in the decomposition: kitchen"):
        draw_decomposition(document, tmp_path / "x.png", classes=["kitchen"])


def test_render_accepts_torch_heatmaps() -> None:
    from ibd.explain.render import picture_of

    class Component:
        def __init__(self, label: str, contribution: float, heatmap: torch.Tensor) -> None:
            self.label, self.contribution, self.heatmap = label, contribution, heatmap

    class Explanation:
        method, model, class_name, score, residual = "ibd", "m", "harbor", 10.0, 3.3
        components = (Component("boat", 3.1, torch.from_numpy(blob(0, 0))),)

    picture = picture_of(Explanation())
    np.testing.assert_array_equal(picture.terms[0].heatmap, blob(0, 0))
    assert picture.probability is None


def test_ibd_explain_render_writes_a_picture_per_image_and_a_gallery(tmp_path: Path) -> None:
    import torchvision

    from ibd.cli import main

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    (tmp_path / "labels.txt").write_text("beach\nharbor\nforest\n")
    images = []
    for i in range(2):
        photo(i).save(tmp_path / f"img{i}.png")
        images.append(str(tmp_path / f"img{i}.png"))
    out = tmp_path / "out"
    flags = ["--arch", "resnet18", "--weights", str(tmp_path / "r18.pth"), "--labels"]
    flags += [str(tmp_path / "labels.txt"), "--out", str(out), "--render", "--render-style", "mask"]
    assert main(["explain", "--method", "cam", *flags, *images]) == 0
    pngs = sorted(p.name for p in (out / "render").iterdir())
    assert pngs == ["00000-img0.png", "00001-img1.png"]
    page = (out / "index.html").read_text()
    assert all(f"render/{name}" in page for name in pngs)
    found, heatmaps = records.read(out)
    expected = render(picture_of_record(found[1], heatmaps), photo(1), style="mask")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "render" / pngs[1])),
                                  np.asarray(expected))


def test_ibd_decompose_render_draws_fig3_beside_the_json(tmp_path: Path) -> None:
    from basisfiles import write_basis

    from ibd.cli import main

    rng = np.random.default_rng(1)
    q = rng.normal(size=(12, 16))
    q -= q.mean(axis=1, keepdims=True)
    write_basis(tmp_path / "basis.npz", q / np.linalg.norm(q, axis=1, keepdims=True))
    np.save(tmp_path / "W.npy", rng.normal(size=(3, 16)))
    (tmp_path / "labels.txt").write_text("harbor\nbeach\nforest\n")
    argv = ["decompose", "--basis", str(tmp_path / "basis.npz"), "--class-weights"]
    argv += [str(tmp_path / "W.npy"), "--labels", str(tmp_path / "labels.txt"), "--render"]
    assert main([*argv, "--out", str(tmp_path / "dec.json")]) == 0
    drawn = np.asarray(Image.open(tmp_path / "dec.png").convert("RGB"))
    assert drawn.shape[0] > 200 and (drawn < 128).any()
