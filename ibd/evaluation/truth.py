"""The ground-truth stage: every item scored against its image's concept masks (presence,
pointing and the concept pointing game, `ibd.evaluation.scoring`), each image's masks loaded
once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ibd.data.broden import BrodenDataset
from ibd.evaluation import scoring as ev
from ibd.evaluation.items import Item


@dataclass(frozen=True)
class Truth:
    """One item against its image's masks: the top component's (or class map's) presence and
    pointing, and its trials of the concept pointing game."""

    explanation: ev.GroundTruth
    trials: tuple[ev.ConceptTrial, ...]

    @property
    def shown(self) -> int:
        return sum(t.shown for t in self.trials)

    @property
    def peak(self) -> int:
        return sum(t.peak for t in self.trials)

    @property
    def overlap(self) -> int:
        return sum(t.overlap for t in self.trials)


def _score(
    item: Item,
    masks: torch.Tensor,
    concept_index: dict[str, int],
    world: ev.World,
    fraction: float,
) -> Truth:
    heatmap = torch.as_tensor(item.heatmap)
    concept_maps = (
        None
        if item.concept_maps is None
        else {k: torch.as_tensor(v) for k, v in item.concept_maps.items()}
    )
    trials = ev.concept_trials(
        concept_maps, heatmap, item.class_name, masks, concept_index, world, fraction
    )
    result = ev.score_explanation(
        item.method,
        item.top_label,
        item.class_name,
        heatmap,
        masks,
        concept_index,
        world,
        fraction,
    )
    return Truth(result, tuple(trials))


def score_items(
    items: Sequence[Item], dataset: BrodenDataset, world: ev.World, fraction: float
) -> list[Truth]:
    """Each item's Truth, in the order of `items`."""
    concept_index = {c.name: c.index for c in dataset.concepts}
    by_image: dict[int, list[int]] = defaultdict(list)
    for n, item in enumerate(items):
        by_image[item.dataset_index].append(n)
    scored: dict[int, Truth] = {}
    for index in tqdm(sorted(by_image), desc="ground truth", unit="img"):
        masks = dataset.load_mask(index)
        for n in by_image[index]:
            scored[n] = _score(items[n], masks, concept_index, world, fraction)
    return [scored[n] for n in range(len(items))]
