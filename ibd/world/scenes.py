"""Composing one image of a scene class: layout (horizon, ground bands), objects placed with
depth (farther objects stand higher and are smaller, nearer ones occlude them), optional and
distractor concepts, then lighting and sensor noise.

`render` retries a layout until the image obeys the class's rules (every defining concept
visible in at least `min_pixels` pixels; a composer that draws anything outside defining +
optional is a bug and raises), so every written image satisfies `world.json`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ibd.world import things
from ibd.world.canvas import Canvas
from ibd.world.rules import SceneClass

MAX_ATTEMPTS = 60


@dataclass
class Scene:
    """A canvas under construction and the objects waiting to be drawn back to front."""

    cv: Canvas
    rng: np.random.Generator
    horizon: float = 0.0
    queue: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)

    @property
    def size(self) -> float:
        return float(self.cv.height)

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def count(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def depth(self, base: float) -> float:
        """Size factor at ground height `base`: 0.55 at the horizon, 1.45 at the bottom edge."""
        span = max(self.size - self.horizon, 1.0)
        return 0.55 + 0.9 * float(np.clip((base - self.horizon) / span, 0.0, 1.0))

    def stand(self, draw: Callable[..., None], x: float, base: float, size: float) -> None:
        """Queue an object standing at (x, base); `size` is scaled by depth."""
        scaled = size * self.depth(base)
        self.queue.append((base, len(self.queue), lambda: draw(self.cv, self.rng, x, base, scaled)))

    def draw_queue(self) -> None:
        for _, _, draw in sorted(self.queue, key=lambda job: (job[0], job[1])):
            draw()
        self.queue.clear()

    def x(self) -> float:
        return self.uniform(0.02, 0.98) * self.cv.width

    def sky(self, low: float, high: float, p_sun: float = 0.4, p_clouds: float = 0.6) -> None:
        self.horizon = self.uniform(low, high) * self.size
        things.sky(self.cv, self.rng, self.horizon)
        if self.chance(p_sun):
            things.sun(self.cv, self.rng, self.horizon)
        if self.chance(p_clouds):
            for _ in range(self.count(1, 3)):
                things.cloud(self.cv, self.rng, self.horizon)

    def birds(self, p: float = 0.35) -> None:
        if self.chance(p):
            for _ in range(self.count(1, 3)):
                y = self.uniform(0.08, 0.85) * self.horizon
                things.bird(self.cv, self.rng, self.x(), y, self.uniform(0.05, 0.09) * self.size)

    def ground(self, concept: str, top: float, bottom: float) -> None:
        things.ground(self.cv, self.rng, concept, top, bottom)

    def on(self, top: float, bottom: float) -> float:
        """A ground height between `top` and `bottom`."""
        return self.uniform(top, max(top, bottom))

    def place(
        self,
        draw: Callable[..., None],
        count: tuple[int, int],
        top: float,
        bottom: float,
        size: tuple[float, float],
        p: float = 1.0,
        xs: tuple[float, float] = (0.02, 0.98),
    ) -> None:
        """With probability `p`, queue `count[0]..count[1]` objects standing between heights
        `top` and `bottom` (pixels) at x in `xs` (fractions of the width), of size `size`
        (fractions of the image height, before depth scaling)."""
        if p < 1.0 and not self.chance(p):
            return
        for _ in range(self.count(*count)):
            x = self.uniform(*xs) * self.cv.width
            self.stand(draw, x, self.on(top, bottom), self.uniform(*size) * self.size)

    def rocks(self, p: float, top: float, bottom: float) -> None:
        self.place(things.rock, (1, 3), top, bottom, (0.08, 0.16), p)

    def flowers(self, p: float, top: float, bottom: float) -> None:
        if self.chance(p):
            for _ in range(self.count(3, 9)):
                y = self.on(top, bottom)
                radius = max(1.0, 0.018 * self.size * self.depth(y))
                self.queue.append((y, len(self.queue), self._flower(self.x(), y, radius)))

    def _flower(self, x: float, y: float, radius: float) -> Callable[[], None]:
        return lambda: things.flower(self.cv, self.rng, x, y, radius)

    def fence(self, p: float, top: float, bottom: float) -> None:
        if self.chance(p):
            base = self.on(top, bottom)
            height = self.uniform(0.06, 0.1) * self.size * self.depth(base)
            job = (base, len(self.queue), lambda: things.fence(self.cv, self.rng, base, height))
            self.queue.append(job)

    def at(self, fraction: float) -> float:
        """The height `fraction` of the way from the horizon down to the bottom edge."""
        return self.horizon + fraction * (self.size - self.horizon)

    def side(self) -> str:
        return "left" if self.chance(0.5) else "right"


# -- one composer per class ------------------------------------------------------------------
# Sizes are fractions of the image height before depth scaling; heights are pixels.


def _harbor(s: Scene) -> None:
    s.sky(0.28, 0.42)
    shore = s.horizon + s.uniform(0.08, 0.15) * s.size
    s.ground("grass", s.horizon, shore)
    s.ground("water", shore, s.size)
    s.place(things.house, (1, 3), shore - 2, shore, (0.26, 0.42))
    s.place(things.tree, (1, 3), shore - 3, shore, (0.3, 0.45), p=0.5)
    s.place(things.lighthouse, (1, 1), shore - 3, shore, (0.45, 0.6), p=0.3)
    s.place(things.boat, (1, 3), shore + 0.12 * s.size, 0.97 * s.size, (0.22, 0.38))
    s.rocks(0.2, shore + 0.05 * s.size, s.size)
    s.draw_queue()
    s.birds()


def _beach(s: Scene) -> None:
    s.sky(0.28, 0.45, p_sun=0.6)
    shoreline = s.horizon + s.uniform(0.1, 0.26) * s.size
    s.ground("water", s.horizon, shoreline)
    s.ground("sand", shoreline, s.size)
    if s.chance(0.3):
        things.cliff(s.cv, s.rng, s.horizon, s.side())
    s.place(things.umbrella, (1, 3), shoreline + 0.1 * s.size, 0.98 * s.size, (0.24, 0.36))
    s.place(things.boat, (1, 2), s.horizon + 0.05 * s.size, shoreline - 1, (0.2, 0.3), p=0.4)
    s.rocks(0.3, shoreline + 0.05 * s.size, s.size)
    s.draw_queue()
    s.birds(0.4)


def _lake(s: Scene) -> None:
    s.sky(0.25, 0.4)
    if s.chance(0.5):
        things.mountains(s.cv, s.rng, s.horizon)
    far = s.horizon + s.uniform(0.06, 0.12) * s.size
    near = s.size - s.uniform(0.1, 0.25) * s.size if s.chance(0.6) else s.size
    s.ground("grass", s.horizon, far)
    s.ground("water", far, near)
    if near < s.size:
        s.ground("grass", near, s.size)
        s.place(things.tree, (0, 2), near + 3, s.size, (0.35, 0.5))
        s.flowers(0.4, near + 2, s.size)
    s.place(things.tree, (2, 5), far - 3, far, (0.3, 0.45))
    s.place(things.boat, (1, 1), far + 0.1 * s.size, near - 2, (0.2, 0.3), p=0.4)
    s.rocks(0.3, far + 2, near)
    s.draw_queue()
    s.birds()


def _street(s: Scene) -> None:
    s.sky(0.38, 0.52)
    kerb = s.horizon + s.uniform(0.05, 0.1) * s.size if s.chance(0.4) else s.horizon
    if kerb > s.horizon:
        s.ground("grass", s.horizon, kerb)
    s.ground("road", kerb, s.size)
    s.place(things.house, (1, 4), kerb - 0.02 * s.size, kerb + 0.04 * s.size, (0.34, 0.5))
    s.place(things.tree, (1, 2), kerb - 0.02 * s.size, kerb + 0.04 * s.size, (0.45, 0.6), p=0.4)
    s.place(
        things.traffic_light,
        (1, 1),
        kerb + 0.1 * s.size,
        0.8 * s.size,
        (0.35, 0.45),
        p=0.4,
        xs=(0.03, 0.15) if s.chance(0.5) else (0.85, 0.97),
    )
    s.place(things.car, (1, 3), kerb + 0.15 * s.size, 0.98 * s.size, (0.28, 0.42))
    s.draw_queue()
    s.birds(0.2)


def _highway(s: Scene) -> None:
    s.sky(0.3, 0.45)
    if s.chance(0.4):
        things.mountains(s.cv, s.rng, s.horizon)
    road_top = s.horizon + s.uniform(0.08, 0.22) * s.size
    road_bottom = s.size - s.uniform(0.06, 0.15) * s.size if s.chance(0.4) else s.size
    s.ground("grass", s.horizon, road_top)
    s.ground("road", road_top, road_bottom)
    if road_bottom < s.size:
        s.ground("grass", road_bottom, s.size)
    s.place(things.tree, (1, 3), s.horizon + 2, road_top, (0.3, 0.45), p=0.5)
    s.fence(0.4, road_top, road_top)
    s.place(things.traffic_light, (1, 1), road_top, road_top + 3, (0.3, 0.4), p=0.3)
    s.place(things.car, (1, 3), road_top + 0.1 * s.size, road_bottom - 1, (0.26, 0.4))
    s.draw_queue()
    s.birds()


def _village(s: Scene) -> None:
    s.sky(0.28, 0.45)
    if s.chance(0.3):
        things.mountains(s.cv, s.rng, s.horizon)
    s.ground("grass", s.horizon, s.size)
    s.place(things.house, (1, 3), s.at(0.05), s.at(0.85), (0.28, 0.42))
    s.place(things.tree, (1, 4), s.at(0.02), s.at(0.97), (0.32, 0.48))
    s.place(things.tent, (1, 1), s.at(0.15), s.at(0.95), (0.26, 0.38), p=0.25)
    s.place(things.car, (1, 1), s.at(0.25), s.at(0.97), (0.26, 0.36), p=0.25)
    s.fence(0.4, s.at(0.2), s.at(0.95))
    s.flowers(0.4, s.at(0.15), s.size)
    s.rocks(0.2, s.at(0.15), s.size)
    s.draw_queue()
    s.birds()


def _forest(s: Scene) -> None:
    s.sky(0.22, 0.4)
    if s.chance(0.3):
        things.mountains(s.cv, s.rng, s.horizon)
    s.ground("grass", s.horizon, s.size)
    s.place(things.tree, (4, 9), s.at(0.01), s.at(0.97), (0.32, 0.5))
    s.rocks(0.3, s.at(0.15), s.size)
    s.flowers(0.3, s.at(0.15), s.size)
    s.draw_queue()
    s.birds(0.3)


def _campsite(s: Scene) -> None:
    s.sky(0.28, 0.45)
    if s.chance(0.5):
        things.mountains(s.cv, s.rng, s.horizon)
    s.ground("grass", s.horizon, s.size)
    s.place(things.tent, (1, 2), s.at(0.15), s.at(0.92), (0.28, 0.42))
    s.place(things.tree, (1, 3), s.at(0.02), s.at(0.92), (0.32, 0.48))
    s.place(things.car, (1, 1), s.at(0.3), s.at(0.97), (0.26, 0.38), p=0.3)
    s.rocks(0.3, s.at(0.15), s.size)
    s.draw_queue()
    s.birds()


def _snowfield(s: Scene) -> None:
    s.sky(0.28, 0.45)
    things.mountains(s.cv, s.rng, s.horizon)
    s.ground("snow", s.horizon, s.size)
    s.place(things.snowman, (1, 2), s.at(0.2), s.at(0.95), (0.32, 0.46))
    s.place(things.tree, (1, 3), s.at(0.02), s.at(0.92), (0.32, 0.48), p=0.5)
    s.place(things.house, (1, 1), s.at(0.05), s.at(0.5), (0.28, 0.4), p=0.25)
    s.place(things.tent, (1, 1), s.at(0.15), s.at(0.9), (0.26, 0.38), p=0.25)
    s.fence(0.3, s.at(0.2), s.at(0.95))
    s.draw_queue()
    s.birds(0.2)


def _coast(s: Scene) -> None:
    s.sky(0.35, 0.52)
    s.ground("water", s.horizon, s.size)
    side = s.side()
    top_x, top_y = things.cliff(s.cv, s.rng, s.horizon, side)
    edge = 0.0 if side == "left" else float(s.cv.width)  # the cliff's image edge
    light_x = top_x
    if s.chance(0.3):  # a house inland of the lighthouse, both on the cliff top
        light_x = edge + 1.5 * (top_x - edge)
        house_x = edge + 0.5 * (top_x - edge)
        things.house(s.cv, s.rng, house_x, top_y + 1.5, s.uniform(0.2, 0.28) * s.size)
    things.lighthouse(s.cv, s.rng, light_x, top_y + 1.5, s.uniform(0.3, 0.42) * s.size)
    far_side = (0.55, 0.95) if side == "left" else (0.05, 0.45)
    s.place(things.boat, (1, 2), s.at(0.1), s.at(0.9), (0.2, 0.32), p=0.4, xs=far_side)
    s.rocks(0.3, s.at(0.15), s.size)
    s.draw_queue()
    s.birds(0.5)


def _desert(s: Scene) -> None:
    s.sky(0.3, 0.48, p_sun=0.7, p_clouds=0.2)
    if s.chance(0.3):
        things.mountains(s.cv, s.rng, s.horizon)
    s.ground("sand", s.horizon, s.size)
    things.cliff(s.cv, s.rng, s.horizon, s.side())
    s.place(things.cactus, (1, 4), s.at(0.08), s.at(0.96), (0.28, 0.48))
    s.rocks(0.4, s.at(0.08), s.size)
    s.draw_queue()
    s.birds(0.2)


def _mountain_pass(s: Scene) -> None:
    s.sky(0.4, 0.55)
    things.mountains(s.cv, s.rng, s.horizon)
    s.ground("grass", s.horizon, s.size)
    side = s.side()
    centre, _ = things.perspective_road(s.cv, s.rng, s.horizon)
    road = ((centre / s.cv.width) - 0.1, (centre / s.cv.width) + 0.1)
    s.place(things.car, (1, 1), s.at(0.35), s.at(0.9), (0.26, 0.38), p=0.5, xs=road)
    s.place(things.tree, (1, 2), s.at(0.03), s.at(0.8), (0.3, 0.45), p=0.4)
    s.fence(0.3, s.at(0.2), s.at(0.8))
    s.rocks(0.4, s.at(0.1), s.size)
    s.draw_queue()
    things.cliff(s.cv, s.rng, s.horizon, side)
    s.birds(0.3)


COMPOSERS: dict[str, Callable[[Scene], None]] = {
    "harbor": _harbor,
    "beach": _beach,
    "lake": _lake,
    "street": _street,
    "highway": _highway,
    "village": _village,
    "forest": _forest,
    "campsite": _campsite,
    "snowfield": _snowfield,
    "coast": _coast,
    "desert": _desert,
    "mountain pass": _mountain_pass,
}


def finish(cv: Canvas, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The photo: canvas colours under a random exposure (x0.85..1.12) and colour cast
    (x0.95..1.05 per channel), plus Gaussian sensor noise of standard deviation up to `noise`;
    uint8 H x W x 3. Labels are unchanged: lighting does not move anything."""
    gain = rng.uniform(0.85, 1.12) * rng.uniform(0.95, 1.05, size=3)
    sigma = rng.uniform(0.3, 1.0) * noise
    photo = cv.rgb * gain[None, None, :] + rng.normal(0.0, sigma, size=cv.rgb.shape)
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8)


