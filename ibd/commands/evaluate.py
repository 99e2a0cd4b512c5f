"""`ibd evaluate [--world DIR] [--decomposition FILE] [--explanations DIR ...] [model flags]
[--out DIR] [--k 3]`: score explanations against the concept world's ground truth.

1. Each class's top-k decomposed concepts against its defining concepts (precision@k, recall@k;
   `ibd.evaluation.scoring`).
   Ranked by coefficient, and by mean contribution over the decomposed model's IBD explanations.
2. Per explanation: is the top concept in the image, does the top 20% of its heatmap overlap the
   concept's mask (CAM / Grad-CAM: the class's defining concepts), plus a seeded random-heatmap
   control. The concept pointing game: one trial per defining concept in the image, the same
   trials for every method, scored on the map's maximum and on its top 20%.
3. Deletion / insertion curves for every method and the random control
   (`ibd.evaluation.faithfulness`), with each explanation's own model: the one given by the model
   flags, else $IBD_HOME/models/<model>.pt for every model the explanations name.
4. Counterfactual images (`ibd.evaluation.counterfactual`), where the world can draw its images
   again: each explained image without one concept at a time, so what the model relies on is
   measured by intervention. Per explanation, the effect of its top concept on the class logit
   against the largest effect; per class, the model's own ranking of concepts against the rules and
   against IBD's.

Writes OUT/report.md (printed too), summary.csv, decomposition.csv,
decomposition_by_contribution.csv, explanations.csv (one row per explanation), curves.csv (mean
curves), counterfactual.csv (each model's mean effect per class and concept) and evaluate.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ibd import paths
from ibd.commands.modelargs import add_model_flags, device_from, load_from_args
from ibd.data.broden import BrodenDataset
from ibd.data.csvfiles import read_rows
from ibd.data.images import load_batch
from ibd.errors import UserError
from ibd.evaluation import counterfactual as cf
from ibd.evaluation import faithfulness as fa
from ibd.evaluation import scoring as ev
from ibd.explain import records as explanations
from ibd.explain.cam import upsample
from ibd.nets.load import load_model
from ibd.world.writer import WorldSettings

METHOD_ORDER = ("ibd", "netdissect", "cam", "gradcam", "random")
CF_COLUMNS = ("cf_effect", "cf_largest", "cf_hit", "cf_share", "cf_chance", "cf_mean_effect")
PRECISION_TARGET = 0.8


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", help="concept world directory (default: $IBD_HOME/world)")
    parser.add_argument(
        "--decomposition",
        help="decompose.json to check against the rules "
        "(default: $IBD_HOME/decompose/world_resnet.json, skipped if absent)",
    )
    parser.add_argument(
        "--explanations",
        nargs="+",
        metavar="DIR",
        help="explanation directories (default: every $IBD_HOME/explanations/<model>/<method>/)",
    )
    parser.add_argument("--out", help="output directory (default: $IBD_HOME/evaluate)")
    parser.add_argument("--k", type=int, default=3, help="top-k concepts per class (default 3)")
    parser.add_argument(
        "--fraction",
        type=float,
        default=ev.POINTING_FRACTION,
        help="pointing: the heatmap's top fraction that must overlap the mask (default 0.2)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N explanations per DIR")
    faith = parser.add_argument_group("faithfulness (deletion / insertion)")
    faith.add_argument("--steps", type=int, default=20, help="pixel steps per curve (default 20)")
    faith.add_argument(
        "--saliency",
        choices=("sum", "top"),
        default="sum",
        help="ibd/netdissect map: contribution-weighted sum of the components' normalised "
        "heatmaps (default) or the top component's heatmap",
    )
    faith.add_argument(
        "--score",
        choices=("probability", "logit"),
        default="probability",
        help="the class score the curves record (default: softmax probability, as RISE)",
    )
    faith.add_argument(
        "--insertion-from",
        choices=("blur", "mean"),
        default="blur",
        help="insertion starts from a blurred copy (default, as RISE) or the mean colour",
    )
    faith.add_argument(
        "--seed", type=int, default=0, help="seed (>= 0) of the random-heatmap control"
    )
    faith.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass")
    faith.add_argument(
        "--no-faithfulness", action="store_true", help="skip the deletion / insertion curves"
    )
    counter = parser.add_argument_group("counterfactual images")
    counter.add_argument(
        "--counterfactual",
        choices=(*cf.FILLS, "none"),
        help="take each shown concept out of the explained images: paint it grey (default, "
        "when the world can draw its images again; the deletion curves' mean colour) or remove "
        "it (what it covers shows through)",
    )
    add_model_flags(parser)


@dataclass
class Item:
    """One explanation (or random-control entry) to score."""

    model: str
    method: str
    image: Path
    dataset_index: int
    class_index: int
    class_name: str
    heatmap: np.ndarray  # the map pointing is scored on (feature resolution)
    saliency: np.ndarray  # the map deletion / insertion order pixels by
    top_label: str | None
    true_class: str | None
    # concept methods: the first component's map and contribution per label; None: a class map
    concept_maps: dict[str, np.ndarray] | None = None
    contributions: dict[str, float] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)


# -- inputs ---------------------------------------------------------------------------------


def _explanation_dirs(given: Sequence[str] | None) -> list[Path]:
    if given:
        return [Path(d) for d in given]
    root = paths.home() / "explanations"
    return sorted(p.parent for p in root.glob("*/*/explanations.json"))


def _categories(world: Path) -> list[str]:
    """Every category of the world's category.csv: masks for all of them, so any label a
    method gives (object, part, colour, ...) is looked up."""
    path = world / "category.csv"
    if not path.is_file():
        raise UserError(f"{world} is not a Broden directory: {path} is missing")
    return [row["name"] for row in read_rows(path, ["name"]) if row["name"]]


def _true_classes(world: Path) -> dict[Path, str]:
    path = world / "scenes.csv"
    if not path.is_file():
        return {}
    rows = read_rows(path, ["image", "class_name"])
    return {
        (world / r["image"]).resolve(): r["class_name"]
        for r in rows
        if r["image"] and r["class_name"]
    }


def _world_indices(world: Path) -> dict[Path, int]:
    """Each world image's index, the position of its row in scenes.csv (the index the world's
    renderer draws it by)."""
    path = world / "scenes.csv"
    if not path.is_file():
        raise UserError(f"{path} is missing: counterfactuals need the world's scene table")
    rows = read_rows(path, ["image"])
    return {(world / r["image"]).resolve(): n for n, r in enumerate(rows) if r["image"]}


def _resolve(image: str, directory: Path) -> Path:
    """contracts.md 4: relative to the current directory first, then to the directory."""
    path = Path(image)
    if path.exists() or path.is_absolute():
        return path.resolve()
    return (directory / path).resolve()


def _items(
    directory: Path,
    limit: int | None,
    lookup: dict[Path, int],
    true_classes: dict[Path, str],
    saliency: str,
) -> tuple[list[Item], int]:
    """The scorable explanations of one directory and how many were not world images."""
    records, heatmaps = explanations.read(directory)
    if not isinstance(records, list):
        raise UserError(f"{directory / 'explanations.json'} is not a list of explanations")
    items, foreign = [], 0
    for n, rec in enumerate(records[:limit] if limit is not None else records):
        where = f"{directory / 'explanations.json'} record {n}"
        try:
            method = str(rec["method"])
            image = _resolve(str(rec["image"]), directory)
            components = list(rec["components"])
            maps = [heatmaps[str(c["heatmap"])] for c in components]
            contributions = [float(c["contribution"]) for c in components]
            item = dict(
                model=str(rec["model"]),
                class_index=int(rec["class_index"]),
                class_name=str(rec["class_name"]),
            )
        except KeyError as exc:
            raise UserError(f"{where}: missing {exc} (heatmap key or field)") from None
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: malformed ({exc})") from None
        if image not in lookup:
            foreign += 1
            continue
        if not maps:
            raise UserError(f"{where} has no components")
        shapes = {np.shape(m) for m in maps}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise UserError(f"{where}: heatmaps must be 2-D and of one shape, got {sorted(shapes)}")
        if not all(np.all(np.isfinite(m)) for m in maps):
            raise UserError(f"{where}: a heatmap holds NaN or infinite values")
        if method in ("ibd", "netdissect") and saliency == "sum":
            faith_map = fa.combine(maps, contributions)
        else:
            faith_map = maps[0]
        concept_maps: dict[str, np.ndarray] | None = None
        by_label: dict[str, float] = {}
        if method not in ev.CLASS_MAP_METHODS:
            concept_maps = {}
            for c, heat, value in zip(components, maps, contributions, strict=True):
                concept_maps.setdefault(str(c["label"]), np.asarray(heat, dtype=np.float32))
                by_label.setdefault(str(c["label"]), value)
        items.append(
            Item(
                method=method,
                image=image,
                dataset_index=lookup[image],
                heatmap=np.asarray(maps[0], dtype=np.float32),
                saliency=np.asarray(faith_map, dtype=np.float32),
                top_label=str(components[0]["label"]),
                true_class=true_classes.get(image),
                concept_maps=concept_maps,
                contributions=by_label,
                **item,
            )
        )
    return items, foreign


def _random_controls(items: Iterable[Item], seed: int) -> list[Item]:
    """One random-heatmap entry per (model, image), for the class that model explained; seeded
    by (seed, dataset index) so it does not depend on which directories were read."""
    seen: dict[tuple[str, int], Item] = {}
    for item in items:
        seen.setdefault((item.model, item.dataset_index), item)
    controls = []
    for (model, index), item in sorted(seen.items(), key=lambda kv: kv[0]):
        heat = fa.random_heatmap(item.heatmap.shape, seed, index)
        controls.append(
            Item(
                model=model,
                method="random",
                image=item.image,
                dataset_index=index,
                class_index=item.class_index,
                class_name=item.class_name,
                heatmap=heat,
                saliency=heat,
                top_label=None,
                true_class=item.true_class,
            )
        )
    return controls


# -- scoring --------------------------------------------------------------------------------


RuleRows = list[tuple[ev.WorldClass, ev.RuleMatch]]


def _read_ranked(path: Path, world: ev.World) -> dict[str, list[tuple[str, float]]]:
    ranked = ev.read_decomposition(path)
    unknown = sorted(set(ranked) - {c.name for c in world.classes})
    if unknown:
        raise UserError(f"{path}: class(es) {', '.join(unknown[:5])} are not in world.json")
    for cls in world.classes:
        if cls.name not in ranked:
            raise UserError(f"{path} has no class '{cls.name}' of world.json")
    return ranked


def _rule_rows(ranked: dict[str, list[tuple[str, float]]], world: ev.World, k: int) -> RuleRows:
    """Each world class with a ranking, scored against its rule."""
    return [
        (cls, ev.match_rules([n for n, _ in ranked[cls.name]], cls.defining, world.parts, k))
        for cls in world.classes
        if cls.name in ranked
    ]


def _contribution_ranking(
    ranked: dict[str, list[tuple[str, float]]], model: str | None, items: list[Item]
) -> dict[str, list[tuple[str, float]]]:
    """The decomposition's concepts per class by mean contribution over `model`'s IBD
    explanations of that class (empty without such explanations)."""
    explained = [
        (i.class_name, i.contributions) for i in items if i.method == "ibd" and i.model == model
    ]
    return ev.rank_by_contribution(ranked, explained) if model else {}


def _ground_truth(items: list[Item], dataset: Any, world: ev.World, fraction: float) -> None:
    concept_index = {c.name: c.index for c in dataset.concepts}
    by_image: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        by_image[item.dataset_index].append(item)
    for index in tqdm(sorted(by_image), desc="ground truth", unit="img"):
        masks = dataset.load_mask(index)
        for item in by_image[index]:
            trials = ev.concept_trials(
                None
                if item.concept_maps is None
                else {k: torch.as_tensor(v) for k, v in item.concept_maps.items()},
                torch.as_tensor(item.heatmap),
                item.class_name,
                masks,
                concept_index,
                world,
                fraction,
            )
            item.scores.update(
                concept_trials=len(trials),
                concept_shown=sum(t.shown for t in trials),
                concept_peak=sum(t.peak for t in trials),
                concept_overlap=sum(t.overlap for t in trials),
            )
            result = ev.score_explanation(
                item.method,
                item.top_label,
                item.class_name,
                torch.as_tensor(item.heatmap),
                masks,
                concept_index,
                world,
                fraction,
            )
            item.scores.update(
                target=result.target,
                present=result.present,
                hit=result.hit,
                region_precision=result.precision,
                coverage=result.coverage,
                lift=result.lift,
            )


def _models(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The networks for the curves: the model flags' one, else each named model's checkpoint
    under $IBD_HOME/models (missing ones are reported and skipped)."""
    if args.arch or args.weights:
        loaded = load_from_args(args)
        if loaded.name not in names:
            raise UserError(
                f"the explanations are of {', '.join(names)}, not {loaded.name}: pass --name "
                "to say which model the weights are"
            )
        return {loaded.name: loaded}
    device = device_from(args.device)
    found = {}
    for name in names:
        path = paths.model_path(name)
        if path.is_file():
            found[name] = load_model(None, path, device=device, name=name)
        else:
            print(
                f"ibd evaluate: no checkpoint {path}; no deletion/insertion curves or "
                f"counterfactuals for {name}"
            )
    return found


