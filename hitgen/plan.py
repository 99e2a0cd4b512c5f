"""Which items a batch holds, in which order, with which explanation on the left (pure, seeded).

- Regular items: `n` pairs drawn without replacement (all of them if fewer).
- Catch trials: `floor(n * rate / (1 - rate) + 0.5)` more items, so that a fraction `rate` of the
  batch is catch trials, cycling through the requested types. "identical" shows the first
  explanation on both sides (expected answer 3); "wrong" shows, as `second`, the concepts and
  heatmaps that the second side's model and method gave another image with a different predicted
  class, so that it looks like a regular item (expected: the other robot).
  Catch trials use images not drawn for regular items first.
- Left/right: within the regular items, and within each catch type, exactly floor(m/2) or
  ceil(m/2) of the m items show `first` as Robot A, in a seeded random arrangement.
- Presentation order: a seeded shuffle of all items.

Every random choice comes from `random.Random` seeded with a string derived from the seed and the
purpose, so changing, say, the catch rate leaves the draw of regular items unchanged.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from hitgen.errors import UserError
from hitgen.explanations import Component, Explanation
from hitgen.pairing import Pair

CATCH_TYPES = ("identical", "wrong")
SIDES = ("first", "second")


@dataclass(frozen=True)
class Shown:
    """What one robot shows: the shared prediction explained by (at most four) components."""

    model: str
    method: str
    components: tuple[Component, ...]
    wrong_from: str | None = None  # a deliberately wrong side: the image its components explain

    @staticmethod
    def of(explanation: Explanation) -> Shown:
        return Shown(explanation.model, explanation.method, explanation.shown)


@dataclass(frozen=True)
class ItemPlan:
    kind: str  # the experiment, or "catch"
    pair: Pair  # the image and the shared decision
    first: Shown
    second: Shown
    robot_a: str  # which of first/second is shown on the left, as Robot A
    catch_type: str | None = None

    @property
    def expected_choices(self) -> list[int] | None:
        """Answers that pass a catch trial (Likert coding, contracts section 9)."""
        if self.catch_type is None:
            return None
        if self.catch_type == "identical":
            return [3]
        # the wrong side is always `second`, so the reasonable robot is where `first` is shown
        return [1, 2] if self.robot_a == "first" else [4, 5]


def catch_count(n_regular: int, rate: float) -> int:
    """How many catch trials make them a fraction `rate` of the batch."""
    if not 0.0 <= rate < 1.0:
        raise UserError(f"catch rate must be in [0, 1), got {rate}")
    return math.floor(n_regular * rate / (1.0 - rate) + 0.5)


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"hitgen:{seed}:{purpose}")


def balanced_sides(count: int, rng: random.Random) -> list[str]:
    """`count` placements, floor/ceil half of them "first", in random order."""
    n_first = count // 2 + (rng.random() < 0.5 if count % 2 else 0)
    sides = ["first"] * n_first + ["second"] * (count - n_first)
    rng.shuffle(sides)
    return sides


def _wrong_side(base: Pair, donors: list[Explanation], rng: random.Random) -> Shown:
    side = f"{base.second.model}/{base.second.method}"
    other_class = [d for d in donors if d.class_name != base.first.class_name]
    if not other_class:
        raise UserError(
            f"cannot make a 'wrong' catch trial: every {side} explanation predicts "
            f"{base.first.class_name!r} (use --catch-types identical)"
        )
    # a donor with nothing to show would give itself away as an empty robot
    candidates = [d for d in other_class if d.shown]
    if not candidates:
        raise UserError(
            f"cannot make a 'wrong' catch trial: no {side} explanation of another class has a "
            f"component with a positive contribution (use --catch-types identical)"
        )
    donor = rng.choice(candidates)
    return Shown(base.second.model, base.second.method, donor.shown, wrong_from=donor.image)


def plan_items(
    pairs: list[Pair],
    donors: list[Explanation],
    experiment: str,
    n: int,
    catch_rate: float,
    catch_types: tuple[str, ...],
    seed: int,
) -> list[ItemPlan]:
    """The batch's items in presentation order.

    `pairs` are the shared decisions in a fixed order; `donors` are the explanations (same model
    and method as `second`) that wrong catch trials borrow from.
    """
    if not pairs:
        raise UserError("no image has a shared decision to compare")
    for kind in catch_types:
        if kind not in CATCH_TYPES:
            raise UserError(f"unknown catch type {kind!r} (one of {', '.join(CATCH_TYPES)})")
    n_regular = min(n, len(pairs))
    n_catch = catch_count(n_regular, catch_rate) if catch_types else 0

    drawn = _rng(seed, "select").sample(range(len(pairs)), len(pairs))
    regular_pairs = [pairs[i] for i in drawn[:n_regular]]
    # catch trials prefer images the regular items do not show
    catch_order = drawn[n_regular:] + _rng(seed, "catch-reuse").sample(drawn[:n_regular], n_regular)
    catch_pairs = [pairs[catch_order[i % len(catch_order)]] for i in range(n_catch)]

    sides = balanced_sides(n_regular, _rng(seed, "sides"))
    items = [
        ItemPlan(experiment, pair, Shown.of(pair.first), Shown.of(pair.second), side)
        for pair, side in zip(regular_pairs, sides, strict=True)
    ]

    donor_rng = _rng(seed, "wrong")
    ordered_donors = sorted(donors, key=lambda d: d.image)
    by_type: dict[str, list[Pair]] = {kind: [] for kind in catch_types}
    for i, pair in enumerate(catch_pairs):
        by_type[catch_types[i % len(catch_types)]].append(pair)
    for kind, kind_pairs in by_type.items():
        kind_sides = balanced_sides(len(kind_pairs), _rng(seed, f"sides-{kind}"))
        for pair, side in zip(kind_pairs, kind_sides, strict=True):
            first = Shown.of(pair.first)
            second = first if kind == "identical" else _wrong_side(pair, ordered_donors, donor_rng)
            items.append(ItemPlan("catch", pair, first, second, side, catch_type=kind))

    _rng(seed, "order").shuffle(items)
    return items
