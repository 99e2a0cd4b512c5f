"""Token and channels-last layers read as N x D x H x W maps, with exact gradients."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from ibd.errors import UserError
from ibd.explain import cam, maps
from ibd.nets import hooks, tokens
from ibd.nets.tokens import CHANNELS_LAST, MAP, TOKENS, Layout


def tiny_vit(image_size: int = 32, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=8,
        num_layers=3,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=classes,
    ).eval()
    with torch.no_grad():  # torchvision starts the head at zero: every logit would be 0
        model.heads.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    return model


@pytest.mark.parametrize(
    ("shape", "size", "expected"),
    [
        ((2, 197, 768), (224, 224), Layout(TOKENS, 1, (14, 14))),  # vit_b_16: class token
        ((2, 201, 768), (224, 224), Layout(TOKENS, 5, (14, 14))),  # + 4 register tokens
        ((2, 1 + 4 * 6, 32), (64, 96), Layout(TOKENS, 1, (4, 6))),  # non-square input
        ((2, 24, 32), (96, 64), Layout(TOKENS, 0, (6, 4))),  # no extra token, portrait
        ((2, 7, 7, 768), (224, 224), Layout(CHANNELS_LAST)),  # Swin's last stage
        ((2, 56, 56, 96), (224, 224), Layout(CHANNELS_LAST)),  # ConvNeXt block internals
        ((2, 7, 10, 768), (224, 320), Layout(CHANNELS_LAST)),
        ((2, 512, 7, 7), (224, 224), Layout(MAP)),  # ResNet layer4
        ((2, 512, 7, 10), (224, 320), Layout(MAP)),
        ((1, 2, 2, 2), (2, 2), Layout(MAP)),  # ambiguous: channels-first, as every CNN
        ((2, 2048, 4, 5), (112, 150), Layout(MAP)),  # padding: ceil(112/32) x ceil(150/32)
    ],
)
def test_layout_detection(shape: tuple[int, ...], size: tuple[int, int], expected: Layout) -> None:
    assert tokens.detect(shape, size, "layer") == expected


def test_tokens_without_a_grid_and_other_ranks_are_one_line_errors() -> None:
    with pytest.raises(UserError, match="no patch grid of 50 tokens fits the 16x16 input"):
        tokens.detect((1, 50, 8), (16, 16), "blk")
    with pytest.raises(UserError, match=r"gives \(1, 10\), not an N x D x H x W"):
        tokens.detect((1, 10), (224, 224), "fc")


def test_to_map_and_back_round_trip() -> None:
    out = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # 1 extra + 2 x 3 grid
    layout = tokens.detect(tuple(out.shape), (16, 24), "x")
    assert layout == Layout(TOKENS, 1, (2, 3))
    a = tokens.to_map(out, layout)
    assert a.shape == (2, 3, 2, 3)
    # token 1 + 3 r + c holds position (r, c), channel d
    assert a[1, 2, 1, 0].item() == out[1, 1 + 3, 2].item()
    torch.testing.assert_close(tokens.from_map(a, out, layout), out, rtol=0, atol=0)
    nhwc = torch.randn(2, 4, 5, 8)
    back = tokens.from_map(tokens.to_map(nhwc, Layout(CHANNELS_LAST)), nhwc, Layout(CHANNELS_LAST))
    torch.testing.assert_close(back, nhwc, rtol=0, atol=0)


def full_graph_reference(
    model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor, extra: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM on a token layer by hand: a plain hook keeps the token output in the full graph,
    dScore/dtokens by autograd, then the patch tokens and their gradients laid out row by row."""
    kept: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    out = kept[0]
    grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), out)[0]
    n, t, d = out.shape
    side = int((t - extra) ** 0.5)

    def grid(v: torch.Tensor) -> torch.Tensor:
        return v[:, extra:].reshape(n, side, side, d).permute(0, 3, 1, 2)

    features, gradients = grid(out.detach()), grid(grads)
    weights = gradients.mean(dim=(2, 3))
    return features, (weights[:, :, None, None] * features).sum(dim=1)


def test_gradcam_on_a_vit_equals_the_full_graph_reference_by_hand() -> None:
    model = tiny_vit()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 3, 4])
    layer = "encoder.layers.encoder_layer_1"
    fwd = hooks.run(model, layer, x, targets, gradients=True)
    assert fwd.layout == Layout(TOKENS, 1, (4, 4))
    assert fwd.features.shape == (3, 16, 4, 4) and fwd.gradients is not None
    features, expected = full_graph_reference(model, layer, x, targets, extra=1)
    # without autograd, torch's attention takes its fused inference path: equal to float error
    torch.testing.assert_close(fwd.features, features, rtol=1e-5, atol=1e-5)
    ours = cam.gradcam(fwd.features, fwd.gradients)
    assert expected.abs().max() > 1e-3  # a real map, not zeros
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    # logits are those of the plain model
    with torch.no_grad():
        torch.testing.assert_close(fwd.logits, model(x), rtol=1e-5, atol=1e-5)
    assert not model.get_submodule(layer)._forward_hooks and not model._forward_pre_hooks


def test_gradcam_on_a_vit_equals_the_grad_cam_package() -> None:
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    layer = "encoder.layers.encoder_layer_1"

    def reshape_transform(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    theirs = pytorch_grad_cam.GradCAM(
        model=model,
        target_layers=[model.get_submodule(layer)],
        reshape_transform=reshape_transform,
    )
    package = theirs(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    fwd = hooks.run(model, layer, x, torch.tensor([1, 2]), gradients=True)
    assert fwd.gradients is not None
    ours = maps.normalize(
        maps.upsample(maps.normalize(cam.gradcam(fwd.features, fwd.gradients, relu=True)), (32, 32))
    )
    assert float(abs(ours.numpy() - package).max()) < 1e-4


def test_the_last_vit_blocks_patch_tokens_do_not_reach_the_scores() -> None:
    """Why the default ViT layer is the second-to-last block: after the last block only the class
    token goes on to the head, so the last block's patch tokens have zero gradient."""
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    last = hooks.run(model, "encoder.layers.encoder_layer_2", x, gradients=True).gradients
    before = hooks.run(model, "encoder.layers.encoder_layer_1", x, gradients=True).gradients
    assert last is not None and before is not None
    assert not last.any() and before.abs().amax() > 1e-4


def test_swin_channels_last_stage_is_gap_linear_with_exact_gradients() -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_t(num_classes=6).eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))  # non-square
    fwd = hooks.run(model, "norm", x, torch.tensor([1, 5]), gradients=True)
    assert fwd.layout.kind == CHANNELS_LAST
    assert fwd.features.shape == (2, 768, 2, 3) and fwd.gradients is not None
    weight, bias = model.head.weight.detach(), model.head.bias.detach()
    assert cam.is_gap_linear(fwd.features, fwd.logits, weight, bias)
    # GAP -> linear: dScore/dA = w_k / HW at every position, so Grad-CAM == CAM / HW
    expected = weight[[1, 5]][:, :, None, None].expand(-1, -1, 2, 3) / 6
    torch.testing.assert_close(fwd.gradients, expected, rtol=1e-5, atol=1e-7)
    cam_maps = cam.cam(fwd.features, weight, fwd.targets)
    torch.testing.assert_close(cam.gradcam(fwd.features, fwd.gradients), cam_maps / 6)
