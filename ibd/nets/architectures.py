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

# Feature layer for known torchvision families (REFERENCE.md 1): the last spatial layer that
# feeds the pooled classifier head.
_FAMILY_LAYERS = (
    ("resnet", "layer4"),
    ("resnext", "layer4"),
    ("wide_resnet", "layer4"),
    ("alexnet", "features"),
    ("vgg", "features"),
    ("densenet", "features"),  # note: ends before densenet's final functional ReLU
    ("mobilenet", "features"),
    ("efficientnet", "features"),
    ("convnext", "features"),
    ("regnet", "trunk_output"),
    ("squeezenet", "features"),
    ("shufflenet", "conv5"),
    ("mnasnet", "layers"),
    ("googlenet", "inception5b"),
    ("inception", "Mixed_7c"),
)


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
    layer = next((lay for prefix, lay in _FAMILY_LAYERS if name.startswith(prefix)), "")
    input_size = (299, 299) if name.startswith("inception") else (224, 224)

    def build(num_classes: int) -> nn.Module:
        kwargs: dict[str, object] = {"weights": None, "num_classes": num_classes}
        if name.startswith(("inception", "googlenet")):
            kwargs["aux_logits"] = False
            kwargs["init_weights"] = False
        return torchvision.models.get_model(name, **kwargs)

    return ArchSpec(name=name, build=build, layer=layer, input_size=input_size)


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
