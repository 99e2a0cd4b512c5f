"""What a model relies on, measured by intervention on the concept world.

The world can draw any of its images again from the image's own random state with one object or
part concept left out (`ibd.world.writer.render_image(..., hide={c})`): the layout, the lighting
and the sensor noise are the image's own and only the concept's pixels change. Two fills:

- remove: the concept is not painted, so what it covered shows through (an object's background;
  where a ground band such as water or sand is removed the canvas is black, which no training
  image shows);
- grey: the concept's pixels are painted flat grey (about the normalisation mean, input 0).

The effect of concept c on class k in image x is the drop of k's logit when c is taken out,

    e_c(x) = h_k(x) - h_k(x without c),

and 0 when x does not show c. Two measures are read off it:

- Per explanation that names concepts (IBD, Network Dissection): the effect of its top concept,
  the largest effect of any concept the image shows, and whether they are the same (`hit`);
  chance is 1 / (concepts shown) for the hit and the mean effect over the shown concepts for
  the effect. A label the world cannot take out (a colour) is not measured.
- Per class (`rank_by_effect`): concepts ranked by their mean effect over the images explained
  as that class, absent counting 0, as `ibd.evaluation.scoring.rank_by_contribution` ranks IBD's
  concepts by mean contribution (paper eq. 9). This is the model's own ranking: scored against the
  rules of `world.json` it says how far the model follows them, so how far an explanation faithful
  to the model can.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ibd.data.images import load_rgb, to_tensor
from ibd.errors import UserError
from ibd.nets.hooks import eval_mode
from ibd.nets.load import LoadedModel
from ibd.world.vocabulary import OBJECTS, PARTS
from ibd.world.writer import (
    GENERATOR_VERSION,
    GREY,
    WorldSettings,
    as_jpeg,
    labels,
    render_image,
)

FILLS: dict[str, tuple[float, float, float] | None] = {"remove": None, "grey": GREY}
REMOVABLE = frozenset(OBJECTS) | frozenset(PARTS)


@functools.cache
def _label_names() -> dict[int, str]:
    """Broden label number -> concept name of the world's labels."""
    return {label.number: label.name for label in labels()}


@dataclass(frozen=True)
class Counterfactuals:
    """World image `index` as stored and its counterfactuals, one per concept it shows."""

    index: int
    image: Image.Image
    shown: tuple[str, ...]
    photos: tuple[Image.Image, ...]  # photos[j]: the image without shown[j]


def draw(
    settings: WorldSettings, index: int, stored: Path, fill: tuple[float, float, float] | None
) -> Counterfactuals:
    """The counterfactuals of image `index` of the world `settings` describe, whose file is
    `stored`. The image is drawn again first and must equal the file: counterfactuals of an
    edited image, or of one another generator drew, would answer a question nobody asked."""
    canvas, photo = render_image(settings, index)
    image = load_rgb(stored, upright=False)
    if not np.array_equal(np.asarray(image), np.asarray(as_jpeg(photo, settings.jpeg_quality))):
        raise UserError(
            f"{stored} is not image {index} as world generator {GENERATOR_VERSION} draws it "
            "(edited, or written by other code): counterfactuals need the world as built"
        )
    name_of = _label_names()
    numbers = np.union1d(np.unique(canvas.object), np.unique(canvas.part))
    shown = tuple(sorted(name_of[int(n)] for n in numbers if n))
    photos = tuple(
        as_jpeg(render_image(settings, index, frozenset({c}), fill)[1], settings.jpeg_quality)
        for c in shown
    )
    return Counterfactuals(index, image, shown, photos)


@dataclass(frozen=True)
class Effects:
    """The model's class logits on the stored image and, per concept it shows, the drop of
    every class logit when that concept is taken out (K values each, float64)."""

    logits: np.ndarray
    drops: dict[str, np.ndarray]

    def on(self, k: int) -> dict[str, float]:
        """Each shown concept's effect on class k."""
        return {c: float(d[k]) for c, d in self.drops.items()}


@torch.no_grad()
def effects(loaded: LoadedModel, drawn: Counterfactuals) -> Effects:
    """One forward pass over the image and its counterfactuals."""
    pictures = [drawn.image, *drawn.photos]
    batch = torch.stack(
        [to_tensor(p, loaded.input_size, loaded.mean, loaded.std) for p in pictures]
    ).to(loaded.device)
    with eval_mode(loaded.model):
        logits = loaded.model(batch).double().cpu().numpy()
    drops = {c: logits[0] - row for c, row in zip(drawn.shown, logits[1:], strict=True)}
    return Effects(logits[0], drops)


@dataclass(frozen=True)
class TopEffect:
    """How much of what the model uses an explanation's top concept is (module docstring)."""

    effect: float  # e_top; 0 when the image does not show the concept
    largest: float  # the largest effect of any concept the image shows
    hit: bool  # e_top is the largest
    chance_hit: float  # 1 / concepts shown
    mean_effect: float  # mean effect over the concepts shown

    @property
    def share(self) -> float:
        """e_top / the largest effect; nan when no concept has a positive effect."""
        return self.effect / self.largest if self.largest > 0 else float("nan")


def top_effect(shown_effects: Mapping[str, float], label: str | None) -> TopEffect | None:
    """The counterfactual score of an explanation whose top concept is `label`, given each shown
    concept's effect on the explained class; None when the label cannot be taken out of a world
    image (not an object or part concept) or the image shows no concept."""
    if label is None or label not in REMOVABLE or not shown_effects:
        return None
    values = list(shown_effects.values())
    largest = max(values)
    effect = shown_effects.get(label, 0.0)
    return TopEffect(
        effect=effect,
        largest=largest,
        hit=label in shown_effects and effect == largest,
        chance_hit=1.0 / len(values),
        mean_effect=sum(values) / len(values),
    )


def rank_by_effect(
    explained: Iterable[tuple[str, Mapping[str, float]]],
) -> dict[str, list[tuple[str, float]]]:
    """Per class, concepts by mean effect over the images explained as that class, largest
    first. `explained` gives (class name, shown concept -> effect on that class) per image; a
    concept an image does not show counts 0 there. Ties keep name order."""
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for class_name, shown_effects in explained:
        per_class = sums.setdefault(class_name, {})
        counts[class_name] = counts.get(class_name, 0) + 1
        for concept, value in shown_effects.items():
            per_class[concept] = per_class.get(concept, 0.0) + value
    return {
        class_name: sorted(
            ((c, total / counts[class_name]) for c, total in sorted(per_class.items())),
            key=lambda pair: -pair[1],
        )
        for class_name, per_class in sums.items()
    }


def shared_at(first: Sequence[str], second: Sequence[str], k: int) -> float:
    """|top-k of first ∩ top-k of second| / k."""
    return len(set(first[:k]) & set(second[:k])) / k
