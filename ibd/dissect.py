"""Network Dissection (Bau et al., CVPR 2017, as in NetDissect-Lite): label every unit of a layer
with the concept whose segmentation its high activations overlap best.

For unit u and concept c over a dataset of images x (REFERENCE.md 5):

- T_u = the (1 - q) quantile (q = 0.005: the top 0.5%) of u's activations over all positions of
  all images, at feature resolution; numpy's default (linear) interpolation, like NetDissect-Lite's
  `np.percentile(features, 100 * (1 - q), axis=[0, 2, 3])`. Computed streaming and exactly by
  `TopQuantile` (memory D x k with k ~ q * positions, see there).
- M_u(x) = upsample(A_u(x)) > T_u, where upsample is bilinear to the segmentation size with
  `align_corners=False` (half-pixel centres: the same values as the PIL bilinear resize that
  NetDissect-Lite's `imresize(..., mode='F')` does, to float rounding).
- I_uc = sum_x |M_u(x) & L_c(x)|,  L_c = sum_x |L_c(x)|,
  A_ug = sum_{x counted for category g} |M_u(x)|,
  IoU_uc = I_uc / (A_u,g(c) + L_c - I_uc)   (0 where the denominator is 0).
  Which images count for the activation side of category g is the `rule`:
  `image` (default, REFERENCE.md 5): images in which category g is present at all: g's
  index.csv cell is non-empty, or a concept whose primary category is g is labelled there;
  `overlap` (NetDissect-Lite's code): images in which M_u(x) touches a pixel labelled with a
  concept of g (a whole-image label such as a scene touches every pixel);
  `all` (the NetDissect paper's formula): every image.
  g(c) is the concept's primary category. A label listed in several categories (Broden's
  `object(2);material(1)`) is one concept whose mask merges its pixels from every selected
  category's planes, and those pixels count for g(c) whichever plane they come from, as in
  NetDissect-Lite (its `labelcat` maps each label to its primary category). Under the `image`
  rule this is why a concept labelled only in a secondary category's plane still makes g(c)
  present: every image that adds to I_uc then adds all of M_u(x) to A_u,g(c), so I_uc <= A_u,g(c)
  and IoU <= 1 under every rule.
- The unit's label is its best-IoU concept; IoU >= 0.04 counts as interpretable.

All counting is in torch on the model's device: the intersections of an image are one matrix
product of flattened binary maps, (units x pixels) @ (pixels x concepts), restricted to the units
that fire on it and the concepts present in it (exact: the others add zero). Apart from the batch
itself, temporaries stay within blocks of 2^24 pixels or one image's labelled concepts.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ibd.errors import UserError
from ibd.nets import hooks

# Broden's category order (its category.csv), which NetDissect-Lite's tally.csv columns follow.
BRODEN_CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
CATEGORY_RULES = ("image", "overlap", "all")
DEFAULT_QUANTILE = 0.005
DEFAULT_IOU_THRESHOLD = 0.04
UPSAMPLING = "bilinear, align_corners=False"
TALLY_FIELDS_PER_CATEGORY = ("label", "truth", "activation", "intersect", "iou")
# Elements of one float32 (images x units x pixels) block in pass 2: 64 MB.
_BLOCK_ELEMENTS = 1 << 24


class ConceptLike(Protocol):
    index: int
    name: str
    category: str


class ConceptDataset(Protocol):
    """What dissection needs of a dataset (ibd.data.broden.BrodenDataset provides it): items
    `{"image": 3 x H x W, "mask": bool C x h x w, "index": i, ...}`, the image alone (pass 1
    needs no masks), the C concepts in mask order, and the categories labelled in image i."""

    concepts: Sequence[ConceptLike]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    def load_image(self, i: int) -> torch.Tensor: ...

    def category_present(self, i: int) -> set[str]: ...


# ----------------------------------------------------------------------------------------------
# Pass 1: per-unit thresholds


def top_count(quantile: float, n: int) -> int:
    """How many of the largest of n values determine numpy's linear-interpolated (1 - q) quantile:
    it reads the sorted values at positions floor(v) and floor(v) + 1 with v = (1 - q)(n - 1),
    i.e. the top n - floor(v) values. Non-decreasing in n."""
    if n <= 0:
        return 0
    return n - math.floor((1.0 - quantile) * (n - 1))


class TopQuantile:
    """Streaming, exact per-row upper quantile: the (1 - q) quantile of each of D rows of values
    that arrive in column blocks, equal to `numpy.quantile(values, 1 - q, axis=1)` (linear
    interpolation) up to float64 rounding of the final interpolation.

    It keeps only each row's k = top_count(q, total) largest values seen so far (merged with each
    new block by `torch.topk`), which is all the quantile depends on: memory D x k floats, about
    q * total per row (0.5% of the activations), never the activations themselves. `total` is an
    upper bound on the number of values per row that will arrive; the answer uses the number
    actually seen.
    """

    def __init__(
        self,
        rows: int,
        quantile: float,
        total: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise UserError(f"quantile must be between 0 and 1 (exclusive), got {quantile}")
        if total < 1:
            raise UserError(f"the quantile needs at least one value per unit, got {total}")
        self.quantile = quantile
        self.total = total
        self.capacity = top_count(quantile, total)
        self.top = torch.empty(rows, 0, dtype=torch.float32, device=device)
        self.seen = 0

    def update(self, values: torch.Tensor) -> None:
        """Add a D x m block (column j holds one value for every row)."""
        if values.ndim != 2 or values.shape[0] != self.top.shape[0]:
            raise ValueError(f"expected a {self.top.shape[0]} x m block, got {tuple(values.shape)}")
        self.seen += values.shape[1]
        if self.seen > self.total:
            raise ValueError(f"more than the announced {self.total} values per row")
        merged = torch.cat([self.top, values.to(self.top)], dim=1)
        k = min(self.capacity, merged.shape[1])
        self.top = merged.topk(k, dim=1, sorted=False).values

    def thresholds(self) -> torch.Tensor:
        """The per-row (1 - q) quantiles (float64, D) of everything seen."""
        n = self.seen
        if n == 0:
            raise ValueError("no values seen")
        top = self.top.double().sort(dim=1, descending=True).values
        position = (1.0 - self.quantile) * (n - 1)
        low = math.floor(position)
        gamma = position - low
        # ascending index j is descending index n - 1 - j
        below = top[:, n - 1 - low]
        above = top[:, max(n - 2 - low, 0)]
        step = above - below
        # numpy's lerp: from the nearer end, so that the result is bit-identical
        if gamma >= 0.5:
            return above - step * (1.0 - gamma)
        return below + step * gamma


# ----------------------------------------------------------------------------------------------
# Pass 2: intersections and unions


def float32_below(thresholds: torch.Tensor) -> torch.Tensor:
    """Each threshold T as the largest float32 t <= T, so that for every float32 value v,
    v > t exactly when v > T: the float32 comparison then decides as the exact one (plain
    rounding can round T up to a float32 activation value, which would then not count as above
    T although it is)."""
    exact = thresholds.double()
    t = exact.float()
    return torch.where(t.double() > exact, torch.nextafter(t, torch.full_like(t, -math.inf)), t)


def binarise(maps: torch.Tensor, thresholds: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """K maps (K x h x w) upsampled bilinearly (align_corners=False) to `size` and compared with
    their own thresholds (K): bool K x size, true where the float32 upsampled value exceeds T
    (compared exactly, `float32_below`)."""
    up = F.interpolate(maps.float()[:, None], size=size, mode="bilinear", align_corners=False)
    return up[:, 0] > float32_below(thresholds).to(up.device)[:, None, None]


def activation_masks(
    features: torch.Tensor, thresholds: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """M_u(x) for every image and unit: b x D x h x w activations, thresholds T_u (D): bool
    b x D x size."""
    b, d, h, w = features.shape
    fired = binarise(features.reshape(b * d, h, w), thresholds.repeat(b), size)
    return fired.reshape(b, d, *size)


@dataclass
class Tally:
    """Counts over the dataset (in pixels at segmentation size).

    intersection (D x C) I_uc, activation (D x G) A_ug, truth (C) L_c; `concept_category` (C)
    is the category index g(c) of each concept in `categories`.
    """

    intersection: torch.Tensor
    activation: torch.Tensor
    truth: torch.Tensor
    concept_category: torch.Tensor
    categories: list[str]

    def union(self) -> torch.Tensor:
        """A_u,g(c) + L_c - I_uc (D x C)."""
        return self.activation[:, self.concept_category] + self.truth[None, :] - self.intersection

    def iou(self) -> torch.Tensor:
        """IoU_uc = I_uc / (A_u,g(c) + L_c - I_uc), 0 where the union is empty (D x C, float64)."""
        union = self.union()
        return torch.where(union > 0, self.intersection / union.clamp(min=1), 0.0)


class IoUAccumulator:
    """Accumulates a `Tally` batch by batch (all tensors on `device`, counts in float64)."""

    def __init__(
        self,
        units: int,
        concept_category: Sequence[int],
        categories: Sequence[str],
        *,
        rule: str = "image",
        device: torch.device | str = "cpu",
    ) -> None:
        if rule not in CATEGORY_RULES:
            raise UserError(f"unknown category rule '{rule}' (choose from {CATEGORY_RULES})")
        self.rule = rule
        self.device = torch.device(device)
        g = torch.as_tensor(list(concept_category), dtype=torch.long, device=self.device)
        self.categories = list(categories)
        self.concept_category = g
        concepts, groups = len(g), len(self.categories)
        self.category_onehot = F.one_hot(g, groups).float()
        kw = {"dtype": torch.float64, "device": self.device}
        self.intersection = torch.zeros(units, concepts, **kw)
        self.activation = torch.zeros(units, groups, **kw)
        self.truth = torch.zeros(concepts, **kw)

    def add(
        self,
        features: torch.Tensor,
        thresholds: torch.Tensor,
        masks: torch.Tensor,
        present: torch.Tensor,
    ) -> None:
        """One block of b images: features b x D x h x w, masks bool b x C x H x W (the
        segmentation size, the same for the block), present bool b x G (category g labelled
        somewhere in image i: a non-empty index.csv cell; used by the `image` rule, which also
        counts g as present wherever a concept whose primary category is g is labelled, see the
        module docstring)."""
        b = features.shape[0]
        size = (int(masks.shape[2]), int(masks.shape[3]))
        pixels = size[0] * size[1]
        # both comparisons with T_u in float32, so that skipping below agrees with the masks
        features = features.to(self.device).float()
        thresholds = float32_below(thresholds.to(self.device))
        masks = masks.to(self.device).reshape(b, masks.shape[1], pixels)
        # the concepts labelled in each image (b x C); `any` reads the masks without a copy
        labelled = masks.any(dim=2)
        present = present.to(self.device).bool()
        if self.rule == "image":
            # A concept labelled in image i makes its primary category count there even when its
            # pixels come only from another category's plane (a label listed in two categories):
            # otherwise I_uc could exceed A_u,g(c) and the IoU exceed 1.
            present = present | (labelled.float() @ self.category_onehot > 0)
        # blocks of at most _BLOCK_ELEMENTS pixels (one map at least), which also keeps every
        # float32 count below 2^24, where it is exact
        step = max(1, _BLOCK_ELEMENTS // pixels)
        self._add_truth(masks, labelled, step)

        # Only (image, unit) pairs whose maximum exceeds T_u can fire: a bilinear upsample is a
        # convex combination of the map's values. At the top 0.5% these are a few percent of all.
        fires = features.flatten(2).amax(dim=2) > thresholds[None, :]
        pairs = fires.nonzero()  # K x (image, unit), ordered by image
        for start in range(0, len(pairs), step):
            self._add_pairs(
                features, thresholds, masks, labelled, present, pairs[start : start + step], size
            )

    def _add_truth(self, masks: torch.Tensor, labelled: torch.Tensor, step: int) -> None:
        """L_c += |L_c(x)|, counting only the non-empty (image, concept) masks, in blocks of
        `step` masks in int32: no float or whole-batch copy of the masks."""
        where = labelled.nonzero()  # (image, concept) pairs with a non-empty mask
        for start in range(0, len(where), step):
            image, concept = where[start : start + step].unbind(1)
            counts = masks[image, concept].sum(dim=1, dtype=torch.int32)
            self.truth.index_add_(0, concept, counts.double())

    def _add_pairs(
        self,
        features: torch.Tensor,
        thresholds: torch.Tensor,
        masks: torch.Tensor,
        labelled: torch.Tensor,
        present: torch.Tensor,
        pairs: torch.Tensor,
        size: tuple[int, int],
    ) -> None:
        image, unit = pairs[:, 0], pairs[:, 1]
        act = binarise(features[image, unit], thresholds[unit], size).flatten(1).float()
        counts = act.sum(dim=1)  # K
        if self.rule == "image":
            added = counts[:, None] * present[image].float()
        else:
            added = counts[:, None].expand(-1, len(self.categories)).clone()
        images, sizes = image.unique_consecutive(return_counts=True)
        first = 0
        for j, n in zip(images.tolist(), sizes.tolist(), strict=True):
            rows = slice(first, first + n)
            first += n
            fired, units = act[rows], unit[rows]
            concepts = labelled[j].nonzero().flatten()
            if not concepts.numel():
                if self.rule == "overlap":
                    added[rows] = 0.0  # nothing labelled to touch
                continue
            # I[u, c] += M_u(x_j) . L_c(x_j) for the units firing on x_j, the concepts in it
            inter = fired @ masks[j, concepts].float().T
            self.intersection[units[:, None], concepts[None, :]] += inter.double()
            if self.rule == "overlap":
                # M_u(x_j) touches category g iff it meets some concept of g (as NetDissect-Lite,
                # a concept's pixels count for its primary category, whichever plane they are in)
                touched = (inter > 0).float() @ self.category_onehot[concepts] > 0  # n x G
                added[rows] *= touched.float()
        self.activation.index_add_(0, unit, added.double())

    def result(self) -> Tally:
        return Tally(
            intersection=self.intersection,
            activation=self.activation,
            truth=self.truth,
            concept_category=self.concept_category,
            categories=self.categories,
        )


# ----------------------------------------------------------------------------------------------
# Labels


@dataclass(frozen=True)
class UnitLabel:
    """A unit's Network Dissection label: `unit` is 0-based (tally.csv's column is 1-based)."""

    unit: int
    label: str
    category: str
    iou: float


@dataclass
class CategoryBest:
    """A unit's best concept within one category, with its counts (a tally.csv column group)."""

    label: str
    truth: float
    activation: float
    intersect: float
    iou: float


