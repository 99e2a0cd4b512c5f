"""CAM and Grad-CAM against values worked out by hand, and the GAP identities."""

from __future__ import annotations

import pytest
import torch
import torchvision
from tinynets import GapHead, ProductHead, x_1234

from ibd.explain import cam, maps
from ibd.nets import hooks
from ibd.nets.load import final_linear


def close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def test_cam_by_hand() -> None:
    model = GapHead().eval()
    fwd = hooks.run(model, "features", x_1234(), torch.tensor([1]))
    # logit_1 = 0.5 * mean(x) - 1 * mean(2x) + 0.2 = 1.25 - 5 + 0.2
    assert fwd.logits[0].tolist() == pytest.approx([2.6, -3.55])
    weight, bias = final_linear(model)
    for k, expected in ((0, [[1, 2], [3, 4]]), (1, [[-1.5, -3], [-4.5, -6]])):
        m = cam.cam(fwd.features, weight, torch.tensor([k]))
        close(m[0], expected)
        with_bias = cam.cam(fwd.features, weight, torch.tensor([k]), bias)
        assert float(with_bias.mean()) == pytest.approx(float(fwd.logits[0, k]))
    relu = cam.cam(fwd.features, weight, torch.tensor([1]), relu=True)
    assert relu[0].tolist() == [[0, 0], [0, 0]]


def test_gradcam_by_hand_on_a_non_gap_head() -> None:
    model = ProductHead().eval()
    # class 0: dh/dA0 = A1 = 2x (mean 5), dh/dA1 = A0 = x (mean 2.5) -> map 5x + 2.5 * 2x = 10x
    fwd = hooks.run(model, "features", x_1234(), torch.tensor([0]), gradients=True)
    assert cam.gradcam_weights(fwd.gradients)[0].tolist() == pytest.approx([5.0, 2.5])
    close(cam.gradcam(fwd.features, fwd.gradients)[0], [[10, 20], [30, 40]])
    # class 1: gradient 1 at the max of A0 (position 1,1) -> weights (1/4, 0) -> map x / 4
    fwd = hooks.run(model, "features", x_1234(), torch.tensor([1]), gradients=True)
    close(cam.gradcam(fwd.features, fwd.gradients)[0], [[0.25, 0.5], [0.75, 1.0]])
    weight, bias = torch.eye(2), torch.zeros(2)
    assert not cam.is_gap_linear(fwd.features, fwd.logits, weight, bias)


def test_gradcam_on_gap_model_is_cam_over_hw() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    x = torch.randn(2, 3, 96, 96)
    targets = torch.tensor([3, 5])
    fwd = hooks.run(model, "layer4", x, targets, gradients=True)
    weight, bias = final_linear(model)
    h, w = fwd.features.shape[2:]
    assert cam.is_gap_linear(fwd.features, fwd.logits, weight, bias)
    torch.testing.assert_close(
        cam.gradcam_weights(fwd.gradients), weight[targets] / (h * w), rtol=0, atol=1e-7
    )
    torch.testing.assert_close(
        cam.gradcam(fwd.features, fwd.gradients),
        cam.cam(fwd.features, weight, targets) / (h * w),
        rtol=1e-5,
        atol=1e-6,
    )


def test_batch_with_per_sample_targets_equals_single_runs() -> None:
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(3, 3, 64, 64)
    targets = torch.tensor([0, 4, 9])
    batch = hooks.run(model, "layer4", x, targets, gradients=True)
    weight, _ = final_linear(model)
    batch_cam = cam.cam(batch.features, weight, targets)
    batch_grad = cam.gradcam(batch.features, batch.gradients)
    for i in range(3):
        one = hooks.run(model, "layer4", x[i : i + 1], targets[i : i + 1], gradients=True)
        torch.testing.assert_close(
            batch_cam[i], cam.cam(one.features, weight, targets[i : i + 1])[0]
        )
        torch.testing.assert_close(batch_grad[i], cam.gradcam(one.features, one.gradients)[0])


def test_upsample_and_normalize() -> None:
    heat = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])
    up = maps.upsample(heat, (4, 4))
    assert up.shape == (1, 4, 4)
    # bilinear, align_corners=False: corners replicate, the centre 2x2 mixes
    assert up[0, 0, 0] == 0.0 and up[0, 3, 3] == 6.0
    assert up[0, 1, 1].item() == pytest.approx(0.75 * 0.75 * 0 + 0.75 * 0.25 * (2 + 4) + 0.0625 * 6)
    norm = maps.normalize(heat)
    close(norm[0], [[0, 1 / 3], [2 / 3, 1]])
    assert maps.normalize(torch.ones(1, 2, 2)).abs().sum() == 0
