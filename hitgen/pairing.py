"""Joining two sets of explanations on the image they explain, keeping only shared decisions.

Both experiments compare two explanations of one decision (paper 3.4): the same model explained by
two methods (Fig. 8), or two models explained by one method "only where both compared networks make
the same decision" (Fig. 9). Images without a shared decision, or where a side has nothing to
show (no component with a positive contribution), are kept aside with a reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hitgen.errors import UserError
from hitgen.explanations import Explanation


@dataclass(frozen=True)
class Pair:
    """Two explanations of the same image and class: `first` is the one being evaluated."""

    first: Explanation
    second: Explanation


@dataclass(frozen=True)
class Skipped:
    image: str
    reason: str


def image_key(explanation: Explanation) -> str:
    """Identity of an image across directories that may spell its path differently."""
    return os.path.realpath(explanation.image_path)


def by_image(explanations: list[Explanation], name: str) -> dict[str, Explanation]:
    """Index by image; one explanation per image is all a side may have."""
    index: dict[str, Explanation] = {}
    for explanation in explanations:
        key = image_key(explanation)
        if key in index:
            raise UserError(f"{name}: two explanations of image {explanation.image!r}")
        index[key] = explanation
    return index


def join_on_image(
    firsts: list[Explanation],
    seconds: list[Explanation],
    first_name: str,
    second_name: str,
    disagreeing: str,
) -> tuple[list[Pair], list[Skipped]]:
    """Pairs of explanations of the same image and class, sorted by image, and the images left out.

    `disagreeing` names who disagrees in a skip reason ("models", "methods"); `first_name` and
    `second_name` name the two sides in the reason for an image only one side explains or one
    side has nothing to show for.
    """
    first_index = by_image(firsts, first_name)
    second_index = by_image(seconds, second_name)
    pairs: list[Pair] = []
    skipped: list[Skipped] = []

    def order(key: str) -> tuple[str, str]:
        # by the path as written, so the order does not depend on where the files lie
        shown = first_index.get(key) or second_index[key]
        return (shown.image, key)

    for key in sorted(first_index.keys() | second_index.keys(), key=order):
        first = first_index.get(key)
        second = second_index.get(key)
        if first is None:
            assert second is not None
            skipped.append(Skipped(second.image, f"no {first_name} explanation"))
        elif second is None:
            skipped.append(Skipped(first.image, f"no {second_name} explanation"))
        elif first.class_name != second.class_name:
            reason = f"{disagreeing} disagree: {first.class_name} vs {second.class_name}"
            skipped.append(Skipped(first.image, reason))
        elif not first.shown or not second.shown:
            sides = ((first_name, first), (second_name, second))
            empty = [name for name, explanation in sides if not explanation.shown]
            reason = f"no positive contribution: {' and '.join(empty)}"
            skipped.append(Skipped(first.image, reason))
        else:
            pairs.append(Pair(first, second))
    return pairs, skipped
