"""How each concept of the world is drawn: backgrounds (sky, water, grass ...), and objects
with their parts (house: roof, door, window, chimney; tree: trunk, foliage; ...).

Every function paints into a `Canvas` with randomness from the generator it is given, so an
image is a pure function of its seed. Objects stand on a ground point (`x`, `base`) and take a
size in pixels; the caller scales sizes with depth (farther = higher on the image = smaller).
"""

from __future__ import annotations

import math

import numpy as np

from ibd.world.canvas import Canvas, pick_shade
from ibd.world.vocabulary import SHADES

JITTER = 14.0  # +- per colour channel, per instance
SIGNALS = SHADES["signal"]  # top to bottom: red, yellow, green
UNLIT = ("black", (58.0, 58.0, 60.0))


# -- backgrounds -----------------------------------------------------------------------------


def sky(cv: Canvas, rng: np.random.Generator, bottom: float) -> None:
    """Sky above `bottom`, lighter towards the horizon."""
    region = cv.band(-1, bottom)
    gradient = 0.88 + 0.2 * np.clip(cv.yy / max(bottom, 1.0), 0, 1)
    cv.paint(region, pick_shade(rng, "sky", JITTER), "sky", texture=gradient)


def ground(cv: Canvas, rng: np.random.Generator, concept: str, top: float, bottom: float) -> None:
    """A full-width band of water, grass, road, sand or snow with its texture."""
    region = cv.band(top, bottom)
    shade = pick_shade(rng, concept, JITTER)
    if concept == "water":
        phase = rng.uniform(0, 2 * math.pi)
        waves = np.sin(cv.yy * 1.3 + 1.5 * np.sin(cv.xx * 0.18 + phase))
        texture = cv.noise(rng, 6, 0.05) + 0.09 * waves
    elif concept == "grass":
        texture = cv.noise(rng, 28, 0.16) * cv.noise(rng, 5, 0.06)
    elif concept == "road":
        texture = cv.noise(rng, 10, 0.05)
    elif concept == "sand":
        texture = cv.noise(rng, 36, 0.06) + 0.04 * np.sin(cv.yy * 0.9 + cv.xx * 0.25)
    else:  # snow
        texture = cv.noise(rng, 8, 0.04)
    cv.paint(region, shade, concept, texture=texture)
    if concept == "road":
        centre = (top + bottom) / 2
        thickness = max(1.0, (bottom - top) * 0.05)
        dash, offset = rng.uniform(6, 12), rng.uniform(0, 12)
        dashes = ((cv.xx + offset) % (2 * dash)) < dash
        marking = cv.band(centre - thickness / 2, centre + thickness / 2) & dashes & region
        cv.paint(marking, pick_shade(rng, "road marking", 6), "road")


def perspective_road(cv: Canvas, rng: np.random.Generator, horizon: float) -> tuple[float, float]:
    """A road running from the horizon towards the viewer; returns its centre at the horizon
    and its half-width at the bottom edge."""
    centre = rng.uniform(0.3, 0.7) * cv.width
    near = rng.uniform(0.22, 0.34) * cv.width
    far = rng.uniform(0.02, 0.05) * cv.width
    bottom_centre = centre + rng.uniform(-0.2, 0.2) * cv.width
    points = [
        (centre - far, horizon),
        (centre + far, horizon),
        (bottom_centre + near, cv.height),
        (bottom_centre - near, cv.height),
    ]
    region = cv.polygon(points) & (cv.yy >= horizon - 0.5)
    cv.paint(region, pick_shade(rng, "road", JITTER), "road", texture=cv.noise(rng, 10, 0.05))
    # the centre line, dashed, following the road
    t = np.clip((cv.yy - horizon) / max(cv.height - horizon, 1.0), 0, 1)
    line_x = centre + (bottom_centre - centre) * t
    width = 0.4 + 1.6 * t
    dashes = (np.floor((cv.yy - horizon) / 5.0) % 2) == 0
    marking = region & (np.abs(cv.xx + 0.5 - line_x) < width) & dashes
    cv.paint(marking, pick_shade(rng, "road marking", 6), "road")
    return centre, near


