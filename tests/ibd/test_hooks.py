"""Feature capture: hooks always removed, gradients without touching .grad, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from tinynets import GapHead, x_1234
from torch import nn

from ibd.errors import UserError
from ibd.nets import hooks


def test_hook_removed_on_normal_exit_and_on_error() -> None:
    model = GapHead()
    with hooks.capture(model, "features") as slot:
        model(x_1234())
    assert slot.activation is not None
    assert not model.features._forward_hooks
    with pytest.raises(ZeroDivisionError), hooks.capture(model, "features"):
        _ = 1 / 0
    assert not model.features._forward_hooks


def test_gradients_leave_parameter_grads_alone() -> None:
    model = GapHead().eval()
    fwd = hooks.run(model, "features", x_1234(), gradients=True)
    assert fwd.gradients is not None
    assert all(p.grad is None for p in model.parameters())
    assert not model.features._forward_hooks


def test_gradients_of_a_frozen_model_equal_those_of_a_trainable_one() -> None:
    model = GapHead().eval()
    expected = hooks.run(model, "features", x_1234(), gradients=True).gradients
    model.requires_grad_(False)
    fwd = hooks.run(model, "features", x_1234(), gradients=True)
    assert fwd.gradients is not None and expected is not None
    torch.testing.assert_close(fwd.gradients, expected)
    assert not fwd.features.requires_grad


def test_gradients_under_no_grad_is_a_clear_error() -> None:
    model = GapHead().eval()
    with torch.no_grad(), pytest.raises(hooks.GradientsDisabledError, match="no_grad"):
        hooks.run(model, "features", x_1234(), gradients=True)
    with torch.no_grad():  # features alone are fine without autograd
        assert hooks.run(model, "features", x_1234()).gradients is None


class InplaceAfterLayer(nn.Module):
    """Like DenseNet: the captured layer is followed by an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.features(x), inplace=True).sum(dim=(2, 3)) + x.sum(dim=(2, 3))


def test_inplace_op_after_layer_does_not_change_capture() -> None:
    fwd = hooks.run(InplaceAfterLayer().eval(), "features", x_1234(), gradients=True)
    assert fwd.features[0, 0].tolist() == [[-1.0, -2.0], [-3.0, -4.0]]
    assert fwd.gradients[0, 0].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # ReLU blocks negatives


def test_unknown_layer_and_bad_targets() -> None:
    model = GapHead()
    with pytest.raises(UserError, match="no layer named 'conv9'.*features"):
        hooks.run(model, "conv9", x_1234())
    with pytest.raises(UserError, match="out of range"):
        hooks.run(model, "features", x_1234(), torch.tensor([5]))
    with pytest.raises(UserError, match="not an N x D x H x W"):
        hooks.run(model, "fc", x_1234())
    assert not model.fc._forward_hooks


class SideBranch(GapHead):
    """`side` runs in the forward pass but the logits never use it."""

    def __init__(self) -> None:
        super().__init__()
        self.side = nn.Conv2d(1, 2, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        return super().forward(x)


@pytest.mark.parametrize("frozen", [False, True])
def test_gradients_of_a_layer_the_scores_do_not_use_is_a_clear_error(frozen: bool) -> None:
    model = SideBranch().eval().requires_grad_(not frozen)
    with pytest.raises(UserError, match="do not depend on layer 'side'"):
        hooks.run(model, "side", x_1234(), gradients=True)
    assert not model.side._forward_hooks
    # its activation alone is still there to be had
    assert hooks.run(model, "side", x_1234()).features.shape == (1, 2, 2, 2)


def full_graph(
    model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The path before the graph started at the layer: a plain hook, autograd through the whole
    network, dScore/dA by `torch.autograd.grad`."""
    kept: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), kept[0])[0]
    return kept[0].detach(), grads


def test_graph_from_the_layer_equals_the_full_graph_and_restores_grad_mode(
    one_torch_thread: None,
) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 7, 3])
    fwd = hooks.run(model, "layer4", x, targets, gradients=True)
    features, grads = full_graph(model, "layer4", x, targets)
    assert fwd.gradients is not None
    torch.testing.assert_close(fwd.features, features, rtol=0, atol=1e-6)
    torch.testing.assert_close(fwd.gradients, grads, rtol=0, atol=1e-7)
    assert torch.is_grad_enabled()
    # no graph before the layer: nothing upstream of layer4 was recorded
    assert fwd.features.grad_fn is None and all(p.grad is None for p in model.parameters())


def test_grad_mode_is_restored_when_the_forward_pass_raises() -> None:
    model = GapHead().eval()
    with pytest.raises(RuntimeError):
        hooks.run(model, "features", torch.ones(1, 3, 2, 2), gradients=True)  # 3 != 1 channel
    assert torch.is_grad_enabled()
    with torch.no_grad():
        with pytest.raises(RuntimeError):
            hooks.run(model, "features", torch.ones(1, 3, 2, 2))
        assert not torch.is_grad_enabled()


def test_gradcam_equals_captums_layer_gradcam(one_torch_thread: None) -> None:
    attr = pytest.importorskip("captum.attr")
    from ibd.explain import cam

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([4, 9])
    fwd = hooks.run(model, "layer4", x, targets, gradients=True)
    assert fwd.gradients is not None
    theirs = attr.LayerGradCam(model, model.layer4).attribute(x, target=targets)[:, 0]
    torch.testing.assert_close(
        cam.gradcam(fwd.features, fwd.gradients), theirs, rtol=1e-6, atol=1e-7
    )