@dataclass
class UnitResult:
    unit: int
    label: str
    category: str
    score: float
    per_category: dict[str, CategoryBest]


def best_labels(tally: Tally, names: Sequence[str]) -> list[UnitResult]:
    """Per unit, the best-IoU concept in each category and overall (ties: first concept, first
    category in order), in unit order."""
    iou = tally.iou().cpu()
    inter, act, truth = tally.intersection.cpu(), tally.activation.cpu(), tally.truth.cpu()
    g_of = tally.concept_category.cpu()
    members = [(g, (g_of == g).nonzero().flatten()) for g in range(len(tally.categories))]
    members = [(g, idx) for g, idx in members if idx.numel()]
    results = []
    for u in range(iou.shape[0]):
        per_category: dict[str, CategoryBest] = {}
        best: tuple[float, str, str] | None = None
        for g, idx in members:
            c = int(idx[int(iou[u, idx].argmax())])
            cat = tally.categories[g]
            score = float(iou[u, c])
            per_category[cat] = CategoryBest(
                names[c], float(truth[c]), float(act[u, g]), float(inter[u, c]), score
            )
            if best is None or score > best[0]:
                best = (score, names[c], cat)
        score, label, cat = best if best is not None else (0.0, "", "")
        results.append(UnitResult(u, label, cat, score, per_category))
    return results