def mountains(cv: Canvas, rng: np.random.Generator, horizon: float) -> None:
    """One to three peaks standing on the horizon."""
    shade = pick_shade(rng, "mountain", JITTER)
    for _ in range(int(rng.integers(1, 4))):
        peak_x = rng.uniform(-0.1, 1.1) * cv.width
        peak_y = horizon - rng.uniform(0.14, 0.32) * cv.height
        half = rng.uniform(0.25, 0.5) * cv.width
        points = [(peak_x - half, horizon + 1), (peak_x, peak_y), (peak_x + half, horizon + 1)]
        region = cv.polygon(points) & (cv.yy < horizon + 0.5)
        # the sunlit face left of the peak is lighter
        texture = cv.noise(rng, 8, 0.06) * np.where(cv.xx < peak_x, 1.08, 0.92)
        cv.paint(region, shade, "mountain", texture=texture)


def cliff(cv: Canvas, rng: np.random.Generator, horizon: float, side: str) -> tuple[float, float]:
    """A rock face on the left or right edge rising above the horizon, with horizontal strata.
    Returns (x of the middle of its top, y of its top)."""
    top = horizon - rng.uniform(0.08, 0.25) * cv.height
    width_top = rng.uniform(0.18, 0.34) * cv.width
    width_bottom = width_top + rng.uniform(0.04, 0.16) * cv.width
    steps = 6
    edge = [
        (
            width_top + (width_bottom - width_top) * k / steps + rng.uniform(-3, 3),
            top + (cv.height - top) * k / steps,
        )
        for k in range(steps + 1)
    ]
    points = [(-1.0, top), *edge, (-1.0, float(cv.height))]
    if side == "right":
        points = [(cv.width - x, y) for x, y in points]
    strata = 1.0 + 0.1 * np.sign(np.sin(cv.yy * rng.uniform(0.6, 0.9) + rng.uniform(0, 6)))
    texture = strata * cv.noise(rng, 14, 0.07)
    cv.paint(cv.polygon(points), pick_shade(rng, "cliff", JITTER), "cliff", texture=texture)
    middle = width_top / 2 if side == "left" else cv.width - width_top / 2
    return middle, top


def sun(cv: Canvas, rng: np.random.Generator, horizon: float) -> None:
    radius = rng.uniform(0.045, 0.08) * cv.height
    x = rng.uniform(0.1, 0.9) * cv.width
    y = rng.uniform(radius, max(radius + 1, horizon - radius * 1.5))
    cv.paint(cv.ellipse(x, y, radius, radius), pick_shade(rng, "sun", 8), "sun")


def cloud(cv: Canvas, rng: np.random.Generator, horizon: float) -> None:
    x = rng.uniform(0.0, 1.0) * cv.width
    y = rng.uniform(0.08, 0.7) * horizon
    size = rng.uniform(0.05, 0.09) * cv.width
    region = np.zeros((cv.height, cv.width), dtype=bool)
    for _ in range(int(rng.integers(3, 6))):
        dx, dy = rng.uniform(-1.6, 1.6) * size, rng.uniform(-0.4, 0.3) * size
        region |= cv.ellipse(x + dx, y + dy, size * rng.uniform(0.8, 1.3), size * 0.7)
    cv.paint(region, pick_shade(rng, "cloud", 6), "cloud", texture=cv.noise(rng, 6, 0.03))


# -- objects with parts ----------------------------------------------------------------------


