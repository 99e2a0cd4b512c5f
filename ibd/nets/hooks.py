"""Capture a named layer's activation A (N x D x H x W), and on request dScore_k/dA.

The hook lives in a context manager that always removes it, even when the body raises.
Gradients come from `torch.autograd.grad` on the captured tensor: no module backward hooks (they
break on in-place ReLU) and no parameter `.grad` is touched. The hook hands the rest of the network
a clone of A, so an in-place operation after the layer (DenseNet's final ReLU) cannot change the
captured activation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ibd.errors import UserError


class GradientsDisabledError(RuntimeError):
    """Gradients were requested while autograd is off (inside `torch.no_grad()`)."""


class _Slot:
    activation: torch.Tensor | None = None


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """The submodule called `layer`, or a UserError listing the top-level names."""
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = ", ".join(n for n, _ in model.named_children())
        raise UserError(f"no layer named '{layer}' (top-level layers: {names})") from None


@contextmanager
def capture(model: nn.Module, layer: str) -> Iterator[_Slot]:
    """Within the block, every forward pass stores `layer`'s output in `slot.activation`."""
    slot = _Slot()

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            shape = getattr(output, "shape", type(output).__name__)
            raise UserError(f"layer '{layer}' gives {shape}, not an N x D x H x W feature map")
        if torch.is_grad_enabled() and not output.requires_grad:
            # a frozen network (requires_grad off): make A a leaf so dScore/dA still exists
            output = output.detach().requires_grad_()
        slot.activation = output
        return output.clone()

    handle = layer_module(model, layer).register_forward_hook(hook)
    try:
        yield slot
    finally:
        handle.remove()


@dataclass
class Forward:
    """One batch through the network: logits (N x K), the layer's activation A (N x D x H x W),
    the target class per sample, and dScore_target/dA when requested."""

    logits: torch.Tensor
    features: torch.Tensor
    targets: torch.Tensor
    gradients: torch.Tensor | None = None


def resolve_targets(logits: torch.Tensor, targets: torch.Tensor | int | None) -> torch.Tensor:
    """Per-sample target classes: top-1 when None, one class for all, or one per sample."""
    n, k = logits.shape
    if targets is None:
        chosen = logits.argmax(dim=1)
    elif isinstance(targets, int):
        chosen = torch.full((n,), targets, dtype=torch.long, device=logits.device)
    else:
        chosen = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
        if chosen.numel() != n:
            raise UserError(f"{chosen.numel()} target classes given for a batch of {n}")
    if chosen.numel() and (chosen.min() < 0 or chosen.max() >= k):
        raise UserError(f"target class out of range 0..{k - 1}: {chosen.tolist()}")
    return chosen


def run(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets: torch.Tensor | int | None = None,
    *,
    gradients: bool = False,
) -> Forward:
    """Forward `images`, capturing `layer`; with `gradients=True` also dScore_k/dA where
    Score_k is the pre-softmax logit of each sample's own target class k (one backward pass for
    the whole batch: samples do not interact in eval mode)."""
    if gradients and not torch.is_grad_enabled():
        raise GradientsDisabledError(
            "gradients were requested inside torch.no_grad(); Grad-CAM needs autograd: "
            "call it outside the no_grad block"
        )
    with capture(model, layer) as slot, torch.set_grad_enabled(gradients):
        logits = model(images)
    features = slot.activation
    if features is None:
        raise UserError(f"layer '{layer}' was not reached by the forward pass")
    chosen = resolve_targets(logits, targets)
    grads = None
    if gradients:
        score = logits.gather(1, chosen[:, None]).sum()
        grads = (
            torch.autograd.grad(score, features, allow_unused=True)[0]
            if score.requires_grad
            else None
        )
        if grads is None:
            raise UserError(
                f"the class scores do not depend on layer '{layer}' (a side branch?): "
                "Grad-CAM needs the layer the prediction is computed from"
            )
    return Forward(logits.detach(), features.detach(), chosen, grads)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block, its own mode restored after: in training mode
    batch norm would normalise each batch by its own statistics (results would depend on what
    shares a batch) and overwrite the model's running statistics."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)