def render(
    scene_class: SceneClass,
    rng: np.random.Generator,
    size: int,
    numbers: dict[str, int],
    min_pixels: int,
    noise: float,
    hide: frozenset[str] = frozenset(),
    fill: tuple[float, float, float] | None = None,
) -> tuple[Canvas, np.ndarray]:
    """An image of `scene_class` and its canvas (label maps), obeying the class's rules.

    With `hide`, the counterfactual of that image: the accepted layout is drawn again from the
    same random state with the `hide` concepts (objects or parts) left out, or painted flat in
    `fill`, so every other pixel, the lighting and the sensor noise are the image's own. The
    returned canvas is the image's, labels of the hidden concepts included."""
    compose = COMPOSERS[scene_class.name]
    allowed = scene_class.allowed()
    for _ in range(MAX_ATTEMPTS):
        start = rng.bit_generator.state
        scene = Scene(Canvas(size, size, numbers), rng)
        compose(scene)
        cv = scene.cv
        objects = cv.objects()
        if not objects <= allowed:
            extra = ", ".join(sorted(objects - allowed))
            raise RuntimeError(f"the {scene_class.name} composer drew {extra}, not in its rules")
        if all(cv.area(c) >= min_pixels for c in scene_class.defining):
            if hide:
                rng.bit_generator.state = start
                redrawn = Scene(Canvas(size, size, numbers, hide, fill), rng)
                compose(redrawn)
                return cv, finish(redrawn.cv, rng, noise)
            return cv, finish(cv, rng, noise)
    raise RuntimeError(f"could not lay out a {scene_class.name} scene in {MAX_ATTEMPTS} attempts")
