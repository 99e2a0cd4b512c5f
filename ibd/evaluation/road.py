"""ROAD: Remove And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML 2022).

Removing pixels by painting them a constant colour (the deletion curve's baseline) leaks the
shape of the removed region into the image: a model can read the class off the mask itself
(the paper's section 3, "class information leakage"). ROAD removes pixels by *noisy linear
imputation* (section 4), which fills them from their surroundings so that the mask carries as
little information as possible:

Each removed pixel i of the set R takes the weighted mean of its 8 neighbours N(i) inside the
image, direct neighbours weighted 1 and diagonal ones 1/2 (the paper's 1/6 and 1/12, scaled),
and a removed neighbour counts with its own imputed value. Per channel this is the sparse linear
system over the removed pixels

    (sum_{j in N(i)} w_ij) x_i - sum_{j in N(i) ∩ R} w_ij x_j = sum_{j in N(i) \\ R} w_ij x_j

(symmetric and, when some pixel is kept, positive definite: every connected part of R touches a
kept pixel), solved exactly by sparse LU (scipy). Then Gaussian noise of standard deviation
sigma (ROAD's default 0.01; 0 gives the plain linear imputation) is added to every removed
pixel and channel: x_i <- x_i + sigma eps_i. The imputation runs on the model's input, after
its normalisation, as pytorch-grad-cam's ROAD metrics apply it.

The saliency map (the model's input size) orders the pixels, most salient first (ties by pixel
index, as the deletion curve). At removal percentage p of N pixels, n_p = floor(p N / 100):

- MoRF (most relevant first): the n_p most salient pixels are imputed. A faithful map makes the
  class score fall fast: lower is better.
- LeRF (least relevant first): the n_p least salient pixels are imputed. A faithful map keeps
  the class score: higher is better.

Each (image, order, p) is scored with the explained class's score f (softmax probability by
default), and whether the explained class is still the model's top-1 class; the paper plots the
accuracy of the model on the imputed images against p, which the top-1 share is for the
explained (by default top-1) class. An explanation's ROAD MoRF / LeRF is the mean of f over the
percentages. The noise is drawn from a generator seeded by (seed, image position, order, p), so
a score does not depend on batching and every method of one image meets the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

# (row offset, column offset, weight): direct neighbours 1, diagonal 1/2
NEIGHBOURS = (
    (-1, 0, 1.0),
    (1, 0, 1.0),
    (0, -1, 1.0),
    (0, 1, 1.0),
    (-1, -1, 0.5),
    (-1, 1, 0.5),
    (1, -1, 0.5),
    (1, 1, 0.5),
)
NOISE = 0.01  # ROAD's default standard deviation of the imputation noise
# The default removal percentages: pytorch-grad-cam's `ROADCombined` grid. The paper's figures
# run 10, 20, ..., 90 (`ibd evaluate --road-percentages`), which costs two to three times as
# much: the sparse solves of the large removals dominate (docs/evaluate.md, section 3).
PERCENTAGES = (20, 40, 60, 80)
PAPER_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ORDERS = ("morf", "lerf")

# (images B x 3 x H x W, targets B) -> (the targets' scores B, whether each target is top-1 B)
OutputFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _system(
    removed: np.ndarray, pixels: np.ndarray
) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """(A, B, removed indices) of the module docstring's system for an H x W `removed` mask
    and C x H x W `pixels`: A x = B, one column of B per channel."""
    height, width = removed.shape
    flat = removed.reshape(-1)
    unknown = np.flatnonzero(flat)
    variable = np.full(flat.size, -1)
    variable[unknown] = np.arange(unknown.size)
    rows, cols = np.divmod(unknown, width)
    values = pixels.reshape(pixels.shape[0], -1)
    diagonal = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, values.shape[0]))
    entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for dr, dc, weight in NEIGHBOURS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        equation = np.flatnonzero(inside)
        neighbour = (r * width + c)[inside]
        diagonal[equation] += weight
        also_removed = flat[neighbour]
        kept = ~also_removed
        entries.append(
            (
                equation[also_removed],
                variable[neighbour[also_removed]],
                np.full(int(also_removed.sum()), -weight),
            )
        )
        # one offset gives each equation at most one neighbour: no repeated index here
        rhs[equation[kept]] += weight * values[:, neighbour[kept]].T
    n = unknown.size
    row_index = np.concatenate([np.arange(n), *(e[0] for e in entries)])
    col_index = np.concatenate([np.arange(n), *(e[1] for e in entries)])
    data = np.concatenate([diagonal, *(e[2] for e in entries)])
    return sp.csc_matrix((data, (row_index, col_index)), shape=(n, n)), rhs, unknown


def impute(
    image: np.ndarray,
    removed: np.ndarray,
    noise: float = NOISE,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The C x H x W `image` with the pixels where `removed` (H x W, bool) is true replaced by
    ROAD's noisy linear imputation (module docstring); float64. `noise` 0 needs no `rng`."""
    removed = np.asarray(removed, dtype=bool)
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim != 3 or pixels.shape[1:] != removed.shape:
        raise ValueError("image must be C x H x W and the mask H x W")
    out = pixels.copy()
    if not removed.any():
        return out
    if removed.all():
        raise ValueError("cannot impute an image whose every pixel is removed")
    matrix, rhs, unknown = _system(removed, pixels)
    solved = spla.splu(
        matrix,
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    ).solve(rhs)
    flat = out.reshape(out.shape[0], -1)
    flat[:, unknown] = solved.T
    if noise > 0:
        if rng is None:
            raise ValueError("noisy imputation needs a random generator")
        flat[:, unknown] += noise * rng.standard_normal((out.shape[0], unknown.size))
    return out


