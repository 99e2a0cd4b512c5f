"""The model flags every command shares (docs/contracts.md 2):
`--arch NAME --weights FILE [--num-classes K] [--labels FILE] [--layer NAME] [--mirror]`,
plus `--normalization`, `--allow-pickle` and `--device`. With no flags: the concept world's
reference model."""

from __future__ import annotations

import argparse

import torch

from ibd import paths
from ibd.errors import UserError
from ibd.nets.load import NORMALIZATIONS, LoadedModel, load_model


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--arch", help="torchvision or project architecture (default: checkpoint's)")
    group.add_argument(
        "--weights",
        help=f"checkpoint / state dict (default: {paths.model_path()} under $IBD_HOME)",
    )
    group.add_argument("--num-classes", type=int, help="class count (default: from the weights)")
    group.add_argument("--labels", help="class names: categories_places365.txt or one per line")
    group.add_argument(
        "--layer",
        help="feature layer, any submodule name (default: the checkpoint's, else the family's: "
        "layer4, DenseNet's post-ReLU map, ViT's second-to-last block, ...; `ibd info` shows it)",
    )
    group.add_argument("--mirror", action="store_true", help="flip every conv kernel (resnet50*)")
    group.add_argument("--name", help="model name written to outputs (default: file stem)")
    group.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow whole pickled models (runs code from the file; only for trusted files)",
    )
    group.add_argument(
        "--normalization",
        choices=sorted(NORMALIZATIONS),
        help="input normalisation: imagenet (torchvision, Places365 training) or authors "
        "(the authors' IBD code); default: the checkpoint's, else the architecture's",
    )
    group.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")


def device_from(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name} requested but MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: only cpu, cuda[:N] and mps are supported")
    return device


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    weights = args.weights
    if weights is None and args.arch is None:
        weights = paths.model_path()
        if not weights.exists():
            raise UserError(
                f"no model given and the concept world's {weights} does not exist yet: run "
                "`ibd world build` and `ibd train`, or pass --arch/--weights"
            )
    return load_model(
        args.arch,
        weights,
        num_classes=args.num_classes,
        labels=args.labels,
        layer=args.layer,
        mirrored=args.mirror,
        allow_pickle=args.allow_pickle,
        device=device_from(args.device),
        name=args.name,
        normalization=getattr(args, "normalization", None),
    )
