"""Build a network by name and load its weights from a local file.

Accepted weight files (docs/contracts.md 2):
- the project's checkpoints (`format: ibd-checkpoint-1`: state dict + arch, classes, layer,
  input size, normalisation),
- Places365 `.pth.tar` dicts `{'epoch', 'arch', 'state_dict', 'best_prec1'}` whose keys carry
  DataParallel's `module.` segment: in front of every key (`module.layer4.0.conv1.weight`), or,
  for AlexNet and VGG, inside the `features` keys only (`features.module.0.weight`: their
  training script wraps only `model.features` in DataParallel),
- checkpoints saved before PyTorch 0.4: no BatchNorm `num_batches_tracked` counters (filled
  with zeros as `load_state_dict` does) and DenseNet's old `norm.1` / `conv.1` key names,
- plain state dicts (torchvision's `.pth`),
- whole pickled models, only with `allow_pickle=True` (unpickling runs arbitrary code).

Every mismatch (architecture, class count, corrupt file) becomes one `UserError` line naming it.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ibd.errors import UserError
from ibd.nets import architectures
from ibd.nets.labels import read_labels
from ibd.nets.mirror import mirror

CHECKPOINT_FORMAT = "ibd-checkpoint-1"
# Input normalisations by name (mean, std on 0..1 RGB).
NORMALIZATIONS = {
    "imagenet": (architectures.IMAGENET_MEAN, architectures.IMAGENET_STD),
    "authors": architectures.AUTHORS_IBD_NORMALIZATION,
}


@dataclass
class LoadedModel:
    """A network in eval mode with what is needed to feed and explain it."""

    model: nn.Module
    name: str
    arch: str
    classes: list[str]
    layer: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def read_weights(path: Path, allow_pickle: bool) -> Any:
    """The object in a weight file, loaded weights-only unless `allow_pickle`; one-line errors."""
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise UserError(f"cannot read {path}: not a PyTorch file or corrupt") from None
        if allow_pickle:
            raise UserError(f"cannot unpickle {path}: {str(exc).splitlines()[0]}") from None
        raise UserError(
            f"{path} holds pickled objects beyond tensors (a whole pickled model?); loading it "
            "runs code from the file: pass --allow-pickle only if you trust it"
        ) from None
    except ImportError as exc:
        # a whole pickled model names the module of its class (Places365's `wideresnet`)
        raise UserError(
            f"cannot unpickle {path}: its model class needs the Python module '{exc.name}', "
            "which is not importable here (put it on PYTHONPATH, or load a state dict instead)"
        ) from None
    except AttributeError as exc:
        raise UserError(
            f"cannot unpickle {path}: a class it names is missing ({_first_line(exc)})"
        ) from None
    except UnicodeDecodeError:
        raise UserError(
            f"cannot unpickle {path}: it was pickled by Python 2 with non-ASCII text; "
            "save its state_dict from a Python 3 session and load that"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(
            f"cannot read {path}: not a PyTorch file or corrupt ({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _is_state_dict(obj: dict[str, Any]) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


# Pre-0.4 DenseNet keys: `denselayer1.norm.1.weight` is `denselayer1.norm1.weight` today (the
# renaming torchvision applies to its own old DenseNet files).
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def standard_keys(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict with today's key names: DataParallel's `module` path segment removed
    wherever it sits (`module.fc.weight`, `features.module.0.weight`) and pre-0.4 DenseNet
    names (`norm.1`) joined (`norm1`). No torchvision or project network names a submodule
    `module`, so the removal never touches a real name."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = ".".join(part for part in key.split(".") if part != "module")
        old = _OLD_DENSENET_KEY.match(name)
        out[old.group(1) + old.group(2) if old else name] = value
    return out


def final_linear_name(model: nn.Module) -> str:
    """Name of the network's last `nn.Linear` (the classifier), in module order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise UserError("the model has no nn.Linear classifier layer")
    return names[-1]