def removal_counts(num_pixels: int, percentages: Sequence[int]) -> np.ndarray:
    """n_p = floor(p N / 100) for each percentage p."""
    return (np.asarray(percentages, dtype=np.int64) * num_pixels) // 100


def removal_masks(saliency: torch.Tensor, percentages: Sequence[int], order: str) -> np.ndarray:
    """P x H x W bool: mask p removes the n_p most (`morf`) or least (`lerf`) salient pixels of
    the H x W `saliency` (ties by pixel index: the earlier pixel counts as more salient)."""
    flat = saliency.detach().reshape(-1).cpu()
    ranking = torch.sort(flat, descending=True, stable=True).indices.numpy()
    rank = np.empty(flat.numel(), dtype=np.int64)
    rank[ranking] = np.arange(flat.numel())
    counts = removal_counts(flat.numel(), percentages)[:, None]
    if order == "morf":
        masks = rank[None, :] < counts
    elif order == "lerf":
        masks = rank[None, :] >= flat.numel() - counts
    else:
        raise ValueError(f"order must be morf or lerf, not {order}")
    return masks.reshape(len(percentages), *saliency.shape)


@dataclass(frozen=True)
class RoadCurves:
    """N images x P percentages: the explained class's score and whether it is top-1, per
    order (`morf`, `lerf`)."""

    percentages: tuple[int, ...]
    morf: np.ndarray
    lerf: np.ndarray
    morf_top1: np.ndarray
    lerf_top1: np.ndarray


def check_percentages(percentages: Sequence[int]) -> tuple[int, ...]:
    """The percentages as a sorted tuple of distinct integers in 1..99 (ValueError if not)."""
    found = tuple(sorted(set(percentages)))
    if not found or found[0] < 1 or found[-1] > 99:
        raise ValueError("ROAD percentages must be integers from 1 to 99")
    return found


def _imputed(
    image: torch.Tensor,
    saliency: torch.Tensor,
    percentages: Sequence[int],
    noise: float,
    seed: int,
    position: int,
) -> torch.Tensor:
    """The 2P inputs of one image: MoRF at each percentage, then LeRF."""
    pixels = image.detach().cpu().double().numpy()
    inputs = []
    for o, order in enumerate(ORDERS):
        for p, mask in zip(percentages, removal_masks(saliency, percentages, order), strict=True):
            rng = np.random.default_rng([seed, position, o, p])
            inputs.append(impute(pixels, mask, noise, rng))
    return torch.as_tensor(np.stack(inputs), dtype=image.dtype, device=image.device)


def road_curves(
    outputs: OutputFn,
    images: torch.Tensor,
    saliency: torch.Tensor,
    targets: torch.Tensor,
    positions: Sequence[int],
    *,
    percentages: Sequence[int] = PERCENTAGES,
    noise: float = NOISE,
    seed: int = 0,
    batch_size: int = 64,
) -> RoadCurves:
    """ROAD MoRF and LeRF scores of N images (N x 3 x H x W, the model's input) under their
    saliency maps (N x H x W, the input size). `positions`: each image's number for the noise
    seed (its dataset index), so that the noise does not depend on the batch."""
    if saliency.shape[0] != images.shape[0] or saliency.shape[1:] != images.shape[2:]:
        raise ValueError("saliency must be N x H x W matching the images")
    kept = check_percentages(percentages)
    width = len(kept)
    inputs = torch.cat(
        [
            _imputed(images[n], saliency[n], kept, noise, seed, positions[n])
            for n in range(images.shape[0])
        ]
    )
    labels = targets.repeat_interleave(2 * width)
    scores, top1 = [], []
    for start in range(0, inputs.shape[0], batch_size):
        s, t = outputs(inputs[start : start + batch_size], labels[start : start + batch_size])
        scores.append(s.detach().double().cpu())
        top1.append(t.detach().cpu())
    grid = torch.cat(scores).numpy().reshape(-1, 2, width)
    hits = torch.cat(top1).numpy().reshape(-1, 2, width).astype(np.float64)
    return RoadCurves(kept, grid[:, 0], grid[:, 1], hits[:, 0], hits[:, 1])


@dataclass(frozen=True)
class RoadScores:
    """One explanation's ROAD: the mean over the percentages of the class score (`morf`,
    `lerf`) and of whether the class stays top-1 (`morf_top1`, `lerf_top1`)."""

    morf: float
    lerf: float
    morf_top1: float
    lerf_top1: float


def per_image(curves: RoadCurves) -> list[RoadScores]:
    """Each image's RoadScores."""
    means = [getattr(curves, f).mean(axis=1) for f in ("morf", "lerf", "morf_top1", "lerf_top1")]
    return [RoadScores(*map(float, values)) for values in zip(*means, strict=True)]


def mean_curves(curves: Sequence[RoadCurves]) -> RoadCurves:
    """The mean over the images of several RoadCurves of the same percentages (1-D fields)."""
    fields = ("morf", "lerf", "morf_top1", "lerf_top1")
    means = [np.concatenate([getattr(c, f) for c in curves]).mean(axis=0) for f in fields]
    return RoadCurves(curves[0].percentages, *means)