# ----------------------------------------------------------------------------------------------
# tally.csv


def tally_header(categories: Sequence[str]) -> list[str]:
    """NetDissect-Lite's columns: unit, category, label, score, then per category
    `<cat>-label, <cat>-truth, <cat>-activation, <cat>-intersect, <cat>-iou`."""
    head = ["unit", "category", "label", "score"]
    return head + [f"{cat}-{f}" for cat in categories for f in TALLY_FIELDS_PER_CATEGORY]


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def write_tally(path: Path, results: Sequence[UnitResult], categories: Sequence[str]) -> None:
    """Rows ordered by score, best first (as NetDissect-Lite), ties by unit; `unit` 1-based."""
    ordered = sorted(results, key=lambda r: (-r.score, r.unit))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(tally_header(categories))
        for r in ordered:
            row = [str(r.unit + 1), r.category, r.label, repr(r.score)]
            for cat in categories:
                best = r.per_category.get(cat)
                if best is None:
                    row += ["", "", "", "", ""]
                    continue
                counts = (best.truth, best.activation, best.intersect)
                row += [best.label, *(_number(x) for x in counts), repr(best.iou)]
            writer.writerow(row)
    tmp.replace(path)


def read_tally(path: str | Path) -> list[UnitLabel]:
    """The units of a NetDissect(-Lite) `tally.csv`, in unit order, with 0-based `unit`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tally file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [
                c
                for c in ("unit", "category", "label", "score")
                if c not in (reader.fieldnames or [])
            ]
            if missing:
                raise UserError(f"{path} is not a tally.csv: no column(s) {', '.join(missing)}")
            rows = list(reader)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text CSV file") from None
    units: dict[int, UnitLabel] = {}
    for line, row in enumerate(rows, start=2):
        try:
            unit, score = int(row["unit"]), float(row["score"])
        except (TypeError, ValueError):
            raise UserError(
                f"{path} line {line}: unit must be an integer and score a number, "
                f"got {row['unit']!r}, {row['score']!r}"
            ) from None
        if unit < 1 or not math.isfinite(score):
            raise UserError(f"{path} line {line}: unit must be >= 1 and score finite")
        if unit - 1 in units:
            raise UserError(f"{path} line {line}: unit {unit} appears twice")
        units[unit - 1] = UnitLabel(unit - 1, row["label"] or "", row["category"] or "", score)
    return [units[u] for u in sorted(units)]


# ----------------------------------------------------------------------------------------------
# The two passes over a dataset


@dataclass
class Dissection:
    """Everything `ibd dissect` writes."""

    thresholds: torch.Tensor
    tally: Tally
    names: list[str]
    results: list[UnitResult]
    num_images: int
    feature_size: tuple[int, int]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def interpretable(self, threshold: float) -> list[UnitResult]:
        return [r for r in self.results if r.score >= threshold]


def category_order(categories: Sequence[str]) -> list[str]:
    """Broden's order first (tally.csv column order), then any other category as given."""
    given = list(dict.fromkeys(categories))
    return [c for c in BRODEN_CATEGORIES if c in given] + [
        c for c in given if c not in BRODEN_CATEGORIES
    ]


