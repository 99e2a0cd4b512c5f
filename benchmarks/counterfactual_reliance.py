"""Which concepts does the reference model itself rely on? Counterfactual images of the concept
world against the rules of `world.json` and against IBD's ranking.

`ibd evaluate` scores a class decomposition against the concepts that *define* each class in the
world. Whether the model learnt those rules is a separate question, which the world can answer
by intervention: each held-out image is drawn again from its own random state with one object or
part concept left out (`ibd.world.scenes.render`), so the layout, the lighting and the sensor
noise are the image's own and only that concept's pixels change. Two interventions:

- remove: the concept is not painted and what it covered shows through (the canvas is black
  where a ground band such as water or sand is removed, which no training image shows);
- grey: the concept's pixels are painted flat grey (the normalisation mean, input 0).

For each image the model assigns to class k, concept c's effect is the drop in k's logit,
h_k(image) - h_k(image without c), and 0 when the image does not show c. Concepts are ranked per
class by their mean effect over the class's images, as `ibd evaluate` ranks IBD's concepts by
mean contribution s_c q_c . a (eq. 9). Printed per class: the model's own top 3, IBD's top 3
with each one's effect and rank; and overall, precision@3 (lenient,
`ibd.evaluation.scoring.match_rules`) of both rankings against the rules, and how many of IBD's top
3 are in the model's.

    .venv/bin/python benchmarks/counterfactual_reliance.py [--splits explain,test] [--fill both]

Needs `make demo`'s world, reference model, basis and decomposition in $IBD_HOME (default
./ibd-data); about 10 minutes on 2 cores for both interventions over the 600 explain + test
images.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ibd import paths
from ibd.basis import Basis
from ibd.data.images import to_tensor
from ibd.decomposition import Decomposition
from ibd.evaluation import counterfactual
from ibd.evaluation.scoring import lenient_correct, match_rules, read_world
from ibd.nets import hooks
from ibd.nets.load import LoadedModel, final_linear, load_model
from ibd.nets.train import read_scenes
from ibd.world.writer import WorldSettings

K = 3


def measure(
    loaded: LoadedModel,
    world_dir: Path,
    settings: WorldSettings,
    images: list[tuple[int, str]],
    fill: tuple[float, float, float] | None,
) -> tuple[dict[int, dict[str, float]], dict[int, int], dict[int, np.ndarray]]:
    """Per assigned class: summed logit drop per concept, image count, summed pooled feature."""
    drops: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    count: dict[int, int] = defaultdict(int)
    pooled: dict[int, np.ndarray] = {}
    for i, path in tqdm(images, desc=f"counterfactuals ({'grey' if fill else 'remove'})"):
        drawn = counterfactual.draw(settings, i, world_dir / path, fill)
        measured = counterfactual.effects(loaded, drawn)
        k = int(measured.logits.argmax())
        count[k] += 1
        batch = to_tensor(drawn.image, loaded.input_size, loaded.mean, loaded.std)[None]
        with torch.no_grad():
            forward = hooks.run(loaded.model, loaded.layer, batch.to(loaded.device))
        feature = forward.features[0].double().mean(dim=(1, 2)).cpu().numpy()
        pooled[k] = pooled[k] + feature if k in pooled else feature
        for c, value in measured.on(k).items():
            drops[k][c] += value
    return drops, count, pooled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", default="explain,test", help="world splits (explain,test)")
    parser.add_argument("--fill", choices=("remove", "grey", "both"), default="both")
    args = parser.parse_args()
    needed = [paths.world_dir() / "world.json", paths.model_path(), paths.basis_path()]
    needed.append(paths.decompose_path())
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"needs `make demo` first: missing {', '.join(missing)}")
        return 1
    world_dir = paths.world_dir()
    settings = WorldSettings.of_world(world_dir)
    world = read_world(world_dir / "world.json")
    loaded = load_model(None, paths.model_path())
    basis = Basis.load(paths.basis_path())
    q, names = basis.q, basis.names
    dec = Decomposition.load(paths.decompose_path())
    w = final_linear(loaded.model)[0].double().numpy()
    dec.check_fits(w, loaded.classes, q.astype(np.float64), names)
    terms = [dec.terms(k) for k in range(len(loaded.classes))]
    splits = set(args.splits.split(","))
    _, rows = read_scenes(world_dir)
    images = [(i, path) for i, (path, split, _) in enumerate(rows) if split in splits]

    modes = counterfactual.FILLS
    for mode in ("remove", "grey") if args.fill == "both" else (args.fill,):
        drops, count, pooled = measure(loaded, world_dir, settings, images, modes[mode])
        print(f"\n{mode}: {len(images)} images of {args.splits}; * = not a defining concept")
        own, ibd, shared = [], [], []
        for k, cls in enumerate(world.classes):
            n = count.get(k, 0)
            if not n:
                print(f"  {cls.name:14s} no image assigned")
                continue
            effect = {c: total / n for c, total in drops[k].items()}
            ranked = sorted(effect, key=lambda c: -effect[c])
            a = pooled[k] / n
            contribution = {names[c]: s * float(q[c].astype(np.float64) @ a) for c, s in terms[k]}
            picks = sorted(contribution, key=lambda c: -contribution[c])[:K]
            right = lenient_correct(cls.defining, world.parts)
            own.append(match_rules(ranked, cls.defining, world.parts, K).precision_lenient)
            ibd.append(match_rules(picks, cls.defining, world.parts, K).precision_lenient)
            shared.append(len(set(picks) & set(ranked[:K])) / K)

            def mark(c: str, right: set[str] = right) -> str:
                return c if c in right else f"{c}*"

            def rank(c: str, ranked: list[str] = ranked) -> str:
                return str(ranked.index(c) + 1) if c in ranked else "-"

            print(
                f"  {cls.name:14s} n={n:3d} model: "
                + ", ".join(f"{mark(c)} {effect[c]:.2f}" for c in ranked[:K])
                + " | IBD: "
                + ", ".join(f"{mark(c)} {effect.get(c, 0.0):.2f} (#{rank(c)})" for c in picks)
            )
        print(
            f"  precision@3 lenient against the rules: the model's own ranking {np.mean(own):.3f}, "
            f"IBD by contribution {np.mean(ibd):.3f}; IBD's top 3 in the model's top 3: "
            f"{np.mean(shared):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
