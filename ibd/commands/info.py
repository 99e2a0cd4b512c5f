"""`ibd info [model flags]`: what a weight file holds and how it will be fed and explained;
`ibd info --archs` lists every architecture name the model flags accept."""

from __future__ import annotations

import argparse

from ibd.commands.modelargs import add_model_flags, load_from_args
from ibd.nets import architectures
from ibd.nets.load import final_linear


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archs", action="store_true", help="list the architecture names")
    add_model_flags(parser)


def run(args: argparse.Namespace) -> int:
    if args.archs:
        print("\n".join(architectures.available()))
        return 0
    loaded = load_from_args(args)
    weight, _ = final_linear(loaded.model)
    shown = ", ".join(loaded.classes[:8]) + (" ..." if len(loaded.classes) > 8 else "")
    lines = {
        "name": loaded.name,
        "arch": loaded.arch,
        "classes": f"{len(loaded.classes)}: {shown}",
        "feature layer": loaded.layer,
        "classifier input": f"{weight.shape[1]} features",
        "input size": "x".join(map(str, loaded.input_size)),
        "mean / std": f"{loaded.mean} / {loaded.std}",
        "mirrored": str(bool(loaded.meta.get("mirrored"))),
    }
    for key in ("accuracy", "seed", "threads", "epoch", "best_prec1"):
        if key in loaded.meta:
            lines[key] = str(loaded.meta[key])
    width = max(map(len, lines))
    for key, value in lines.items():
        print(f"{key:<{width}}  {value}")
    return 0