class _Images(Dataset):
    """The images of a concept dataset without decoding their masks."""

    def __init__(self, dataset: ConceptDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.dataset.load_image(i), "index": i}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "mask": [it.get("mask") for it in items],
        "index": [int(it["index"]) for it in items],
    }


def _batches(
    dataset: Any, batch_size: int, workers: int, desc: str, progress: bool
) -> Iterator[dict[str, Any]]:
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate
    )
    with tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["index"]))


def _features(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hooks.run(model, layer, images.to(next(model.parameters()).device)).features


def _thresholds(
    model: nn.Module,
    layer: str,
    dataset: ConceptDataset,
    quantile: float,
    batch_size: int,
    workers: int,
    progress: bool,
    device: torch.device,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pass 1: T_u of every unit (`TopQuantile`) and the feature size."""
    quantiles: TopQuantile | None = None
    feature_size = (0, 0)
    for batch in _batches(_Images(dataset), batch_size, workers, "dissect: thresholds", progress):
        features = _features(model, layer, batch["image"])
        n, units, h, w = features.shape
        if quantiles is None:
            feature_size = (h, w)
            quantiles = TopQuantile(units, quantile, len(dataset) * h * w, device)
        quantiles.update(features.permute(1, 0, 2, 3).reshape(units, n * h * w))
    assert quantiles is not None
    return quantiles.thresholds(), feature_size


def _count(
    model: nn.Module,
    layer: str,
    dataset: ConceptDataset,
    thresholds: torch.Tensor,
    acc: IoUAccumulator,
    batch_size: int,
    workers: int,
    progress: bool,
) -> None:
    """Pass 2: the dataset's counts into `acc`."""
    concepts = len(dataset.concepts)
    for batch in _batches(dataset, batch_size, workers, "dissect: IoU", progress):
        features = _features(model, layer, batch["image"])
        present = torch.tensor(
            [
                [cat in dataset.category_present(i) for cat in acc.categories]
                for i in batch["index"]
            ],
            dtype=torch.bool,
        )
        # images whose segmentations differ in size go in separate blocks
        items: list[Any] = batch.pop("mask")
        shapes: dict[tuple[int, ...], list[int]] = {}
        for j, mask in enumerate(items):
            shapes.setdefault(tuple(mask.shape), []).append(j)
        for shape, js in shapes.items():
            if shape[0] != concepts:
                raise UserError(f"the dataset gave {shape[0]} mask channels for {concepts}")
            masks = torch.stack([items[j] for j in js]).bool()
            for j in js:
                items[j] = None  # one copy of the batch's masks at a time
            acc.add(features[js], thresholds, masks, present[js])
            del masks


def dissect(
    model: nn.Module,
    layer: str,
    dataset: ConceptDataset,
    *,
    quantile: float = DEFAULT_QUANTILE,
    rule: str = "image",
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = True,
) -> Dissection:
    """Network Dissection of `model`'s `layer` over `dataset` (see the module docstring).

    Pass 1 streams the activations into `TopQuantile`; pass 2 recomputes them (two forward passes,
    never all activations in memory) and accumulates the `Tally`. Both run the model in eval
    mode; its own mode is restored after.
    """
    if len(dataset) == 0:
        raise UserError("the dataset has no images")
    concepts = list(dataset.concepts)
    if not concepts:
        raise UserError("the dataset has no concepts to dissect with")
    categories = category_order([c.category for c in concepts])
    g_index = {cat: g for g, cat in enumerate(categories)}
    concept_category = [g_index[c.category] for c in concepts]
    device = next(model.parameters()).device
    with hooks.eval_mode(model):
        started = time.perf_counter()
        thresholds, feature_size = _thresholds(
            model, layer, dataset, quantile, batch_size, workers, progress, device
        )
        pass1 = time.perf_counter() - started
        started = time.perf_counter()
        acc = IoUAccumulator(
            len(thresholds), concept_category, categories, rule=rule, device=device
        )
        _count(model, layer, dataset, thresholds, acc, batch_size, workers, progress)
        pass2 = time.perf_counter() - started

    tally = acc.result()
    names = [c.name for c in concepts]
    return Dissection(
        thresholds=thresholds.cpu(),
        tally=tally,
        names=names,
        results=best_labels(tally, names),
        num_images=len(dataset),
        feature_size=feature_size,
        settings={"quantile": quantile, "category_rule": rule, "upsampling": UPSAMPLING},
        seconds={"thresholds": pass1, "iou": pass2},
    )


# ----------------------------------------------------------------------------------------------
# Output files


def write_outputs(
    out: Path, dissection: Dissection, iou_threshold: float, meta: dict[str, Any]
) -> dict[str, Path]:
    """`tally.csv` (NetDissect-Lite format), `dissect.json` (settings, thresholds, per-unit best
    and runner-up concepts, summary) and `tally.npz` (the full count and IoU matrices)."""
    out.mkdir(parents=True, exist_ok=True)
    tally = dissection.tally
    categories = tally.categories
    iou = tally.iou().cpu()

    top = iou.topk(min(5, iou.shape[1]), dim=1)
    good = dissection.interpretable(iou_threshold)
    per_category = {cat: sum(r.category == cat for r in good) for cat in categories}
    concept_best = iou.max(dim=0)
    g_of = tally.concept_category.cpu().tolist()
    document = {
        "format": "ibd-dissect-1",
        **meta,
        "settings": {**dissection.settings, "iou_threshold": iou_threshold},
        "num_images": dissection.num_images,
        "num_units": len(dissection.results),
        "feature_size": list(dissection.feature_size),
        "categories": categories,
        "concepts": [
            {
                "index": c,
                "name": name,
                "category": categories[g_of[c]],
                "truth": float(tally.truth[c]),
                "best_unit": int(concept_best.indices[c]),
                "best_iou": float(concept_best.values[c]),
            }
            for c, name in enumerate(dissection.names)
        ],
        "summary": {
            "interpretable_units": len(good),
            "unique_concepts": len({r.label for r in good}),
            "interpretable_by_category": per_category,
            "mean_best_iou": float(np.mean([r.score for r in dissection.results])),
        },
        "seconds": dissection.seconds,
        "units": [
            {
                "unit": r.unit,
                "label": r.label,
                "category": r.category,
                "iou": r.score,
                "interpretable": r.score >= iou_threshold,
                "threshold": float(dissection.thresholds[r.unit]),
                "top": [
                    {
                        "label": dissection.names[int(c)],
                        "category": categories[g_of[int(c)]],
                        "iou": float(v),
                    }
                    for v, c in zip(top.values[r.unit], top.indices[r.unit], strict=True)
                ],
            }
            for r in dissection.results
        ],
    }
    files = {"tally": out / "tally.csv", "json": out / "dissect.json", "npz": out / "tally.npz"}
    staged = {key: path.with_name(path.name + ".tmp") for key, path in files.items()}
    try:
        staged["json"].write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        with staged["npz"].open("wb") as handle:
            np.savez_compressed(
                handle,
                thresholds=dissection.thresholds.numpy(),
                intersection=tally.intersection.cpu().numpy(),
                activation=tally.activation.cpu().numpy(),
                truth=tally.truth.cpu().numpy(),
                iou=iou.numpy().astype(np.float32),
                names=np.array(dissection.names),
                categories=np.array(categories),
                concept_category=tally.concept_category.cpu().numpy(),
            )
        write_tally(staged["tally"], dissection.results, categories)
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    # the three files of one dissection replace those of an earlier one only once all are written
    for key, path in files.items():
        staged[key].replace(path)
    return files
