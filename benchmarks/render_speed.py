"""Task rendering speed of `hitgen build`, with the explanations already computed.

Writes explanations of N synthetic 224 x 224 photos in the contract format (section 4), for two
models, IBD with 5 components (4 shown) and 7 x 7 heatmaps, then times the whole build of a
model-vs-model batch (the heaviest kind: 4 + 4 masks and the photo per item, 9 PNGs), from
reading the explanations to the last page, index and manifest, with 1 and with 2 worker processes.

    .venv/bin/python benchmarks/render_speed.py [--n 200] [--size 224]

Target (issue 5): at least 20 items per second on 2 CPU cores; prints the ratio to the target.
Also prints the CPU seconds used (this process and its workers): on a machine shared with other
work the wall-clock rate drops while CPU seconds per item stay put, so the two together tell a
slow renderer from a busy machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hitgen.build import build
from hitgen.spec import resolve

TARGET_ITEMS_PER_S = 20.0


def photo(rng: np.random.Generator, size: int) -> Image.Image:
    """A photo-like picture: a vertical gradient, a few solid shapes, and sensor noise."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    base = (top * (1 - t) + bottom * t).repeat(size, axis=1)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 2, 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + w, y + h], fill=fill)
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-6, 7, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_world(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for i in range(n):
        photo(rng, size).save(root / "images" / f"{i:04d}.png")
    for model in ("reference", "other"):
        directory = root / "explanations" / model / "ibd"
        directory.mkdir(parents=True)
        entries, maps = [], {}
        for i in range(n):
            components = []
            for k in range(5):
                key = f"{i}/{k}"
                maps[key] = rng.standard_normal((7, 7)).astype(np.float32)
                components.append(
                    {"label": f"concept {k}", "contribution": 5.0 - k, "heatmap": key}
                )
            entries.append(
                {"image": str(root / "images" / f"{i:04d}.png"), "model": model, "method": "ibd",
                 "class_index": 0, "class_name": "harbor", "score": 16.0,
                 "components": components, "residual": 1.0, "heatmap_shape": [7, 7]}
            )  # fmt: skip
        (directory / "explanations.json").write_text(json.dumps(entries))
        np.savez(directory / "heatmaps.npz", **maps)


def _cpu_seconds() -> float:
    """User + system time of this process and of its finished children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_world(home, args.n, args.size)
        settings = {"models": ["reference", "other"], "method": "ibd", "n": args.n,
                    "catch_rate": 0.0}  # fmt: skip
        spec = resolve(settings, home)
        rates = {}
        for workers in (1, 2):
            cpu_before = _cpu_seconds()
            start = time.perf_counter()
            result = build(spec, home, force=True, workers=workers)
            seconds = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu_before
            rates[workers] = result.items / seconds
            print(
                f"{workers} process(es): {result.items} items in {seconds:.2f} s = "
                f"{rates[workers]:.1f} items/s; {1000 * cpu / result.items:.1f} CPU ms/item "
                f"(largest page {result.largest_page} bytes)"
            )
    ratio = rates[2] / TARGET_ITEMS_PER_S
    verdict = "meets" if ratio >= 1 else "MISSES"
    print(
        f"render speed on 2 processes: {rates[2]:.1f} items/s, target {TARGET_ITEMS_PER_S:.0f}: "
        f"ratio {ratio:.2f} ({verdict} the target)"
    )


if __name__ == "__main__":
    main()
