"""What `ibd evaluate` runs, in which order (docs/evaluate.md):

1. the class decomposition's top-k concepts per class against the world's rules, ranked by
   coefficient (paper eq. 6) and, over the decomposed model's IBD explanations, by mean
   contribution (eq. 9);
2. each explanation against its image's masks: presence, pointing and the concept pointing game
   (`ibd.evaluation.truth`), with a seeded random-heatmap control;
3. counterfactual images, where the world can draw its images again (`ibd.evaluation.reliance`);
4. the faithfulness measures with each explanation's own model (`ibd.evaluation.curves`):
   deletion / insertion curves, Average Drop / Increase in Confidence and ROAD;
5. completeness: each concept explanation's share of the logit (from its file) and Yeh's
   completeness score of each IBD-explained model's decomposition
   (`ibd.evaluation.completeness`);
6. with `Settings.sanity`, the model-randomisation sanity checks of each explained model and
   method, and for each pair of `Settings.data_randomisation` the data-randomisation check
   against the same network trained on shuffled labels (`ibd.evaluation.sanity`);
7. with `Settings.significance`, the p-values of the decomposition's terms and of the IBD
   explanations' components against the rules (`ibd.evaluation.significance`).

The networks are loaded before any long work, so a wrong model fails first; so does a
decomposition without p-values under `Settings.significance`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ibd.data.broden import BrodenDataset
from ibd.data.csvfiles import read_rows
from ibd.errors import UserError
from ibd.evaluation import items as itemlib
from ibd.evaluation import scoring as ev
from ibd.evaluation.completeness import (
    ClassShare,
    Completeness,
    CompletenessInputs,
    LogitShare,
    ShareKey,
    class_shares,
    model_completeness,
    read_shares,
)
from ibd.evaluation.curves import CurveSettings, MeanCurves, Measured, model_curves
from ibd.evaluation.items import Item
from ibd.evaluation.reliance import Drawn, Reliance, draw, reliance, settings_of
from ibd.evaluation.rules import (
    RuleRows,
    contribution_ranking,
    missing_classes,
    read_ranked,
    rule_rows,
)
from ibd.evaluation.sanity import (
    DataRandomisation,
    Sanity,
    SanityInputs,
    method_factories,
    run_data_randomisation,
    run_sanity,
)
from ibd.evaluation.significance import (
    SignificanceResult,
    evaluate_significance,
    read_explanations,
)
from ibd.evaluation.summary import Scored, Summary, summarise
from ibd.evaluation.truth import Truth, score_items
from ibd.nets.load import LoadedModel, load_model

# the networks of the named models that can be run (a model left out gets no curves and no
# counterfactuals)
ModelLoader = Callable[[Sequence[str]], Mapping[str, LoadedModel]]


@dataclass(frozen=True)
class Settings:
    k: int = 3  # top-k concepts per class
    fraction: float = ev.POINTING_FRACTION  # pointing: the heatmap's top fraction
    limit: int | None = None  # explanations read per directory
    saliency: str = "sum"  # ibd / netdissect curves: "sum" of the components' maps, or "top"
    seed: int = 0  # of the random-heatmap control
    faithfulness: bool = True
    curves: CurveSettings = field(default_factory=CurveSettings)
    # "grey" / "remove": required; None: grey when the world can draw its images; "none": never
    counterfactual: str | None = None
    sanity: SanityInputs | None = None  # None: no sanity checks
    completeness: bool = True  # Yeh's completeness score (needs the models and their bases)
    basis: Path | None = None  # for it; None: $IBD_HOME/basis/<model>.npz
    significance: bool = False  # score the files' p-values (`ibd.evaluation.significance`)
    # (explained model, checkpoint of it trained on shuffled labels): with `sanity`, the
    # data-randomisation check of each pair
    data_randomisation: tuple[tuple[str, Path], ...] = ()


@dataclass(frozen=True)
class Results:
    settings: Settings
    coefficient_rows: RuleRows  # the decomposition by coefficient against the rules
    contribution_rows: RuleRows  # ... by mean contribution
    missing: list[str]  # classes the contribution ranking lacks
    scored: list[Scored]  # every explanation and random control
    summary: list[Summary]
    curves: dict[tuple[str, str], MeanCurves]  # (model, method) -> mean curves
    reliance: Reliance | None
    notes: list[str]
    sanity: list[Sanity] = field(default_factory=list)  # one per model checked
    class_shares: list[ClassShare] = field(default_factory=list)  # share of the logit per class
    completeness: list[Completeness] = field(default_factory=list)  # one per IBD model
    significance: SignificanceResult | None = None  # with Settings.significance
    data_randomisation: list[DataRandomisation] = field(default_factory=list)  # one per pair
    # (the place for further stages' results: append fields with defaults here)


def _categories(world: Path) -> list[str]:
    """Every category of the world's category.csv: masks for all of them, so any label a
    method gives (object, part, colour, ...) is looked up."""
    path = world / "category.csv"
    if not path.is_file():
        raise UserError(f"{world} is not a Broden directory: {path} is missing")
    return [row["name"] for row in read_rows(path, ["name"]) if row["name"]]


@dataclass(frozen=True)
class _Read:
    items: list[Item]  # the explanations, then the random controls
    dataset: BrodenDataset
    shares: dict[ShareKey, LogitShare]  # of the concept explanations, from their records


def _read_items(world: Path, dirs: Sequence[Path], settings: Settings, notes: list[str]) -> _Read:
    dataset = BrodenDataset(world, categories=_categories(world), min_images=1)
    lookup = {dataset.image_path(i).resolve(): i for i in range(len(dataset))}
    true_class = itemlib.true_classes(world)
    found: list[Item] = []
    shares: dict[ShareKey, LogitShare] = {}
    for directory in dirs:
        read, foreign = itemlib.read_items(
            directory, settings.limit, lookup, true_class, settings.saliency
        )
        if foreign:
            notes.append(f"{directory}: {foreign} explanation(s) of images not in {world}")
        found += read
        for key, share in read_shares(directory, settings.limit).items():
            shares.setdefault(key, share)
    if not found:
        raise UserError(f"no explanation in {', '.join(map(str, dirs))} is of a world image")
    return _Read(found + itemlib.random_controls(found, settings.seed), dataset, shares)


def _share(item: Item, shares: Mapping[ShareKey, LogitShare]) -> LogitShare | None:
    return shares.get((item.model, item.method, item.image, item.class_index))


def _check_classes(items: Sequence[Item], models: Mapping[str, LoadedModel]) -> None:
    """Each explained class must be that class of the network its curves will use."""
    for item in items:
        loaded = models.get(item.model)
        if loaded is not None and not (
            0 <= item.class_index < len(loaded.classes)
            and loaded.classes[item.class_index] == item.class_name
        ):
            raise UserError(
                f"{item.method} explanation of {item.image}: class {item.class_index} "
                f"'{item.class_name}' is not that class of model {loaded.name}"
            )


def _first_per_method(
    positions: Sequence[int], items: Sequence[Item], limit: int | None
) -> list[int]:
    """The positions of the first `limit` items of each method (all when None), in order."""
    if limit is None:
        return list(positions)
    seen: dict[str, int] = {}
    kept = []
    for n in positions:
        method = items[n].method
        if seen.get(method, 0) < limit:
            seen[method] = seen.get(method, 0) + 1
            kept.append(n)
    return kept


def _curves(
    items: Sequence[Item], models: Mapping[str, LoadedModel], settings: CurveSettings, seed: int
) -> tuple[dict[int, Measured], dict[tuple[str, str], MeanCurves]]:
    measured: dict[int, Measured] = {}
    means: dict[tuple[str, str], MeanCurves] = {}
    for name, loaded in models.items():
        positions = _first_per_method(
            [n for n, i in enumerate(items) if i.model == name], items, settings.limit
        )
        found, by_method = model_curves([items[n] for n in positions], loaded, settings, seed)
        measured.update((positions[n], m) for n, m in found.items())
        means.update(((name, method), m) for method, m in by_method.items())
    return measured, means


def _scored(
    items: Sequence[Item],
    truths: Sequence[Truth],
    measured: Mapping[int, Measured],
    drawn: Drawn | None,
    shares: Mapping[ShareKey, LogitShare],
) -> list[Scored]:
    out = []
    for n, (item, truth) in enumerate(zip(items, truths, strict=True)):
        m = measured.get(n)
        out.append(
            Scored(
                item,
                truth,
                None if m is None else m.areas,
                None if drawn is None else drawn.top.get(n),
                None if m is None else m.road,
                None if m is None else m.confidence,
                _share(item, shares),
            )
        )
    return out


@dataclass(frozen=True)
class _Explanations:
    """What the stages that read explanations measured."""

    scored: list[Scored]
    curves: dict[tuple[str, str], MeanCurves]
    drawn: Drawn | None
    fill: str
    models: Mapping[str, LoadedModel]
    dataset: BrodenDataset


def _score_explanations(
    world_dir: Path,
    world: ev.World,
    dirs: Sequence[Path],
    settings: Settings,
    load_models: ModelLoader,
    notes: list[str],
) -> _Explanations:
    cf_settings = settings_of(world_dir, settings.counterfactual, notes)
    read = _read_items(world_dir, dirs, settings, notes)
    items = read.items
    models: Mapping[str, LoadedModel] = {}
    wanted = settings.completeness and any(i.method == "ibd" for i in items)
    if settings.faithfulness or cf_settings is not None or settings.sanity is not None or wanted:
        models = load_models(sorted({i.model for i in items}))
        _check_classes(items, models)
    truths = score_items(items, read.dataset, world, settings.fraction)
    fill = settings.counterfactual or "grey"
    drawn = None
    if cf_settings is not None:
        drawn = draw(items, models, world_dir, cf_settings, fill)
    measured: Mapping[int, Measured] = {}
    curves: dict[tuple[str, str], MeanCurves] = {}
    if settings.faithfulness:
        measured, curves = _curves(items, models, settings.curves, settings.seed)
    scored = _scored(items, truths, measured, drawn, read.shares)
    return _Explanations(scored, curves, drawn, fill, models, read.dataset)


def _checked(found: _Explanations, name: str, count: int) -> tuple[list[str], list[Path]]:
    """The methods `name` was explained with and the first `count` images it explained (in
    the order of their world index), for the sanity checks."""
    mine = [s.item for s in found.scored if s.item.model == name]
    methods = sorted({i.method for i in mine} - {"random"}, key=itemlib.method_rank)
    indices = sorted({i.dataset_index for i in mine})[:count]
    return methods, [found.dataset.image_path(i) for i in indices]


def _sanity(found: _Explanations, inputs: SanityInputs, notes: list[str]) -> list[Sanity]:
    """The sanity checks of each loaded model, on the first `inputs.images` images it
    explained, for the methods it was explained with."""
    out = []
    for name, loaded in found.models.items():
        methods, images = _checked(found, name, inputs.images)
        if len(images) < 2:
            notes.append(f"sanity checks: {name} explains fewer than two images, none run")
            continue
        factories = method_factories(loaded, methods, inputs, notes)
        if factories:
            out.append(run_sanity(loaded, images, factories, inputs.settings, progress=True))
    return out


def _data_randomisation(
    found: _Explanations,
    inputs: SanityInputs,
    pairs: Sequence[tuple[str, Path]],
    notes: list[str],
) -> list[DataRandomisation]:
    """Each (explained model, checkpoint of that network trained on shuffled labels) pair's
    data-randomisation check, on the images and methods of the model's sanity checks. The
    shuffled-label model gets its own basis and tally ($IBD_HOME/basis|dissect/<its name>)."""
    out = []
    for name, path in pairs:
        loaded = found.models.get(name)
        if loaded is None:
            notes.append(f"data randomisation: no network of {name} was loaded; not run")
            continue
        methods, images = _checked(found, name, inputs.images)
        if len(images) < 2:
            notes.append(f"data randomisation: {name} explains fewer than two images, not run")
            continue
        shuffled = load_model(None, path, device=loaded.device, name=path.stem)
        own = dataclasses.replace(inputs, basis=None, tally=None)
        ours = method_factories(loaded, methods, inputs, notes)
        theirs = method_factories(shuffled, methods, own, notes)
        out.append(
            run_data_randomisation(
                loaded, shuffled, images, ours, theirs, inputs.settings, progress=True
            )
        )
    return out


def _images_of(found: _Explanations, loaded: LoadedModel) -> tuple[list[Path], list[int]]:
    """The images the model's IBD explanations explain whose true class is one of the model's
    classes, and that class's index."""
    index = {name: k for k, name in enumerate(loaded.classes)}
    seen: dict[int, tuple[Path, int]] = {}
    for s in found.scored:
        item = s.item
        if item.model == loaded.name and item.method == "ibd" and item.true_class in index:
            seen.setdefault(item.dataset_index, (item.image, index[item.true_class]))
    chosen = [seen[n] for n in sorted(seen)]
    return [p for p, _ in chosen], [k for _, k in chosen]


