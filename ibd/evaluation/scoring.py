"""Scoring explanations against the concept world's ground truth (`world.json` and the masks).

Three measures, each a pure function of arrays and names:

- Class decomposition vs the rules. For class k with defining concepts D_k and the top-k
  concepts T of its decomposition ranked by coefficient s_i (paper eq. 6), with G the set of
  concepts that count as correct,

      precision@k = |T ∩ G| / |T|,      recall@k = |{d in D_k : d is found in T}| / |D_k|.

  |T| = min(k, concepts listed), so a decomposition listing fewer than k concepts is scored on
  what it lists. Two readings of "correct": `strict`, G = D_k and d is found when d itself is in
  T; `lenient`, G = D_k plus the parts of every defining object (`world.json` concepts[].parts,
  so "sail" counts for a class defined by "boat") and d is found when d or one of its parts is
  in T. Both are reported; the issue's target (precision@3 >= 0.8) is read on the lenient one,
  because a part is evidence of its object in the image as much as the object is.
  The same precision and recall are also read on a second ranking, by contribution: the mean
  over the class's IBD explanations of each concept's contribution s_i q_i . a to the logit
  (paper eq. 9), the quantity an explanation ranks by, where the coefficient alone ignores how
  strongly the concept is present in the class's images.
- Presence: whether an explanation's top concept is labelled anywhere in the image.
- Pointing: the heatmap is upsampled bilinearly (align_corners=False) to the mask size, its top
  20% region is R = {p : h(p) >= t}, t the ceil(0.2 N)-th largest of the N values, or
  {p : h(p) > t} when that is closer to ceil(0.2 N) pixels and not empty (pixels tied at t join
  or stay out together; a constant map gives the whole image, `top_region`), and the
  explanation hits when R overlaps the true mask M (|R ∩ M| > 0). The fraction |R ∩ M| / |R|
  is reported alongside. An absent concept has an empty mask, so it always misses. Because a
  large mask is easy to overlap by chance, the mask's share of the image, coverage = |M| / N, is
  kept too: the lift (|R ∩ M| / |R|) / coverage is 1 for a map that knows nothing about where
  the concept is.
- Concept pointing game: one trial per (image, defining concept d of the explained class with a
  non-empty mask), as Zhang et al. (2016) score one trial per category present. Each method
  supplies its map for d: IBD and Network Dissection the first component labelled d (none: a
  miss, the explanation does not show d), CAM, Grad-CAM and the random control their one map.
  The trial is a hit under the pointing game's rule when the map's maximum (upsampled as above;
  the first maximum in raster order) lies in d's mask, and under the overlap rule when its top
  20% region overlaps the mask. Every method faces the same trials, fixed by the world alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ibd.decomposition import Decomposition
from ibd.errors import UserError
from ibd.explain.maps import upsample

WORLD_FORMAT = "concept-world-1"
POINTING_FRACTION = 0.2


@dataclass(frozen=True)
class WorldClass:
    """One scene class of the world and its rule."""

    index: int
    name: str
    defining: tuple[str, ...]
    optional: tuple[str, ...]
    forbidden: tuple[str, ...]


@dataclass(frozen=True)
class World:
    """The parts of `world.json` that ground truth needs: the class rules and, per object
    concept, its parts."""

    classes: tuple[WorldClass, ...]
    parts: Mapping[str, tuple[str, ...]]

    def by_name(self, name: str) -> WorldClass | None:
        return next((c for c in self.classes if c.name == name), None)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where} must be a list of concept names")
    return tuple(value)


def read_world(path: str | Path) -> World:
    """The class rules and object parts of a `world.json` (docs/contracts.md 3)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"world rules not found: {path} (run `ibd world build`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != WORLD_FORMAT:
        raise UserError(f"{path}: not a world.json (format must be '{WORLD_FORMAT}')")
    classes = []
    for n, entry in enumerate(document.get("classes") or []):
        where = f"{path}: classes[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UserError(f"{where} has no name")
        if not isinstance(entry.get("index"), int):
            raise UserError(f"{where} has no integer index")
        classes.append(
            WorldClass(
                index=entry["index"],
                name=entry["name"],
                defining=_names(entry.get("defining", []), f"{where}.defining"),
                optional=_names(entry.get("optional", []), f"{where}.optional"),
                forbidden=_names(entry.get("forbidden", []), f"{where}.forbidden"),
            )
        )
    if not classes:
        raise UserError(f"{path} lists no classes")
    parts = {}
    for n, entry in enumerate(document.get("concepts") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UserError(f"{path}: concepts[{n}] has no name")
        parts[entry["name"]] = _names(entry.get("parts", []), f"{path}: concepts[{n}].parts")
    return World(tuple(classes), parts)


def read_decomposition(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """Per class name, its concepts ranked by coefficient, largest first, from a
    `decompose.json` read by its one reader (`Decomposition.load`, docs/contracts.md 6)."""
    dec = Decomposition.load(path)
    return {
        name: sorted(((dec.concept_names[c], s) for c, s in dec.terms(k)), key=lambda p: -p[1])
        for k, name in enumerate(dec.class_names)
    }


def read_decomposition_model(path: str | Path) -> str | None:
    """The model a `decompose.json` decomposes (`meta.model`), None when it does not say or the
    file cannot be read (the caller then takes the model from elsewhere)."""
    try:
        model = Decomposition.load(path).meta.get("model")
    except UserError:
        return None
    return model if isinstance(model, str) else None


@dataclass(frozen=True)
class RuleMatch:
    """precision@k and recall@k of one class's top-k concepts, strict and lenient."""

    top: tuple[str, ...]
    precision_strict: float
    recall_strict: float
    precision_lenient: float
    recall_lenient: float


def lenient_correct(defining: Sequence[str], parts: Mapping[str, Sequence[str]]) -> set[str]:
    """G of the lenient reading: the defining concepts and the parts of each."""
    return {c for d in defining for c in (d, *parts.get(d, ()))}


def match_rules(
    ranked: Sequence[str],
    defining: Sequence[str],
    parts: Mapping[str, Sequence[str]],
    k: int,
) -> RuleMatch:
    """Score the top `k` of `ranked` against the `defining` concepts (module docstring).

    An empty `top` has precision 0; a class with no defining concepts has recall nan."""
    if k < 1:
        raise ValueError("k must be at least 1")
    top = tuple(ranked[:k])
    shown = set(top)
    lenient_of = {d: lenient_correct([d], parts) for d in defining}
    correct_lenient = lenient_correct(defining, parts)

    def ratio(hits: int, total: int) -> float:
        return hits / total if total else math.nan

    return RuleMatch(
        top=top,
        precision_strict=ratio(sum(c in defining for c in top), len(top)) if top else 0.0,
        recall_strict=ratio(sum(d in shown for d in defining), len(defining)),
        precision_lenient=ratio(sum(c in correct_lenient for c in top), len(top)) if top else 0.0,
        recall_lenient=ratio(sum(bool(g & shown) for g in lenient_of.values()), len(defining)),
    )


def top_region(heatmap: torch.Tensor, fraction: float = POINTING_FRACTION) -> torch.Tensor:
    """Boolean map of the top `fraction` of `heatmap`'s values. With t the ceil(fraction N)-th
    largest value, pixels tied at t are kept or left out together: the region is h >= t, or
    h > t when that is closer to ceil(fraction N) pixels (and not empty). So a map that is flat
    below its peak (a ReLU'd or sparse map, zero on more than 80% of pixels) gives its raised
    part, not the whole image; a constant map, which points nowhere, gives the whole image."""
    if not 0 < fraction <= 1:
        raise ValueError("fraction must lie in (0, 1]")
    flat = heatmap.reshape(-1)
    count = max(1, math.ceil(fraction * flat.numel()))
    threshold = torch.topk(flat, count).values[-1]
    region, above = heatmap >= threshold, heatmap > threshold
    size, size_above = int(region.sum()), int(above.sum())
    return above if size_above > 0 and count - size_above < size - count else region


@dataclass(frozen=True)
class Pointing:
    hit: bool
    precision: float  # |R ∩ M| / |R|


def point(
    heatmap: torch.Tensor, mask: torch.Tensor, fraction: float = POINTING_FRACTION
) -> Pointing:
    """Pointing of a feature-resolution `heatmap` (h x w) at the true `mask` (H x W, bool):
    upsample, take the top `fraction` region R, hit when R overlaps the mask."""
    return _region_pointing(_to_mask_size(heatmap, mask), mask, fraction)


def _to_mask_size(heatmap: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`heatmap` (h x w) upsampled bilinearly to the size of `mask` (H x W)."""
    if heatmap.ndim != 2 or mask.ndim != 2:
        raise ValueError("heatmap and mask must be 2-D")
    return upsample(heatmap.float()[None], (mask.shape[0], mask.shape[1]))[0]


def _region_pointing(big: torch.Tensor, mask: torch.Tensor, fraction: float) -> Pointing:
    region = top_region(big, fraction)
    inside = int((region & mask.bool()).sum())
    return Pointing(hit=inside > 0, precision=inside / int(region.sum()))


def _peak_in(big: torch.Tensor, mask: torch.Tensor) -> bool:
    return bool(mask.reshape(-1)[int(torch.argmax(big))])


def union_mask(
    masks: torch.Tensor, concept_index: Mapping[str, int], names: Sequence[str]
) -> torch.Tensor:
    """The union of the named concepts' masks (C x H x W bool) as H x W; names the dataset does
    not know contribute nothing."""
    out = torch.zeros(masks.shape[1:], dtype=torch.bool)
    for name in names:
        if name in concept_index:
            out |= masks[concept_index[name]]
    return out


def peak_hit(heatmap: torch.Tensor, mask: torch.Tensor) -> bool:
    """The pointing game's rule (Zhang et al. 2016): the maximum of `heatmap` (h x w), upsampled
    to the mask size, lies inside `mask` (H x W); ties go to the first maximum in raster order."""
    return _peak_in(_to_mask_size(heatmap, mask), mask)


@dataclass(frozen=True)
class ConceptTrial:
    """One trial of the concept pointing game (module docstring)."""

    concept: str
    shown: bool  # the method had a map for the concept
    peak: bool
    overlap: bool


def concept_trials(
    concept_maps: Mapping[str, torch.Tensor] | None,
    class_map: torch.Tensor | None,
    class_name: str,
    masks: torch.Tensor,
    concept_index: Mapping[str, int],
    world: World,
    fraction: float = POINTING_FRACTION,
) -> list[ConceptTrial]:
    """The concept pointing game of one explanation: a trial per defining concept of
    `class_name` present in `masks`. Concept methods pass `concept_maps` (label -> map), class
    maps pass `class_map`, used for every trial."""
    rule = world.by_name(class_name)
    if rule is None:
        raise UserError(f"class '{class_name}' is not in world.json")
    class_big = None  # a class map serves every trial: upsampled once, at the first
    trials = []
    for concept in rule.defining:
        if concept not in concept_index:
            continue
        mask = masks[concept_index[concept]].bool()
        if not mask.any():
            continue
        if concept_maps is None:
            if class_big is None and class_map is not None:
                class_big = _to_mask_size(class_map, mask)
            big = class_big
        else:
            shown = concept_maps.get(concept)
            big = None if shown is None else _to_mask_size(shown, mask)
        if big is None:
            trials.append(ConceptTrial(concept, False, False, False))
            continue
        overlap = _region_pointing(big, mask, fraction).hit
        trials.append(ConceptTrial(concept, True, _peak_in(big, mask), overlap))
    return trials


def rank_by_contribution(
    decomposition: Mapping[str, Sequence[tuple[str, float]]],
    explained: Iterable[tuple[str, Mapping[str, float]]],
) -> dict[str, list[tuple[str, float]]]:
    """Per class, its decomposition's concepts ranked by their mean contribution to the logit
    over the class's explanations, largest first (paper eq. 9 averaged over images).

    `explained` gives (class name, concept -> contribution) per IBD explanation. A concept's
    mean is over the explanations that list it; a concept no explanation lists is left out, and
    a class with no explanation is absent. Exact when explanations keep every component
    (`ibd explain --top` at least `ibd decompose --max-concepts`, both 7 by default)."""
    sums: dict[str, dict[str, list[float]]] = {}
    for class_name, contributions in explained:
        if class_name not in decomposition:
            continue
        per_class = sums.setdefault(class_name, {})
        for concept, value in contributions.items():
            per_class.setdefault(concept, []).append(value)
    ranked = {}
    for class_name, per_class in sums.items():
        concepts = [name for name, _ in decomposition[class_name] if name in per_class]
        means = [(name, sum(per_class[name]) / len(per_class[name])) for name in concepts]
        ranked[class_name] = sorted(means, key=lambda p: -p[1])
    return ranked


# Methods whose one map explains the class as a whole: their label is the class name, not a
# concept, so presence does not apply and pointing aims at the union of the defining concepts.
CLASS_MAP_METHODS = ("cam", "gradcam", "random")
# methods whose records split the logit into named concepts plus a residual
CONCEPT_METHODS = ("ibd", "netdissect")


@dataclass(frozen=True)
class GroundTruth:
    """One explanation scored against one image's masks; `present` is None where it does not
    apply (class-map methods)."""

    target: str
    present: bool | None
    hit: bool
    precision: float
    coverage: float  # |M| / N

    @property
    def lift(self) -> float:
        """precision / coverage: how much more of the top region lies in the mask than chance
        (nan for an empty mask)."""
        return self.precision / self.coverage if self.coverage else math.nan


def score_explanation(
    method: str,
    top_label: str | None,
    class_name: str,
    heatmap: torch.Tensor,
    masks: torch.Tensor,
    concept_index: Mapping[str, int],
    world: World,
    fraction: float = POINTING_FRACTION,
) -> GroundTruth:
    """Presence and pointing of an explanation's top component (IBD, NetDissect), or of a
    class map (CAM, Grad-CAM, the random control) against the class's defining concepts."""
    if method in CLASS_MAP_METHODS:
        rule = world.by_name(class_name)
        if rule is None:
            raise UserError(f"class '{class_name}' of a {method} explanation is not in world.json")
        mask = union_mask(masks, concept_index, rule.defining)
        result = point(heatmap, mask, fraction)
        coverage = float(mask.float().mean())
        return GroundTruth("+".join(rule.defining), None, result.hit, result.precision, coverage)
    if top_label is None or top_label not in concept_index:
        mask = torch.zeros(masks.shape[1:], dtype=torch.bool)
    else:
        mask = masks[concept_index[top_label]]
    result = point(heatmap, mask, fraction)
    coverage = float(mask.float().mean())
    return GroundTruth(top_label or "", bool(mask.any()), result.hit, result.precision, coverage)
