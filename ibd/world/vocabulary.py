"""The concept world's vocabulary: its concepts (Broden categories object, part, color, scene),
which parts belong to which object, and the named shades each concept is painted in.

Names are plain English words because they are shown to people in the HITs. Colour names are
Broden's eleven colour terms (van de Weijer et al.); every painted pixel carries the name of
the shade it was painted with, which becomes the `color` label plane.
"""

from __future__ import annotations

# Broden's colour terms with the RGB each one stands for when a shade names only the colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (30, 30, 32),
    "blue": (50, 95, 190),
    "brown": (120, 78, 40),
    "green": (60, 140, 55),
    "grey": (125, 125, 128),
    "orange": (235, 140, 40),
    "pink": (235, 150, 185),
    "purple": (125, 70, 160),
    "red": (195, 40, 38),
    "white": (242, 242, 240),
    "yellow": (238, 205, 60),
}

# Backgrounds ("stuff") and things, both Broden's `object` category.
BACKGROUNDS = ("sky", "cloud", "sun", "mountain", "cliff", "water", "grass", "road", "sand", "snow")
THINGS = (
    "house",
    "tree",
    "boat",
    "car",
    "bird",
    "fence",
    "rock",
    "lighthouse",
    "umbrella",
    "tent",
    "snowman",
    "cactus",
    "flower",
    "traffic light",
)
OBJECTS = BACKGROUNDS + THINGS

# Parts of each object; a part name shared by several objects is one concept (like Broden's).
PARTS_OF: dict[str, tuple[str, ...]] = {
    "house": ("roof", "door", "window", "chimney"),
    "tree": ("trunk", "foliage"),
    "boat": ("hull", "sail"),
    "car": ("wheel", "window"),
    "lighthouse": ("roof", "lamp"),
    "umbrella": ("canopy", "pole"),
    "traffic light": ("pole",),
    "tent": ("door",),
}
PARTS = tuple(dict.fromkeys(p for parts in PARTS_OF.values() for p in parts))

# A shade: (colour name, RGB). Each concept draws one of its shades per instance, then jitters.
Shade = tuple[str, tuple[int, int, int]]

SHADES: dict[str, tuple[Shade, ...]] = {
    "sky": (("blue", (140, 190, 235)), ("blue", (110, 165, 225))),
    "cloud": (("white", (246, 246, 246)), ("grey", (196, 198, 204))),
    "sun": (("yellow", (252, 220, 70)), ("orange", (246, 160, 50))),
    "mountain": (("grey", (118, 120, 132)), ("purple", (118, 98, 142)), ("brown", (128, 98, 74))),
    "cliff": (("brown", (146, 98, 62)), ("grey", (112, 106, 100))),
    "water": (("blue", (38, 92, 168)), ("blue", (30, 110, 150))),
    "grass": (("green", (74, 152, 62)), ("green", (96, 160, 56))),
    "road": (("grey", (96, 96, 102)), ("grey", (80, 80, 84))),
    "road marking": (("white", (236, 236, 230)),),
    "sand": (("yellow", (226, 202, 132)), ("yellow", (232, 210, 150))),
    "snow": (("white", (226, 234, 246)), ("white", (214, 226, 242))),
    "house": (
        ("white", (236, 230, 218)),
        ("yellow", (236, 206, 96)),
        ("pink", (234, 166, 186)),
        ("orange", (228, 150, 78)),
    ),
    "roof": (("red", (172, 48, 40)), ("brown", (112, 72, 42)), ("black", (48, 48, 56))),
    "door": (("brown", (104, 62, 30)), ("black", (40, 34, 30))),
    "window": (("blue", (168, 208, 240)),),
    "chimney": (("red", (150, 54, 44)), ("grey", (112, 112, 112))),
    "trunk": (("brown", (104, 68, 36)),),
    "foliage": (("green", (40, 118, 46)), ("green", (56, 132, 40)), ("orange", (222, 124, 42))),
    "hull": (
        ("red", (186, 44, 40)),
        ("white", (240, 240, 236)),
        ("blue", (36, 62, 150)),
        ("brown", (122, 76, 40)),
    ),
    "sail": (("white", (246, 246, 240)), ("yellow", (244, 214, 90))),
    "car": (
        ("red", (200, 36, 36)),
        ("blue", (40, 76, 190)),
        ("yellow", (240, 206, 50)),
        ("white", (238, 238, 238)),
        ("black", (34, 34, 38)),
    ),
    "wheel": (("black", (26, 26, 28)),),
    "bird": (("black", (30, 30, 34)), ("brown", (100, 70, 44))),
    "fence": (("brown", (142, 102, 62)), ("white", (240, 240, 236))),
    "rock": (("grey", (128, 128, 126)), ("grey", (104, 102, 100))),
    "lighthouse": (("white", (244, 244, 240)),),
    "lighthouse stripe": (("red", (196, 42, 40)),),
    "lamp": (("yellow", (252, 228, 80)),),
    "canopy": (("red", (204, 44, 48)), ("blue", (44, 92, 200)), ("pink", (236, 140, 190))),
    "canopy stripe": (("white", (244, 244, 244)),),
    "pole": (("grey", (150, 150, 154)),),
    "tent": (
        ("orange", (236, 132, 40)),
        ("green", (52, 142, 64)),
        ("blue", (48, 88, 190)),
        ("red", (196, 44, 44)),
    ),
    "snowman": (("white", (252, 252, 252)),),
    "snowman outline": (("grey", (140, 144, 156)),),
    "hat": (("black", (28, 28, 30)),),
    "nose": (("orange", (236, 130, 40)),),
    "scarf": (("red", (200, 40, 40)),),
    "cactus": (("green", (58, 128, 64)), ("green", (76, 140, 52))),
    "flower": (
        ("red", (214, 40, 50)),
        ("yellow", (246, 220, 60)),
        ("pink", (240, 140, 196)),
        ("purple", (140, 70, 180)),
        ("white", (250, 250, 250)),
    ),
    "traffic light": (("black", (34, 34, 36)),),
    "signal": (("red", (230, 40, 40)), ("yellow", (246, 210, 40)), ("green", (50, 200, 80))),
}