def _completeness(
    found: _Explanations, inputs: CompletenessInputs, notes: list[str]
) -> list[Completeness]:
    """Yeh's completeness score of each loaded model with IBD explanations, on their images."""
    out = []
    for name in sorted(found.models):
        loaded = found.models[name]
        if not any(s.item.model == name and s.item.method == "ibd" for s in found.scored):
            continue
        images, labels = _images_of(found, loaded)
        if not images:
            notes.append(f"completeness: no image {name} explained has a true class of the model")
            continue
        result = model_completeness(loaded, images, labels, inputs)
        if result.note is not None:
            notes.append(f"completeness of {name}: n/a, {result.note}")
        out.append(result)
    return out


def _class_shares(scored: Sequence[Scored]) -> list[ClassShare]:
    return class_shares(
        (s.item.model, s.item.method, s.item.class_name, s.logit_share)
        for s in scored
        if s.logit_share is not None
    )


def _significance(
    decomposition: Path | None, world: ev.World, dirs: Sequence[Path], k: int
) -> SignificanceResult:
    """The p-values of the decomposition's terms and of the IBD explanations' components
    (written by `ibd decompose --significance` / `ibd explain --significance`) against the
    rules."""
    if decomposition is None:
        raise UserError(
            "--significance needs a class decomposition with p-values (--decomposition, from "
            "`ibd decompose --significance`)"
        )
    return evaluate_significance(decomposition, world, k=k, explanations=read_explanations(dirs))


