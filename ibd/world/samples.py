"""A contact sheet of the concept world: for each scene class one image, its object labels and
its part labels, each region named where it lies (docs/world-samples.png).

    python -m ibd.world.samples WORLD_DIR OUT.png [--split explain]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ibd.data import scenes
from ibd.data.broden import decode_plane


def _label_colours(numbers: list[int]) -> dict[int, tuple[float, float, float]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return {n: cmap(k % 20)[:3] for k, n in enumerate(sorted(numbers))}


def _overlay(
    photo: np.ndarray, plane: np.ndarray, colours: dict[int, tuple[float, ...]]
) -> np.ndarray:
    """Each labelled pixel in its label's colour, unlabelled pixels as a faded photo."""
    out = photo.astype(np.float32) / 255.0 * 0.35 + 0.65
    for number, colour in colours.items():
        out[plane == number] = colour
    return out


def _annotate(ax, plane: np.ndarray, names: dict[int, str], min_pixels: int = 25) -> None:
    for number in np.unique(plane):
        if not number:
            continue
        ys, xs = np.nonzero(plane == number)
        if len(ys) < min_pixels:
            continue
        # the labelled pixel nearest to the region's mean: inside even for curved shapes
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        ax.text(
            xs[k],
            ys[k],
            names[int(number)],
            fontsize=7.5,
            ha="center",
            va="center",
            color="black",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )


def contact_sheet(world: Path, out: Path, split: str = "explain") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = json.loads((world / "world.json").read_text(encoding="utf-8"))
    names = {c["number"]: c["name"] for c in spec["concepts"]}
    first: dict[int, scenes.Scene] = {}
    for scene in scenes.read(world):
        if scene.split == split:
            first.setdefault(scene.class_index, scene)
    classes = sorted(first)
    colours = _label_colours(list(names))
    cols = 2  # classes per row, three panels each
    nrows = (len(classes) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, 3 * cols, figsize=(3 * cols * 2.6, nrows * 2.75))
    for ax in axes.flat:
        ax.axis("off")
    for slot, k in enumerate(classes):
        row = first[k]
        stem = Path(row.image).stem
        photo = np.asarray(Image.open(row.path).convert("RGB"))
        obj = decode_plane(world / "images" / f"{stem}_object.png")
        part_path = world / "images" / f"{stem}_part_1.png"
        part = decode_plane(part_path) if part_path.is_file() else np.zeros_like(obj)
        r, c = divmod(slot, cols)
        panels = (
            (photo, None, f"{row.class_name}  ({stem})"),
            (_overlay(photo, obj, colours), obj, "objects"),
            (_overlay(photo, part, colours), part, "parts"),
        )
        for j, (image, plane, title) in enumerate(panels):
            ax = axes[r, 3 * c + j]
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title, fontsize=10, fontweight="bold" if j == 0 else "normal")
            if plane is not None:
                _annotate(ax, plane, names)
    rules = ", ".join(f"{c['name']} = {' + '.join(c['defining'])}" for c in spec["classes"])
    fig.suptitle(
        "Concept world: one image per scene class with its object and part labels", fontsize=13
    )
    fig.text(0.5, 0.005, "Defining concepts: " + rules, ha="center", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90)
    plt.close(fig)
    # a 256-colour palette keeps the sheet small enough for the repository
    with Image.open(buffer) as sheet:
        palette = sheet.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
        palette.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", default="explain")
    args = parser.parse_args(argv)
    print(contact_sheet(args.world, args.out, args.split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
