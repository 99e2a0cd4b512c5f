"""Every torchvision classifier: Grad-CAM and IBD (gradient route) run and keep their invariants,
CAM runs exactly where the head is GAP -> linear and is refused in one line elsewhere.

Random weights (filled by a fast seeded initialiser: torchvision's own initialisation of the
largest networks takes half a minute each), small inputs. A fast subset, one network per family
shape, runs in every test run; the whole list runs in the `slow`-marked test, which CI executes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from ibd.basis import Basis
from ibd.decomposition import solve
from ibd.errors import UserError
from ibd.explain import cam
from ibd.explain.basis_decomposition import IBD
from ibd.explain.cam import CAM, GradCAM
from ibd.nets import architectures, heads, hooks
from ibd.nets.load import LoadedModel

CLASSES = 7
CONCEPTS = 12
ALL = sorted(torchvision.models.list_models(module=torchvision.models))
# One of each head and layout: GAP-linear CNNs, DenseNet's post-ReLU map, fully connected heads,
# a 1x1-convolution head, a head that normalises after pooling, a vision transformer's tokens,
# Swin's channels-last stage, Inception v3 and GoogLeNet's auxiliary classifiers.
FAST = [
    "resnet18",
    "densenet121",
    "alexnet",
    "squeezenet1_1",
    "mobilenet_v3_small",
    "convnext_tiny",
    "vit_b_32",
    "swin_t",
    "googlenet",
    "inception_v3",
]
# Heads that are W GAP(A) + b at the default layer (CAM applies); every other one is refused.
GAP_LINEAR_FAMILIES = (
    "resnet",
    "resnext",
    "wide_resnet",
    "densenet",
    "mobilenet_v2",
    "efficientnet",
    "regnet",
    "shufflenet",
    "mnasnet",
    "googlenet",
    "inception",
    "swin",
)
_VIT_PATCH = {"vit_b_16": 16, "vit_b_32": 32, "vit_l_16": 16, "vit_l_32": 32, "vit_h_14": 14}


def input_side(name: str) -> int:
    if name.startswith("maxvit"):
        return 224  # its partitions need 224 px (the grid must stay a multiple of 7)
    if name.startswith("inception"):
        return 128  # at least 75 px; 128 gives Mixed_7c a 2 x 2 grid
    if name in _VIT_PATCH:
        return 4 * _VIT_PATCH[name]  # a 4 x 4 patch grid
    return 96 if name == "alexnet" else 64


_INIT = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)


@contextmanager
def no_init() -> Iterator[None]:
    """torch.nn.init's functions do nothing in the block (we fill the parameters after)."""
    with mock.patch.multiple(torch.nn.init, **{f: (lambda t, *a, **k: t) for f in _INIT}):
        yield


