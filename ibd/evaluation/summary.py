"""Each explanation's scores, and their means per (model, method): the rows of explanations.csv
and summary.csv."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ibd.evaluation.completeness import LogitShare
from ibd.evaluation.confidence import Confidence, average_drop, increase_in_confidence
from ibd.evaluation.counterfactual import TopEffect
from ibd.evaluation.curves import Areas
from ibd.evaluation.items import Item, method_rank
from ibd.evaluation.means import mean
from ibd.evaluation.road import RoadScores
from ibd.evaluation.scoring import CLASS_MAP_METHODS
from ibd.evaluation.truth import Truth


@dataclass(frozen=True)
class Scored:
    """One explanation and what each stage measured on it (None: the stage did not run)."""

    item: Item
    truth: Truth
    areas: Areas | None = None
    top_effect: TopEffect | None = None
    road: RoadScores | None = None
    confidence: Confidence | None = None
    logit_share: LogitShare | None = None  # ibd / netdissect: the named share of the logit


@dataclass(frozen=True)
class Summary:
    """Means over one (model, method)'s explanations; field order is summary.csv's columns.
    None: does not apply; nan: nothing measured."""

    model: str
    method: str
    explanations: int
    accuracy: float | None  # of the explained class against the true class
    present: float | None  # None for class maps
    pointing: float
    region_precision: float
    lift: float
    concept_trials: int
    concept_shown: float | None
    concept_pointing: float | None
    concept_overlap: float | None
    deletion_auc: float
    insertion_auc: float
    cf_measured: int | None
    cf_effect: float
    cf_largest: float
    cf_mean_effect: float
    cf_hit: float
    cf_chance: float
    cf_share: float
    road_morf: float  # mean class score over the ROAD percentages, most relevant removed first
    road_lerf: float  # ... least relevant first
    road_morf_top1: float  # share of (image, percentage) where the class stays top-1
    road_lerf_top1: float
    average_drop: float  # percent
    increase_in_confidence: float  # percent
    logit_share: float | None  # mean sum(contributions) / logit; None for class maps


def _concept_game(group: Sequence[Scored]) -> tuple[int, float | None, float | None, float | None]:
    """The concept pointing game over a group's trials: trials, how often the method showed the
    concept at all, and hit rates on the peak and overlap rules."""
    trials = sum(len(s.truth.trials) for s in group)
    if not trials:
        return 0, None, None, None
    return (
        trials,
        sum(s.truth.shown for s in group) / trials,
        sum(s.truth.peak for s in group) / trials,
        sum(s.truth.overlap for s in group) / trials,
    )


def _counterfactual(
    group: Sequence[Scored],
) -> tuple[int | None, float, float, float, float, float, float]:
    """Means over a group's explanations whose top concept was taken out of the image:
    measured, effect, largest, mean effect, hit, chance, share."""
    measured = [s.top_effect for s in group if s.top_effect is not None]
    effect = mean(t.effect for t in measured)
    largest = mean(t.largest for t in measured)
    # a ratio of means: a mean of per-image ratios is dominated by images whose largest
    # effect is near 0
    share = effect / largest if measured and largest > 0 else math.nan
    return (
        len(measured) or None,
        effect,
        largest,
        mean(t.mean_effect for t in measured),
        mean(t.hit for t in measured),
        mean(t.chance_hit for t in measured),
        share,
    )


def _road(group: Sequence[Scored]) -> tuple[float, float, float, float]:
    """Means over a group's explanations of their ROAD scores (nan when not run)."""
    found = [s.road for s in group if s.road is not None]
    return (
        mean(r.morf for r in found),
        mean(r.lerf for r in found),
        mean(r.morf_top1 for r in found),
        mean(r.lerf_top1 for r in found),
    )


def _confidence_and_share(
    method: str, group: Sequence[Scored]
) -> tuple[float, float, float | None]:
    """Average Drop, Increase in Confidence and the mean share of the logit."""
    found = [s.confidence for s in group if s.confidence is not None]
    shares = None
    if method not in CLASS_MAP_METHODS:
        shares = mean(None if s.logit_share is None else s.logit_share.share for s in group)
    return average_drop(found), increase_in_confidence(found), shares


def _summary(model: str, method: str, group: Sequence[Scored]) -> Summary:
    known = [s.item for s in group if s.item.true_class is not None]
    areas = [s.areas for s in group]
    return Summary(
        model,
        method,
        len(group),
        mean(i.class_name == i.true_class for i in known) if known else None,
        None if method in CLASS_MAP_METHODS else mean(s.truth.explanation.present for s in group),
        mean(s.truth.explanation.hit for s in group),
        mean(s.truth.explanation.precision for s in group),
        mean(s.truth.explanation.lift for s in group),
        *_concept_game(group),
        mean(None if a is None else a.deletion for a in areas),
        mean(None if a is None else a.insertion for a in areas),
        *_counterfactual(group),
        *_road(group),
        *_confidence_and_share(method, group),
    )


def summarise(scored: Sequence[Scored]) -> list[Summary]:
    """One Summary per (model, method), by model, then in method order."""
    groups: dict[tuple[str, str], list[Scored]] = defaultdict(list)
    for s in scored:
        groups[(s.item.model, s.item.method)].append(s)
    order = sorted(groups, key=lambda key: (key[0], method_rank(key[1])))
    return [_summary(model, method, groups[(model, method)]) for model, method in order]
