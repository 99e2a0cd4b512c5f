"""The faithfulness stage, for every item of one model, run on that model, method by method in
small batches: deletion and insertion curves (`ibd.evaluation.faithfulness`), Average Drop and
Increase in Confidence (`ibd.evaluation.confidence`) and, unless turned off, ROAD
(`ibd.evaluation.road`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ibd.data.images import load_batch
from ibd.evaluation import faithfulness as fa
from ibd.evaluation import road as roadlib
from ibd.evaluation.confidence import Confidence, confidences
from ibd.evaluation.items import Item, method_rank
from ibd.explain.maps import upsample
from ibd.nets.load import LoadedModel


@dataclass(frozen=True)
class CurveSettings:
    score: str = "probability"  # the class score recorded: "probability" or "logit"
    steps: int = 20
    insertion_from: str = "blur"  # "blur" (RISE) or "mean" (the mean colour)
    batch_size: int = 64
    road: bool = True  # ROAD MoRF / LeRF (the slowest part: a sparse solve per input)
    road_percentages: tuple[int, ...] = roadlib.PERCENTAGES
    road_noise: float = roadlib.NOISE
    limit: int | None = None  # measure only the first N explanations of each model and method


@dataclass(frozen=True)
class Areas:
    """One item's areas under its curves."""

    deletion: float
    insertion: float


@dataclass(frozen=True)
class Measured:
    """What the stage measured on one item (`road` None: ROAD turned off)."""

    areas: Areas
    confidence: Confidence
    road: roadlib.RoadScores | None


@dataclass(frozen=True)
class MeanCurves:
    """One (model, method)'s mean curves over its items (`road` None: ROAD turned off)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    road: roadlib.RoadCurves | None = None


@dataclass(frozen=True)
class _Chunk:
    curves: fa.Curves
    confidence: list[Confidence]
    road: roadlib.RoadCurves | None


def _chunk(part: Sequence[Item], loaded: LoadedModel, settings: CurveSettings, seed: int) -> _Chunk:
    images, _ = load_batch([i.image for i in part], loaded.input_size, loaded.mean, loaded.std)
    images = images.to(loaded.device)
    maps = torch.as_tensor(np.stack([i.saliency for i in part]), device=loaded.device).float()
    saliency = upsample(maps, loaded.input_size)
    targets = torch.as_tensor([i.class_index for i in part], device=loaded.device)
    curves = fa.curves(
        fa.class_score(loaded.model, settings.score),
        images,
        saliency,
        targets,
        steps=settings.steps,
        insertion_baseline=torch.zeros_like(images) if settings.insertion_from == "mean" else None,
        batch_size=settings.batch_size,
    )
    found = confidences(
        fa.class_score(loaded.model, "probability"), images, maps, targets, settings.batch_size
    )
    removed = None
    if settings.road:
        removed = roadlib.road_curves(
            fa.class_outputs(loaded.model, settings.score),
            images,
            saliency,
            targets,
            [i.dataset_index for i in part],
            percentages=settings.road_percentages,
            noise=settings.road_noise,
            seed=seed,
            batch_size=settings.batch_size,
        )
    return _Chunk(curves, found, removed)


def _group_curves(
    group: Sequence[Item], loaded: LoadedModel, settings: CurveSettings, seed: int, bar: tqdm
) -> tuple[list[Measured], MeanCurves]:
    size = max(1, settings.batch_size // 4)
    chunks = []
    for start in range(0, len(group), size):
        chunks.append(_chunk(group[start : start + size], loaded, settings, seed))
        bar.update(len(group[start : start + size]))
    measured = []
    for chunk in chunks:
        areas = [
            Areas(float(d), float(i))
            for d, i in zip(chunk.curves.deletion_auc, chunk.curves.insertion_auc, strict=True)
        ]
        roads = [None] * len(areas) if chunk.road is None else roadlib.per_image(chunk.road)
        measured += [Measured(*m) for m in zip(areas, chunk.confidence, roads, strict=True)]
    means = MeanCurves(
        chunks[0].curves.fractions,
        np.concatenate([c.curves.deletion for c in chunks]).mean(axis=0),
        np.concatenate([c.curves.insertion for c in chunks]).mean(axis=0),
        roadlib.mean_curves([c.road for c in chunks if c.road is not None])
        if settings.road
        else None,
    )
    return measured, means


def model_curves(
    items: Sequence[Item], loaded: LoadedModel, settings: CurveSettings, seed: int = 0
) -> tuple[dict[int, Measured], dict[str, MeanCurves]]:
    """The measures of every item of one model, by its position in `items`, and per method the
    mean curves. `seed`: of ROAD's imputation noise."""
    by_method: dict[str, list[int]] = defaultdict(list)
    for n, item in enumerate(items):
        by_method[item.method].append(n)
    measured: dict[int, Measured] = {}
    means = {}
    for method in sorted(by_method, key=method_rank):
        positions = by_method[method]
        bar = tqdm(total=len(positions), desc=f"curves {loaded.name} {method}", unit="img")
        found, means[method] = _group_curves(
            [items[n] for n in positions], loaded, settings, seed, bar
        )
        bar.close()
        measured.update(zip(positions, found, strict=True))
    return measured, means