def build(name: str, seed: int = 0) -> nn.Module:
    """torchvision's `name` (through the project's builder) with seeded random weights: He-normal
    matrices and kernels, norm scales near 1, small biases and embeddings."""
    kwargs: dict[str, object] = {}
    if name in _VIT_PATCH:
        kwargs["image_size"] = input_side(name)
    with no_init():
        model = architectures.build_torchvision(name, CLASSES, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim >= 2 and "embedding" not in pname and "token" not in pname:
                fan_in = p[0].numel() or 1
                p.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
            elif pname.endswith("weight") and p.ndim == 1:
                p.uniform_(0.9, 1.1, generator=generator)
            else:
                p.normal_(0.0, 0.02, generator=generator)
    return model.eval()


def loaded(name: str, model: nn.Module) -> LoadedModel:
    side = input_side(name)
    return LoadedModel(
        model=model,
        name=name,
        arch=name,
        classes=[f"c{k}" for k in range(CLASSES)],
        layer=architectures.get(name).layer,
        input_size=(side, side),
        mean=architectures.IMAGENET_MEAN,
        std=architectures.IMAGENET_STD,
    )


def random_basis(channels: int, seed: int = 1) -> Basis:
    weight = np.random.default_rng(seed).normal(size=(CONCEPTS, channels))
    return Basis(
        names=[f"concept{c}" for c in range(CONCEPTS)],
        categories=["object"] * CONCEPTS,
        weight=weight,
        bias=np.zeros(CONCEPTS),
        ap=np.zeros(CONCEPTS),
        meta={},
    )


def check_classifier(name: str) -> dict[str, object]:
    """The matrix's assertions for one architecture; what it found, for the summary."""
    model = loaded(name, build(name))
    side = input_side(name)
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(2))
    targets = [1, 4]
    fwd = hooks.run(model.model, model.layer, images, torch.tensor(targets), gradients=True)
    assert fwd.gradients is not None and torch.isfinite(fwd.logits).all()
    n, d, h, w = fwd.features.shape
    assert n == 2 and fwd.gradients.shape == fwd.features.shape
    gradcam_maps = cam.gradcam(fwd.features, fwd.gradients)

    # Grad-CAM through the explainer: the same maps; contribution = the map's mean
    for e, expected in zip(GradCAM(model)(images, targets), gradcam_maps, strict=True):
        torch.testing.assert_close(e.components[0].heatmap, expected, rtol=1e-4, atol=1e-6)

    # IBD, gradient route (eq. 12): each listed concept contributes s_i q_i . sum_ij A_ij, the
    # residual is the rest of the logit, and contributions + r . sum_ij A_ij == the Grad-CAM
    # map's sum (the first-order logit estimate the route decomposes), r = w_k(A) - sum s_i q_i.
    basis = random_basis(d)
    q = basis.q.astype(np.float64)
    explanations = IBD(model, basis, top=7, gradient=True)(images, targets)
    pooled_grad = cam.gradcam_weights(fwd.gradients).double().numpy()
    dec = solve(q, pooled_grad, max_concepts=7)
    summed = fwd.features.sum(dim=(2, 3)).double().numpy()
    for i, e in enumerate(explanations):
        assert e.score == pytest.approx(float(fwd.logits[i, targets[i]]), rel=1e-4, abs=1e-5)
        total = sum(c.contribution for c in e.components)
        assert total + e.residual == pytest.approx(e.score, rel=1e-6, abs=1e-6)
        terms = dec.terms(i)
        assert len(e.components) == len(terms)
        by_name = {basis.names[c]: s for c, s in terms}
        for c in e.components:
            index = basis.names.index(c.label)
            expected = by_name[c.label] * float(q[index] @ summed[i])
            assert c.contribution == pytest.approx(
                expected, rel=1e-3, abs=1e-4 * abs(expected) + 1e-5
            )
        r = pooled_grad[i] - sum(s * q[c] for c, s in terms)
        first_order = float(gradcam_maps[i].double().sum())
        scale = max(1.0, abs(first_order))
        assert total + float(r @ summed[i]) == pytest.approx(first_order, abs=1e-3 * scale)

    # CAM exactly where the head is GAP -> linear, and Grad-CAM == CAM / HW there
    head = heads.inspect(model.model, model.layer, model.input_size)
    assert head.gap_linear == name.startswith(GAP_LINEAR_FAMILIES), name
    if head.gap_linear:
        for e, g in zip(CAM(model)(images, targets), gradcam_maps, strict=True):
            scale = e.components[0].heatmap.abs().max().clamp_min(1e-6)
            torch.testing.assert_close(
                g / scale, e.components[0].heatmap / (h * w) / scale, rtol=0, atol=1e-4
            )
            assert e.components[0].contribution * 1 == pytest.approx(
                float(g.sum()), rel=1e-3, abs=1e-5
            )
    else:
        with pytest.raises(UserError, match="CAM does not apply") as refused:
            CAM(model)(images, targets)
        assert "\n" not in str(refused.value)
    return {"grid": (h, w), "channels": d, "layout": fwd.layout.kind, "cam": head.gap_linear}


@pytest.fixture(autouse=True)
def _deterministic(one_torch_thread: None) -> Iterator[None]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def test_densenet_post_relu_map_keeps_torchvisions_logits_and_ibd_is_exact() -> None:
    """DenseNet: the default layer is the post-ReLU map, the logits are torchvision's own (same
    state dict), and IBD's class-weight route is exact there: each concept contributes
    s_i q_i . GAP(A), the residual is r_k . GAP(A) + b_k, and together they are the logit."""
    model = build("densenet121")
    original = torchvision.models.densenet121(num_classes=CLASSES).eval()
    original.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model(images), original(images), rtol=1e-5, atol=1e-5)
    handle = loaded("densenet121", model)
    assert handle.layer == "relu"
    fwd = hooks.run(model, "relu", images)
    assert fwd.features.min() >= 0  # post-ReLU
    basis = random_basis(fwd.features.shape[1])
    q = basis.q.astype(np.float64)
    weight, bias = model.classifier.weight.detach().double(), model.classifier.bias.detach()
    dec = solve(q, weight.numpy(), max_concepts=7)
    pooled = fwd.features.mean(dim=(2, 3)).double()
    for i, e in enumerate(IBD(handle, basis, top=7)(images, [3, 6])):
        k = e.class_index
        assert e.score == pytest.approx(float(fwd.logits[i, k]), rel=1e-5)
        r = weight[k].numpy() - sum(s * q[c] for c, s in dec.terms(k))
        residual = float(r @ pooled[i].numpy()) + float(bias[k])
        assert e.residual == pytest.approx(residual, rel=1e-4, abs=1e-5)
        assert sum(c.contribution for c in e.components) + e.residual == pytest.approx(e.score)


@pytest.mark.parametrize("name", FAST)
def test_fast_subset(name: str) -> None:
    check_classifier(name)


def test_the_fast_subset_covers_every_layout() -> None:
    assert set(FAST) <= set(ALL)
    assert {architectures.get(n).layer.split(".")[0] for n in FAST} >= {"encoder", "norm", "relu"}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~4 min of CPU; a shared machine stretches the wall time
def test_every_torchvision_classifier(capsys: pytest.CaptureFixture[str]) -> None:
    """The whole list; prints one line per network (layer, grid, CAM or not, seconds)."""
    assert len(ALL) >= 80
    with_cam = 0
    for name in ALL:
        start = time.perf_counter()
        found = check_classifier(name)
        with_cam += bool(found["cam"])
        with capsys.disabled():
            layer = architectures.get(name).layer
            print(f"{name:20s} {layer:34s} {found} {time.perf_counter() - start:.1f}s")
    assert with_cam >= 40