def _check_classes(items: list[Item], models: dict[str, Any]) -> None:
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


def _faithfulness(
    items: list[Item], loaded: Any, args: argparse.Namespace
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Curves for every item of one model; returns per method (fractions, mean deletion, mean
    insertion) and stores each item's AUCs."""
    score = fa.class_score(loaded.model, args.score)
    by_method: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_method[item.method].append(item)
    means = {}
    chunk = max(1, args.batch_size // 4)
    for method in sorted(by_method, key=_method_rank):
        group = by_method[method]
        deletion, insertion, fractions = [], [], np.zeros(0)
        bar = tqdm(total=len(group), desc=f"curves {loaded.name} {method}", unit="img")
        for start in range(0, len(group), chunk):
            part = group[start : start + chunk]
            images, _ = load_batch(
                [i.image for i in part], loaded.input_size, loaded.mean, loaded.std
            )
            images = images.to(loaded.device)
            maps = torch.as_tensor(np.stack([i.saliency for i in part]), device=loaded.device)
            saliency = upsample(maps.float(), loaded.input_size)
            targets = torch.as_tensor([i.class_index for i in part], device=loaded.device)
            start_from = torch.zeros_like(images) if args.insertion_from == "mean" else None
            result = fa.curves(
                score,
                images,
                saliency,
                targets,
                steps=args.steps,
                insertion_baseline=start_from,
                batch_size=args.batch_size,
            )
            for item, d, ins in zip(part, result.deletion_auc, result.insertion_auc, strict=True):
                item.scores.update(deletion_auc=float(d), insertion_auc=float(ins))
            deletion.append(result.deletion)
            insertion.append(result.insertion)
            fractions = result.fractions
            bar.update(len(part))
        bar.close()
        means[method] = (
            fractions,
            np.concatenate(deletion).mean(axis=0),
            np.concatenate(insertion).mean(axis=0),
        )
    return means


def _counterfactual_settings(
    args: argparse.Namespace, world_dir: Path, notes: list[str]
) -> WorldSettings | None:
    """The world's settings when counterfactuals are to be drawn: asked for (an error when the
    world cannot draw its images again), or by default when it can (a note when not)."""
    if args.counterfactual == "none":
        return None
    try:
        return WorldSettings.of_world(world_dir)
    except UserError as exc:
        if args.counterfactual is not None:
            raise
        notes.append(f"no counterfactual images: {exc}")
        return None


Explained = dict[str, list[tuple[str, dict[str, float]]]]


def _counterfactuals(
    items: list[Item],
    models: dict[str, Any],
    world_dir: Path,
    settings: WorldSettings,
    fill: str,
) -> Explained:
    """Draw each explained image's counterfactuals once, run every model that explained it,
    score each concept explanation's top concept (`ibd.evaluation.counterfactual.top_effect`, into
    `scores`), and return per model (class, shown concept -> effect) per explained image and
    class."""
    index_of = _world_indices(world_dir)
    by_image: dict[Path, list[Item]] = defaultdict(list)
    for item in items:
        if item.model in models:
            by_image[item.image].append(item)
    explained: Explained = defaultdict(list)
    for image in tqdm(sorted(by_image), desc=f"counterfactuals ({fill})", unit="img"):
        if image not in index_of:
            raise UserError(f"{image} is not listed in {world_dir / 'scenes.csv'}")
        drawn = cf.draw(settings, index_of[image], image, cf.FILLS[fill])
        group = by_image[image]
        for model in sorted({i.model for i in group}):
            measured = cf.effects(models[model], drawn)
            classes_done: set[int] = set()
            for item in (i for i in group if i.model == model):
                on_class = measured.on(item.class_index)
                if item.class_index not in classes_done:
                    classes_done.add(item.class_index)
                    explained[model].append((item.class_name, on_class))
                top = None if item.concept_maps is None else cf.top_effect(on_class, item.top_label)
                if top is not None:
                    item.scores.update(
                        cf_effect=top.effect,
                        cf_largest=top.largest,
                        cf_hit=top.hit,
                        cf_share=top.share,
                        cf_chance=top.chance_hit,
                        cf_mean_effect=top.mean_effect,
                    )
    return explained


@dataclass(frozen=True)
class Reliance:
    """The model's own concept ranking per class (mean counterfactual effect) against the rules
    and against IBD's two rankings of the decomposed model."""

    fill: str
    model: str | None  # the decomposed model, whose classes are tabled
    ranked: dict[str, dict[str, list[tuple[str, float]]]]  # model -> class -> (concept, effect)
    rows: RuleRows  # the decomposed model's own top k against the rules
    shared: dict[str, tuple[float | None, float | None]]  # class -> (by contribution, by coef.)
    precision: dict[str, float]  # model -> mean lenient precision@k of its own ranking


def _reliance(
    explained: Explained,
    fill: str,
    world: ev.World,
    k: int,
    model: str | None,
    contribution_rows: RuleRows,
    rule_rows: RuleRows,
) -> Reliance:
    ranked = {m: cf.rank_by_effect(per_image) for m, per_image in sorted(explained.items())}
    precision = {
        m: _rule_means(_rule_rows(by_class, world, k))["precision_lenient"]
        for m, by_class in ranked.items()
    }
    rows = _rule_rows(ranked.get(model or "", {}), world, k)
    by_contribution = {c.name: m.top for c, m in contribution_rows}
    by_coefficient = {c.name: m.top for c, m in rule_rows}

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


# -- reporting ------------------------------------------------------------------------------


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _mean(values: Iterable[Any]) -> float:
    kept = [float(v) for v in values if v is not None and not _isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or _isnan(value):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _summaries(items: list[Item]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
    for item in items:
        groups[(item.model, item.method)].append(item)
    out = []
    for (model, method), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], _method_rank(kv[0][1]))
    ):
        known = [i for i in group if i.true_class is not None]
        out.append(
            {
                "model": model,
                "method": method,
                "explanations": len(group),
                "accuracy": _mean(i.class_name == i.true_class for i in known) if known else None,
                "present": None
                if method in ev.CLASS_MAP_METHODS
                else _mean(i.scores["present"] for i in group),
                "pointing": _mean(i.scores["hit"] for i in group),
                "region_precision": _mean(i.scores["region_precision"] for i in group),
                "lift": _mean(i.scores["lift"] for i in group),
                **_concept_game(group),
                "deletion_auc": _mean(i.scores.get("deletion_auc") for i in group),
                "insertion_auc": _mean(i.scores.get("insertion_auc") for i in group),
                **_counterfactual_summary(group),
            }
        )
    return out


def _counterfactual_summary(group: list[Item]) -> dict[str, Any]:
    """Means over a group's explanations whose top concept was taken out of the image."""
    measured = [i for i in group if "cf_effect" in i.scores]
    means = {
        key: _mean(i.scores[key] for i in measured)
        for key in ("cf_effect", "cf_largest", "cf_mean_effect", "cf_hit", "cf_chance")
    }
    # a ratio of means: a mean of per-image ratios is dominated by images whose largest
    # effect is near 0
    largest = means["cf_largest"]
    share = means["cf_effect"] / largest if measured and largest > 0 else math.nan
    return {"cf_measured": len(measured) or None, **means, "cf_share": share}


def _concept_game(group: list[Item]) -> dict[str, Any]:
    """The concept pointing game over a group's trials: hit rates on the peak and overlap rules
    and how often the method showed the concept at all."""
    trials = sum(i.scores["concept_trials"] for i in group)

    def rate(key: str) -> float | None:
        return sum(i.scores[key] for i in group) / trials if trials else None

    return {
        "concept_trials": trials,
        "concept_shown": rate("concept_shown"),
        "concept_pointing": rate("concept_peak"),
        "concept_overlap": rate("concept_overlap"),
    }


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None or _isnan(v) else v for v in row])