def house(cv: Canvas, rng: np.random.Generator, x: float, base: float, width: float) -> None:
    """Walls, a pitched roof, a door, windows and sometimes a chimney."""
    height = width * rng.uniform(0.6, 0.85)
    left, right, top = x - width / 2, x + width / 2, base - height
    roof_height = width * rng.uniform(0.3, 0.5)
    overhang = width * rng.uniform(0.04, 0.12)
    roof_shade = pick_shade(rng, "roof", JITTER)
    if rng.random() < 0.5:
        cx = x + rng.choice([-1, 1]) * width * rng.uniform(0.2, 0.3)
        chimney = cv.rect(cx - width * 0.06, top - roof_height * 0.9, cx + width * 0.06, top)
        cv.paint(chimney, pick_shade(rng, "chimney", JITTER), "house", "chimney")
    wall_shade = pick_shade(rng, "house", JITTER)
    cv.paint(cv.rect(left, top, right, base), wall_shade, "house", texture=cv.noise(rng, 12, 0.04))
    roof = cv.polygon([(left - overhang, top), (x, top - roof_height), (right + overhang, top)])
    cv.paint(roof, roof_shade, "house", "roof", texture=cv.noise(rng, 10, 0.05))
    door_w, door_h = width * rng.uniform(0.16, 0.22), height * rng.uniform(0.45, 0.6)
    door_x = rng.uniform(left + width * 0.1, right - width * 0.1 - door_w)
    cv.paint(
        cv.rect(door_x, base - door_h, door_x + door_w, base),
        pick_shade(rng, "door", JITTER),
        "house",
        "door",
    )
    size = width * rng.uniform(0.15, 0.2)
    window_y = top + height * rng.uniform(0.15, 0.3)
    for wx in np.linspace(left + width * 0.08, right - width * 0.08 - size, 3):
        if wx + size > door_x - 1 and wx < door_x + door_w + 1:
            continue
        cv.paint(
            cv.rect(wx, window_y, wx + size, window_y + size),
            pick_shade(rng, "window", 10),
            "house",
            "window",
        )


def tree(cv: Canvas, rng: np.random.Generator, x: float, base: float, height: float) -> None:
    """A trunk under a round or pointed crown of foliage."""
    trunk_w, trunk_h = height * rng.uniform(0.09, 0.14), height * rng.uniform(0.3, 0.42)
    cv.paint(
        cv.rect(x - trunk_w / 2, base - trunk_h, x + trunk_w / 2, base),
        pick_shade(rng, "trunk", JITTER),
        "tree",
        "trunk",
    )
    top = base - height
    crown_bottom = base - trunk_h * 0.8
    if rng.random() < 0.5:
        radius_x = height * rng.uniform(0.25, 0.36)
        crown = cv.ellipse(x, (top + crown_bottom) / 2, radius_x, (crown_bottom - top) / 2)
    else:
        half = height * rng.uniform(0.22, 0.3)
        crown = cv.polygon([(x - half, crown_bottom), (x, top), (x + half, crown_bottom)])
    cv.paint(crown, pick_shade(rng, "foliage", JITTER), "tree", "foliage", cv.noise(rng, 16, 0.12))


def boat(cv: Canvas, rng: np.random.Generator, x: float, base: float, width: float) -> None:
    """A hull on the water line `base`, a mast and one or two sails."""
    depth = width * rng.uniform(0.18, 0.26)
    left, right = x - width / 2, x + width / 2
    slant = width * rng.uniform(0.1, 0.2)
    mast_h = width * rng.uniform(0.6, 0.9)
    mast_x = x + rng.uniform(-0.1, 0.1) * width
    mast = cv.rect(mast_x - 0.6, base - depth * 0.5 - mast_h, mast_x + 0.6, base - depth * 0.5)
    cv.paint(mast, pick_shade(rng, "trunk", JITTER), "boat")
    sail_shade = pick_shade(rng, "sail", 8)
    sail_top, sail_bottom = base - depth * 0.5 - mast_h, base - depth * 0.7
    back = mast_x - width * rng.uniform(0.3, 0.42)
    cv.paint(
        cv.polygon([(mast_x - 1, sail_top), (mast_x - 1, sail_bottom), (back, sail_bottom)]),
        sail_shade,
        "boat",
        "sail",
    )
    if rng.random() < 0.6:
        front = mast_x + width * rng.uniform(0.25, 0.38)
        cv.paint(
            cv.polygon(
                [(mast_x + 1, sail_top + 2), (mast_x + 1, sail_bottom), (front, sail_bottom)]
            ),
            sail_shade,
            "boat",
            "sail",
        )
    hull = cv.polygon(
        [
            (left, base - depth * 0.5),
            (right, base - depth * 0.5),
            (right - slant, base + depth * 0.5),
            (left + slant, base + depth * 0.5),
        ]
    )
    cv.paint(hull, pick_shade(rng, "hull", JITTER), "boat", "hull")


