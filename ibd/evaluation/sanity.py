"""Sanity checks of the explanation methods: does an explanation depend on the model?

Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018): a method whose maps barely
change when the model's weights are replaced by random ones explains the input, not the model.
Here, for a model, a set of images and each explanation method (CAM, Grad-CAM, IBD,
NetDissect; docs/evaluate.md, "Sanity checks"):

- **cascading randomisation**: the parameters are re-initialised from the top (the classifier)
  down, one named block more at each step; step 0 is the trained model itself;
- **independent randomisation**: one block at a time, the rest left trained;
- **random logit**: the trained model explains a random other class (seeded per image) and that
  map is compared with the predicted class's map;
- **random pair**: the trained model's maps of two different images (a seeded derangement),
  the level of similarity that two unrelated explanations reach;
- **data randomisation** (`run_data_randomisation`, docs/sanity.md): the trained model against
  a model of the same architecture trained on the same images with their labels permuted
  (`ibd train --arch world_resnet_shuffled`), each explained with its own basis, decomposition
  or tally, both explaining the trained model's predicted class of each image.

Re-initialising a block calls `reset_parameters()` of every submodule that has one (a
BatchNorm's also resets its running statistics), on a deep copy of the network, under
`torch.manual_seed(seed + b)` for the block's number b, so block b gets the same random weights
in the cascade and alone, and the caller's random state is left as it was. The explanations of a
randomised model are of the trained model's predicted classes. IBD keeps its basis (the concept
classifiers learned on the trained model's features) and decomposes the randomised classifier
over it; NetDissect keeps its unit labels.

The measures, between the trained model's map and the randomised one's, image by image and then
averaged over the images (an undefined value, as the correlation of a constant map, is left out):

- Spearman rank correlation of |map| and of the signed map, at feature resolution: the Pearson
  correlation of the ranks, ties given their average rank;
- SSIM (`ssim`) of the maps min-max normalised to [0, 1] and upsampled (bilinear) to the input
  size;
- for IBD and NetDissect, the Spearman correlation of the concept rankings: each label's
  contribution (summed over its components) over the union of the labels either explanation
  lists, a label one of them does not list counting 0 there.

The map of IBD and NetDissect is their components' min-max normalised heatmaps weighted by
contribution (`ibd.evaluation.faithfulness.combine`, the map of the deletion curves); CAM's and
Grad-CAM's is their one heatmap.

Pass rule: a step (or the data-randomisation comparison) passes on a measure when the mean
similarity is at most the random-pair level of that method and measure plus `margin` (default
0.1): the randomised model's explanation is no more like the trained one's than two unrelated
explanations are, up to the margin. A row passes when its three map measures pass. The
concept-ranking measure has its own verdict and does not enter the row's: two images'
explanations mostly list different concepts, so the random pair's ranking correlation over the
union of labels is pulled below 0 by the labels only one of them lists, a level the same
image's explanations rarely reach.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ibd.errors import UserError
from ibd.evaluation.faithfulness import combine
from ibd.evaluation.scoring import CONCEPT_METHODS
from ibd.explain.loop import Explainer
from ibd.explain.maps import normalize, upsample
from ibd.explain.records import Explanation
from ibd.nets.load import LoadedModel
from ibd.nets.model import Images, Model

MAP_MEASURES = ("spearman_abs", "spearman", "ssim")
MEASURES = (*MAP_MEASURES, "concept_spearman")
TESTS = ("cascading", "independent", "random_logit", "random_pair")
MARGIN = 0.1

# SSIM's constants (Wang et al. 2004): an 11 x 11 Gaussian window of sigma 1.5, C1 = (0.01 L)^2,
# C2 = (0.03 L)^2 for the dynamic range L = 1 of min-max normalised maps
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2

ExplainerFactory = Callable[[Model], Explainer]


# ---------------------------------------------------------------------------- the measures


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """The ranks (1..n) of a 1-D tensor's values, ties given their average rank."""
    values, order = torch.sort(x)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    average = ends - (counts.to(torch.float64) - 1) / 2  # mean of ranks end-count+1 .. end
    ranks = torch.empty(x.numel(), dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman's rank correlation of two equally sized arrays (flattened): the Pearson
    correlation of their ranks, ties at their average rank. NaN when either is constant."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64).flatten()
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64).flatten()
    if x.shape != y.shape:
        raise ValueError(f"spearman of {tuple(x.shape)} and {tuple(y.shape)} values")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(torch.sqrt((rx * rx).sum() * (ry * ry).sum()))
    if denominator == 0.0:
        return math.nan
    return float((rx * ry).sum()) / denominator


