"""Tiny networks whose CAM / Grad-CAM values can be worked out by hand."""

from __future__ import annotations

import torch
from torch import nn


class Doubler(nn.Module):
    """features: 1x1 conv 1 -> 2 channels with weights [1, 2], so A = (x, 2x)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1))


class GapHead(Doubler):
    """A -> GAP -> linear with W = [[1, 0], [0.5, -1]], b = [0.1, 0.2]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, -1.0]]))
            self.fc.bias.copy_(torch.tensor([0.1, 0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class ProductHead(Doubler):
    """Not GAP-linear: h_0 = sum_ij A0 * A1, h_1 = max_ij A0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        return torch.stack([(a[:, 0] * a[:, 1]).sum(dim=(1, 2)), a[:, 0].amax(dim=(1, 2))], 1)


def x_1234() -> torch.Tensor:
    """The 1 x 1 x 2 x 2 input [[1, 2], [3, 4]]."""
    return torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)


class PooledConv(nn.Module):
    """features: a seeded 3x3 conv 3 -> `channels` + ReLU + 4x4 average pooling (an 8 x 8 input
    gives 2 x 2 features, 32 x 32 gives 8 x 8); head: GAP and a linear layer to 2 classes."""

    def __init__(self, channels: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4)
        )
        self.fc = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))
