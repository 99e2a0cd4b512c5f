"""Operations on raw heatmaps (N x H x W, at feature resolution): bilinear upsampling to an image
size and min-max scaling. Every method's maps, the pictures and the evaluation use these two, so
a map is resized and scaled the same way wherever it is shown or scored."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x H x W maps resized bilinearly (align_corners=False) to `size` = (H', W')."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def normalize(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each map min-max scaled to [0, 1] (a constant map becomes all zeros)."""
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    return (maps - low) / (high - low).clamp_min(eps)