def gaussian(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """g(i) ~ exp(-(i - c)^2 / 2 sigma^2), i = 0..size-1 about the centre c, summing to 1."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The size x size Gaussian window g(i) g(j) (`gaussian`), summing to 1."""
    g = gaussian(size, sigma)
    return torch.outer(g, g)


def ssim(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """The structural similarity of two H x W maps on a [0, 1] scale (Wang et al. 2004):

        SSIM(x, y) = mean over windows of  l(x, y) s(x, y),
        l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1),
        s = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)

    with mu, sigma^2 and sigma_xy the Gaussian-weighted local means, variances and covariance
    (`gaussian_window`: 11 x 11, sigma 1.5, shrunk to the map's smaller side, made odd, when the
    map is smaller), over every position where the window fits (no padding); C1 = 0.01^2,
    C2 = 0.03^2. Identical maps give 1; two constant maps a and b give
    (2ab + C1) / (a^2 + b^2 + C1)."""
    a = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim of {tuple(a.shape)} and {tuple(b.shape)} maps: need two H x W")
    size = min(SSIM_WINDOW, *a.shape)
    size -= 1 - size % 2
    g = gaussian(size)
    # the window is separable: one pass along rows, one along columns, of the five maps at once
    stacked = torch.stack([a, b, a * a, b * b, a * b])[:, None]
    rows = F.conv2d(stacked, g.reshape(1, 1, 1, size))
    mu_a, mu_b, aa, bb, ab = F.conv2d(rows, g.reshape(1, 1, size, 1))[:, 0]
    var_a = aa - mu_a**2
    var_b = bb - mu_b**2
    cov = ab - mu_a * mu_b
    luminance = (2 * mu_a * mu_b + SSIM_C1) / (mu_a**2 + mu_b**2 + SSIM_C1)
    structure = (2 * cov + SSIM_C2) / (var_a + var_b + SSIM_C2)
    return float((luminance * structure).mean())


# ------------------------------------------------------------------- maps of explanations


@dataclass(frozen=True)
class Explained:
    """What the measures read of one explanation: its map at feature resolution and, for the
    concept methods, each label's contribution."""

    heatmap: torch.Tensor
    concepts: dict[str, float] | None


def explained(e: Explanation) -> Explained:
    """The map (module docstring) and concept contributions of a computed explanation; one
    with no component (IBD where the class decomposes into no concept) has an all-zero map."""
    maps = [c.heatmap for c in e.components]
    if not maps:  # a decomposition with no concept (nnls found none): an empty explanation
        empty = None if e.method not in CONCEPT_METHODS else {}
        return Explained(torch.zeros(e.heatmap_shape, dtype=torch.float64), empty)
    if any(m is None for m in maps):
        raise UserError(f"{e.method} explanation of {e.image} has no computed heatmaps")
    if e.method not in CONCEPT_METHODS:
        return Explained(maps[0].detach().double().cpu(), None)  # type: ignore[union-attr]
    arrays = [m.detach().double().cpu().numpy() for m in maps]  # type: ignore[union-attr]
    heatmap = torch.as_tensor(combine(arrays, [c.contribution for c in e.components]))
    concepts: dict[str, float] = {}
    for c in e.components:
        concepts[c.label] = concepts.get(c.label, 0.0) + c.contribution
    return Explained(heatmap, concepts)


def concept_spearman(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Spearman correlation of two concept rankings over the union of their labels, a label
    one of them lacks counting 0 there."""
    labels = sorted(set(a) | set(b))
    if len(labels) < 2:
        return math.nan
    return spearman(
        torch.tensor([a.get(n, 0.0) for n in labels]), torch.tensor([b.get(n, 0.0) for n in labels])
    )


def similarity(a: Explained, b: Explained, size: tuple[int, int]) -> dict[str, float]:
    """Every measure between two explanations of one method (`size`: the input's H x W)."""
    if a.heatmap.shape != b.heatmap.shape:
        raise UserError(f"maps of {tuple(a.heatmap.shape)} and {tuple(b.heatmap.shape)} differ")
    both = normalize(upsample(torch.stack([a.heatmap, b.heatmap]).float(), size))
    concepts = math.nan
    if a.concepts is not None and b.concepts is not None:
        concepts = concept_spearman(a.concepts, b.concepts)
    return {
        "spearman_abs": spearman(a.heatmap.abs(), b.heatmap.abs()),
        "spearman": spearman(a.heatmap, b.heatmap),
        "ssim": ssim(both[0], both[1]),
        "concept_spearman": concepts,
    }


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def mean_similarity(
    first: Sequence[Explained], second: Sequence[Explained], size: tuple[int, int]
) -> dict[str, float]:
    """Each measure's mean over the pairs (first[n], second[n]), undefined values left out."""
    pairs = [similarity(a, b, size) for a, b in zip(first, second, strict=True)]
    return {m: _mean([p[m] for p in pairs]) for m in MEASURES}


# ----------------------------------------------------------------------- randomisation


def blocks(module: nn.Module) -> list[str]:
    """The named blocks of a network, top (the classifier) first: its top-level children that
    hold parameters, in reverse order of definition, a `nn.Sequential` child with more than one
    such child taken apart into those (`features.0`, `features.2`, ...)."""
    found: list[str] = []
    for name, child in module.named_children():
        inner = [
            (f"{name}.{n}", c)
            for n, c in child.named_children()
            if any(True for _ in c.parameters())
        ]
        if isinstance(child, nn.Sequential) and len(inner) > 1:
            found += [n for n, _ in inner]
        elif any(True for _ in child.parameters()):
            found.append(name)
    return found[::-1]


def reinitialise(module: nn.Module, block: str, seed: int) -> int:
    """Re-initialise every submodule of `block` that has `reset_parameters()`, in place, under
    `torch.manual_seed(seed)` (the global random state restored after); the number reset."""
    try:
        target = module.get_submodule(block)
    except AttributeError:
        raise UserError(f"no block named '{block}' (blocks: {', '.join(blocks(module))})") from None
    count = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in target.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                count += 1
    if count == 0:
        raise UserError(f"block '{block}' has no module with reset_parameters()")
    return count


def _copy(model: LoadedModel) -> Model:
    return Model.of(dataclasses.replace(model, model=copy.deepcopy(model.model)))


# ------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class SanitySettings:
    seed: int = 0
    margin: float = MARGIN
    blocks: tuple[str, ...] | None = None  # None: `blocks(network)`
    batch_size: int = 16


@dataclass(frozen=True)
class Row:
    """One step of one test for one method: what was randomised and the mean similarities."""

    model: str
    method: str
    test: str  # one of TESTS
    step: int  # cascading: blocks randomised so far; independent: the block's number (1 = top)
    block: str  # the block randomised at this step ("" for none)
    values: dict[str, float]


class _Judged:
    """Verdicts on rows against each method's random-pair row (the pass rule of the module
    docstring), for a result holding `rows` and `settings`."""

    rows: list[Row]
    settings: SanitySettings

    def baseline(self, method: str) -> dict[str, float]:
        """The random-pair level of `method`'s measures."""
        for row in self.rows:
            if row.method == method and row.test == "random_pair":
                return row.values
        raise KeyError(method)

    def passes(self, row: Row) -> dict[str, bool | None]:
        """Each measure's verdict on `row` (None: undefined there or for the random pair, and
        for the random-pair row itself)."""
        level = self.baseline(row.method)
        out: dict[str, bool | None] = dict.fromkeys(MEASURES)
        if row.test == "random_pair":
            return out
        for m in MEASURES:
            value, base = row.values[m], level[m]
            out[m] = (
                None
                if math.isnan(value) or math.isnan(base)
                else (value <= base + self.settings.margin)
            )
        return out

    def passed(self, row: Row) -> bool | None:
        """Whether every defined map measure of `row` passes (None: none is defined)."""
        verdicts = [v for m, v in self.passes(row).items() if m in MAP_MEASURES and v is not None]
        return all(verdicts) if verdicts else None

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))


@dataclass(frozen=True)
class Sanity(_Judged):
    """Every row of the sanity checks of one model, and the settings they ran with."""

    model: str
    blocks: list[str]
    images: int
    rows: list[Row]
    settings: SanitySettings


def _explain(
    factory: ExplainerFactory,
    model: Model,
    images: Images,
    targets: Sequence[int] | None,
    batch_size: int,
) -> list[Explained]:
    explainer = factory(model)
    return [explained(e) for e in explainer(images, targets, batch_size=batch_size)]


def _other_classes(predicted: Sequence[int], classes: int, seed: int) -> list[int]:
    """A random class other than each image's predicted one (seeded)."""
    if classes < 2:
        raise UserError("the random-logit test needs a model with at least two classes")
    rng = np.random.default_rng([seed, 1])
    return [int((k + rng.integers(1, classes)) % classes) for k in predicted]


def _derangement(count: int, seed: int) -> list[int]:
    """A seeded permutation of 0..count-1 that moves every index (a cyclic shift of a shuffle)."""
    if count < 2:
        raise UserError("the random-pair baseline needs at least two images")
    order = np.random.default_rng([seed, 2]).permutation(count).tolist()
    partner = [0] * count
    for n, index in enumerate(order):
        partner[index] = order[(n + 1) % count]
    return partner


@dataclass
class _Run:
    """One method's checks on one model: the trained explanations and the steps' rows."""

    model: Model
    method: str
    factory: ExplainerFactory
    images: Images
    settings: SanitySettings
    size: tuple[int, int]
    trained: list[Explained] = dataclasses.field(default_factory=list)
    targets: list[int] = dataclasses.field(default_factory=list)
    rows: list[Row] = dataclasses.field(default_factory=list)

    def explain(self, model: Model, targets: Sequence[int] | None) -> list[Explained]:
        return _explain(self.factory, model, self.images, targets, self.settings.batch_size)

    def add(self, test: str, step: int, block: str, other: Sequence[Explained]) -> None:
        values = mean_similarity(self.trained, other, self.size)
        self.rows.append(Row(self.model.name, self.method, test, step, block, values))

    def start(self) -> None:
        explainer = self.factory(self.model)
        records = explainer(self.images, None, batch_size=self.settings.batch_size)
        self.targets = [e.class_index for e in records]
        self.trained = [explained(e) for e in records]

    def randomised(self, names: Sequence[str], bar: tqdm) -> None:
        seed = self.settings.seed
        cascade = _copy(self.model)
        self.add("cascading", 0, "", self.explain(cascade, self.targets))
        for b, name in enumerate(names, start=1):
            reinitialise(cascade.model, name, seed + b)
            stepped = self.explain(cascade, self.targets)
            self.add("cascading", b, name, stepped)
            if b > 1:
                alone = _copy(self.model)
                reinitialise(alone.model, name, seed + b)
                stepped = self.explain(alone, self.targets)
            # (the top block alone is the cascade's first step: the same seeded weights)
            self.add("independent", b, name, stepped)
            bar.update(1)

    def controls(self) -> None:
        seed = self.settings.seed
        others = _other_classes(self.targets, len(self.model.classes), seed)
        self.add("random_logit", 0, "", self.explain(self.model, others))
        partner = _derangement(len(self.trained), seed)
        self.add("random_pair", 0, "", [self.trained[p] for p in partner])


def run_sanity(
    model: LoadedModel,
    images: Images,
    methods: Mapping[str, ExplainerFactory],
    settings: SanitySettings | None = None,
    *,
    progress: bool = False,
) -> Sanity:
    """The sanity checks (module docstring) of each method in `methods` (name -> a function
    making its explainer for a model) on `model` and `images` (as the explainers take them;
    at least two). The trained model is never changed: each randomised model is a deep copy."""
    settings = settings or SanitySettings()
    if settings.margin < 0:
        raise UserError(f"the sanity margin must be >= 0, got {settings.margin}")
    if not methods:
        raise UserError("no explanation method to check")
    handle = Model.of(model)
    names = list(settings.blocks) if settings.blocks is not None else blocks(handle.model)
    if not names:
        raise UserError(f"{handle.name} has no block with parameters to randomise")
    total = len(methods) * len(names)
    rows: list[Row] = []
    count = 0
    with tqdm(total=total, desc=f"sanity {handle.name}", unit="step", disable=not progress) as bar:
        for method, factory in methods.items():
            run = _Run(handle, method, factory, images, settings, handle.input_size)
            run.start()
            count = len(run.trained)
            run.controls()
            run.randomised(names, bar)
            rows += run.rows
    return Sanity(handle.name, names, count, _ordered(rows), settings)


def _ordered(rows: list[Row]) -> list[Row]:
    order = {t: n for n, t in enumerate(TESTS)}
    return sorted(rows, key=lambda r: (r.method, order[r.test], r.step))


# ------------------------------------------------------------------ data randomisation


@dataclass(frozen=True)
class DataRandomisation(_Judged):
    """The data-randomisation check (Adebayo et al. 2018, section 3.2) of one trained model
    against a model of the same classes trained on permuted labels: per method, a
    "data_randomisation" row (the trained model's explanation against the randomised model's,
    of the same image and class) and the trained model's "random_pair" row; `skipped`: the
    methods that only one of the two models had a factory for."""

    model: str
    randomised: str
    images: int
    rows: list[Row]
    settings: SanitySettings
    skipped: tuple[str, ...] = ()

    def row(self, method: str) -> Row:
        """`method`'s data-randomisation row."""
        for row in self.rows:
            if row.method == method and row.test == "data_randomisation":
                return row
        raise KeyError(method)


def _check_pair(trained: Model, randomised: Model) -> None:
    if list(trained.classes) != list(randomised.classes):
        raise UserError(
            f"{trained.name} and {randomised.name} have different classes: the data "
            "randomisation check explains the same class with both"
        )
    if tuple(trained.input_size) != tuple(randomised.input_size):
        raise UserError(
            f"{trained.name} takes {tuple(trained.input_size)} images and {randomised.name} "
            f"{tuple(randomised.input_size)}: the data randomisation check needs one size"
        )


def run_data_randomisation(
    trained: LoadedModel,
    randomised: LoadedModel,
    images: Images,
    trained_factories: Mapping[str, ExplainerFactory],
    randomised_factories: Mapping[str, ExplainerFactory],
    settings: SanitySettings | None = None,
    *,
    progress: bool = False,
) -> DataRandomisation:
    """The data-randomisation check: for each method with a factory for both models (name ->
    a function making its explainer for that model: IBD with each model's own basis and
    decomposition, NetDissect with each model's own tally), the trained model explains its
    predicted class of each image, the randomised model (trained on permuted labels) explains
    the same class of the same image, and the module's measures compare the two, image by
    image, against the trained model's random-pair level (the pass rule of the module
    docstring, `settings.margin`; `settings.blocks` is not used). A method passes when the
    randomised model's explanations are no more like the trained model's than two unrelated
    explanations are. Neither model is changed."""
    settings = settings or SanitySettings()
    if settings.margin < 0:
        raise UserError(f"the sanity margin must be >= 0, got {settings.margin}")
    first, second = Model.of(trained), Model.of(randomised)
    _check_pair(first, second)
    methods = [m for m in trained_factories if m in randomised_factories]
    if not methods:
        raise UserError(f"no explanation method to compare {first.name} and {second.name} with")
    skipped = tuple(sorted(set(trained_factories) ^ set(randomised_factories)))
    rows: list[Row] = []
    count = 0
    desc = f"data randomisation {first.name} vs {second.name}"
    for method in tqdm(methods, desc=desc, unit="method", disable=not progress):
        run = _Run(first, method, trained_factories[method], images, settings, first.input_size)
        run.start()
        count = len(run.trained)
        other = _explain(
            randomised_factories[method], second, images, run.targets, settings.batch_size
        )
        run.add("data_randomisation", 0, "", other)
        partner = _derangement(count, settings.seed)
        run.add("random_pair", 0, "", [run.trained[p] for p in partner])
        rows += run.rows
    return DataRandomisation(first.name, second.name, count, rows, settings, skipped)


DATA_COLUMNS = (
    "model",
    "randomised_model",
    "method",
    "test",
    *MEASURES,
    *(f"pass_{m}" for m in MEASURES),
    *(f"random_pair_{m}" for m in MEASURES),
    "passes",  # the three map measures pass
)


def _measure_cells(judged: _Judged, row: Row) -> list[str]:
    """A row's value of every measure, then its verdict on each (the CSV files' middle)."""
    verdicts = judged.passes(row)
    return [*(_cell(row.values[m]) for m in MEASURES), *(_cell(verdicts[m]) for m in MEASURES)]


def data_randomisation_rows(result: DataRandomisation) -> list[list[str]]:
    """The rows of data_randomisation.csv (DATA_COLUMNS)."""
    out = []
    for row in result.rows:
        base = result.baseline(row.method)
        out.append(
            [
                result.model,
                result.randomised,
                row.method,
                row.test,
                *_measure_cells(result, row),
                *(_cell(base[m]) for m in MEASURES),
                _cell(result.passed(row)),
            ]
        )
    return out


def write_data_randomisation_csv(path: Path, result: DataRandomisation) -> None:
    """data_randomisation.csv: per method, the data-randomisation row and the random pair."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(DATA_COLUMNS)
        writer.writerows(data_randomisation_rows(result))


def _values(values: Mapping[str, float]) -> str:
    """Spearman of |map| / signed Spearman / SSIM (/ concept-ranking Spearman if defined)."""
    shown = [values[m] for m in MAP_MEASURES]
    if not math.isnan(values["concept_spearman"]):
        shown.append(values["concept_spearman"])
    return " / ".join("n/a" if math.isnan(v) else f"{v:.2f}" for v in shown)


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def data_randomisation_section(result: DataRandomisation) -> list[str]:
    """The Markdown section of the evaluate report: one table row per method."""
    margin = result.settings.margin
    lines = [
        f"## Data randomisation: {result.model} against {result.randomised} "
        "(trained on shuffled labels; Adebayo et al. 2018)",
        "",
        f"Both models explain {result.model}'s predicted class of the same {result.images} "
        "images, each with its own basis, decomposition or tally. Similarity of the two "
        "explanations: Spearman of |map| / of the signed map / SSIM (/ Spearman of the concept "
        f"ranking), 1 = the same. A method passes when its map measures are at most "
        f"{result.model}'s random-pair level (two images' explanations) + {margin:g}: the "
        "explanation depends on what the model learned from the labels (docs/sanity.md).",
        "",
        "| method | random pair | shuffled-label model | passes | concept ranking passes |",
        "|---|---|---|---|---|",
    ]
    for method in result.methods():
        row = result.row(method)
        lines.append(
            f"| {method} | {_values(result.baseline(method))} | {_values(row.values)} | "
            f"{_verdict(result.passed(row))} | "
            f"{_verdict(result.passes(row)['concept_spearman'])} |"
        )
    lines += [
        "",
        f"Table: data_randomisation_{result.model}.csv; "
        f"figure: data_randomisation_{result.model}.png",
        "",
    ]
    if result.skipped:
        names = ", ".join(result.skipped)
        lines += [f"Note: {names} not compared (no factory for one of the two models)", ""]
    return lines


# ------------------------------------------------------------------- for `ibd evaluate`


@dataclass(frozen=True)
class SanityInputs:
    """What `ibd evaluate --sanity` checks: `images` explained images per model (the first, in
    the order of their world index), the basis of IBD and the tally of NetDissect (None: the
    model's `$IBD_HOME/basis/<model>.npz` and `$IBD_HOME/dissect/<model>/tally.csv`)."""

    settings: SanitySettings = dataclasses.field(default_factory=SanitySettings)
    images: int = 16
    basis: Path | None = None
    tally: Path | None = None


def _concept_input(given: Path | None, default: Path, method: str, notes: list[str]) -> Path | None:
    path = given or default
    if path.is_file():
        return path
    notes.append(f"sanity checks: no {path}, so no {method} checks")
    return None


def method_factories(
    model: LoadedModel, methods: Sequence[str], inputs: SanityInputs, notes: list[str]
) -> dict[str, ExplainerFactory]:
    """The explainer makers of those of `methods` whose inputs exist for `model` (a method
    left out is named in `notes`): CAM only on a GAP -> linear head, IBD with its basis,
    NetDissect with its tally."""
    from ibd import paths
    from ibd.dissect import read_tally
    from ibd.explain.basis_decomposition import IBD
    from ibd.explain.cam import CAM, GradCAM
    from ibd.explain.netdissect import NetDissect

    found: dict[str, ExplainerFactory] = {}
    if "cam" in methods:
        try:
            CAM(model)
            found["cam"] = CAM
        except UserError as exc:
            notes.append(f"sanity checks: no cam checks ({exc})")
    if "gradcam" in methods:
        found["gradcam"] = GradCAM
    default_basis = paths.basis_path(model.name)
    if "ibd" in methods and (basis := _concept_input(inputs.basis, default_basis, "ibd", notes)):
        found["ibd"] = lambda m: IBD(m, basis)
    default_tally = paths.dissect_dir(model.name) / "tally.csv"
    if "netdissect" in methods and (
        tally := _concept_input(inputs.tally, default_tally, "netdissect", notes)
    ):
        rows = read_tally(tally)
        found["netdissect"] = lambda m: NetDissect(m, rows)
    return found


# ------------------------------------------------------------------------------ outputs

COLUMNS = (
    "model",
    "method",
    "test",
    "step",
    "block",
    *MEASURES,
    *(f"pass_{m}" for m in MEASURES),
    "random_pair_spearman_abs",
    "random_pair_ssim",
    "passes",  # the three map measures pass
)


def _cell(value: float | bool | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.4f}"


def table_rows(results: Sequence[Sanity]) -> list[list[str]]:
    """The rows of sanity.csv (COLUMNS), every model's."""
    out = []
    for sanity in results:
        for row in sanity.rows:
            base = sanity.baseline(row.method)
            out.append(
                [
                    row.model,
                    row.method,
                    row.test,
                    str(row.step),
                    row.block,
                    *_measure_cells(sanity, row),
                    _cell(base["spearman_abs"]),
                    _cell(base["ssim"]),
                    _cell(sanity.passed(row)),
                ]
            )
    return out


def write_table(path: Path, results: Sequence[Sanity]) -> None:
    """sanity.csv: one row per model, method, test and step."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(table_rows(results))


STYLES = ("o-", "s--", "^-.", "D:")
FIGURE_MEASURES = (
    ("spearman_abs", "Spearman of |map|"),
    ("ssim", "SSIM"),
    ("concept_spearman", "Spearman of concept ranking"),
)


def write_figure(path: Path, sanity: Sanity) -> None:
    """Similarity against cascading randomisation depth, one line per method and one panel per
    measure; each method's band runs from its random-pair level to that plus the margin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (m, title)
        for m, title in FIGURE_MEASURES
        if any(not math.isnan(r.values[m]) for r in sanity.rows)
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    labels = ["trained", *sanity.blocks]
    for ax, (measure, title) in zip(axes[0], panels, strict=True):
        for n, method in enumerate(sanity.methods()):
            colour, style = f"C{n}", STYLES[n % len(STYLES)]
            steps = [r for r in sanity.rows if r.method == method and r.test == "cascading"]
            values = [r.values[measure] for r in steps]
            if all(math.isnan(v) for v in values):
                continue
            # markers, line styles and widths differ, so coinciding lines (Grad-CAM = CAM / HW
            # on a GAP head) stay visible: the earlier line is the wider
            width, size = max(3.0 - 0.6 * n, 1.0), max(8 - 1.5 * n, 3)
            steps_x = [r.step for r in steps]
            ax.plot(steps_x, values, style, color=colour, label=method, lw=width, ms=size)
            base = sanity.baseline(method)[measure]
            if not math.isnan(base):
                ax.axhspan(base, base + sanity.settings.margin, color=colour, alpha=0.12)
                ax.axhline(base, color=colour, linestyle=":", linewidth=1)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("randomised from the top down to", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("similarity to the trained model's map", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"{sanity.model}: cascading randomisation ({sanity.images} images; bands: random pair "
        f"to + {sanity.settings.margin:g})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_data_randomisation_figure(path: Path, result: DataRandomisation) -> None:
    """One panel per measure: each method's similarity between the trained model's and the
    shuffled-label model's explanations (a bar), beside its band from the trained model's
    random-pair level to that plus the margin (a bar passes when it ends below the band's
    top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result.methods()
    panels = [
        (m, title)
        for m, title in FIGURE_MEASURES
        if any(not math.isnan(result.row(n).values[m]) for n in methods)
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    margin = result.settings.margin
    for ax, (measure, title) in zip(axes[0], panels, strict=True):
        for x, method in enumerate(methods):
            value = result.row(method).values[measure]
            base = result.baseline(method)[measure]
            if not math.isnan(base):
                ax.fill_between([x - 0.4, x + 0.4], base, base + margin, color="grey", alpha=0.3)
                ax.plot([x - 0.4, x + 0.4], [base, base], color="grey", linestyle=":")
            if not math.isnan(value):
                ax.bar(x, value, width=0.5, color=f"C{x}")
        ax.set_xticks(range(len(methods)), methods, fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(f"similarity, {result.model} vs {result.randomised}", fontsize=8)
    fig.suptitle(
        f"Data randomisation ({result.images} images; grey: random pair to + {margin:g})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def first_passing(sanity: Sanity, method: str) -> Row | None:
    """The first cascading step at which `method` passes (None: none does)."""
    for row in sanity.rows:
        cascading = row.method == method and row.test == "cascading" and row.step > 0
        if cascading and sanity.passed(row):
            return row
    return None