def car(cv: Canvas, rng: np.random.Generator, x: float, base: float, width: float) -> None:
    """A body with a cabin, windows and two wheels, facing left or right."""
    radius = width * rng.uniform(0.1, 0.13)
    body_h = width * rng.uniform(0.22, 0.28)
    cabin_h = width * rng.uniform(0.18, 0.24)
    left, right = x - width / 2, x + width / 2
    body_bottom = base - radius * 0.6
    body_top = body_bottom - body_h
    shade = pick_shade(rng, "car", JITTER)
    cabin_left = left + width * rng.uniform(0.18, 0.28)
    cabin_right = right - width * rng.uniform(0.18, 0.28)
    inset = width * 0.08
    cabin = cv.polygon(
        [
            (cabin_left, body_top + 1),
            (cabin_left + inset, body_top - cabin_h),
            (cabin_right - inset, body_top - cabin_h),
            (cabin_right, body_top + 1),
        ]
    )
    cv.paint(cv.rect(left, body_top, right, body_bottom) | cabin, shade, "car")
    middle = (cabin_left + cabin_right) / 2
    pane_top, pane_bottom = body_top - cabin_h * 0.75, body_top - 1
    for x0, x1 in ((cabin_left + inset * 0.9, middle - 1), (middle + 1, cabin_right - inset * 0.9)):
        if x1 - x0 >= 1:
            cv.paint(
                cv.rect(x0, pane_top, x1, pane_bottom),
                pick_shade(rng, "window", 10),
                "car",
                "window",
            )
    for wx in (left + width * 0.22, right - width * 0.22):
        cv.paint(
            cv.ellipse(wx, base - radius, radius, radius),
            pick_shade(rng, "wheel", 6),
            "car",
            "wheel",
        )


def bird(cv: Canvas, rng: np.random.Generator, x: float, y: float, span: float) -> None:
    """A flying bird: two swept wings meeting at the body."""
    half = span / 2
    lift = span * rng.uniform(0.2, 0.4)
    points = [
        (x - half, y - lift),
        (x - half * 0.4, y - lift * 0.4),
        (x, y),
        (x + half * 0.4, y - lift * 0.4),
        (x + half, y - lift),
        (x + half * 0.35, y + lift * 0.2),
        (x, y + span * 0.18),
        (x - half * 0.35, y + lift * 0.2),
    ]
    cv.paint(cv.polygon(points), pick_shade(rng, "bird", 8), "bird")


def fence(cv: Canvas, rng: np.random.Generator, base: float, height: float) -> None:
    """Posts and two rails across the whole width, standing on `base`."""
    shade = pick_shade(rng, "fence", JITTER)
    gap = rng.uniform(5, 9)
    offset = rng.uniform(0, gap)
    posts = ((cv.xx + offset) % gap) < max(1.5, height * 0.15)
    region = posts & cv.band(base - height, base)
    for level in (0.25, 0.65):
        y = base - height * level
        region |= cv.band(y - max(0.6, height * 0.07), y + max(0.6, height * 0.07))
    cv.paint(region, shade, "fence")


