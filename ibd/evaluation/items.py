"""The explanations to score: each record of an explanation directory (docs/contracts.md 4) of a
concept-world image, with the maps the measures read, plus one seeded random-heatmap control per
(model, image)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ibd.data import scenes
from ibd.errors import UserError
from ibd.evaluation import faithfulness as fa
from ibd.evaluation.scoring import CLASS_MAP_METHODS, CONCEPT_METHODS
from ibd.explain import records

METHOD_ORDER = ("ibd", "netdissect", "cam", "gradcam", "random")


def method_rank(method: str) -> tuple[int, str]:
    """The order methods are tabled in: METHOD_ORDER, then any other by name."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


@dataclass(frozen=True)
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


def true_classes(world: Path) -> dict[Path, str]:
    """Each world image's true class from scenes.csv (empty when the world has none)."""
    if not scenes.exists(world):
        return {}
    return {s.path.resolve(): s.class_name for s in scenes.read(world) if s.image and s.class_name}


def resolve_image(image: str, directory: Path) -> Path:
    """An explanation record's image path, resolved as docs/contracts.md 4 says: relative to the
    current directory first, then to the explanation directory."""
    path = Path(image)
    if path.exists() or path.is_absolute():
        return path.resolve()
    return (directory / path).resolve()


@dataclass(frozen=True)
class _Record:
    """The fields of one explanation record that scoring reads."""

    model: str
    method: str
    image: Path
    class_index: int
    class_name: str
    labels: list[str]
    maps: list[np.ndarray]
    contributions: list[float]


def _parse(rec: Any, heatmaps: Mapping[str, np.ndarray], directory: Path, where: str) -> _Record:
    try:
        method = str(rec["method"])
        image = resolve_image(str(rec["image"]), directory)
        components = list(rec["components"])
        maps = [heatmaps[str(c["heatmap"])] for c in components]
        contributions = [float(c["contribution"]) for c in components]
        return _Record(
            model=str(rec["model"]),
            method=method,
            image=image,
            class_index=int(rec["class_index"]),
            class_name=str(rec["class_name"]),
            labels=[str(c["label"]) for c in components],
            maps=maps,
            contributions=contributions,
        )
    except KeyError as exc:
        raise UserError(f"{where}: missing {exc} (heatmap key or field)") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: malformed ({exc})") from None


def _check_maps(maps: list[np.ndarray], where: str) -> None:
    if not maps:
        raise UserError(f"{where} has no components")
    shapes = {np.shape(m) for m in maps}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise UserError(f"{where}: heatmaps must be 2-D and of one shape, got {sorted(shapes)}")
    if not all(np.all(np.isfinite(m)) for m in maps):
        raise UserError(f"{where}: a heatmap holds NaN or infinite values")


def _item(rec: _Record, dataset_index: int, true_class: str | None, saliency: str) -> Item:
    if rec.method in CONCEPT_METHODS and saliency == "sum":
        faith_map = fa.combine(rec.maps, rec.contributions)
    else:
        faith_map = rec.maps[0]
    concept_maps: dict[str, np.ndarray] | None = None
    by_label: dict[str, float] = {}
    if rec.method not in CLASS_MAP_METHODS:
        concept_maps = {}
        for label, heat, value in zip(rec.labels, rec.maps, rec.contributions, strict=True):
            concept_maps.setdefault(label, np.asarray(heat, dtype=np.float32))
            by_label.setdefault(label, value)
    return Item(
        model=rec.model,
        method=rec.method,
        image=rec.image,
        dataset_index=dataset_index,
        class_index=rec.class_index,
        class_name=rec.class_name,
        heatmap=np.asarray(rec.maps[0], dtype=np.float32),
        saliency=np.asarray(faith_map, dtype=np.float32),
        top_label=rec.labels[0],
        true_class=true_class,
        concept_maps=concept_maps,
        contributions=by_label,
    )


def read_items(
    directory: Path,
    limit: int | None,
    lookup: Mapping[Path, int],
    true_class: Mapping[Path, str],
    saliency: str,
) -> tuple[list[Item], int]:
    """The scorable explanations of one directory and how many were not world images.
    `lookup`: each world image's dataset index; `saliency`: "sum" (ibd / netdissect: the
    contribution-weighted sum of the normalised maps, `faithfulness.combine`) or "top"."""
    found, heatmaps = records.read(directory)
    if not isinstance(found, list):
        raise UserError(f"{directory / 'explanations.json'} is not a list of explanations")
    items, foreign = [], 0
    for n, entry in enumerate(found[:limit] if limit is not None else found):
        where = f"{directory / 'explanations.json'} record {n}"
        rec = _parse(entry, heatmaps, directory, where)
        if rec.image not in lookup:
            foreign += 1
            continue
        _check_maps(rec.maps, where)
        items.append(_item(rec, lookup[rec.image], true_class.get(rec.image), saliency))
    return items, foreign


def random_controls(items: Iterable[Item], seed: int) -> list[Item]:
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
