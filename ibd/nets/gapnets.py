"""AlexNet and VGG16 with their fully connected layers replaced by global average pooling, as the
paper's footnote 2 and CAM (Zhou et al. 2016) do, so that IBD's linear decomposition applies.

Following CAM: drop the last max-pool and everything after conv5, add a 3x3 convolution with 1024
units + ReLU, then GAP and one linear layer. The convolutional trunk keeps torchvision's module
indices, so torchvision / Places365 AlexNet and VGG16 weights load into it (`load_trunk`) and only
the new head (`head_parameters`) needs training: `ibd train --arch alexnet_gap --init-from ...`.
Feature layer `features`: 13 x 13 (AlexNet) or 14 x 14 (VGG16) at 224 px.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torchvision
from torch import nn

from ibd.errors import UserError
from ibd.nets.architectures import ArchSpec
from ibd.nets.load import mismatches

HEAD_UNITS = 1024


class GapNet(nn.Module):
    """features (trunk + 3x3 conv + ReLU) -> global average pooling -> linear."""

    def __init__(self, trunk: nn.Sequential, trunk_channels: int, num_classes: int) -> None:
        super().__init__()
        layers = list(trunk)
        self.trunk_length = len(layers)
        self.features = nn.Sequential(
            *layers,
            nn.Conv2d(trunk_channels, HEAD_UNITS, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(HEAD_UNITS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def alexnet_gap(num_classes: int) -> GapNet:
    trunk = torchvision.models.alexnet(weights=None).features[:-1]  # drop pool5
    return GapNet(trunk, 256, num_classes)


def vgg16_gap(num_classes: int) -> GapNet:
    trunk = torchvision.models.vgg16(weights=None).features[:-1]  # drop pool5
    return GapNet(trunk, 512, num_classes)


def trunk_names(model: GapNet) -> list[str]:
    """State-dict names of the torchvision conv trunk (`features.0` .. before the added layers)."""
    return [
        k
        for k in model.state_dict()
        if k.startswith("features.") and int(k.split(".")[1]) < model.trunk_length
    ]


def load_trunk(model: GapNet, state: dict[str, torch.Tensor]) -> int:
    """Copy the `features.<i>` tensors of a torchvision AlexNet/VGG16 state dict (keys already
    without DataParallel's `module`) into the trunk; returns how many were copied.

    The whole trunk must come from the file: a tensor missing or of another shape (a VGG16-BN
    state dict, whose layer indices differ) is an error, not a layer silently left random."""
    own = model.state_dict()
    trunk_keys = trunk_names(model)
    problems = mismatches(state, own, trunk_keys)
    if problems:
        raise UserError(
            "weights do not fit the GAP network's torchvision conv trunk "
            f"(features.0-{model.trunk_length - 1}): {'; '.join(problems)}"
        )
    model.load_state_dict({k: state[k] for k in trunk_keys}, strict=False)
    return len(trunk_keys)


def head_parameters(model: GapNet) -> Iterator[nn.Parameter]:
    """Parameters of the new layers (the added convolution and the classifier)."""
    for index, layer in enumerate(model.features):
        if index >= model.trunk_length:
            yield from layer.parameters()
    yield from model.fc.parameters()


SPECS = [
    ArchSpec("alexnet_gap", alexnet_gap, "features", description="AlexNet conv1-5 + conv + GAP"),
    ArchSpec("vgg16_gap", vgg16_gap, "features", description="VGG16 conv1-5 + conv + GAP"),
]
