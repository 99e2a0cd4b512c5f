"""Deletion and insertion curves (Petsiuk, Das and Saenko, "RISE", BMVC 2018, section 4.1).

A saliency map S (H x W at the model's input size) orders the pixels, most salient first (ties
by pixel index, row-major). With N pixels and `steps` steps, n_t = floor(t N / steps) pixels are
changed at step t = 0..steps, and f(x) is the model's score for the explained class:

- deletion:  x_t = image with its first n_t pixels replaced by the deletion baseline;
- insertion: x_t = insertion baseline with its first n_t pixels taken from the image.

The curve is f(x_t) against the fraction n_t / N and its area is the trapezoid rule over [0, 1].
A faithful map makes the deletion score fall fast (low deletion AUC) and the insertion score rise
fast (high insertion AUC). Baselines as in RISE: deletion replaces pixels with the dataset mean
colour (zero after the model's normalisation), insertion starts from a Gaussian-blurred copy of
the image (kernel 11, sigma 5, RISE's setting). A pixel's three channels move together.

For a map with several components (IBD, Network Dissection), S = sum_i c_i norm(h_i), the
components' heatmaps min-max normalised to [0, 1] and weighted by their contributions c_i to the
logit (`combine`), or only the top component's heatmap. The random-heatmap control draws i.i.d.
uniform values at feature resolution from a generator seeded by (seed, image position), so it
is reproducible whatever the batching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn
from tqdm import tqdm

from ibd.explain.maps import normalize
from ibd.nets.hooks import eval_mode

# (images B x 3 x H x W, target classes B) -> the score of each image's target, B
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


@dataclass
class Curves:
    """`fractions` (steps + 1) of pixels changed; `deletion` and `insertion` N x (steps + 1)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        return auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> np.ndarray:
        return auc(self.fractions, self.insertion)


def auc(fractions: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Trapezoid-rule area under scores(fractions), along the last axis."""
    return np.trapezoid(np.asarray(scores, dtype=np.float64), np.asarray(fractions), axis=-1)


def step_counts(num_pixels: int, steps: int) -> np.ndarray:
    """n_t = floor(t N / steps) for t = 0..steps (so n_0 = 0 and n_steps = N)."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    return (np.arange(steps + 1) * num_pixels) // steps


def changed_masks(saliency: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps + 1) x H x W: mask t is true on the n_t most salient pixels."""
    flat = saliency.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(flat.numel(), device=order.device)
    counts = torch.as_tensor(step_counts(flat.numel(), steps), device=flat.device)
    return (rank[None, :] < counts[:, None]).reshape(steps + 1, *saliency.shape)


def perturbed(
    image: torch.Tensor, saliency: torch.Tensor, baseline: torch.Tensor, steps: int, mode: str
) -> torch.Tensor:
    """The (steps + 1) x 3 x H x W inputs of one curve (`mode` deletion or insertion)."""
    masks = changed_masks(saliency, steps)[:, None]
    if mode == "deletion":
        return torch.where(masks, baseline[None], image[None])
    if mode == "insertion":
        return torch.where(masks, image[None], baseline[None])
    raise ValueError(f"mode must be deletion or insertion, not {mode}")


def blur(images: torch.Tensor) -> torch.Tensor:
    """RISE's insertion baseline: a Gaussian blur (kernel 11, sigma 5) of each image; the
    kernel shrinks to 2 min(H, W) - 1 on images too small for its reflected border."""
    size = min(BLUR_KERNEL, 2 * min(images.shape[-2:]) - 1)
    return TF.gaussian_blur(images, [size, size], [BLUR_SIGMA, BLUR_SIGMA])


def curves(
    score: ScoreFn,
    images: torch.Tensor,
    saliency: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = 20,
    deletion_baseline: torch.Tensor | None = None,
    insertion_baseline: torch.Tensor | None = None,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "faithfulness",
) -> Curves:
    """Deletion and insertion curves of N images (N x 3 x H x W) under their saliency maps
    (N x H x W, the image size). Baselines default to zeros (deletion) and `blur(images)`
    (insertion). Every perturbed input goes through `score` in batches of `batch_size`."""
    if saliency.shape[0] != images.shape[0] or saliency.shape[1:] != images.shape[2:]:
        raise ValueError("saliency must be N x H x W matching the images")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    n = images.shape[0]
    removal = torch.zeros_like(images) if deletion_baseline is None else deletion_baseline
    start = blur(images) if insertion_baseline is None else insertion_baseline
    width = steps + 1
    out = {"deletion": np.zeros((n, width)), "insertion": np.zeros((n, width))}
    per_pass = max(1, batch_size // (2 * width))
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    for first in range(0, n, per_pass):
        chunk = range(first, min(n, first + per_pass))
        inputs = torch.cat(
            [
                perturbed(images[i], saliency[i], base[i], steps, mode)
                for i in chunk
                for mode, base in (("deletion", removal), ("insertion", start))
            ]
        )
        labels = targets[list(chunk)].repeat_interleave(2 * width)
        scores = torch.cat(
            [
                score(inputs[s : s + batch_size], labels[s : s + batch_size])
                for s in range(0, inputs.shape[0], batch_size)
            ]
        )
        grid = scores.detach().double().cpu().numpy().reshape(len(chunk), 2, width)
        out["deletion"][chunk.start : chunk.stop] = grid[:, 0]
        out["insertion"][chunk.start : chunk.stop] = grid[:, 1]
        bar.update(len(chunk))
    bar.close()
    fractions = step_counts(images.shape[2] * images.shape[3], steps) / (
        images.shape[2] * images.shape[3]
    )
    return Curves(fractions, out["deletion"], out["insertion"])


def class_score(model: nn.Module, kind: str = "probability") -> ScoreFn:
    """f(x) = softmax(model(x))[k] (`probability`, RISE's choice) or the logit model(x)[k].

    The model runs in eval mode (its own mode restored after each call): in training mode batch
    norm would score each image by its batch's statistics, so a curve would depend on which
    perturbed inputs share a batch, and every call would overwrite the running statistics."""
    outputs = class_outputs(model, kind)

    def score(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return outputs(images, targets)[0]

    return score


def class_outputs(
    model: nn.Module, kind: str = "probability"
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """`class_score`'s f(x), and whether the target k is the model's top-1 class (argmax of the
    logits, the first on a tie) for each image."""
    if kind not in ("probability", "logit"):
        raise ValueError(f"score must be probability or logit, not {kind}")

    def outputs(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with eval_mode(model), torch.no_grad():
            logits = model(images).float()
        values = torch.softmax(logits, dim=1) if kind == "probability" else logits
        chosen = targets[:, None].to(values.device)
        return values.gather(1, chosen)[:, 0], logits.argmax(dim=1) == chosen[:, 0]

    return outputs


def combine(heatmaps: Sequence[np.ndarray], contributions: Sequence[float]) -> np.ndarray:
    """S = sum_i c_i norm(h_i): min-max normalised component maps weighted by contribution."""
    if not heatmaps or len(heatmaps) != len(contributions):
        raise ValueError("need one contribution per heatmap, at least one")
    maps = normalize(torch.as_tensor(np.stack(heatmaps), dtype=torch.float64))
    weights = torch.as_tensor(np.asarray(contributions, dtype=np.float64))
    return torch.einsum("n,nhw->hw", weights, maps).numpy()


def random_heatmap(shape: Sequence[int], seed: int, position: int) -> np.ndarray:
    """The random control's map for the image at `position`: uniform [0, 1) values from a
    generator seeded by (seed, position)."""
    rng = np.random.default_rng([seed, position])
    return rng.random(tuple(shape)).astype(np.float32)
