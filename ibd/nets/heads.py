"""What the network computes after the feature layer, and so which explanations apply exactly.

CAM (paper eq. 13) and IBD's decomposition of the class weights (paper section 2.3, eq. 3-9) are
exact where the logits are an affine function of the globally average-pooled map,
h = W GAP(A) + b, with (W, b) the network's last linear layer. Elsewhere (fully connected heads,
a head that normalises after pooling, a transformer's class token, a 1x1-convolution classifier)
CAM does not apply and IBD decomposes each image's pooled gradient instead (eq. 12).

The condition is checked numerically on the model itself (two seeded random images through the
network), so it holds for any module graph, including ones we have never seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ibd.errors import UserError
from ibd.nets import hooks
from ibd.nets.tokens import Layout

GAP_LINEAR_RTOL = 1e-3


@dataclass(frozen=True)
class Head:
    """The feature layer as the explanations see it and whether the head is GAP -> linear."""

    layer: str
    channels: int
    grid: tuple[int, int]
    layout: Layout
    gap_linear: bool

    def route(self) -> str:
        """One line: which explanations apply exactly, for `ibd info` and notes."""
        if self.gap_linear:
            return "logits = W GAP(A) + b: CAM applies, IBD decomposes the class weights"
        return (
            "logits are not W GAP(A) + b: CAM does not apply; IBD decomposes each image's "
            "pooled gradient (paper eq. 12)"
        )


def route_note(layer: str) -> str:
    """What IBD and NetDissect do on a head that is not GAP -> linear, said once per run."""
    return (
        f"the logits are not W GAP('{layer}') + b, so the explanation decomposes each image's "
        "pooled gradient w_k(A) = mean_ij dh_k/dA (paper eq. 12); the residual holds the "
        "head's nonlinearity"
    )


def classifier_linear(model: nn.Module) -> nn.Linear | None:
    """The network's last `nn.Linear` (the classifier of a pooled head), or None."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def gap_linear(
    features: torch.Tensor,
    logits: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    rtol: float = GAP_LINEAR_RTOL,
) -> bool:
    """Whether h = W GAP(A) + b holds for these features and logits (to `rtol` of the largest
    logit, at least 1)."""
    if weight.shape[1] != features.shape[1] or weight.shape[0] != logits.shape[1]:
        return False
    predicted = features.mean(dim=(2, 3)) @ weight.to(features).T + bias.to(features)
    scale = logits.abs().max().clamp_min(1.0)
    return bool(((predicted - logits).abs().max() <= rtol * scale).item())


def inspect(model: nn.Module, layer: str, input_size: tuple[int, int]) -> Head:
    """The feature layer's channels, grid and layout at `input_size`, and whether the logits are
    W GAP(A) + b (checked on two seeded random images, so that a head that is affine only on
    one input is not taken for one)."""
    device = next(model.parameters()).device
    images = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    with hooks.eval_mode(model), torch.no_grad():
        fwd = hooks.run(model, layer, images.to(device))
    linear = classifier_linear(model)
    affine = False
    if linear is not None:
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
        affine = gap_linear(fwd.features, fwd.logits, linear.weight.detach(), bias.detach())
    _, d, h, w = fwd.features.shape
    return Head(layer, int(d), (int(h), int(w)), fwd.layout, affine)


def require_gap_linear(head: Head, name: str) -> None:
    """A one-line refusal when CAM does not apply to `head`."""
    if not head.gap_linear:
        raise UserError(
            f"{name}: the logits are not a linear function of GAP('{head.layer}'), "
            "so CAM does not apply; use --method gradcam or a GAP variant (alexnet_gap, ...)"
        )