def _json_safe(value: Any) -> Any:
    return None if _isnan(value) else value


def _match_json(match: ev.RuleMatch) -> dict[str, Any]:
    return {k: _json_safe(v) for k, v in vars(match).items() if k != "top"}


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    if not 0 < args.fraction <= 1:
        raise UserError(f"--fraction must lie in (0, 1], got {args.fraction}")
    if args.steps < 1 or args.batch_size < 1:
        raise UserError("--steps and --batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    world_dir = Path(args.world) if args.world else paths.world_dir()
    world = ev.read_world(world_dir / "world.json")
    out = Path(args.out) if args.out else paths.home() / "evaluate"

    decomposition = Path(args.decomposition) if args.decomposition else paths.decompose_path()
    ranked = None
    rule_rows: RuleRows = []
    if args.decomposition or decomposition.exists():
        ranked = _read_ranked(decomposition, world)
        rule_rows = _rule_rows(ranked, world, args.k)

    dirs = _explanation_dirs(args.explanations)
    if not dirs and not rule_rows:
        raise UserError(
            f"nothing to evaluate: no {decomposition} and no explanation directories under "
            f"{paths.home() / 'explanations'} (run `ibd decompose` / `ibd explain`)"
        )
    items: list[Item] = []
    notes: list[str] = []
    models: dict[str, Any] = {}
    cf_settings = _counterfactual_settings(args, world_dir, notes) if dirs else None
    if dirs:
        dataset = BrodenDataset(world_dir, categories=_categories(world_dir), min_images=1)
        lookup = {dataset.image_path(i).resolve(): i for i in range(len(dataset))}
        true_classes = _true_classes(world_dir)
        for directory in dirs:
            found, foreign = _items(directory, args.limit, lookup, true_classes, args.saliency)
            if foreign:
                notes.append(f"{directory}: {foreign} explanation(s) of images not in {world_dir}")
            items += found
        if not items:
            raise UserError(f"no explanation in {', '.join(map(str, dirs))} is of a world image")
        items += _random_controls(items, args.seed)
        # load the networks first, so a wrong model flag fails before any long work
        if not args.no_faithfulness or cf_settings is not None:
            models = _models(args, sorted({i.model for i in items}))
            _check_classes(items, models)
        _ground_truth(items, dataset, world, args.fraction)
    contribution_rows: RuleRows = []
    decomposed = ev.read_decomposition_model(decomposition) if ranked is not None else None
    if ranked is not None and items:
        contribution_rows = _rule_rows(
            _contribution_ranking(ranked, decomposed, items), world, args.k
        )
    reliance = None
    if items and cf_settings is not None:
        fill = args.counterfactual or "grey"
        explained = _counterfactuals(items, models, world_dir, cf_settings, fill)
        reliance = _reliance(
            explained, fill, world, args.k, decomposed, contribution_rows, rule_rows
        )

    curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if items and not args.no_faithfulness:
        for name, loaded in models.items():
            for method, mean in _faithfulness(
                [i for i in items if i.model == name], loaded, args
            ).items():
                curves[(name, method)] = mean

    missing = _missing_classes(world, contribution_rows, rule_rows) if contribution_rows else []
    out.mkdir(parents=True, exist_ok=True)
    summary = _summaries(items)
    report = _report(rule_rows, contribution_rows, missing, summary, reliance, args, notes)
    _write_outputs(
        out, rule_rows, contribution_rows, missing, items, summary, curves, reliance, args, report
    )
    print("\n".join(report))
    print(f"\nwritten to {out}")
    return 0


def _rule_cells(cls: ev.WorldClass, match: ev.RuleMatch, sep: str) -> tuple[Any, ...]:
    return (
        cls.name,
        sep.join(cls.defining),
        sep.join(match.top),
        match.precision_lenient,
        match.recall_lenient,
        match.precision_strict,
        match.recall_strict,
    )


def _rules_section(
    title: str,
    ranking: str,
    rows: RuleRows,
    k: int,
    missing: Sequence[str] = (),
    reliance: Reliance | None = None,
) -> list[str]:
    lines = [title, ""]
    lines += _table(
        [
            "class",
            "defining",
            f"top {k}",
            f"P@{k} lenient",
            f"R@{k} lenient",
            f"P@{k} strict",
            f"R@{k} strict",
        ],
        [_rule_cells(c, m, ", ") for c, m in rows],
    )
    means = _rule_means(rows)
    precision = means["precision_lenient"]
    verdict = "met" if precision >= PRECISION_TARGET else "not met"
    over = f", over {len(rows)} of {len(rows) + len(missing)} classes" if missing else ""
    lines += [
        "| **mean** | | | " + " | ".join(_fmt(value) for value in means.values()) + " |",
        "",
        f"Target precision@{k} (lenient) >= {PRECISION_TARGET}, {ranking}: {_fmt(precision)} "
        f"({verdict}{over}).",
        "",
    ]
    if reliance is not None and reliance.rows:
        own = _rule_means(reliance.rows)["precision_lenient"]
        lines += [
            f"The model's own ranking, by counterfactual images ({reliance.fill}), scores "
            f"{_fmt(own)} against the same rules (last section).",
            "",
        ]
    if missing:
        lines += [
            f"Left out of the mean, no IBD explanation of the class: {', '.join(missing)}.",
            "",
        ]
    return lines


def _missing_classes(world: ev.World, rows: RuleRows, ranked: RuleRows) -> list[str]:
    """The classes of the coefficient ranking that the contribution ranking lacks (the
    decomposed model explained none of their images), in world order."""
    have = {c.name for c, _ in rows}
    listed = {c.name for c, _ in ranked}
    return [c.name for c in world.classes if c.name in listed and c.name not in have]


def _report(
    rule_rows: RuleRows,
    contribution_rows: RuleRows,
    missing: Sequence[str],
    summary: list[dict[str, Any]],
    reliance: Reliance | None,
    args: argparse.Namespace,
    notes: list[str],
) -> list[str]:
    k = args.k
    lines = ["# Explanations against the concept world's ground truth", ""]
    if rule_rows:
        lines += [
            "Lenient: a part of a defining object (sail for boat) counts as correct. Optional "
            "concepts count as wrong, even those that occur in few classes and so are evidence.",
            "",
        ]
        lines += _rules_section(
            f"## Class decomposition vs world rules (top {k} concepts by coefficient)",
            "by coefficient",
            rule_rows,
            k,
        )
    if contribution_rows:
        lines += _rules_section(
            f"## Class decomposition vs world rules (top {k} by mean contribution over the "
            "class's IBD explanations, eq. 9)",
            "by contribution",
            contribution_rows,
            k,
            missing,
            reliance,
        )
    if summary:
        saliency = "contribution-weighted sum" if args.saliency == "sum" else "top component"
        lines += [
            "## Explanations per model and method",
            "",
            f"present: the top component's concept is labelled in the image (n/a for class maps). "
            f"pointing: the top {args.fraction:.0%} of the upsampled heatmap overlaps the "
            "concept's mask (CAM, Grad-CAM, random: the union of the class's defining concepts). "
            "in mask: the share of that region inside the mask; lift: in mask / the mask's share "
            "of the image (1 = chance). "
            f"Deletion (lower is better) / insertion (higher) AUC of the class {args.score}, "
            f"{args.steps} steps, deletion to the mean colour, insertion from "
            f"{'a blurred image' if args.insertion_from == 'blur' else 'the mean colour'}; "
            f"ibd/netdissect maps: {saliency}. random: seeded control (seed {args.seed}).",
            "",
        ]
        lines += _table(
            [
                "model",
                "method",
                "n",
                "accuracy",
                "present",
                "pointing",
                "in mask",
                "lift",
                "deletion AUC",
                "insertion AUC",
            ],
            [
                (
                    s["model"],
                    s["method"],
                    s["explanations"],
                    s["accuracy"],
                    s["present"],
                    s["pointing"],
                    s["region_precision"],
                    s["lift"],
                    s["deletion_auc"],
                    s["insertion_auc"],
                )
                for s in summary
            ],
        )
        lines += [
            "",
            "## Concept pointing game",
            "",
            "One trial per (image, defining concept of the explained class present in it): the "
            "same trials for every method. IBD / Network Dissection answer with their component "
            "of that concept (shown: how often they have one; none is a miss), CAM, Grad-CAM and "
            "random with their one map. pointing: the map's maximum lies in the concept's mask "
            f"(Zhang et al. 2016); top {args.fraction:.0%} overlap: the overlap rule above.",
            "",
        ]
        lines += _table(
            ["model", "method", "trials", "shown", "pointing", f"top {args.fraction:.0%} overlap"],
            [
                (
                    s["model"],
                    s["method"],
                    s["concept_trials"],
                    s["concept_shown"] if s["method"] not in ev.CLASS_MAP_METHODS else None,
                    s["concept_pointing"],
                    s["concept_overlap"],
                )
                for s in summary
            ],
        )
        lines.append("")
        by_key = {(s["model"], s["method"]): s for s in summary}
        for model in sorted({s["model"] for s in summary}):
            if (model, "ibd") in by_key and (model, "cam") in by_key:
                ibd_s, cam_s = by_key[(model, "ibd")], by_key[(model, "cam")]
                ibd_p, cam_p = ibd_s["concept_pointing"], cam_s["concept_pointing"]
                met = ibd_p is not None and cam_p is not None and ibd_p > cam_p
                verdict = "met" if met else "not met"
                lines.append(
                    f"Target IBD pointing above CAM's on {model} (concept pointing game): "
                    f"{_fmt(ibd_p)} vs {_fmt(cam_p)} ({verdict}); top-component overlap "
                    f"{_fmt(ibd_s['pointing'])} vs {_fmt(cam_s['pointing'])}."
                )
        lines.append("")
    if reliance is not None:
        lines += _reliance_section(reliance, summary, k)
    lines += [f"Note: {n}" for n in notes]
    return lines


def _reliance_section(reliance: Reliance, summary: list[dict[str, Any]], k: int) -> list[str]:
    how = (
        "left out (what it covered shows through)" if reliance.fill == "remove" else "painted grey"
    )
    lines = [
        f"## What the models rely on: counterfactual images ({reliance.fill})",
        "",
        f"Each explained image drawn again with one concept it shows {how}, everything else "
        "the image's own; a concept's effect is the drop of the explained class's logit. "
        "effect: of the explanation's top concept (0 when the image does not show it); "
        "largest: it is the concept with the largest effect in the image; share: the mean "
        "effect / the mean largest effect. Chance: a concept the image shows, drawn at random.",
        "",
    ]
    lines += _table(
        [
            "model",
            "method",
            "measured",
            "effect",
            "effect (chance)",
            "largest",
            "largest (chance)",
            "share",
        ],
        [
            (
                s["model"],
                s["method"],
                s["cf_measured"],
                s["cf_effect"],
                s["cf_mean_effect"],
                s["cf_hit"],
                s["cf_chance"],
                s["cf_share"],
            )
            for s in summary
            if s["cf_measured"]
        ],
    )
    lines.append("")
    if reliance.rows:
        means = _rule_means(reliance.rows)
        ranked = reliance.ranked[reliance.model or ""]
        lines += [
            f"### {reliance.model}'s own top {k} against the rules",
            "",
            f"Per class, concepts by mean effect over the images explained as the class; "
            f"shared: how many of IBD's top {k} (by mean contribution / by coefficient) are "
            f"among the model's top {k}.",
            "",
        ]
        lines += _table(
            [
                "class",
                "defining",
                f"model's top {k} (mean effect)",
                f"P@{k} lenient",
                f"R@{k} lenient",
                "shared (contribution)",
                "shared (coefficient)",
            ],
            [
                (
                    cls.name,
                    ", ".join(cls.defining),
                    ", ".join(f"{c} {v:.2f}" for c, v in ranked[cls.name][:k]),
                    match.precision_lenient,
                    match.recall_lenient,
                    *reliance.shared[cls.name],
                )
                for cls, match in reliance.rows
            ],
        )
        shared = [reliance.shared[c.name] for c, _ in reliance.rows]
        lines += [
            f"| **mean** | | | {_fmt(means['precision_lenient'])} | "
            f"{_fmt(means['recall_lenient'])} | {_fmt(_mean(s[0] for s in shared))} | "
            f"{_fmt(_mean(s[1] for s in shared))} |",
            "",
            f"Ranking its concepts exactly as it relies on them, an explanation of "
            f"{reliance.model} would score precision@{k} {_fmt(means['precision_lenient'])} "
            "(lenient) against the rules.",
            "",
        ]
    lines += [
        f"The model's own precision@{k} (lenient) against the rules, per model: "
        + ", ".join(f"{m} {_fmt(p)}" for m, p in reliance.precision.items())
        + ".",
        "",
    ]
    return lines


def _rule_means(rule_rows: RuleRows) -> dict[str, float]:
    return {
        key: _mean(getattr(m, key) for _, m in rule_rows)
        for key in ("precision_lenient", "recall_lenient", "precision_strict", "recall_strict")
    }


def _write_outputs(
    out: Path,
    rule_rows: RuleRows,
    contribution_rows: RuleRows,
    missing: Sequence[str],
    items: list[Item],
    summary: list[dict[str, Any]],
    curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]],
    reliance: Reliance | None,
    args: argparse.Namespace,
    report: list[str],
) -> None:
    (out / "report.md").write_text("\n".join(report) + "\n")
    for name, rows in (
        ("decomposition.csv", rule_rows),
        ("decomposition_by_contribution.csv", contribution_rows),
    ):
        if rows:
            _write_csv(
                out / name,
                [
                    "class",
                    "defining",
                    "top",
                    "precision_lenient",
                    "recall_lenient",
                    "precision_strict",
                    "recall_strict",
                ],
                [_rule_cells(c, m, ";") for c, m in rows],
            )
    if items:
        header = [
            "model",
            "method",
            "image",
            "class_index",
            "class_name",
            "true_class",
            "top_label",
            "target",
            "present",
            "hit",
            "region_precision",
            "coverage",
            "lift",
            "concept_trials",
            "concept_shown",
            "concept_peak",
            "concept_overlap",
            "deletion_auc",
            "insertion_auc",
            *CF_COLUMNS,
        ]
        _write_csv(
            out / "explanations.csv",
            header,
            [
                (
                    i.model,
                    i.method,
                    str(i.image),
                    i.class_index,
                    i.class_name,
                    i.true_class,
                    i.top_label,
                    i.scores["target"],
                    i.scores["present"],
                    i.scores["hit"],
                    i.scores["region_precision"],
                    i.scores["coverage"],
                    i.scores["lift"],
                    i.scores["concept_trials"],
                    i.scores["concept_shown"],
                    i.scores["concept_peak"],
                    i.scores["concept_overlap"],
                    i.scores.get("deletion_auc"),
                    i.scores.get("insertion_auc"),
                    *(i.scores.get(key) for key in CF_COLUMNS),
                )
                for i in items
            ],
        )
        _write_csv(out / "summary.csv", list(summary[0]), [list(s.values()) for s in summary])
    if curves:
        _write_csv(
            out / "curves.csv",
            ["model", "method", "fraction", "deletion", "insertion"],
            [
                (model, method, float(f), float(d), float(i))
                for (model, method), (fr, de, ins) in sorted(curves.items())
                for f, d, i in zip(fr, de, ins, strict=True)
            ],
        )
    if reliance is not None:
        _write_csv(
            out / "counterfactual.csv",
            ["model", "class", "rank", "concept", "mean_effect"],
            [
                (model, class_name, rank, concept, value)
                for model, by_class in reliance.ranked.items()
                for class_name, ranked in by_class.items()
                for rank, (concept, value) in enumerate(ranked, start=1)
            ],
        )
    document = {
        "settings": {
            "k": args.k,
            "fraction": args.fraction,
            "steps": args.steps,
            "saliency": args.saliency,
            "score": args.score,
            "seed": args.seed,
            "deletion_baseline": "mean colour",
            "insertion_baseline": "gaussian blur 11/5"
            if args.insertion_from == "blur"
            else "mean colour",
        },
        "decomposition": {
            "classes": [
                {
                    "class": c.name,
                    "top": list(m.top),
                    **_match_json(m),
                }
                for c, m in rule_rows
            ],
            "mean": {k: _json_safe(v) for k, v in _rule_means(rule_rows).items()}
            if rule_rows
            else None,
        },
        "decomposition_by_contribution": {
            "classes": [
                {"class": c.name, "top": list(m.top), **_match_json(m)}
                for c, m in contribution_rows
            ],
            "mean": {k: _json_safe(v) for k, v in _rule_means(contribution_rows).items()}
            if contribution_rows
            else None,
            "missing_classes": list(missing),
        },
        "explanations": [{k: _json_safe(v) for k, v in s.items()} for s in summary],
        "counterfactual": None if reliance is None else _reliance_json(reliance),
    }
    (out / "evaluate.json").write_text(json.dumps(document, indent=1) + "\n")


def _reliance_json(reliance: Reliance) -> dict[str, Any]:
    return {
        "fill": reliance.fill,
        "model": reliance.model,
        "classes": [
            {
                "class": c.name,
                "top": list(m.top),
                **_match_json(m),
                "shared_by_contribution": reliance.shared[c.name][0],
                "shared_by_coefficient": reliance.shared[c.name][1],
            }
            for c, m in reliance.rows
        ],
        "mean": {k: _json_safe(v) for k, v in _rule_means(reliance.rows).items()}
        if reliance.rows
        else None,
        "precision_by_model": {m: _json_safe(p) for m, p in reliance.precision.items()},
    }
