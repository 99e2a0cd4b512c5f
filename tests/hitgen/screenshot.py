"""Render one task of a small harbor batch in headless Chromium and save it as a PNG.

    .venv/bin/python tests/hitgen/screenshot.py docs/task-screenshot.png [--width 1280]

Draws a harbor scene, writes IBD and CAM explanations of it in the contract format (section 4)
with heatmaps that follow the drawn objects, builds a method-vs-method batch with `hitgen build`
and photographs the page as a worker opening it as a file would see it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from chromium_flags import CHROMIUM_ARGS
from PIL import Image, ImageDraw

from hitgen.cli import main as hitgen_main

SIZE = 224


def harbor_scene() -> tuple[Image.Image, dict[str, np.ndarray]]:
    """A drawn harbor and each concept's region (boolean masks at image size)."""
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    for y in range(SIZE):
        if y < 120:
            t = y / 120
            draw.line([(0, y), (SIZE, y)], fill=(int(110 + 80 * t), int(170 + 50 * t), 235))
        else:
            t = (y - 120) / 104
            draw.line(
                [(0, y), (SIZE, y)], fill=(int(30 + 20 * t), int(90 + 30 * t), int(150 - 30 * t))
            )
    for x in range(0, SIZE, 14):
        draw.arc([x, 150, x + 14, 158], 200, 340, fill=(160, 200, 230))
        draw.arc([x + 7, 185, x + 21, 193], 200, 340, fill=(160, 200, 230))
    draw.ellipse([170, 20, 200, 50], fill=(250, 230, 120))
    draw.polygon([(60, 128), (170, 128), (150, 150), (78, 150)], fill=(150, 40, 40))
    draw.polygon([(112, 40), (112, 124), (160, 124)], fill=(245, 245, 235))
    draw.polygon([(106, 52), (106, 124), (72, 124)], fill=(230, 230, 215))
    draw.line([(109, 36), (109, 128)], fill=(60, 40, 30), width=3)
    draw.rectangle([0, 110, 40, 126], fill=(120, 90, 60))
    for x in (4, 18, 32):
        draw.rectangle([x, 110, x + 4, 150], fill=(90, 65, 40))

    def region(box: tuple[int, int, int, int]) -> np.ndarray:
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        mask[box[1] : box[3], box[0] : box[2]] = True
        return mask

    regions = {
        "boat": region((60, 120, 170, 152)),
        "water": region((0, 152, SIZE, SIZE)),
        "sky": region((0, 0, SIZE, 100)),
        "sail": region((72, 40, 162, 124)),
        "pier": region((0, 108, 44, 152)),
    }
    return image, regions


def feature_map(mask: np.ndarray, cells: int = 7) -> np.ndarray:
    """A 7 x 7 'heatmap': the fraction of each cell the region covers."""
    step = SIZE // cells
    return mask.reshape(cells, step, cells, step).mean(axis=(1, 3)).astype(np.float32)


def write_explanations(root: Path) -> None:
    image, regions = harbor_scene()
    image.save(root / "harbor.png")
    ibd = [("boat", 2.4), ("water", 1.9), ("sky", 1.1), ("sail", 0.8)]
    heatmaps = {f"ibd-{label}": feature_map(regions[label]) for label, _ in ibd}
    cam = sum(feature_map(regions[label]) * weight for label, weight in ibd) + 0.9 * feature_map(
        regions["pier"]
    )
    heatmaps["cam"] = cam.astype(np.float32)
    common = {"image": "harbor.png", "model": "world_resnet", "class_index": 0}
    entries = [
        {
            **common,
            "method": "ibd",
            "class_name": "harbor",
            "score": 7.3,
            "components": [
                {"label": label, "contribution": value, "heatmap": f"ibd-{label}"}
                for label, value in ibd
            ],
            "residual": 1.1,
            "heatmap_shape": [7, 7],
        },
        {
            **common,
            "method": "cam",
            "class_name": "harbor",
            "score": 7.3,
            "components": [{"label": "harbor", "contribution": 7.3, "heatmap": "cam"}],
            "residual": None,
            "heatmap_shape": [7, 7],
        },
    ]
    (root / "explanations.json").write_text(json.dumps(entries))
    np.savez(root / "heatmaps.npz", **heatmaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_explanations(root)
        batch = root / "batch"
        code = hitgen_main(
            ["build", "--pair", "ibd,cam", "--explanations", str(root), "--catch-rate", "0",
             "--out", str(batch), "--jobs", "1"]
        )  # fmt: skip
        if code:
            raise SystemExit(code)
        page_path = batch / json.loads((batch / "manifest.json").read_text())["items"][0]["page"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(page_path.resolve().as_uri())
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()


if __name__ == "__main__":
    main()
