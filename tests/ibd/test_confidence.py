"""Average Drop and Increase in Confidence on a model whose class probabilities are known: the
logit of class 0 is 2 x the image's mean of channel 0, class 1's is 0."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ibd.evaluation.confidence import (
    Confidence,
    average_drop,
    confidences,
    explanation_maps,
    increase_in_confidence,
)
from ibd.evaluation.faithfulness import class_score


class MeanLogit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.scale * x[:, 0].mean(dim=(1, 2))
        return torch.stack([first, torch.zeros_like(first)], dim=1)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_drop_and_increase_by_hand() -> None:
    """A white 4 x 4 image and a map at the input size that keeps its top half (values 5, the
    bottom 1: min-max normalised to 1 and 0). On the image the mean is 1, on E = x * s it is
    0.5: class 0 goes from sigmoid(2) to sigmoid(1) (a drop), class 1 from 1 - sigmoid(2) to
    1 - sigmoid(1) (an increase)."""
    images = torch.ones(2, 3, 4, 4)
    maps = torch.ones(2, 4, 4)
    maps[:, :2] = 5.0
    targets = torch.tensor([0, 1])
    found = confidences(class_score(MeanLogit(), "probability"), images, maps, targets, 3)
    y0, o0 = sigmoid(2.0), sigmoid(1.0)
    assert (found[0].clean, found[0].masked) == (pytest.approx(y0), pytest.approx(o0))
    assert (found[1].clean, found[1].masked) == (pytest.approx(1 - y0), pytest.approx(1 - o0))
    drop0 = (y0 - o0) / (y0 + 1e-7) * 100
    assert found[0].drop == pytest.approx(drop0) and not found[0].increase
    assert found[1].drop == 0.0 and found[1].increase
    assert average_drop(found) == pytest.approx(drop0 / 2)
    assert increase_in_confidence(found) == 50.0
    assert math.isnan(average_drop([])) and math.isnan(increase_in_confidence([]))


def test_explanation_map_is_normalised_and_upsampled() -> None:
    """A 2 x 2 map [[0, 4], [0, 4]] becomes [[0, 1], [0, 1]], upsampled bilinearly
    (align_corners=False) to 4 x 4 columns 0, 0.25, 0.75, 1; a constant map gives 0."""
    images = torch.full((2, 3, 4, 4), 2.0)
    maps = torch.tensor([[[0.0, 4.0], [0.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]]])
    out = explanation_maps(images, maps)
    torch.testing.assert_close(out[0, 1, 2], torch.tensor([0.0, 0.5, 1.5, 2.0]))
    assert out[1].abs().max() == 0


def test_drop_is_relative_to_the_clean_probability() -> None:
    assert Confidence(0.5, 0.25).drop == pytest.approx(50.0, rel=1e-6)
    assert Confidence(0.5, 0.75).drop == 0.0 and Confidence(0.5, 0.75).increase
    assert not Confidence(0.5, 0.5).increase
