"""Class decomposition speed: the batched greedy NNLS (`ibd.decomposition.greedy_nnls`) against the
literal loop over `scipy.optimize.nnls` for every candidate at every step (paper eq. 6).

Problem of the paper's size: 365 classes x 660 concepts x D=512, 7 concepts per class, on a
random standardised basis with correlated concepts. The brute force is run on a subset of the
classes (it takes ~0.5 s per class) and extrapolated per class to all of them; its answers on
that subset are checked against ours (same concepts, coefficients to 1e-6).

    .venv/bin/python benchmarks/decompose_speed.py [--brute-classes 8]

Target (issue 4): ours under 5 s on 2 CPU cores. BLAS threads are capped at 2 unless the
environment already sets them.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import nnls  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ibd.decomposition import gram_schmidt_pursuit, greedy_nnls  # noqa: E402


def problem(seed: int, classes: int, concepts: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(8, dim))
    q = rng.normal(size=(concepts, dim)) + rng.normal(size=(concepts, 8)) @ shared
    q -= q.mean(axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    mix = np.where(rng.random((classes, concepts)) < 0.01, rng.random((classes, concepts)), 0.0)
    return q, rng.normal(size=(classes, dim)) * 0.05 + mix @ q


def brute_force(q: np.ndarray, w: np.ndarray, steps: int, tol: float):
    chosen: list[int] = []
    coef = np.zeros(0)
    fraction, norm2 = 1.0, float(w @ w)
    for _ in range(steps):
        best = None
        for c in range(len(q)):
            if c in chosen:
                continue
            x, rnorm = nnls(q[[*chosen, c]].T, w)
            if np.all(x > 0) and (best is None or rnorm < best[0]):
                best = (rnorm, c, x)
        if best is None or fraction - best[0] ** 2 / norm2 < tol:
            break
        chosen.append(best[1])
        coef, fraction = best[2], best[0] ** 2 / norm2
    return chosen, coef


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=365)
    parser.add_argument("--concepts", type=int, default=660)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--brute-classes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    q, w = problem(args.seed, args.classes, args.concepts, args.dim)
    print(
        f"problem: {args.classes} classes x {args.concepts} concepts x D={args.dim}, "
        f"{args.steps} steps; {os.cpu_count()} CPUs visible, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        dec = greedy_nnls(q, w, max_concepts=args.steps, tol=args.tol)
        times.append(time.perf_counter() - start)
    ours = min(times)
    start = time.perf_counter()
    gram_schmidt_pursuit(q, w, max_concepts=args.steps)
    omp = time.perf_counter() - start

    subset = np.random.default_rng(args.seed + 1).choice(
        args.classes, size=args.brute_classes, replace=False
    )
    start = time.perf_counter()
    agree = True
    for k in tqdm(subset, desc="brute-force nnls", unit="class"):
        chosen, coef = brute_force(q, w[k], args.steps, args.tol)
        terms = dec.terms(int(k))
        agree &= [c for c, _ in terms] == chosen and np.allclose(
            [s for _, s in terms], coef, atol=1e-6, rtol=0
        )
    per_class = (time.perf_counter() - start) / len(subset)
    brute = per_class * args.classes

    print(f"ours (batched greedy NNLS, best of {args.repeats}): {ours:.3f} s")
    print(f"ours (--solver omp):                        {omp:.3f} s")
    print(
        f"brute force (scipy nnls per candidate): {per_class:.3f} s/class measured on "
        f"{len(subset)} classes, extrapolated to {args.classes} classes: {brute:.1f} s"
    )
    print(f"speed-up: {brute / ours:.0f}x")
    print(f"same concepts and coefficients (1e-6) on the brute-forced classes: {agree}")
    print(
        f"concepts per class: mean {dec.counts.mean():.2f}; "
        f"mean residual fraction: {dec.mean_residual_fraction:.3f}"
    )
    print(f"target < 5 s: {'met' if ours < 5.0 else 'NOT met'} ({ours:.3f} s)")


if __name__ == "__main__":
    main()
