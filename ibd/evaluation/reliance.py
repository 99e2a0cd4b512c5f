"""The counterfactual stage (`ibd.evaluation.counterfactual`): each explained image drawn again
without one concept at a time and run through every model that explained it. Per explanation,
the effect of its top concept; per model, its own ranking of concepts per class, against the
rules and against IBD's two rankings of the decomposed model."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ibd.data import scenes
from ibd.errors import UserError
from ibd.evaluation import counterfactual as cf
from ibd.evaluation import scoring as ev
from ibd.evaluation.items import Item
from ibd.evaluation.rules import Ranked, RuleRows, rule_means, rule_rows
from ibd.nets.load import LoadedModel
from ibd.world.writer import WorldSettings

# model -> (class name, shown concept -> effect on that class) per explained image and class
Explained = dict[str, list[tuple[str, dict[str, float]]]]


@dataclass(frozen=True)
class Drawn:
    """What the counterfactual images measured: per item position, the effect of its top
    concept (concept explanations whose top concept the world can take out), and per model
    the effects on each explained class."""

    top: dict[int, cf.TopEffect]
    explained: Explained


def settings_of(world: Path, fill: str | None, notes: list[str]) -> WorldSettings | None:
    """The world's settings when counterfactuals are to be drawn: asked for (`fill` given: an
    error when the world cannot draw its images again), or by default when it can (a note in
    `notes` when not). `fill` "none": never."""
    if fill == "none":
        return None
    try:
        return WorldSettings.of_world(world)
    except UserError as exc:
        if fill is not None:
            raise
        notes.append(f"no counterfactual images: {exc}")
        return None


def _world_numbers(world: Path) -> dict[Path, int]:
    """Each world image's number, the position of its row in scenes.csv (the number the
    world's renderer draws it by)."""
    return {s.path.resolve(): s.number for s in scenes.read(world, classes=False) if s.image}


def draw(
    items: Sequence[Item],
    models: Mapping[str, LoadedModel],
    world: Path,
    settings: WorldSettings,
    fill: str,
) -> Drawn:
    """Draw each explained image's counterfactuals once and run every model that explained it."""
    number = _world_numbers(world)
    by_image: dict[Path, list[int]] = defaultdict(list)
    for n, item in enumerate(items):
        if item.model in models:
            by_image[item.image].append(n)
    top: dict[int, cf.TopEffect] = {}
    explained: Explained = defaultdict(list)
    for image in tqdm(sorted(by_image), desc=f"counterfactuals ({fill})", unit="img"):
        if image not in number:
            raise UserError(f"{image} is not listed in {scenes.table_path(world)}")
        drawn = cf.draw(settings, number[image], image, cf.FILLS[fill])
        group = by_image[image]
        for model in sorted({items[n].model for n in group}):
            measured = cf.effects(models[model], drawn)
            classes_done: set[int] = set()
            for n in (n for n in group if items[n].model == model):
                item = items[n]
                on_class = measured.on(item.class_index)
                if item.class_index not in classes_done:
                    classes_done.add(item.class_index)
                    explained[model].append((item.class_name, on_class))
                effect = (
                    None if item.concept_maps is None else cf.top_effect(on_class, item.top_label)
                )
                if effect is not None:
                    top[n] = effect
    return Drawn(top, dict(explained))


@dataclass(frozen=True)
class Reliance:
    """The model's own concept ranking per class (mean counterfactual effect) against the rules
    and against IBD's two rankings of the decomposed model."""

    fill: str
    model: str | None  # the decomposed model, whose classes are tabled
    ranked: dict[str, Ranked]  # model -> class -> (concept, mean effect)
    rows: RuleRows  # the decomposed model's own top k against the rules
    shared: dict[str, tuple[float | None, float | None]]  # class -> (by contribution, by coef.)
    precision: dict[str, float]  # model -> mean lenient precision@k of its own ranking


def reliance(
    explained: Explained,
    fill: str,
    world: ev.World,
    k: int,
    model: str | None,
    contribution_rows: RuleRows,
    coefficient_rows: RuleRows,
) -> Reliance:
    ranked = {m: cf.rank_by_effect(per_image) for m, per_image in sorted(explained.items())}
    precision = {
        m: rule_means(rule_rows(by_class, world, k))["precision_lenient"]
        for m, by_class in ranked.items()
    }
    rows = rule_rows(ranked.get(model or "", {}), world, k)
    by_contribution = {c.name: m.top for c, m in contribution_rows}
    by_coefficient = {c.name: m.top for c, m in coefficient_rows}

    def overlap(mine: Sequence[str], tops: dict[str, tuple[str, ...]], name: str) -> float | None:
        return cf.shared_at(mine, tops[name], k) if name in tops else None

    shared = {
        cls.name: (
            overlap(match.top, by_contribution, cls.name),
            overlap(match.top, by_coefficient, cls.name),
        )
        for cls, match in rows
    }
    return Reliance(fill, model, ranked, rows, shared, precision)
