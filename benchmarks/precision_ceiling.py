"""What precision@3 a classifier that reasons with the true concepts reaches on the concept world:
the reference point for issue 4's target (>= 0.8 for the reference model's class
decomposition).

The "presence model" is a softmax regression h_k(x) = beta_k . x + b_k on x, the image's true
concept presence (1 when the concept's mask is non-empty: the world's own labels, object and
part concepts as the basis uses them), fitted on the train split with an L2 penalty. Its
decomposition needs no basis: concept c contributes beta_kc x_c to class k's logit, so each
class's concepts are ranked by the mean contribution over the class's train images (as
`ibd evaluate` ranks IBD's by mean contribution, eq. 9) and the top 3 are scored against
`world.json` (`ibd.evaluation.scoring.match_rules`). The upper bound is also printed: a class with
two defining concepts and no parts can score at most 2/3.

    .venv/bin/python benchmarks/precision_ceiling.py [--l2 1e-3]

Needs the world in $IBD_HOME/world (`ibd world build`, part of `make demo`); about 10 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ibd import paths
from ibd.data.broden import BrodenDataset
from ibd.evaluation.scoring import lenient_correct, match_rules, read_world
from ibd.nets.train import read_scenes

K = 3


def presence(world: Path) -> tuple[list[str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Concept names and, per scenes.csv split, (N x C presence in {0, 1}, N class indices)."""
    dataset = BrodenDataset(world)
    by_name = {Path(dataset.image_path(i)).name: i for i in range(len(dataset))}
    _, rows = read_scenes(world)
    splits: dict[str, tuple[list[torch.Tensor], list[int]]] = {}
    for image, split, k in rows:
        mask = dataset.load_mask(by_name[Path(image).name])
        xs, ys = splits.setdefault(split, ([], []))
        xs.append(mask.flatten(1).any(1).float())
        ys.append(k)
    names = [c.name for c in dataset.concepts]
    return names, {s: (torch.stack(xs), torch.tensor(ys)) for s, (xs, ys) in splits.items()}


def fit_softmax(
    x: torch.Tensor, y: torch.Tensor, classes: int, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + l2/2 ||beta||^2 (bias not penalised) with L-BFGS."""
    beta = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    x = x.double()
    optimiser = torch.optim.LBFGS([beta, bias], max_iter=1000, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(x @ beta.T + bias, y) + l2 / 2 * (beta**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return beta.detach(), bias.detach()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 penalty (default 1e-3)")
    args = parser.parse_args()
    world_dir = paths.world_dir()
    if not (world_dir / "world.json").exists():
        print(f"needs the concept world first (`ibd world build`): no {world_dir}/world.json")
        return 1
    world = read_world(world_dir / "world.json")
    names, splits = presence(world_dir)
    x, y = splits["train"]
    beta, bias = fit_softmax(x, y, len(world.classes), args.l2)
    held_out = {s: v for s, v in splits.items() if s != "train"}
    accuracy = {
        s: float(((xs.double() @ beta.T + bias).argmax(1) == ys).double().mean())
        for s, (xs, ys) in held_out.items()
    }
    print(
        f"presence model (softmax regression on {len(names)} true concept indicators, "
        f"l2 {args.l2:g}): held-out accuracy "
        + ", ".join(f"{s} {a:.3f}" for s, a in accuracy.items())
    )
    lenient, strict, bound = [], [], []
    for cls in world.classes:
        mine = y == cls.index
        contribution = beta[cls.index] * x[mine].double().mean(0)
        top = [names[i] for i in contribution.argsort(descending=True)[:K]]
        match = match_rules(top, cls.defining, world.parts, K)
        correct = lenient_correct(cls.defining, world.parts)
        lenient.append(match.precision_lenient)
        strict.append(match.precision_strict)
        bound.append(min(K, len(correct & set(names))) / K)
        print(f"  {cls.name:14s} {', '.join(top):40s} P@3 lenient {match.precision_lenient:.3f}")
    print(
        f"precision@3 by mean contribution: lenient {np.mean(lenient):.3f}, strict "
        f"{np.mean(strict):.3f}; the most any ranking can reach (lenient) {np.mean(bound):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
