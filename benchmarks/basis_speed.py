"""Concept basis training speed: the batched all-concepts trainers of `ibd.basis` against
training the same classifiers one concept at a time (the loop shape of the authors' code),
on the same samples, in the same order, for the same epochs.

A synthetic feature store (written with `ibd.data.features.build`, an identity "network" whose input
is the feature map): 409 images x 7 x 7 = 20,041 positions, D=512, C=100 concepts planted along
random directions with per-concept frequencies from 0.5% to 10%; a quarter of the images held
out. Two comparisons:

- paper trainer (`fit_masked`: logistic loss, Adam, one matrix product per block of bank rows
  for all concepts) vs a loop over concepts that takes the same steps (concept c's rows of each
  block) one concept at a time;
- authors' trainer (`sgd_epoch_mse`: sigmoid + MSE, SGD, 128 samples per concept per step,
  gathered for all concepts at once) vs the same epoch for one concept at a time.

Throughput counts (concept, feature vector) training pairs per second: each concept's training
set size x epochs. The looped weights are checked against the batched ones and both are scored
on the held-out positions (mAP). For the authors' trainer the float32 difference grows from
~1e-5 after one epoch to ~1e-2 after five: its saturated sigmoid + MSE steps amplify rounding
(in float64 the two stay within 1e-7). On these raw non-negative features that trainer barely
learns (its weights stop moving once the sigmoid saturates), which its mAP shows.

    .venv/bin/python benchmarks/basis_speed.py [--epochs 5] [--concepts 100] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ibd import basis
from ibd.data import features


class Identity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class Concept:
    def __init__(self, c: int) -> None:
        self.index, self.number, self.name, self.category, self.image_count = (
            c,
            c + 1,
            f"c{c}",
            "object",
            0,
        )


class Planted(torch.utils.data.Dataset):
    """a(i,j) = |noise| + 2 * sum_c [c at (i,j)] u_c (ReLU-like, non-negative noise)."""

    def __init__(self, images: int, dim: int, concepts: int, grid: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.u = np.abs(rng.normal(size=(concepts, dim)))
        self.u /= np.linalg.norm(self.u, axis=1, keepdims=True) / np.sqrt(dim) * 0.5
        rates = np.geomspace(0.005, 0.1, concepts)
        self.masks = rng.random((images, concepts, grid, grid)) < rates[None, :, None, None]
        self.rng_seed = seed
        self.dim, self.grid = dim, grid
        self.concepts = [Concept(c) for c in range(concepts)]

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.rng_seed, i])
        noise = np.abs(rng.normal(size=(self.dim, self.grid, self.grid)))
        planted = np.einsum("chw,cd->dhw", self.masks[i], self.u)
        x = (noise + 2 * planted).astype(np.float32)
        return {"image": torch.from_numpy(x), "mask": torch.from_numpy(self.masks[i]), "path": ""}

    def image_path(self, i: int) -> Path:
        return Path(f"{i}.npy")

    def split_of(self, i: int) -> str:
        return "val" if i % 4 == 3 else "train"


def paper_loop(
    x: torch.Tensor, y: torch.Tensor, member: torch.Tensor, settings: basis.Settings, epochs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`basis.fit_masked`, one concept at a time: concept c takes a step on its rows of each
    block (the blocks the batched trainer uses)."""
    c_count, d = y.shape[1], x.shape[1]
    weight, bias = torch.zeros(c_count, d), torch.zeros(c_count)
    active = member.any(1)
    targets = y.float()
    for c in range(c_count):
        w, b = torch.zeros(1, d), torch.zeros(1)
        adam = basis.Adam(lr=settings.lr, l2=settings.l2, shape=(1, d))
        for epoch in range(epochs):
            rng = np.random.default_rng([settings.seed, epoch])
            for rows in basis.epoch_blocks(len(x), active, settings.batch_size, rng):
                mine = rows[member[rows, c]]
                if len(mine) == 0:
                    continue
                xs = x[mine]
                g = (torch.sigmoid(xs @ w[0] + b) - targets[mine, c]) / len(mine)
                adam.step(w, b, (g @ xs)[None], g.sum()[None], torch.ones(1, dtype=torch.bool))
        weight[c], bias[c] = w[0], b
    return weight, bias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=409)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--concepts", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = Planted(args.images, args.dim, args.concepts, grid=7)
        spec = features.StoreSpec(model={"name": "planted"}, layer="features", dataset={})
        store = features.build(Identity(), data, Path(tmp) / "store", spec, progress=False)
        print(
            f"store: {store.num_images * 49} positions x D={store.dim}, C={store.num_concepts}; "
            f"torch threads {torch.get_num_threads()}"
        )
        train, held = store.images_in("train"), store.images_in("val")
        concepts = np.arange(store.num_concepts)
        settings = basis.Settings.for_procedure("paper", seed=0)
        bank = basis.build_bank(store, train, concepts, settings)
        rows: list[list[Any]] = []

        # paper: standardised features, 1:20 random negatives, logistic loss, Adam
        mu, sigma = bank.x.mean(0), bank.x.std(0).clamp(min=1e-8)
        xt = (bank.x - mu) / sigma
        member = bank.positive | basis.random_negatives(bank, 20 * bank.num_positives, (0,))
        pairs = int(member.sum()) * args.epochs
        zeros_w, zeros_b = torch.zeros(len(concepts), store.dim), torch.zeros(len(concepts))
        results = {}
        for name, run in (
            (
                "paper batched",
                lambda: basis.fit_masked(
                    xt,
                    bank.y,
                    member,
                    zeros_w,
                    zeros_b,
                    epochs=args.epochs,
                    block=settings.batch_size,
                    lr=settings.lr,
                    l2=settings.l2,
                    seed=(settings.seed,),
                ),
            ),
            ("paper per-concept", lambda: paper_loop(xt, bank.y, member, settings, args.epochs)),
        ):
            started = time.perf_counter()
            w, b = run()
            seconds = time.perf_counter() - started
            raw_w = (w / sigma).numpy()
            raw_b = (b - (w / sigma) @ mu).numpy()
            ap, _ = basis.held_out_ap(store, held, concepts, raw_w, raw_b)
            results[name] = w
            rows.append([name, seconds, pairs / seconds, float(np.nanmean(ap))])
        diff_paper = float((results["paper batched"] - results["paper per-concept"]).abs().max())

        # authors: raw features, 1 positive : 2 negatives, sigmoid + MSE, SGD, batch 128
        authors = basis.Settings.for_procedure("authors")
        negatives = basis.random_negatives(bank, 2 * bank.num_positives, (0,))
        sets = [
            torch.cat([bank.positive[:, c].nonzero(), negatives[:, c].nonzero()]).flatten().numpy()
            for c in range(len(concepts))
        ]
        pairs = sum(len(s) for s in sets) * args.epochs
        init = torch.zeros(len(concepts), store.dim), torch.zeros(len(concepts))

        def batched() -> tuple[torch.Tensor, torch.Tensor]:
            w, b = init[0].clone(), init[1].clone()
            for epoch in range(args.epochs):
                rngs = [np.random.default_rng([0, c, epoch]) for c in range(len(concepts))]
                basis.sgd_epoch_mse(
                    bank.x, bank.y, sets, w, b, batch=authors.batch_size, lr=authors.lr, rngs=rngs
                )
            return w, b

        def looped() -> tuple[torch.Tensor, torch.Tensor]:
            w, b = init[0].clone(), init[1].clone()
            for c in range(len(concepts)):
                wc, bc = w[c : c + 1].clone(), b[c : c + 1].clone()
                for epoch in range(args.epochs):
                    rngs = [np.random.default_rng([0, c, epoch])]
                    basis.sgd_epoch_mse(
                        bank.x,
                        bank.y[:, c : c + 1],
                        [sets[c]],
                        wc,
                        bc,
                        batch=authors.batch_size,
                        lr=authors.lr,
                        rngs=rngs,
                    )
                w[c], b[c] = wc[0], bc[0]
            return w, b

        for name, run in (("authors batched", batched), ("authors per-concept", looped)):
            started = time.perf_counter()
            w, b = run()
            seconds = time.perf_counter() - started
            ap, _ = basis.held_out_ap(store, held, concepts, w.numpy(), b.numpy())
            results[name] = w
            rows.append([name, seconds, pairs / seconds, float(np.nanmean(ap))])
        diff_authors = float(
            (results["authors batched"] - results["authors per-concept"]).abs().max()
        )

    print(f"\n{args.epochs} epochs each; pairs = (concept, feature vector) training samples")
    print(f"{'trainer':<22}{'seconds':>10}{'pairs/s':>14}{'mAP':>8}")
    for name, seconds, rate, m in rows:
        print(f"{name:<22}{seconds:>10.2f}{rate:>14.3g}{m:>8.3f}")
    print(
        f"\npaper: batched is {rows[1][1] / rows[0][1]:.1f}x faster than per-concept "
        f"(max |w difference| {diff_paper:.1e})"
    )
    print(
        f"authors: batched is {rows[3][1] / rows[2][1]:.1f}x faster than per-concept "
        f"(max |w difference| {diff_authors:.1e})"
    )


if __name__ == "__main__":
    main()