def rock(cv: Canvas, rng: np.random.Generator, x: float, base: float, width: float) -> None:
    angles = np.sort(rng.uniform(0, 2 * math.pi, 7))
    rx, ry = width / 2, width * rng.uniform(0.25, 0.4)
    points = [
        (x + rx * math.cos(a) * rng.uniform(0.8, 1.1), base - ry + ry * math.sin(a) * 0.95)
        for a in angles
    ]
    cv.paint(
        cv.polygon(points), pick_shade(rng, "rock", JITTER), "rock", None, cv.noise(rng, 12, 0.1)
    )


def lighthouse(cv: Canvas, rng: np.random.Generator, x: float, base: float, height: float) -> None:
    """A striped tower with a lamp room and a roof."""
    bottom_half, top_half = height * 0.13, height * 0.08
    tower_top = base - height * 0.72
    tower = cv.polygon(
        [
            (x - bottom_half, base),
            (x - top_half, tower_top),
            (x + top_half, tower_top),
            (x + bottom_half, base),
        ]
    )
    cv.paint(tower, pick_shade(rng, "lighthouse", 6), "lighthouse")
    stripe_h = height * 0.1
    stripes = (np.floor((base - cv.yy) / stripe_h) % 2 == 1) & tower
    cv.paint(stripes, pick_shade(rng, "lighthouse stripe", 8), "lighthouse")
    lamp_top = tower_top - height * 0.12
    cv.paint(
        cv.rect(x - top_half, lamp_top, x + top_half, tower_top),
        pick_shade(rng, "lamp", 6),
        "lighthouse",
        "lamp",
    )
    cv.paint(
        cv.polygon(
            [(x - top_half * 1.5, lamp_top), (x, base - height), (x + top_half * 1.5, lamp_top)]
        ),
        pick_shade(rng, "roof", JITTER),
        "lighthouse",
        "roof",
    )


def umbrella(cv: Canvas, rng: np.random.Generator, x: float, base: float, width: float) -> None:
    """A beach umbrella: a pole and a striped canopy."""
    height = width * rng.uniform(0.8, 1.05)
    top = base - height
    cv.paint(cv.rect(x - 0.8, top, x + 0.8, base), pick_shade(rng, "pole", 8), "umbrella", "pole")
    radius_y = width * rng.uniform(0.22, 0.3)
    dome = cv.ellipse(x, top + radius_y, width / 2, radius_y) & (cv.yy + 0.5 < top + radius_y)
    angle = np.arctan2(cv.yy + 0.5 - (top + radius_y), cv.xx + 0.5 - x)
    sectors = np.floor(angle / (math.pi / 6)).astype(int) % 2 == 0
    cv.paint(dome, pick_shade(rng, "canopy", JITTER), "umbrella", "canopy")
    cv.paint(dome & sectors, pick_shade(rng, "canopy stripe", 6), "umbrella", "canopy")


def tent(cv: Canvas, rng: np.random.Generator, x: float, base: float, width: float) -> None:
    """A ridge tent seen from the front, with a dark door opening."""
    height = width * rng.uniform(0.55, 0.75)
    shade = pick_shade(rng, "tent", JITTER)
    cv.paint(
        cv.polygon([(x - width / 2, base), (x, base - height), (x + width / 2, base)]),
        shade,
        "tent",
        texture=cv.noise(rng, 8, 0.05),
    )
    door_h = height * rng.uniform(0.45, 0.6)
    cv.paint(
        cv.polygon([(x - door_h * 0.45, base), (x, base - door_h), (x + door_h * 0.45, base)]),
        pick_shade(rng, "door", JITTER),
        "tent",
        "door",
    )


