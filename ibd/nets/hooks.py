"""Capture a named layer's activation A (N x D x H x W), and on request dScore_k/dA.

The hook lives in a context manager that always removes it, even when the body raises.
Gradients come from `torch.autograd.grad` on the captured tensor: no module backward hooks (they
break on in-place ReLU) and no parameter `.grad` is touched. The hook hands the rest of the network
a copy of A, so an in-place operation after the layer cannot change the captured activation.

Layers whose output is not channels-first (a vision transformer's N x T x D tokens, Swin's
N x H x W x D stages) are read as maps here, once, for every caller (`ibd.nets.tokens`): the
captured A is always N x D x H x W and the network goes on from a tensor computed from A, so
dScore/dA is exact for those layouts too.

Gradients cost little more than a plain forward pass: the network runs without building an
autograd graph up to the layer; its hook turns autograd on and makes A a leaf, so the graph (and
the backward pass) covers only the part after the layer. Grad mode is restored afterwards, also
when the forward pass raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ibd.errors import UserError
from ibd.nets import tokens
from ibd.nets.tokens import Layout


class GradientsDisabledError(RuntimeError):
    """Gradients were requested while autograd is off (inside `torch.no_grad()`)."""


@dataclass
class Slot:
    """What the hook saw: the activation as a map, its layout, and the input's H x W."""

    activation: torch.Tensor | None = None
    layout: Layout = field(default_factory=Layout)
    input_size: tuple[int, int] | None = None


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """The submodule called `layer`, or a UserError listing the top-level names."""
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = ", ".join(n for n, _ in model.named_children())
        raise UserError(f"no layer named '{layer}' (top-level layers: {names})") from None


def _input_size(args: tuple[object, ...]) -> tuple[int, int] | None:
    first = args[0] if args else None
    if isinstance(first, torch.Tensor) and first.ndim >= 3:
        return int(first.shape[-2]), int(first.shape[-1])
    return None


@contextmanager
def capture(
    model: nn.Module,
    layer: str,
    input_size: tuple[int, int] | None = None,
    *,
    start_graph: bool = False,
) -> Iterator[Slot]:
    """Within the block, every forward pass stores `layer`'s output, as an N x D x H x W map, in
    `slot.activation`. `input_size` (H, W) of the images locates a token grid; by default it is
    read from the model's input. `start_graph`: the hook turns autograd on and makes the map a
    leaf (the caller runs the model with autograd off: only the part after the layer is
    recorded)."""
    slot = Slot(input_size=input_size)
    target = layer_module(model, layer)

    def record_input(_module: nn.Module, args: tuple[object, ...]) -> None:
        if input_size is None:
            slot.input_size = _input_size(args)

    def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise UserError(
                f"layer '{layer}' gives {type(output).__name__}, not an N x D x H x W feature map"
            )
        layout = tokens.detect(tuple(output.shape), slot.input_size, layer)
        features = tokens.to_map(output, layout)
        if start_graph:
            torch.set_grad_enabled(True)
            features = features.detach().requires_grad_()
        elif torch.is_grad_enabled() and not features.requires_grad:
            # a frozen network (requires_grad off): make A a leaf so dScore/dA still exists
            features = features.detach().requires_grad_()
        slot.activation, slot.layout = features, layout
        return tokens.from_map(features, output, layout)

    pre = model.register_forward_pre_hook(record_input)
    handle = target.register_forward_hook(hook)
    try:
        yield slot
    finally:
        handle.remove()
        pre.remove()


@dataclass
class Forward:
    """One batch through the network: logits (N x K), the layer's activation A (N x D x H x W),
    the target class per sample, dScore_target/dA when requested, and how the layer held A."""

    logits: torch.Tensor
    features: torch.Tensor
    targets: torch.Tensor
    gradients: torch.Tensor | None = None
    layout: Layout = field(default_factory=Layout)


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


def logits_of(output: object) -> torch.Tensor:
    """The class scores of a model's output: the tensor itself, or the main output of
    Inception v3 / GoogLeNet in training mode (a named tuple with `logits`, aux outputs after)."""
    if isinstance(output, torch.Tensor):
        return output
    main = getattr(output, "logits", None)
    if main is None and isinstance(output, (tuple, list)) and output:
        main = output[0]
    if not isinstance(main, torch.Tensor) or main.ndim != 2:
        raise UserError(f"the model returns {type(output).__name__}, not N x K class scores")
    return main


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
    the whole batch: samples do not interact in eval mode). The graph starts at the layer: the
    trunk before it runs without autograd (module docstring)."""
    if gradients and not torch.is_grad_enabled():
        raise GradientsDisabledError(
            "gradients were requested inside torch.no_grad(); Grad-CAM needs autograd: "
            "call it outside the no_grad block"
        )
    size = (int(images.shape[-2]), int(images.shape[-1]))
    prior = torch.is_grad_enabled()
    with capture(model, layer, size, start_graph=gradients) as slot:
        try:
            torch.set_grad_enabled(False)
            logits = logits_of(model(images))
        finally:
            torch.set_grad_enabled(prior)
    features = slot.activation
    if features is None:
        raise UserError(f"layer '{layer}' was not reached by the forward pass")
    chosen = resolve_targets(logits, targets)
    grads = _gradients(logits, chosen, features, layer) if gradients else None
    return Forward(logits.detach(), features.detach(), chosen, grads, slot.layout)


def _gradients(
    logits: torch.Tensor, chosen: torch.Tensor, features: torch.Tensor, layer: str
) -> torch.Tensor:
    score = logits.gather(1, chosen[:, None]).sum()
    grads = (
        torch.autograd.grad(score, features, allow_unused=True)[0] if score.requires_grad else None
    )
    if grads is None:
        raise UserError(
            f"the class scores do not depend on layer '{layer}' (a side branch?): "
            "Grad-CAM needs the layer the prediction is computed from"
        )
    return grads


def probe(model: nn.Module, layer: str, input_size: tuple[int, int]) -> Forward:
    """One forward pass of a zero image of `input_size` (H, W), without autograd: the layer's
    shape and layout."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return run(model, layer, torch.zeros(1, 3, *input_size, device=device))


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
