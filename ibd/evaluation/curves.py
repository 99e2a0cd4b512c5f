"""The faithfulness stage: deletion and insertion curves (`ibd.evaluation.faithfulness`) for
every item of one model, run on that model, method by method in small batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ibd.data.images import load_batch
from ibd.evaluation import faithfulness as fa
from ibd.evaluation.items import Item, method_rank
from ibd.explain.maps import upsample
from ibd.nets.load import LoadedModel


@dataclass(frozen=True)
class CurveSettings:
    score: str = "probability"  # the class score recorded: "probability" or "logit"
    steps: int = 20
    insertion_from: str = "blur"  # "blur" (RISE) or "mean" (the mean colour)
    batch_size: int = 64


@dataclass(frozen=True)
class Areas:
    """One item's areas under its curves."""

    deletion: float
    insertion: float


@dataclass(frozen=True)
class MeanCurves:
    """One (model, method)'s mean curves over its items."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray


def _group_curves(
    group: Sequence[Item], loaded: LoadedModel, settings: CurveSettings, bar: tqdm
) -> tuple[list[Areas], MeanCurves]:
    score = fa.class_score(loaded.model, settings.score)
    chunk = max(1, settings.batch_size // 4)
    areas: list[Areas] = []
    deletion, insertion, fractions = [], [], np.zeros(0)
    for start in range(0, len(group), chunk):
        part = group[start : start + chunk]
        images, _ = load_batch([i.image for i in part], loaded.input_size, loaded.mean, loaded.std)
        images = images.to(loaded.device)
        maps = torch.as_tensor(np.stack([i.saliency for i in part]), device=loaded.device)
        result = fa.curves(
            score,
            images,
            upsample(maps.float(), loaded.input_size),
            torch.as_tensor([i.class_index for i in part], device=loaded.device),
            steps=settings.steps,
            insertion_baseline=torch.zeros_like(images)
            if settings.insertion_from == "mean"
            else None,
            batch_size=settings.batch_size,
        )
        areas += [
            Areas(float(d), float(i))
            for d, i in zip(result.deletion_auc, result.insertion_auc, strict=True)
        ]
        deletion.append(result.deletion)
        insertion.append(result.insertion)
        fractions = result.fractions
        bar.update(len(part))
    means = MeanCurves(
        fractions, np.concatenate(deletion).mean(axis=0), np.concatenate(insertion).mean(axis=0)
    )
    return areas, means


def model_curves(
    items: Sequence[Item], loaded: LoadedModel, settings: CurveSettings
) -> tuple[dict[int, Areas], dict[str, MeanCurves]]:
    """Curves for every item of one model: each item's areas by its position in `items`, and
    per method the mean curves."""
    by_method: dict[str, list[int]] = defaultdict(list)
    for n, item in enumerate(items):
        by_method[item.method].append(n)
    areas: dict[int, Areas] = {}
    means = {}
    for method in sorted(by_method, key=method_rank):
        positions = by_method[method]
        bar = tqdm(total=len(positions), desc=f"curves {loaded.name} {method}", unit="img")
        found, means[method] = _group_curves([items[n] for n in positions], loaded, settings, bar)
        bar.close()
        areas.update(zip(positions, found, strict=True))
    return areas, means