def evaluate(
    world_dir: Path,
    decomposition: Path | None,
    dirs: Sequence[Path],
    settings: Settings,
    load_models: ModelLoader,
) -> Results:
    """Score a decomposition (None: none) and the explanations in `dirs` against the world."""
    world = ev.read_world(world_dir / "world.json")
    ranked = None if decomposition is None else read_ranked(decomposition, world)
    coefficient_rows = [] if ranked is None else rule_rows(ranked, world, settings.k)
    notes: list[str] = []
    significance = None
    if settings.significance:  # before the long stages: a file without p-values fails first
        significance = _significance(decomposition, world, dirs, settings.k)
    if not dirs:
        return Results(
            settings, coefficient_rows, [], [], [], [], {}, None, notes, significance=significance
        )
    found = _score_explanations(world_dir, world, dirs, settings, load_models, notes)
    items = [s.item for s in found.scored]
    decomposed = None if decomposition is None else ev.read_decomposition_model(decomposition)
    contribution_rows: RuleRows = []
    if ranked is not None:
        by_contribution = contribution_ranking(ranked, decomposed, items)
        contribution_rows = rule_rows(by_contribution, world, settings.k)
    relied = None
    if found.drawn is not None:
        relied = reliance(
            found.drawn.explained,
            found.fill,
            world,
            settings.k,
            decomposed,
            contribution_rows,
            coefficient_rows,
        )
    missing = (
        missing_classes(world, contribution_rows, coefficient_rows) if contribution_rows else []
    )
    sanity = [] if settings.sanity is None else _sanity(found, settings.sanity, notes)
    randomised = []
    if settings.sanity is not None and settings.data_randomisation:
        randomised = _data_randomisation(found, settings.sanity, settings.data_randomisation, notes)
    completeness = []
    if settings.completeness:
        inputs = CompletenessInputs(settings.basis, decomposition, settings.curves.batch_size)
        completeness = _completeness(found, inputs, notes)
    return Results(
        settings,
        coefficient_rows,
        contribution_rows,
        missing,
        found.scored,
        summarise(found.scored),
        found.curves,
        relied,
        notes,
        sanity,
        _class_shares(found.scored),
        completeness,
        significance,
        randomised,
    )
