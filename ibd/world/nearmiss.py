"""Near misses: training images drawn again without one of their class's defining concepts, so
that a model trained on the world has to look at every defining concept.

A classifier trained on the world's images alone may read a class from a shortcut: every beach
shows sand and water, and no other class shows both, so nothing in the data makes it look for
the umbrella, although the rules say a beach has one. Counterfactual images
(`ibd.evaluation.scoring` reports them) showed the reference model doing just that: painting out
beach's umbrella or desert's cactus barely lowered its class logit. A near miss closes that gap.
Training image x of class k is drawn again from its own random state with one defining concept d of
k left out (`render_image(..., hide={d})`): every other pixel is x's own, and the concept is either
removed, so what it covered shows through, or painted flat grey, one or the other with equal
odds. Its target distribution over the K classes is

- one-hot on class j when the concepts it still shows obey j's rules (street without its
  houses but with grass is a highway): a valid image of j;
- uniform, 1/K each, otherwise: no class admits it, so the model should favour none. This is
  outlier exposure (Hendrycks et al., ICLR 2019); its loss, the cross-entropy to the uniform
  distribution, is logsumexp(z) - mean(z) >= log K, with equality when all K logits are equal.

Every training image gives one near miss per defining concept; which fill each gets is drawn
from the world's seed, so the set is the same for every model and training seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ibd.world.rules import CLASSES, SceneClass
from ibd.world.writer import (
    GREY,
    WorldSettings,
    as_jpeg,
    process_map,
    render_image,
    worker_count,
)

_FILL_STREAM = 104_729  # keys the fill choices' random stream apart from the world's others


@dataclass(frozen=True)
class NearMiss:
    """Image `index` of the world without `hidden` (painted `fill`, or removed when None)."""

    index: int
    hidden: str
    fill: tuple[float, float, float] | None


@dataclass
class NearMisses:
    """Near-miss images (uint8 N x 3 x H x W) and their target distributions (N x K)."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def plan(settings: WorldSettings, indices: list[int]) -> list[NearMiss]:
    """One near miss per defining concept of each image in `indices` (world image numbers)."""
    rng = np.random.default_rng([settings.seed, _FILL_STREAM])
    return [
        NearMiss(i, d, GREY if rng.random() < 0.5 else None)
        for i in indices
        for d in CLASSES[i % len(CLASSES)].defining  # image i shows class i mod K
    ]


def obeys(scene_class: SceneClass, shown: set[str]) -> bool:
    """True when an image showing the object concepts `shown` is a valid image of the class."""
    return scene_class.admits(shown) and shown <= scene_class.allowed()


def target(shown: set[str], classes: tuple[SceneClass, ...] = CLASSES) -> np.ndarray:
    """The near miss's target over the classes: one-hot on the class whose rules `shown`
    obeys, uniform when none does (the rules are mutually exclusive, so at most one can)."""
    k = len(classes)
    valid = [c.index for c in classes if obeys(c, shown)]
    if len(valid) > 1:
        raise RuntimeError(f"concepts {sorted(shown)} obey the rules of several classes")
    out = np.full(k, 1.0 / k) if not valid else np.eye(k)[valid[0]]
    return out.astype(np.float32)


def _draw(job: tuple[WorldSettings, NearMiss, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    settings, miss, size = job
    canvas, photo = render_image(settings, miss.index, frozenset({miss.hidden}), miss.fill)
    shown = canvas.objects() - {miss.hidden}
    # coded and decoded as the world stores its images, so near misses carry the same artefacts
    image = as_jpeg(photo, settings.jpeg_quality)
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8), target(shown)


def draw(
    world: Path,
    indices: list[int],
    size: tuple[int, int],
    workers: int | None = None,
    progress: bool = True,
) -> NearMisses:
    """The near misses of world images `indices`, at `size` (H, W) as the model reads them."""
    settings = WorldSettings.of_world(world)
    misses = plan(settings, indices)
    jobs = [(settings, m, size) for m in misses]
    # small sets are drawn here: starting processes would cost more than it saves
    n_workers = 1 if len(jobs) < 64 else worker_count(workers)
    drawn = process_map(_draw, jobs, len(jobs), n_workers, "near misses", progress, chunksize=32)
    images = np.stack([image for image, _ in drawn]) if drawn else np.empty((0, *size, 3), np.uint8)
    targets = np.stack([t for _, t in drawn]) if drawn else np.empty((0, len(CLASSES)), np.float32)
    return NearMisses(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(targets)
    )