def final_linear(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of the classifier: K x D weight and K bias (zeros when it has none)."""
    layer = model.get_submodule(final_linear_name(model))
    assert isinstance(layer, nn.Linear)
    bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
    return layer.weight.detach(), bias.detach()


def _probe(spec: architectures.ArchSpec) -> nn.Module:
    """The architecture with 2 classes, for its parameter names only: built on the meta device
    (no memory, no initialisation: VGG16 takes seconds to initialise) where it can be."""
    try:
        with torch.device("meta"):
            return spec.build(2)
    except (NotImplementedError, RuntimeError):  # a builder that copies data at build time
        return spec.build(2)


def classifier_layer(model: nn.Module) -> tuple[str, int]:
    """Name and output count of the layer that computes the class scores: the last `nn.Linear`,
    or for a head without one (SqueezeNet's 1x1 convolution) the last `nn.Conv2d`."""
    for kind in (nn.Linear, nn.Conv2d):
        found = [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]
        if found:
            name, layer = found[-1]
            return name, int(layer.out_features if kind is nn.Linear else layer.out_channels)
    raise UserError("the model has no nn.Linear or nn.Conv2d layer to compute class scores")


def _infer_num_classes(probe: nn.Module, state: dict[str, Any]) -> int | None:
    weight = state.get(classifier_layer(probe)[0] + ".weight")
    ok = isinstance(weight, torch.Tensor) and weight.ndim in (2, 4)
    return int(weight.shape[0]) if ok else None


def mismatches(
    state: dict[str, Any],
    expected: dict[str, Any],
    keys: list[str],
    *,
    unexpected: bool = False,
) -> list[str]:
    """Why `state` cannot fill the tensors `keys` of a model whose state dict is `expected`: short
    phrases for a one-line error (missing keys, keys the model lacks when `unexpected`, shape
    mismatches); empty when it can."""
    missing = [k for k in keys if k not in state]
    extra = [k for k in state if k not in expected] if unexpected else []
    wrong = [
        f"{k} ({'x'.join(map(str, state[k].shape))} in file vs "
        f"{'x'.join(map(str, expected[k].shape))} in model)"
        for k in keys
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, found in (("missing keys", missing), ("unexpected keys", extra)):
        if found:
            more = f" (+{len(found) - 4} more)" if len(found) > 4 else ""
            problems.append(f"{label}: {', '.join(found[:4])}{more}")
    if wrong:
        more = f" (+{len(wrong) - 2} more)" if len(wrong) > 2 else ""
        problems.append(f"shape mismatch: {'; '.join(wrong[:2])}{more}")
    return problems


def _fit(model: nn.Module, state: dict[str, Any], what: str) -> None:
    expected = model.state_dict()
    # Checkpoints saved before PyTorch 0.4 (Places365's) have no BatchNorm step counters;
    # `load_state_dict` gives such a layer a zero counter, so do the same before comparing.
    state = dict(state)
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    problems = mismatches(state, expected, list(expected), unexpected=True)
    if problems:
        raise UserError(f"weights do not fit {what}: {'; '.join(problems)}")
    model.load_state_dict(state)


@dataclass
class _FileContents:
    """What a weight file holds: a state dict with its checkpoint metadata, or a whole model."""

    path: Path | None = None
    state: dict[str, Any] | None = None
    whole: nn.Module | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _read_file(weights: str | Path | None, allow_pickle: bool) -> _FileContents:
    if weights is None:
        return _FileContents()
    path = Path(weights)
    obj = read_weights(path, allow_pickle)
    found = _FileContents(path=path)
    if isinstance(obj, nn.Module):
        found.whole = obj
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        found.meta = {k: v for k, v in obj.items() if k != "state_dict"}
        found.state = standard_keys(obj["state_dict"])
    elif isinstance(obj, dict) and _is_state_dict(obj):
        found.state = standard_keys(obj)
    else:
        raise UserError(f"{path} is neither a state dict nor a checkpoint with a 'state_dict'")
    if isinstance(found.meta.get("module"), nn.Module):
        found.whole = found.meta.pop("module")
    while isinstance(found.whole, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        found.whole = found.whole.module  # a pickled wrapper: the network is inside
    return found


def _class_count(
    arch: str,
    spec: architectures.ArchSpec,
    found: _FileContents,
    num_classes: int | None,
    labels: str | Path | None,
) -> int:
    """The number of classes to build `arch` with: given, else the checkpoint's, else the
    classifier's rows in the state dict, else the label count."""
    file_arch = found.meta.get("arch")
    if num_classes is None:
        num_classes = found.meta.get("num_classes")
    if num_classes is None and found.state:
        probe = _probe(spec)
        num_classes = _infer_num_classes(probe, found.state)
        if num_classes is None:
            key = classifier_layer(probe)[0] + ".weight"
            said = f" (the checkpoint says arch '{file_arch}')" if file_arch else ""
            raise UserError(f"weights do not fit {arch}: the file has no classifier '{key}'{said}")
    if num_classes is None and labels is not None:
        num_classes = len(read_labels(labels))
    if num_classes is None:
        raise UserError(f"cannot tell the number of classes for {arch}: pass --num-classes")
    if int(num_classes) < 1:
        raise UserError(f"the number of classes must be at least 1, not {num_classes}")
    return int(num_classes)


def _network(
    arch: str | None,
    found: _FileContents,
    num_classes: int | None,
    labels: str | Path | None,
) -> tuple[nn.Module, str, architectures.ArchSpec | None]:
    """The network with the file's weights, its architecture name and spec (None for a whole
    pickled model of an architecture we do not know)."""
    file_arch = found.meta.get("arch")
    arch = arch or (str(file_arch) if file_arch else None)
    if found.whole is not None:
        # a named architecture still says how to feed the network (input size, layer, mean/std)
        spec = architectures.get(arch) if arch in architectures.available() else None
        return architectures.adapt(found.whole), arch or type(found.whole).__name__.lower(), spec
    if arch is None:
        raise UserError("no architecture given and the checkpoint names none: pass --arch")
    spec = architectures.get(arch)
    count = _class_count(arch, spec, found, num_classes, labels)
    model = spec.build(count)
    if found.state is not None:
        architectures.drop_absent_aux(model, set(found.state))
        what = f"{arch} with {count} classes"
        if file_arch and file_arch != arch:
            what += f" (the checkpoint says arch '{file_arch}')"
        _fit(model, found.state, what)
    return model, arch, spec


def _class_names(model: nn.Module, found: _FileContents, labels: str | Path | None) -> list[str]:
    out_features = classifier_layer(model)[1]
    if labels is not None:
        classes = read_labels(labels)
    elif found.meta.get("classes"):
        classes = [str(c) for c in found.meta["classes"]]
    else:
        classes = [f"class_{k}" for k in range(out_features)]
    if len(classes) != out_features:
        source = labels if labels is not None else found.path
        raise UserError(
            f"{source} names {len(classes)} classes but the model has {out_features} outputs"
        )
    return classes


def _feature_layer(
    model: nn.Module, arch: str, layer: str | None, meta: dict[str, Any], spec: Any
) -> str:
    chosen = layer or meta.get("layer") or (spec.layer if spec else "")
    chosen = chosen or architectures.default_layer(model)
    try:
        model.get_submodule(chosen)
    except AttributeError:
        raise UserError(f"{arch} has no layer named '{chosen}'") from None
    return str(chosen)


def _feeding(
    meta: dict[str, Any], spec: architectures.ArchSpec | None, normalization: str | None
) -> tuple[tuple[int, int], tuple[float, float, float], tuple[float, float, float]]:
    """Input size, mean and std: the checkpoint's, else the architecture's, `normalization`
    overriding mean and std."""
    size = tuple(meta.get("input_size") or (spec.input_size if spec else (224, 224)))
    mean = tuple(meta.get("mean") or (spec.mean if spec else architectures.IMAGENET_MEAN))
    std = tuple(meta.get("std") or (spec.std if spec else architectures.IMAGENET_STD))
    if normalization is not None:
        mean, std = NORMALIZATIONS[normalization]
    return (
        (int(size[0]), int(size[1])),
        (float(mean[0]), float(mean[1]), float(mean[2])),
        (float(std[0]), float(std[1]), float(std[2])),
    )


def load_model(
    arch: str | None,
    weights: str | Path | None,
    *,
    num_classes: int | None = None,
    labels: str | Path | None = None,
    layer: str | None = None,
    mirrored: bool = False,
    allow_pickle: bool = False,
    device: str | torch.device = "cpu",
    name: str | None = None,
    normalization: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Build `arch` and load `weights` (see the module docstring for the accepted formats).

    `arch` may be omitted when the checkpoint names it. With `weights=None` the network keeps
    its random initialisation (needs `num_classes`, or `labels` to count) and is named
    `<arch>_random`. Class names come from `labels` if given, else from the checkpoint, else
    `class_<k>`. The input normalisation is the checkpoint's, else the architecture's, unless
    `normalization` names one of `NORMALIZATIONS` (`authors`: the authors' IBD code's
    (RGB - [124.69, 118.69, 109.54]) / 57.12, for Places365 files that do not record theirs).
    `input_size` (H, W) overrides the size images are resized to.
    """
    if normalization is not None and normalization not in NORMALIZATIONS:
        known = ", ".join(NORMALIZATIONS)
        raise UserError(f"unknown normalization '{normalization}' (choose from {known})")
    found = _read_file(weights, allow_pickle)
    meta = found.meta
    model, arch, spec = _network(arch, found, num_classes, labels)
    classes = _class_names(model, found, labels)
    if mirrored and not meta.get("mirrored"):
        model = mirror(model)
        meta["mirrored"] = True
    chosen_layer = _feature_layer(model, arch, layer, meta, spec)
    size, mean, std = _feeding(meta, spec, normalization)
    # A randomly initialised network is `<arch>_random`: its outputs must not overwrite those of
    # a trained model named after its architecture (the reference world_resnet.pt).
    default_name = found.path.name.split(".")[0] if found.path is not None else f"{arch}_random"
    if mirrored and not default_name.endswith("_mirror"):
        default_name += "_mirror"  # its outputs must not overwrite the unmirrored model's
    return LoadedModel(
        model=model.eval().to(device),
        name=name or default_name,
        arch=str(arch),
        classes=classes,
        layer=chosen_layer,
        input_size=input_size or size,
        mean=mean,
        std=std,
        meta=meta,
    )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    classes: list[str],
    layer: str,
    input_size: tuple[int, int],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    seed: int | None = None,
    accuracy: dict[str, float] | None = None,
    mirrored: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint in the project format (docs/contracts.md 2), loadable weights-only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "num_classes": len(classes),
        "classes": list(classes),
        "input_size": [int(input_size[0]), int(input_size[1])],
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
        "layer": layer,
        "seed": seed,
        "accuracy": dict(accuracy or {}),
        "mirrored": mirrored,
    }
    payload.update(extra or {})
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path
