"""Concept rankings per class against the world's rules (`ibd.evaluation.scoring.match_rules`):
the class decomposition's by coefficient (paper eq. 6), by mean contribution over the decomposed
model's IBD explanations (eq. 9), and a model's own by counterfactual effect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ibd.errors import UserError
from ibd.evaluation import scoring as ev
from ibd.evaluation.items import Item
from ibd.evaluation.means import mean

Ranked = dict[str, list[tuple[str, float]]]  # class -> (concept, value), largest first
RuleRows = list[tuple[ev.WorldClass, ev.RuleMatch]]
MEAN_KEYS = ("precision_lenient", "recall_lenient", "precision_strict", "recall_strict")


def read_ranked(path: Path, world: ev.World) -> Ranked:
    """A decompose.json's concepts per class by coefficient; its classes must be the world's."""
    ranked = ev.read_decomposition(path)
    unknown = sorted(set(ranked) - {c.name for c in world.classes})
    if unknown:
        raise UserError(f"{path}: class(es) {', '.join(unknown[:5])} are not in world.json")
    for cls in world.classes:
        if cls.name not in ranked:
            raise UserError(f"{path} has no class '{cls.name}' of world.json")
    return ranked


def rule_rows(
    ranked: Mapping[str, Sequence[tuple[str, float]]], world: ev.World, k: int
) -> RuleRows:
    """Each world class with a ranking, scored against its rule."""
    return [
        (cls, ev.match_rules([n for n, _ in ranked[cls.name]], cls.defining, world.parts, k))
        for cls in world.classes
        if cls.name in ranked
    ]


def rule_cells(cls: ev.WorldClass, match: ev.RuleMatch, sep: str) -> tuple[Any, ...]:
    """One class's row of RULE_COLUMNS, lists joined by `sep`."""
    return (
        cls.name,
        sep.join(cls.defining),
        sep.join(match.top),
        match.precision_lenient,
        match.recall_lenient,
        match.precision_strict,
        match.recall_strict,
    )


def rule_means(rows: RuleRows) -> dict[str, float]:
    """The mean of each of MEAN_KEYS over the classes."""
    return {key: mean(getattr(m, key) for _, m in rows) for key in MEAN_KEYS}


def contribution_ranking(ranked: Ranked, model: str | None, items: Sequence[Item]) -> Ranked:
    """The decomposition's concepts per class by mean contribution over `model`'s IBD
    explanations of that class (empty without such explanations)."""
    explained = [
        (i.class_name, i.contributions) for i in items if i.method == "ibd" and i.model == model
    ]
    return ev.rank_by_contribution(ranked, explained) if model else {}


def missing_classes(world: ev.World, rows: RuleRows, ranked: RuleRows) -> list[str]:
    """The classes of the coefficient ranking (`ranked`) that the contribution ranking (`rows`)
    lacks (the decomposed model explained none of their images), in world order."""
    have = {c.name for c, _ in rows}
    listed = {c.name for c, _ in ranked}
    return [c.name for c in world.classes if c.name in listed and c.name not in have]
