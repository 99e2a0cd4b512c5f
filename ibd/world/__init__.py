"""The concept world: procedural scenes with pixel-exact concept masks, written in Broden's
format (see docs/world.md).

Modules: `vocabulary` (concepts, parts, shades), `canvas` (painting pixels with their labels),
`things` (how each concept is drawn), `rules` (scene classes: defining / optional / forbidden
concepts), `scenes` (composing one image of a class), `writer` (the Broden files, world.json,
scenes.csv).
"""

from __future__ import annotations
