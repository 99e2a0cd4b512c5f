"""A small explanation world written by hand in the contract format (docs/contracts.md section 4).

24 photos of 32 x 40 pixels (not square, so rows and columns cannot be swapped unnoticed), with
every channel in 64..255 so that a dimmed pixel never equals its original. Heatmaps are 4 x 5.

- model `ref`: methods ibd (5 components, written out of rank order), cam, netdissect, gradcam;
  image paths written relative to the explanation directory.
- model `other`: method ibd, image paths written absolute; it disagrees with `ref` on images
  3, 10 and 17 and has no explanation of image 23.

The highest-ranked IBD component of `ref` is a ramp rising to the right, whose top-20% mask after
bilinear upsampling to 32 x 40 is exactly columns 32..39 (8 of 40 columns = 20%); the CAM map is
the mirror image (columns 0..7). Every other heatmap is random.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

HEIGHT, WIDTH = 32, 40
HEATMAP_SHAPE = (4, 5)
CLASSES = ("harbor", "beach", "kitchen")
# per class: (label, contribution) in the (wrong) order they are written to the file
CONCEPTS = {
    "harbor": [("water", 1.5), ("boat", 2.0), ("sky", 1.0), ("bird", 0.1), ("sail", 0.5)],
    "beach": [("sand", 2.5), ("sky", 0.7), ("water", 1.9), ("person", 0.2), ("towel", 0.4)],
    "kitchen": [("stove", 3.0), ("sink", 1.2), ("cabinet", 2.2), ("floor", 0.3), ("window", 0.1)],
}
RAMP_RIGHT = np.tile(np.arange(HEATMAP_SHAPE[1], dtype=np.float32), (HEATMAP_SHAPE[0], 1))
RAMP_LEFT = RAMP_RIGHT[:, ::-1].copy()
N_IMAGES = 24
DISAGREE = (3, 10, 17)  # `other` predicts a different class on these
MISSING = 23  # `other` has no explanation of this image


def ranked(class_name: str) -> list[str]:
    return [label for label, _ in sorted(CONCEPTS[class_name], key=lambda c: -c[1])]


def write_explanations(
    directory: Path, entries: list[dict[str, Any]], heatmaps: dict[str, np.ndarray]
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "explanations.json").write_text(json.dumps(entries, indent=1))
    np.savez(directory / "heatmaps.npz", **heatmaps)
    return directory


def photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(64, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def entry(image: str, model: str, method: str, class_name: str, components: list) -> dict:
    return {
        "image": image,
        "model": model,
        "method": method,
        "class_index": CLASSES.index(class_name),
        "class_name": class_name,
        "score": float(sum(c["contribution"] for c in components)) + 0.5,
        "components": components,
        "residual": None if method in ("cam", "gradcam") else 0.5,
        "heatmap_shape": list(HEATMAP_SHAPE),
    }


@dataclass
class World:
    """Where the world lies, and what the tests know about it."""

    home: Path  # plays $IBD_HOME
    images: Path
    n_images = N_IMAGES
    disagree = DISAGREE
    missing = MISSING
    ranked = staticmethod(ranked)
    photo = staticmethod(photo)

    def dir(self, model: str, method: str) -> Path:
        return self.home / "explanations" / model / method

    def image(self, i: int) -> Path:
        return self.images / f"img{i:02d}.png"

    @staticmethod
    def ref_class(i: int) -> str:
        return CLASSES[i % 3]

    @staticmethod
    def other_class(i: int) -> str:
        return CLASSES[(i + 1) % 3] if i in DISAGREE else CLASSES[i % 3]


def make_world(home: Path) -> World:
    images = home / "world" / "images"
    images.mkdir(parents=True)
    world = World(home, images)
    rng = np.random.default_rng(7)
    for i in range(N_IMAGES):
        Image.fromarray(photo(i)).save(world.image(i))

    def random_map() -> np.ndarray:
        return rng.standard_normal(HEATMAP_SHAPE).astype(np.float32)

    for model in ("ref", "other"):
        methods = ("ibd", "cam", "netdissect", "gradcam") if model == "ref" else ("ibd",)
        for method in methods:
            entries, maps = [], {}
            for i in range(N_IMAGES):
                if model == "other" and i == MISSING:
                    continue
                cls = world.ref_class(i) if model == "ref" else world.other_class(i)
                image = (
                    f"../../../world/images/img{i:02d}.png"
                    if model == "ref"
                    else str(world.image(i).resolve())
                )
                components = []
                if method in ("cam", "gradcam"):
                    key = f"{model}/{method}/{i}"
                    maps[key] = RAMP_LEFT if method == "cam" else random_map()
                    components.append({"label": cls, "contribution": 4.0, "heatmap": key})
                else:
                    top = max(c for _, c in CONCEPTS[cls])
                    for k, (label, value) in enumerate(CONCEPTS[cls]):
                        key = f"{model}/{method}/{i}/{k}"
                        maps[key] = RAMP_RIGHT if value == top and model == "ref" else random_map()
                        component = {"label": label, "contribution": value, "heatmap": key}
                        if method == "netdissect":
                            component |= {"unit": 10 + k, "iou": 0.05}
                        components.append(component)
                entries.append(entry(image, model, method, cls, components))
            write_explanations(world.dir(model, method), entries, maps)
    return world


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """A fresh world, which is also $IBD_HOME."""
    made = make_world(tmp_path / "home")
    monkeypatch.setenv("IBD_HOME", str(made.home))
    return made


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One world for a module's tests that only read it."""
    return make_world(tmp_path_factory.mktemp("world") / "home")
