"""Network Dissection (Bau et al., CVPR 2017, as in NetDissect-Lite): label every unit of a layer
with the concept whose segmentation its high activations overlap best.

For unit u and concept c over a dataset of images x (docs/dissect.md):

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
  `image` (default, as the Network Dissection paper describes it): images in which category g
  is present at all: g's index.csv cell is non-empty, or a concept whose primary category is g
  is labelled there;
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
import tempfile
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

from ibd.data.features import release_pages
from ibd.errors import UserError
from ibd.nets import hooks

# Broden's category order (its category.csv), which NetDissect-Lite's tally.csv columns follow.
BRODEN_CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
CATEGORY_RULES = ("image", "overlap", "all")
DEFAULT_QUANTILE = 0.005
DEFAULT_IOU_THRESHOLD = 0.04
UPSAMPLING = "bilinear, align_corners=False"
TALLY_FIELDS_PER_CATEGORY = ("label", "truth", "activation", "intersect", "iou")
# Elements of one float32 (images x units x pixels) block in the counting pass: 64 MB.
_BLOCK_ELEMENTS = 1 << 24


class ConceptLike(Protocol):
    index: int
    name: str
    category: str


class ConceptDataset(Protocol):
    """What dissection needs of a dataset (ibd.data.broden.BrodenDataset provides it): items
    `{"image": 3 x H x W, "mask": bool C x h x w, "index": i, ...}`, the image alone (the
    forward pass needs no masks), the C concepts in mask order, and the categories labelled in
    image i; optionally `load_sparse_mask(i)` (the labelled concepts and their masks only)."""

    concepts: Sequence[ConceptLike]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    def load_image(self, i: int) -> torch.Tensor: ...

    def category_present(self, i: int) -> set[str]: ...


# ----------------------------------------------------------------------------------------------
# Per-unit thresholds


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
# The counting pass: intersections and unions


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
        module docstring). The same as `add_sparse` with each image's non-empty masks."""
        masks = masks.to(self.device)
        # the concepts labelled in each image (b x C); `any` reads the masks without a copy
        labelled = masks.flatten(2).any(dim=2)
        items = []
        for j in range(masks.shape[0]):
            concepts = labelled[j].nonzero().flatten()
            items.append((concepts, masks[j, concepts]))
        self.add_sparse(features, thresholds, items, present)

    def add_sparse(
        self,
        features: torch.Tensor,
        thresholds: torch.Tensor,
        items: Sequence[tuple[torch.Tensor, torch.Tensor]],
        present: torch.Tensor,
    ) -> None:
        """One block of b images given sparsely: items[i] = (the concepts labelled in image i,
        ascending, K_i; their masks, bool K_i x H x W at the block's segmentation size). Never
        builds a C x H x W array: with Broden's 1,198 labels an image has a few dozen."""
        b = features.shape[0]
        size = (int(items[0][1].shape[1]), int(items[0][1].shape[2]))
        # both comparisons with T_u in float32, so that skipping below agrees with the masks
        features = features.to(self.device).float()
        thresholds = float32_below(thresholds.to(self.device))
        pixels = size[0] * size[1]
        flat = [(c.to(self.device), m.to(self.device).reshape(len(m), pixels)) for c, m in items]
        labelled = torch.zeros(b, len(self.concept_category), dtype=torch.bool, device=self.device)
        for j, (concepts, masks) in enumerate(flat):
            labelled[j, concepts] = True
            # L_c += |L_c(x)|: integer sums of the non-empty masks only
            self.truth.index_add_(0, concepts, masks.sum(dim=1, dtype=torch.int32).double())
        present = present.to(self.device).bool()
        if self.rule == "image":
            # A concept labelled in image i makes its primary category count there even when its
            # pixels come only from another category's plane (a label listed in two categories):
            # otherwise I_uc could exceed A_u,g(c) and the IoU exceed 1.
            present = present | (labelled.float() @ self.category_onehot > 0)
        # blocks of at most _BLOCK_ELEMENTS pixels (one map at least), which also keeps every
        # float32 count below 2^24, where it is exact
        step = max(1, _BLOCK_ELEMENTS // pixels)
        # Only (image, unit) pairs whose maximum exceeds T_u can fire: a bilinear upsample is a
        # convex combination of the map's values. At the top 0.5% these are a few percent of all.
        fires = features.flatten(2).amax(dim=2) > thresholds[None, :]
        pairs = fires.nonzero()  # K x (image, unit), ordered by image
        for start in range(0, len(pairs), step):
            self._add_pairs(features, thresholds, flat, present, pairs[start : start + step], size)

    def _add_pairs(
        self,
        features: torch.Tensor,
        thresholds: torch.Tensor,
        flat: Sequence[tuple[torch.Tensor, torch.Tensor]],
        present: torch.Tensor,
        pairs: torch.Tensor,
        size: tuple[int, int],
    ) -> None:
        image, unit = pairs[:, 0], pairs[:, 1]
        act = binarise(features[image, unit], thresholds[unit], size).flatten(1)
        firing = act.nonzero()  # (pair, pixel), in pair order: a few hundred pixels per map
        del act
        counts = torch.bincount(firing[:, 0], minlength=len(pairs)).double()  # K
        bounds = torch.searchsorted(firing[:, 0].contiguous(), torch.arange(len(pairs) + 1))
        if self.rule == "image":
            added = counts[:, None] * present[image].double()
        else:
            added = counts[:, None].expand(-1, len(self.categories)).clone()
        images, sizes = image.unique_consecutive(return_counts=True)
        first = 0
        for j, n in zip(images.tolist(), sizes.tolist(), strict=True):
            rows = slice(first, first + n)
            first += n
            concepts, masks = flat[j]
            if not concepts.numel():
                if self.rule == "overlap":
                    added[rows] = 0.0  # nothing labelled to touch
                continue
            # I[u, c] += |M_u(x_j) & L_c(x_j)| for the units firing on x_j, the concepts in it,
            # counted over the firing pixels only (a few hundred per map at the top 0.5%)
            fired = firing[int(bounds[rows.start]) : int(bounds[rows.stop])]
            hits = masks[:, fired[:, 1]].T.to(torch.int32)  # firing pixel x concept
            inter = torch.zeros(n, len(concepts), dtype=torch.int32, device=self.device)
            inter.index_add_(0, fired[:, 0] - rows.start, hits)
            self.intersection[unit[rows, None], concepts[None, :]] += inter.double()
            if self.rule == "overlap":
                # M_u(x_j) touches category g iff it meets some concept of g (as NetDissect-Lite,
                # a concept's pixels count for its primary category, whichever plane they are in)
                touched = (inter > 0).float() @ self.category_onehot[concepts] > 0  # n x G
                added[rows] *= touched.double()
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
# One forward pass over a dataset, then the counting pass


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


def sparse_labels(dataset: Any, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the concepts labelled in image i, ascending; their masks, bool K x H x W): the dataset's
    own `load_sparse_mask` (`ibd.data.broden.BrodenDataset`: no C x H x W array), else the
    non-empty channels of its dense mask."""
    if hasattr(dataset, "load_sparse_mask"):
        concepts, masks = dataset.load_sparse_mask(i)
        return concepts, masks.bool()
    mask = dataset.load_mask(i) if hasattr(dataset, "load_mask") else dataset[i]["mask"]
    mask = torch.as_tensor(mask).bool()
    if mask.ndim != 3 or mask.shape[0] != len(dataset.concepts):
        raise UserError(
            f"the dataset gave a mask of shape {tuple(mask.shape)} for {len(dataset.concepts)} "
            "concepts"
        )
    concepts = mask.flatten(1).any(dim=1).nonzero().flatten()
    return concepts, mask[concepts]


class _Labels(Dataset):
    """Per image: its labelled concepts and their masks (`sparse_labels`) and which of
    `categories` are present, without decoding the image."""

    def __init__(self, dataset: ConceptDataset, categories: Sequence[str]) -> None:
        self.dataset, self.categories = dataset, list(categories)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        concepts, masks = sparse_labels(self.dataset, i)
        present = self.dataset.category_present(i)
        return {
            "index": i,
            "concepts": concepts,
            "masks": masks,
            "present": torch.tensor([c in present for c in self.categories], dtype=torch.bool),
        }


def _as_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _batches(
    dataset: Any, batch_size: int, workers: int, desc: str, progress: bool, collate: Any = None
) -> Iterator[Any]:
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate
    )
    with tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["index"]) if isinstance(batch, dict) else len(batch))


class FeatureArray:
    """The activations of every image of a dataset, read back in blocks of images as float32
    b x D x h x w tensors: an N x D x h x w array (`layout="NDHW"`, the cache `dissect` writes)
    or a feature store's N x h x w x D one (`"NHWD"`). A memory-mapped array's pages are
    dropped from the process after each block (`release_pages`), so reading all of it keeps the
    resident memory at one block."""

    def __init__(self, array: np.ndarray, layout: str = "NDHW") -> None:
        if layout not in ("NDHW", "NHWD") or array.ndim != 4:
            raise ValueError(f"expected a 4-d NDHW or NHWD array, got {array.shape} {layout}")
        self.array, self.layout = array, layout
        _, a, b, c = array.shape
        self.units, self.size = (a, (b, c)) if layout == "NDHW" else (c, (a, b))

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def block(self, start: int, stop: int) -> torch.Tensor:
        values = torch.from_numpy(np.array(self.array[start:stop], dtype=np.float32))
        release_pages(self.array)
        return values if self.layout == "NDHW" else values.permute(0, 3, 1, 2)


def thresholds_of(
    source: FeatureArray,
    quantile: float,
    *,
    chunk: int = 256,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """T_u of every unit of the activations in `source` (`TopQuantile`), `chunk` images at a
    time."""
    h, w = source.size
    quantiles = TopQuantile(source.units, quantile, len(source) * h * w, device)
    starts = range(0, len(source), chunk)
    for start in tqdm(starts, desc="dissect: thresholds", unit="block", disable=not progress):
        x = source.block(start, min(start + chunk, len(source))).to(device)
        quantiles.update(x.permute(1, 0, 2, 3).reshape(source.units, -1))
    return quantiles.thresholds()


def cache_features(
    model: nn.Module,
    layer: str,
    dataset: ConceptDataset,
    path: Path,
    quantile: float,
    batch_size: int,
    workers: int,
    progress: bool,
) -> tuple[FeatureArray, torch.Tensor]:
    """The one forward pass: `layer`'s activations over `dataset` into an N x D x h x w float32
    `.npy` at `path` (memory-mapped, as NetDissect-Lite caches them), streaming them into the
    thresholds on the way. Returns the cached array and T_u."""
    device = next(model.parameters()).device
    array: np.ndarray | None = None
    quantiles: TopQuantile | None = None
    done = 0
    for batch in _batches(
        _Images(dataset), batch_size, workers, "dissect: features", progress, _stack_images
    ):
        with torch.no_grad():
            features = hooks.run(model, layer, batch["image"].to(device)).features.float()
        b, units, h, w = features.shape
        if array is None or quantiles is None:
            shape = (len(dataset), units, h, w)
            array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            quantiles = TopQuantile(units, quantile, len(dataset) * h * w, device)
        quantiles.update(features.permute(1, 0, 2, 3).reshape(units, b * h * w))
        array[done : done + b] = features.cpu().numpy()
        release_pages(array)
        done += b
    assert array is not None and quantiles is not None
    array.flush()
    return FeatureArray(array, "NDHW"), quantiles.thresholds()


def _stack_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "index": [int(it["index"]) for it in items],
    }


def count(
    source: FeatureArray,
    dataset: ConceptDataset,
    thresholds: torch.Tensor,
    acc: IoUAccumulator,
    *,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = True,
) -> None:
    """The counting pass: per block of images, their activations from `source` and their
    labels (decoded sparsely, in `workers` processes) into `acc`."""
    labels = _Labels(dataset, acc.categories)
    for items in _batches(labels, batch_size, workers, "dissect: IoU", progress, _as_list):
        first = items[0]["index"]
        features = source.block(first, first + len(items))
        # images whose segmentations differ in size go in separate blocks
        shapes: dict[tuple[int, ...], list[int]] = {}
        for j, item in enumerate(items):
            shapes.setdefault(tuple(item["masks"].shape[1:]), []).append(j)
        for js in shapes.values():
            acc.add_sparse(
                features[js],
                thresholds,
                [(items[j]["concepts"], items[j]["masks"]) for j in js],
                torch.stack([items[j]["present"] for j in js]),
            )


PRIMARY_RULES = ("images", "coverage")


def primary_categories(dataset: Any, rule: str = "images") -> list[str]:
    """Each concept's primary category g(c). `images` (default): the reader's, the selected
    category where the label occurs in the most images. `coverage` (NetDissect-Lite's
    `primary_categories_per_index`): the one where its pixel coverage (the `coverage` column of
    `c_<category>.csv`) is largest, ties to the last in category.csv's order, so that published
    tallies can be reproduced. A concept in one category gets that category under both."""
    concepts = list(dataset.concepts)
    if rule == "images":
        return [c.category for c in concepts]
    if rule != "coverage":
        raise UserError(f"unknown primary-category rule '{rule}' (choose from {PRIMARY_RULES})")
    root = Path(getattr(dataset, "root", ""))
    order = list(getattr(dataset, "all_categories", []))
    coverage = {cat: _coverages(root / f"c_{cat}.csv") for cat in order}
    chosen = []
    for c in concepts:
        cats = [g for g in order if g in (getattr(c, "categories", ()) or (c.category,))]
        best = max(
            ((coverage[g].get(c.number, 0.0), k, g) for k, g in enumerate(cats)), default=None
        )
        chosen.append(best[2] if best is not None else c.category)
    return chosen


def _coverages(path: Path) -> dict[int, float]:
    """label number -> coverage from a `c_<category>.csv` (empty when the file is missing)."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        try:
            return {
                int(row["number"]): float(row.get("coverage") or 0.0)
                for row in csv.DictReader(handle)
            }
        except (KeyError, ValueError, csv.Error):
            raise UserError(f"{path}: expected number and coverage columns") from None


def _check_rules(quantile: float, rule: str, primary: str) -> None:
    if not 0.0 < quantile < 1.0:
        raise UserError(f"quantile must be between 0 and 1 (exclusive), got {quantile}")
    if rule not in CATEGORY_RULES:
        raise UserError(f"unknown category rule '{rule}' (choose from {CATEGORY_RULES})")
    if primary not in PRIMARY_RULES:
        raise UserError(f"unknown primary-category rule '{primary}' (choose from {PRIMARY_RULES})")


def _accumulator(
    dataset: ConceptDataset, units: int, rule: str, primary: str, device: torch.device
) -> IoUAccumulator:
    if len(dataset) == 0:
        raise UserError("the dataset has no images")
    if not list(dataset.concepts):
        raise UserError("the dataset has no concepts to dissect with")
    of = primary_categories(dataset, primary)
    categories = category_order(of)
    g_index = {cat: g for g, cat in enumerate(categories)}
    return IoUAccumulator(units, [g_index[g] for g in of], categories, rule=rule, device=device)


def _dissection(
    dataset: ConceptDataset,
    thresholds: torch.Tensor,
    acc: IoUAccumulator,
    feature_size: tuple[int, int],
    settings: dict[str, Any],
    seconds: dict[str, float],
) -> Dissection:
    tally = acc.result()
    names = [c.name for c in dataset.concepts]
    return Dissection(
        thresholds=thresholds.cpu(),
        tally=tally,
        names=names,
        results=best_labels(tally, names),
        num_images=len(dataset),
        feature_size=feature_size,
        settings={**settings, "upsampling": UPSAMPLING},
        seconds=seconds,
    )


def dissect(
    model: nn.Module,
    layer: str,
    dataset: ConceptDataset,
    *,
    quantile: float = DEFAULT_QUANTILE,
    rule: str = "image",
    primary: str = "images",
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> Dissection:
    """Network Dissection of `model`'s `layer` over `dataset` (see the module docstring).

    One forward pass over the images: the activations go to a float32 cache on disk (a
    temporary directory under `cache_dir`, default the system's; N x D x h x w x 4 bytes,
    removed afterwards) and into `TopQuantile` on the way; the counting pass reads them back
    with the labels. The model runs in eval mode; its own mode is restored after.
    """
    _check_rules(quantile, rule, primary)
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="ibd-dissect-", dir=cache_dir) as tmp:
        started = time.perf_counter()
        with hooks.eval_mode(model):
            source, thresholds = cache_features(
                model,
                layer,
                dataset,
                Path(tmp) / "features.npy",
                quantile,
                batch_size,
                workers,
                progress,
            )
        pass1 = time.perf_counter() - started
        started = time.perf_counter()
        acc = _accumulator(dataset, source.units, rule, primary, device)
        count(
            source,
            dataset,
            thresholds,
            acc,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
        )
        pass2 = time.perf_counter() - started
        feature_size = source.size
        del source
    settings = {"quantile": quantile, "category_rule": rule, "primary_category": primary}
    return _dissection(
        dataset, thresholds, acc, feature_size, settings, {"features": pass1, "iou": pass2}
    )


def dissect_store(
    store: Any,
    dataset: ConceptDataset,
    *,
    quantile: float = DEFAULT_QUANTILE,
    rule: str = "image",
    primary: str = "images",
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = True,
) -> Dissection:
    """Network Dissection from a feature store (`ibd.data.features.FeatureStore`) of the same
    dataset: no network at all. The store's activations give the thresholds (one read) and the
    counts (a second read, with the labels). A float16 store gives float16-rounded activations,
    hence slightly different thresholds from the network's float32 ones."""
    _check_rules(quantile, rule, primary)
    check_store_matches(store, dataset)
    source = FeatureArray(store.features, "NHWD")
    started = time.perf_counter()
    thresholds = thresholds_of(source, quantile, progress=progress)
    pass1 = time.perf_counter() - started
    started = time.perf_counter()
    acc = _accumulator(dataset, source.units, rule, primary, torch.device("cpu"))
    count(
        source, dataset, thresholds, acc, batch_size=batch_size, workers=workers, progress=progress
    )
    settings = {
        "quantile": quantile,
        "category_rule": rule,
        "primary_category": primary,
        "features": str(store.path),
        "features_dtype": str(store.header.get("dtype")),
    }
    seconds = {"thresholds": pass1, "iou": time.perf_counter() - started}
    return _dissection(dataset, thresholds, acc, source.size, settings, seconds)


def check_store_matches(store: Any, dataset: ConceptDataset) -> None:
    """UserError unless the store holds the dataset's images in the dataset's order."""
    if store.num_images != len(dataset):
        raise UserError(
            f"feature store {store.path} holds {store.num_images} images, the dataset "
            f"{len(dataset)}: build the store from the same dataset (and --split)"
        )
    if hasattr(dataset, "image_path"):
        for i, stored in enumerate(store.paths):
            mine = Path(dataset.image_path(i))
            if Path(stored).name != mine.name or Path(stored).parent.name != mine.parent.name:
                raise UserError(
                    f"feature store {store.path} image {i} is {stored}, the dataset's is {mine}"
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
