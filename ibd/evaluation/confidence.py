"""Average Drop and Increase in Confidence (Chattopadhyay, Sarkar, Howlader and Balasubramanian,
"Grad-CAM++", WACV 2018, section 6.1.1).

The explanation map of image x (the model's input, after its normalisation) is

    E = x * s,   s = upsample(norm(S))

S the explanation's saliency map at feature resolution, min-max normalised to [0, 1] (a
constant map becomes 0) and upsampled bilinearly (align_corners=False) to the input size, one
factor for all three channels. With Y = softmax(f(x))_k and O = softmax(f(E))_k the explained
class k's probability on the image and on its explanation map:

    drop = max(0, Y - O) / (Y + 1e-7) * 100      increase = [O > Y]

Average Drop (lower is better) is the mean drop over the images, in percent; Increase in
Confidence (higher is better) the share of images with O > Y, in percent. The definitions are
torch-cam's (`torchcam.metrics.ClassificationMetric`, which follows Grad-CAM++): the map is
normalised, then upsampled bilinearly and multiplied onto the normalised input tensor (so a
pixel the map gives 0 becomes the mean colour, the deletion curves' baseline), the drop is
relative to Y with the same 1e-7, and the class is the explained one (top-1 by default, as
torch-cam's default). torch-cam's `summary()` gives both as fractions; here they are times 100,
as Grad-CAM++'s tables print them. (pytorch-grad-cam's `DropInConfidence` is the absolute drop
max(0, Y - O), not divided by Y, so its figures do not compare.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ibd.explain.maps import normalize, upsample

EPS = 1e-7  # torch-cam's guard against Y = 0

# (images B x 3 x H x W, targets B) -> each target's softmax probability, B
ProbabilityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Confidence:
    """One explanation's class probability on its image (Y) and on its explanation map (O)."""

    clean: float
    masked: float

    @property
    def drop(self) -> float:
        """max(0, Y - O) / (Y + 1e-7) * 100."""
        return max(0.0, self.clean - self.masked) / (self.clean + EPS) * 100.0

    @property
    def increase(self) -> bool:
        return self.masked > self.clean


def explanation_maps(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """E = x * upsample(norm(S)) for N images (N x 3 x H x W) and their N x h x w maps."""
    scale = upsample(normalize(maps.to(images.dtype)), (images.shape[2], images.shape[3]))
    return images * scale[:, None]


def confidences(
    probability: ProbabilityFn,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 64,
) -> list[Confidence]:
    """Y and O (module docstring) of each image under its map (feature resolution)."""
    if maps.shape[0] != images.shape[0]:
        raise ValueError("need one map per image")
    inputs = torch.cat([images, explanation_maps(images, maps)])
    labels = torch.cat([targets, targets])
    scores = torch.cat(
        [
            probability(inputs[s : s + batch_size], labels[s : s + batch_size]).detach().cpu()
            for s in range(0, inputs.shape[0], batch_size)
        ]
    )
    values = scores.double().numpy().reshape(2, -1)
    return [Confidence(float(y), float(o)) for y, o in zip(values[0], values[1], strict=True)]


def average_drop(found: list[Confidence]) -> float:
    """Mean drop over the explanations, in percent (nan when none)."""
    return float(np.mean([c.drop for c in found])) if found else float("nan")


def increase_in_confidence(found: list[Confidence]) -> float:
    """Share of the explanations whose map raises the class probability, in percent."""
    return float(np.mean([c.increase for c in found]) * 100.0) if found else float("nan")
