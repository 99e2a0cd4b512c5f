"""A canvas that paints pixels and their labels together, so masks are exact by construction.

Every paint call takes a boolean region and writes, for exactly those pixels, the colour, the
object label, the part label (0 when the call paints no part: a nearer object hides the parts
of what lies behind it) and the colour-name label. Shapes are boolean masks on the pixel grid,
with no anti-aliasing, so a pixel belongs to exactly one painted region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ibd.world.vocabulary import SHADES


class Canvas:
    """RGB image plus three label maps (object, part, colour) holding Broden label numbers."""

    def __init__(
        self,
        height: int,
        width: int,
        numbers: dict[str, int],
        hidden: frozenset[str] = frozenset(),
        fill: tuple[float, float, float] | None = None,
    ) -> None:
        """`hidden` object or part concepts are not painted (what they would cover shows
        through), or painted flat in `fill` when it is given: the counterfactuals of
        `ibd.world.scenes.render`."""
        self.hidden = hidden
        self.fill = fill
        self.height = height
        self.width = width
        self.numbers = numbers
        self.rgb = np.zeros((height, width, 3), dtype=np.float32)
        self.object = np.zeros((height, width), dtype=np.int32)
        self.part = np.zeros((height, width), dtype=np.int32)
        self.colour = np.zeros((height, width), dtype=np.int32)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # -- shapes ------------------------------------------------------------------------------

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        """Pixels whose centre satisfies ((x - cx) / rx)^2 + ((y - cy) / ry)^2 <= 1."""
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        return ((self.xx + 0.5 - cx) / rx) ** 2 + ((self.yy + 0.5 - cy) / ry) ** 2 <= 1.0

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Pixels whose centre lies in [x0, x1) x [y0, y1)."""
        cx, cy = self.xx + 0.5, self.yy + 0.5
        return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)

    def polygon(self, points: Sequence[tuple[float, float]]) -> np.ndarray:
        """Pixels inside the polygon (PIL's rasteriser, outline included)."""
        img = Image.new("L", (self.width, self.height), 0)
        ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in points], fill=1, outline=1)
        return np.asarray(img, dtype=bool)

    def band(self, top: float, bottom: float) -> np.ndarray:
        """Full-width rows whose centre lies in [top, bottom)."""
        return self.rect(-1, top, self.width + 1, bottom)

    def noise(self, rng: np.random.Generator, cells: int, amplitude: float) -> np.ndarray:
        """A smooth brightness texture 1 + amplitude * n, n in [-1, 1], from a random grid of
        about `cells` x `cells` values interpolated bilinearly."""
        grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
        img = Image.fromarray(grid, mode="F").resize((self.width, self.height), Image.BILINEAR)
        return 1.0 + amplitude * np.asarray(img, dtype=np.float32)

    # -- painting ----------------------------------------------------------------------------

    def paint(
        self,
        region: np.ndarray,
        shade: tuple[str, tuple[float, float, float]],
        obj: str,
        part: str | None = None,
        texture: np.ndarray | None = None,
    ) -> None:
        """Paint `region` with `shade` (colour name, RGB) times `texture` (brightness, H x W),
        labelled as object `obj` and part `part` (or no part)."""
        if not region.any():
            return
        if obj in self.hidden or part in self.hidden:
            if self.fill is None:
                return
            shade, texture = (shade[0], self.fill), None
        name, rgb = shade
        colour = np.asarray(rgb, dtype=np.float32)
        if texture is None:
            self.rgb[region] = colour
        else:
            self.rgb[region] = colour[None, :] * texture[region][:, None]
        self.object[region] = self.numbers[obj]
        self.part[region] = self.numbers[part] if part is not None else 0
        self.colour[region] = self.numbers[name]

    def area(self, concept: str) -> int:
        """Visible pixels of an object concept."""
        return int((self.object == self.numbers[concept]).sum())

    def objects(self) -> set[str]:
        """Names of the object concepts with at least one visible pixel."""
        return self._names(self.object)

    def parts(self) -> set[str]:
        """Names of the part concepts with at least one visible pixel."""
        return self._names(self.part)

    def _names(self, plane: np.ndarray) -> set[str]:
        by_number = {n: name for name, n in self.numbers.items()}
        return {by_number[n] for n in np.unique(plane).tolist() if n}


def pick_shade(
    rng: np.random.Generator, key: str, jitter: float
) -> tuple[str, tuple[float, float, float]]:
    """One of `key`'s shades, each channel moved by up to +-jitter (clipped to 0..255)."""
    options = SHADES[key]
    name, rgb = options[int(rng.integers(len(options)))]
    moved = np.clip(np.asarray(rgb, dtype=np.float32) + rng.uniform(-jitter, jitter, 3), 0, 255)
    return name, (float(moved[0]), float(moved[1]), float(moved[2]))
