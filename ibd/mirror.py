"""The mirrored network of the paper's Fig. 9 (`resnet50*`): every convolution kernel flipped
horizontally.

For a convolution with stride 1 and symmetric padding, conv(x; flip(k)) = flip(conv(flip(x); k)),
so a network built only of such layers, pointwise ops and global pooling satisfies
mirror(m)(x) == m(flip(x)). With strides or asymmetric padding the equality is only approximate:
the mirrored network has (nearly) the same accuracy but different explanations.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def mirror(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with every Conv2d kernel flipped left-right; `model` is untouched."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(module.weight.flip(-1))
    return twin
