"""What the simulated raters of `hitserver simulate` reward, measured on a demo's batches.

For every method-vs-method item of the Fig. 8 batches in $IBD_HOME/batches (catch trials left
out), each side's shown masks (`masks.npz`, the exact top-20% masks of the pages) are scored as the
simulated rater scores them (`hitserver.simulate.quality`, against the world's true concept
masks), and taken apart:

- q: the rater's quality of the explanation (0..1), mean over its shown components of
  0.5 [named concept in the image] + 0.5 overlap; a CAM / Grad-CAM side names only the class,
  always "present", and its one mask is compared with the union of the class's defining concepts
  in the image;
- present: share of the shown components whose concept is in the image;
- overlap: mean |m & g| / min(|m|, |g|) of the present components (g: the concept's true mask,
  or the defining union for CAM);
- chance: the overlap a mask of the same size placed at random would get on average,
  max(|m|, |g|) / N (so `overlap - chance` is what the mask's placement earns);
- q if present only: q had the side shown only its components that are in the image
  (0.5 + 0.5 overlap, averaged over those; the q of CAM as it is);
- on class region: the overlap of the side's *first* mask with the class's defining union, the
  CAM criterion applied to every method (IBD's top concept's region against CAM's map).

Then, per batch, how often the focus method's q beats the other's (by more than 0.07, a typical
rater's "slightly" threshold) and the mean difference: what the careful raters follow.

    .venv/bin/python benchmarks/rater_quality.py [--home DIR] [--batches 'fig8-*'] [--world DIR]

Needs a demo's batches and world ($IBD_HOME, default ./ibd-data); a few seconds per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hitserver.simulate import (
    CLASS_LEVEL_METHODS,
    Study,
    class_region,
    fit_mask,
    overlap,
    quality,
)

SLIGHT = 0.07  # the middle of a simulated rater's "slightly better" threshold (0.04-0.10)


@dataclass
class Side:
    """One explanation as the rater sees it."""

    method: str
    q: float
    present: list[bool]
    overlaps: list[float]  # of the present components
    chances: list[float]  # of the present components
    on_class: float
    absent: list[str]  # concepts named but not in the image

    @property
    def q_present_only(self) -> float:
        return 0.5 + 0.5 * statistics.fmean(self.overlaps) if self.overlaps else 0.0


@dataclass
class Tally:
    sides: dict[str, list[Side]] = field(default_factory=lambda: defaultdict(list))
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (q focus, q other)


def chance_overlap(mask: np.ndarray, truth: np.ndarray) -> float:
    """The expected overlap(m', g) of a random mask m' with |m'| = |m|: E|m' & g| = |m| |g| / N,
    over min(|m|, |g|), i.e. max(|m|, |g|) / N."""
    n = mask.size
    return max(int(mask.sum()), int(truth.sum())) / n if n else 0.0


def describe(side: dict[str, Any], masks: list[np.ndarray], study: Study, item: dict) -> Side:
    truth = study.truth.masks(item["source_image"])
    defining = study.truth.defining.get(item["class_name"], [])
    q, _ = quality(side, masks, truth, defining)
    region = class_region(truth, defining, masks[0].shape)
    if side["method"] in CLASS_LEVEL_METHODS:
        targets: list[np.ndarray | None] = [region]
    else:
        targets = [truth.get(concept) for concept in side["concepts"]]
    present = [target is not None for target in targets]
    overlaps, chances = [], []
    for mask, target in zip(masks, targets, strict=True):
        if target is not None:
            fitted = fit_mask(target, mask.shape)
            overlaps.append(overlap(mask, fitted))
            chances.append(chance_overlap(mask, fitted))
    absent = [c for c, p in zip(side["concepts"], present, strict=True) if not p]
    on_class = overlap(masks[0], region)
    return Side(side["method"], q, present, overlaps, chances, on_class, absent)


def tally_batch(batch: Path, world: Path) -> tuple[str, Tally]:
    study = Study([batch], world)
    manifest = json.loads((batch / "manifest.json").read_text())
    focus = manifest.get("focus", {}).get("method", "ibd")
    tally = Tally()
    for item, _ in study.items.values():
        if item.get("catch"):
            continue
        judged = {}
        for key in ("first", "second"):
            side = item[key]
            judged[side["method"]] = describe(
                side, study.shown_masks(batch, side["masks"]), study, item
            )
        if len(judged) != 2 or focus not in judged:
            continue  # not a method-vs-method item
        for method, side in judged.items():
            tally.sides[method].append(side)
        other = next(m for m in judged if m != focus)
        tally.pairs.append((judged[focus].q, judged[other].q))
    return focus, tally


def quartiles(values: list[float]) -> str:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"{q1:.2f} / {q2:.2f} / {q3:.2f}"


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def report(name: str, focus: str, tally: Tally) -> None:
    print(f"\n{name} ({len(tally.pairs)} items)")
    print(
        f"{'method':<11} {'q mean':>6} {'sd':>5}  {'q quartiles':<18} {'components':>10} "
        f"{'present':>7} {'overlap':>7} {'chance':>6} {'q if present only':>17} "
        f"{'on class region':>15}"
    )
    for method, sides in sorted(tally.sides.items(), key=lambda kv: kv[0] != focus):
        qs = [s.q for s in sides]
        present = [p for s in sides for p in s.present]
        overlaps = [o for s in sides for o in s.overlaps]
        chances = [c for s in sides for c in s.chances]
        print(
            f"{method:<11} {mean(qs):6.3f} {statistics.pstdev(qs):5.3f}  {quartiles(qs):<18} "
            f"{mean([len(s.present) for s in sides]):10.2f} {mean(present):7.3f} "
            f"{mean(overlaps):7.3f} {mean(chances):6.3f} "
            f"{mean([s.q_present_only for s in sides]):17.3f} "
            f"{mean([s.on_class for s in sides]):15.3f}"
        )
    diffs = [a - b for a, b in tally.pairs]
    if not diffs:
        return
    better = sum(d > SLIGHT for d in diffs) / len(diffs)
    worse = sum(d < -SLIGHT for d in diffs) / len(diffs)
    print(
        f"q({focus}) - q(other): mean {mean(diffs):+.3f}; {focus} higher by more than {SLIGHT} "
        f"in {better:.2f} of items, lower by more than {SLIGHT} in {worse:.2f}"
    )


def rank_profile(tally: Tally, focus: str) -> None:
    """The focus method's components by rank: how often the k-th is in the image."""
    sides = tally.sides.get(focus, [])
    ranks = max((len(s.present) for s in sides), default=0)
    if ranks < 2:
        return
    cells = []
    for k in range(ranks):
        shown = [s.present[k] for s in sides if len(s.present) > k]
        cells.append(f"{k + 1}: {mean(shown):.2f} of {len(shown)}")
    print(f"{focus} components in the image, by rank: " + "; ".join(cells))
    absent = Counter(c for s in sides for c in s.absent)
    common = ", ".join(f"{c} {n}" for c, n in absent.most_common(6))
    print(f"{focus}: named but not in the image, most often: {common} (of {sum(absent.values())})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    home = Path(os.environ.get("IBD_HOME", "ibd-data"))
    parser.add_argument("--home", type=Path, default=home, help="the demo's IBD_HOME")
    parser.add_argument("--batches", default="fig8-*", help="batch directories (glob, fig8-*)")
    parser.add_argument("--world", type=Path, help="the concept world (default HOME/world)")
    args = parser.parse_args()
    batches = sorted(p for p in (args.home / "batches").glob(args.batches) if p.is_dir())
    world = args.world or args.home / "world"
    if not batches or not (world / "world.json").exists():
        where = args.home / "batches"
        print(f"needs a demo first: no batches {args.batches} in {where} or no {world}")
        return 1
    print(f"simulated rater's quality q of the shown masks ({args.home}); chance: a random mask of")
    print("the same size; on class region: the first mask against the class's defining concepts")
    for batch in batches:
        focus, tally = tally_batch(batch, world)
        report(batch.name, focus, tally)
        rank_profile(tally, focus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
