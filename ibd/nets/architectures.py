"""Architectures by name: any torchvision classifier, plus the project's own (GAP variants, the
concept world's networks).

An `ArchSpec` says how to build a network for K classes and how to feed it: the feature layer
whose activations A (N x D x H x W) the explanations use, the input size and the normalisation.
Normalisation is a per-model setting because checkpoints disagree: torchvision and the Places365
training transform use the ImageNet mean/std, the authors' IBD code uses
(RGB - [124.69, 118.69, 109.54]) / 57.12 on 0..255 RGB (`AUTHORS_IBD_NORMALIZATION`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ibd.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTHORS_IBD_NORMALIZATION = (
    (124.69 / 255, 118.69 / 255, 109.54 / 255),
    (57.12 / 255, 57.12 / 255, 57.12 / 255),
)

# Modules whose names hold the project's architectures; each defines SPECS: list[ArchSpec].
# Imported lazily so that `ibd.nets.architectures` has no import cycle with them.
_PROJECT_MODULES = ("ibd.nets.gapnets", "ibd.nets.worldnets")

# Default feature layer per torchvision family (docs/models.md; paper section 3.1): the
# last spatial layer, the one that feeds the pooled classifier head where there is one.
_FAMILY_LAYERS = (
    ("resnet", "layer4"),
    ("resnext", "layer4"),
    ("wide_resnet", "layer4"),
    ("alexnet", "features"),
    ("vgg", "features"),
    ("densenet", "relu"),  # the post-ReLU map (`PostReluDenseNet`), as Places365 users expect
    ("mobilenet", "features"),
    ("efficientnet", "features"),
    ("convnext", "features"),
    ("regnet", "trunk_output"),
    ("squeezenet", "features"),
    ("shufflenet", "conv5"),
    ("mnasnet", "layers"),
    ("googlenet", "inception5b"),
    ("inception", "Mixed_7c"),
    ("swin", "norm"),  # the last stage after its norm, channels last: it feeds GAP -> linear
    ("maxvit", "blocks.3"),  # the last stage (`blocks` is a ModuleList, never called)
)
# Vision transformers: the output of the second-to-last encoder block, i.e. the patch tokens
# that enter the last block. The last block's own patch tokens never reach the class score
# (only the class token goes on to the head), so their gradients are zero.
_VIT_DEPTH = {"vit_b": 12, "vit_l": 24, "vit_h": 32}
_INPUT_SIZES = {"inception": (299, 299)}


class PostReluDenseNet(torchvision.models.DenseNet):
    """torchvision's DenseNet whose final ReLU is a module, `relu`, applied once.

    torchvision's forward applies `F.relu` to the output of `features` and pools the result, so
    no module outputs the map that feeds GAP -> linear. Here `relu` does: its output is the
    post-ReLU map (what Places365's DenseNet users dissect), on which CAM and IBD apply exactly.
    The logits are those of torchvision's forward, and the state dict is the same (a ReLU has no
    parameters)."""

    relu: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.features(x))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


def adapt(model: nn.Module) -> nn.Module:
    """A network ready for explanation: a torchvision DenseNet (built here or unpickled) becomes
    a `PostReluDenseNet` in place; any other network is returned as it is."""
    if isinstance(model, torchvision.models.DenseNet) and not isinstance(model, PostReluDenseNet):
        model.__class__ = PostReluDenseNet
        model.add_module("relu", nn.ReLU())
    return model


_AUX_MODULES = {"Inception3": ("AuxLogits",), "GoogLeNet": ("aux1", "aux2")}


def drop_absent_aux(model: nn.Module, keys: set[str]) -> None:
    """Remove Inception v3's / GoogLeNet's auxiliary classifiers when a state dict's `keys` have
    none of them (saved with `aux_logits=False`); they only run in training mode anyway."""
    names = _AUX_MODULES.get(type(model).__name__, ())
    if names and not any(k.startswith(tuple(f"{n}." for n in names)) for k in keys):
        for name in names:
            setattr(model, name, None)
        model.aux_logits = False


def build_torchvision(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """torchvision's `name` with random weights and `num_classes` outputs, adapted (`adapt`);
    `kwargs` go to torchvision's builder (e.g. `image_size` of a vision transformer)."""
    options: dict[str, object] = {"weights": None, "num_classes": num_classes, **kwargs}
    if name.startswith(("inception", "googlenet")):
        options.setdefault("init_weights", False)
    return adapt(torchvision.models.get_model(name, **options))


def family_layer(name: str) -> str:
    """The default feature layer of a torchvision classifier, by its name ("" if unknown)."""
    for prefix, depth in _VIT_DEPTH.items():
        if name.startswith(prefix):
            return f"encoder.layers.encoder_layer_{depth - 2}"
    return next((lay for prefix, lay in _FAMILY_LAYERS if name.startswith(prefix)), "")


@dataclass(frozen=True)
class ArchSpec:
    """How to build and feed one architecture."""

    name: str
    build: Callable[[int], nn.Module]
    layer: str
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""


def _project_specs() -> dict[str, ArchSpec]:
    specs: dict[str, ArchSpec] = {}
    for module_name in _PROJECT_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        for spec in module.SPECS:
            specs[spec.name] = spec
    return specs


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's image-classification architectures."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_spec(name: str) -> ArchSpec:
    size = next((s for prefix, s in _INPUT_SIZES.items() if name.startswith(prefix)), (224, 224))

    def build(num_classes: int) -> nn.Module:
        return build_torchvision(name, num_classes)

    return ArchSpec(name=name, build=build, layer=family_layer(name), input_size=size)


def available() -> list[str]:
    """Every architecture name `get` accepts."""
    return sorted(set(_project_specs()) | set(torchvision_classifiers()))


def get(name: str) -> ArchSpec:
    """The spec of a project architecture or a torchvision classifier, by name."""
    project = _project_specs()
    if name in project:
        return project[name]
    if name in torchvision_classifiers():
        return _torchvision_spec(name)
    close = [n for n in available() if name.lower()[:4] in n][:8]
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    raise UserError(f"unknown architecture '{name}'{hint}; `ibd info --archs` lists them all")


def default_layer(model: nn.Module) -> str:
    """The last spatial layer of a network whose family we do not know.

    The last direct child whose output is 4-D with more than one position, not counting pooling;
    found by name order of the children, which follows the forward order in torchvision models.
    """
    pooling = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
    candidates = [
        name
        for name, child in model.named_children()
        if not isinstance(child, (*pooling, nn.Linear, nn.Dropout, nn.Flatten))
    ]
    if not candidates:
        raise UserError("cannot guess the feature layer of this model; pass --layer NAME")
    spatial = [n for n in candidates if n not in {"classifier", "fc", "head", "heads"}]
    return (spatial or candidates)[-1]