def snowman(cv: Canvas, rng: np.random.Generator, x: float, base: float, height: float) -> None:
    """Three stacked snowballs with a grey outline, a black hat, a red scarf and a nose."""
    r1, r2, r3 = height * 0.22, height * 0.16, height * 0.11
    y1, y2 = base - r1, base - 2 * r1 - r2 * 0.8
    y3 = y2 - r2 - r3 * 0.8
    outline = pick_shade(rng, "snowman outline", 8)
    white = pick_shade(rng, "snowman", 3)
    for cy, r in ((y1, r1), (y2, r2), (y3, r3)):
        cv.paint(cv.ellipse(x, cy, r + 1, r + 1), outline, "snowman")
    for cy, r in ((y1, r1), (y2, r2), (y3, r3)):
        cv.paint(cv.ellipse(x, cy, r, r), white, "snowman")
    cv.paint(
        cv.rect(x - r2 * 0.9, y2 - r2 - 1, x + r2 * 0.9, y2 - r2 + 1.5),
        pick_shade(rng, "scarf", 8),
        "snowman",
    )
    cv.paint(
        cv.rect(x - r3 * 0.9, y3 - r3 * 0.7, x + r3 * 0.9, y3 - r3 * 0.4),
        pick_shade(rng, "hat", 4),
        "snowman",
    )
    cv.paint(
        cv.rect(x - r3 * 0.6, y3 - r3 * 1.9, x + r3 * 0.6, y3 - r3 * 0.6),
        pick_shade(rng, "hat", 4),
        "snowman",
    )
    nose = cv.polygon([(x, y3 - 1), (x + r3 * 1.3, y3), (x, y3 + 1)])
    cv.paint(nose, pick_shade(rng, "nose", 6), "snowman")


def cactus(cv: Canvas, rng: np.random.Generator, x: float, base: float, height: float) -> None:
    """A column with rounded top and one or two raised arms."""
    half = height * rng.uniform(0.08, 0.11)
    top = base - height
    region = cv.rect(x - half, top + half, x + half, base) | cv.ellipse(x, top + half, half, half)
    for side in rng.permutation([-1, 1])[: int(rng.integers(1, 3))]:
        arm_y = base - height * rng.uniform(0.35, 0.55)
        reach = height * rng.uniform(0.22, 0.3)
        arm_top = arm_y - height * rng.uniform(0.2, 0.32)
        elbow_x = x + side * reach
        region |= cv.rect(min(x, elbow_x), arm_y - half * 0.8, max(x, elbow_x), arm_y + half * 0.8)
        region |= cv.rect(elbow_x - half * 0.8, arm_top, elbow_x + half * 0.8, arm_y + half * 0.8)
        region |= cv.ellipse(elbow_x, arm_top, half * 0.8, half * 0.8)
    cv.paint(region, pick_shade(rng, "cactus", JITTER), "cactus", texture=cv.noise(rng, 20, 0.1))


def flower(cv: Canvas, rng: np.random.Generator, x: float, y: float, size: float) -> None:
    petals = cv.ellipse(x, y, size, size)
    cv.paint(petals, pick_shade(rng, "flower", 10), "flower")


def traffic_light(
    cv: Canvas, rng: np.random.Generator, x: float, base: float, height: float
) -> None:
    """A pole carrying a black box with three lamps, one lit."""
    box_w, box_h = height * 0.2, height * 0.42
    top = base - height
    cv.paint(
        cv.rect(x - 0.9, top + box_h, x + 0.9, base),
        pick_shade(rng, "pole", 8),
        "traffic light",
        "pole",
    )
    cv.paint(
        cv.rect(x - box_w / 2, top, x + box_w / 2, top + box_h),
        pick_shade(rng, "traffic light", 6),
        "traffic light",
    )
    lit = int(rng.integers(3))
    for k in range(3):
        shade = SIGNALS[k] if k == lit else UNLIT
        cy = top + box_h * (k + 0.5) / 3
        cv.paint(cv.ellipse(x, cy, box_w * 0.3, box_w * 0.3), shade, "traffic light")
