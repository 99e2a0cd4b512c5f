"""The mirrored network of the paper's Fig. 9 (`resnet50*`): every convolution kernel flipped
horizontally.

For a convolution with stride 1 and symmetric padding, conv(x; flip(k)) = flip(conv(flip(x); k)),
so a network built only of such layers, pointwise ops and global pooling satisfies
mirror(m)(x) == m(flip(x)). With strides or asymmetric padding the equality is only approximate:
the mirrored network has (nearly) the same accuracy but different explanations.

A network that flattens a spatial map into a linear layer (torchvision's AlexNet and VGG:
`avgpool` to 6 x 6 or 7 x 7, then `classifier`) reads that map position by position, so its
mirror also reverses the columns of that first linear layer along the width; otherwise the
mirrored features would meet the unmirrored classifier and the accuracy would collapse.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _flattened_linear(model: nn.Module) -> tuple[nn.Linear, int, int, int] | None:
    """(linear layer, channels, height, width) when `model` pools its features to an H x W > 1
    grid (`avgpool`) that its `classifier` flattens into a first linear layer, as torchvision's
    AlexNet and VGG do; None otherwise."""
    pool, head = getattr(model, "avgpool", None), getattr(model, "classifier", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or not isinstance(head, nn.Sequential):
        return None
    size = pool.output_size
    height, width = (size, size) if isinstance(size, int) else size
    if height is None or width is None or height * width == 1:
        return None
    first = next((m for m in head if isinstance(m, nn.Linear)), None)
    if first is None or first.in_features % (height * width):
        return None
    return first, first.in_features // (height * width), height, width


def mirror(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with every Conv2d kernel flipped left-right (and the columns of a
    linear layer that reads a flattened spatial map reversed along the width); `model` is
    untouched."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(module.weight.flip(-1))
        flattened = _flattened_linear(twin)
        if flattened is not None:
            linear, channels, height, width = flattened
            grid = linear.weight.view(linear.out_features, channels, height, width)
            linear.weight.copy_(grid.flip(-1).reshape(linear.out_features, -1))
    return twin
