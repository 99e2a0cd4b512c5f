"""The model handle of the Python API: `ibd.load_model(...)` for a checkpoint, `ibd.Model.wrap`
for an `nn.Module` the user already holds.

A `Model` is a `LoadedModel` (the network, its name, class names, feature layer, input size and
normalisation) with the conversions the explainers need: a class given by index or name, and
images given as a tensor, a PIL image, a path or a list of them turned into a batch.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ibd import paths
from ibd.data.images import load_rgb, to_tensor
from ibd.errors import UserError
from ibd.nets import architectures
from ibd.nets.hooks import eval_mode, layer_module
from ibd.nets.labels import read_labels
from ibd.nets.load import NORMALIZATIONS, LoadedModel
from ibd.nets.load import load_model as load_checkpoint

# One image as the explainers take it: a preprocessed 3 x H x W (or 1 x 3 x H x W) tensor, a
# PIL image or the path of an image file.
ImageLike = torch.Tensor | Image.Image | str | Path
Images = ImageLike | Sequence[ImageLike]
Target = int | str
Targets = Target | Sequence[Target] | torch.Tensor | None


@dataclass
class Model(LoadedModel):
    """A network ready to be explained (see `LoadedModel` for the fields)."""

    @classmethod
    def of(cls, loaded: LoadedModel) -> Model:
        """The handle of a `LoadedModel` (the same network object, not a copy)."""
        if isinstance(loaded, Model):
            return loaded
        return cls(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded)})

    @classmethod
    def wrap(
        cls,
        module: nn.Module,
        *,
        layer: str,
        labels: Sequence[str] | str | Path | None = None,
        normalization: str | tuple[Sequence[float], Sequence[float]] | None = None,
        input_size: int | tuple[int, int] | None = None,
        name: str | None = None,
    ) -> Model:
        """A handle on `module` as it is (its mode and device are left alone; each explainer
        call runs it in eval mode and restores its mode after).

        `layer`: the feature layer's name (`module.get_submodule(layer)`). `labels`: class names
        (a list, or a file as `--labels` takes), default `class_<k>`. `normalization`: the input
        normalisation of PIL and path inputs, 'imagenet' (default) or 'authors', or a
        (mean, std) pair on 0..1 RGB; tensors are taken as already normalised. `input_size`:
        (H, W) or one side for square inputs, default 224.

        A torchvision DenseNet applies its final ReLU in forward(), after `features`; wrapping
        gives it a `relu` module for that map (its class becomes `PostReluDenseNet` in place,
        same parameters and logits), so `layer="relu"` is the map CAM and IBD decompose."""
        architectures.adapt(module)
        layer_module(module, layer)  # a UserError naming the layers when there is none
        mean, std = _normalization(normalization)
        size = _size(input_size)
        outputs = _output_count(module, size)
        if labels is None:
            classes = [f"class_{k}" for k in range(outputs)]
        elif isinstance(labels, (str, Path)):
            classes = read_labels(labels)
        else:
            classes = [str(label) for label in labels]
        if len(classes) != outputs:
            raise UserError(f"{len(classes)} labels but the model has {outputs} outputs")
        arch = type(module).__name__.lower()
        return cls(module, name or arch, arch, classes, layer, size, mean, std, {})

    def class_index(self, target: Target) -> int:
        """A class given by index or by name."""
        return class_index(self, target)


def load_model(
    weights: str | Path | None = None,
    *,
    arch: str | None = None,
    labels: str | Path | None = None,
    layer: str | None = None,
    device: str | torch.device = "cpu",
    **options: Any,
) -> Model:
    """A network from a weights file, in eval mode on `device`.

    With neither `weights` nor `arch`: the concept world's reference model under $IBD_HOME, as
    the commands default to. With `arch` alone: that architecture randomly initialised (pass
    `num_classes` or `labels`). `options` are those of the checkpoint loader: `num_classes`,
    `mirrored`, `allow_pickle`, `name`, `normalization`. Accepted files: project checkpoints,
    Places365 `.pth.tar`, torchvision state dicts (docs/contracts.md 2)."""
    if weights is None and arch is None:
        weights = paths.model_path()
        if not weights.exists():
            raise UserError(
                f"no model given and the concept world's {weights} does not exist yet: run "
                "`ibd world build` and `ibd train`, or pass weights / arch"
            )
    loaded = load_checkpoint(arch, weights, labels=labels, layer=layer, device=device, **options)
    return Model.of(loaded)


def class_index(model: LoadedModel, target: Target) -> int:
    """A class of `model` given by index (an int, or digits) or by name; a UserError otherwise."""
    count = len(model.classes)
    if isinstance(target, bool):
        raise UserError(f"a class is an index or a name, not {target!r}")
    if isinstance(target, numbers.Integral) or (
        isinstance(target, torch.Tensor) and target.numel() == 1
    ):
        index = int(target)
        if not 0 <= index < count:
            raise UserError(f"class {index} is out of range for {model.name} (0..{count - 1})")
        return index
    if isinstance(target, str) and target.isdigit() and int(target) < count:
        return int(target)
    if isinstance(target, str) and target in model.classes:
        return model.classes.index(target)
    raise UserError(f"unknown class '{target}' for {model.name} ({count} classes)")


def class_indices(model: LoadedModel, targets: Targets, count: int) -> list[int] | int | None:
    """Targets as `hooks.run` takes them: None (top-1), one index for all, or one per image."""
    if targets is None:
        return None
    if isinstance(targets, (int, str)) or (isinstance(targets, torch.Tensor) and targets.ndim == 0):
        return class_index(model, targets)
    chosen = [class_index(model, t) for t in targets]
    if len(chosen) != count:
        raise UserError(f"{len(chosen)} targets for {count} images")
    return chosen


@dataclass
class Picture:
    """Where an explained image came from, decoded only when a picture is drawn: a path, a PIL
    image, or a normalised 3 x H x W tensor (shown un-normalised with `mean` and `std`)."""

    source: ImageLike
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def load(self) -> Image.Image:
        if isinstance(self.source, Image.Image):
            return self.source.convert("RGB")
        if isinstance(self.source, (str, Path)):
            return load_rgb(self.source)
        x = self.source.detach().float().cpu()
        mean = torch.tensor(self.mean)[:, None, None]
        std = torch.tensor(self.std)[:, None, None]
        rgb = ((x * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
        return Image.fromarray(rgb.permute(1, 2, 0).numpy())


@dataclass
class Item:
    """One image to explain: its id in the records (a path as given, or `tensor[n]` /
    `image[n]`), its input tensor (3 x H x W) made on demand, and its picture."""

    id: str
    picture: Picture

    def tensor(self, model: LoadedModel) -> torch.Tensor:
        source = self.picture.source
        if isinstance(source, torch.Tensor):
            return source
        image = source.convert("RGB") if isinstance(source, Image.Image) else load_rgb(source)
        return to_tensor(image, model.input_size, model.mean, model.std)


def items(model: LoadedModel, images: Images) -> list[Item]:
    """The images of an explainer call, one `Item` each (a 4-D tensor is N images)."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        given: list[Any] = list(images)
    elif isinstance(images, (torch.Tensor, Image.Image, str, Path)):
        given = [images]
    else:
        given = list(images)
    out = []
    for n, image in enumerate(given):
        if isinstance(image, torch.Tensor):
            x = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
            if x.ndim != 3 or x.shape[0] != 3:
                shape = "x".join(map(str, image.shape))
                raise UserError(f"image {n} is a {shape} tensor, not 3 x H x W (or N x 3 x H x W)")
            out.append(Item(f"tensor[{n}]", Picture(x, model.mean, model.std)))
        elif isinstance(image, Image.Image):
            out.append(Item(f"image[{n}]", Picture(image)))
        elif isinstance(image, (str, Path)):
            out.append(Item(str(image), Picture(image)))
        else:
            raise UserError(f"image {n} is a {type(image).__name__}: give tensors, PIL or paths")
    return out


def _normalization(
    normalization: str | tuple[Sequence[float], Sequence[float]] | None,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    if normalization is None:
        normalization = "imagenet"
    if isinstance(normalization, str):
        if normalization not in NORMALIZATIONS:
            known = ", ".join(NORMALIZATIONS)
            raise UserError(f"unknown normalization '{normalization}' (choose from {known})")
        return NORMALIZATIONS[normalization]
    mean, std = (tuple(float(x) for x in part) for part in normalization)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UserError("normalization must be (mean, std) with 3 values each, std > 0")
    return (mean[0], mean[1], mean[2]), (std[0], std[1], std[2])


def _size(input_size: int | tuple[int, int] | None) -> tuple[int, int]:
    if input_size is None:
        return (224, 224)  # torchvision's classification input
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    if height < 1 or width < 1:
        raise UserError(f"input_size must be positive, got {input_size}")
    return int(height), int(width)


def _output_count(module: nn.Module, size: tuple[int, int]) -> int:
    """The number of class scores, from one forward pass of a zero image (in eval mode)."""
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with eval_mode(module), torch.no_grad():
        logits = module(torch.zeros(1, 3, *size, device=device))
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise UserError(f"the model returns {shape}, not N x K class scores")
    return int(logits.shape[1])
