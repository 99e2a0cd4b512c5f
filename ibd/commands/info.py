"""`ibd info [model flags]`: what a weight file holds and how it will be fed and explained;
`ibd info --archs` lists every architecture name the model flags accept.

For the feature layer it shows the map the explanations use (D x H x W at the model's input size),
how the layer's output holds it (a transformer's tokens or a channels-last stage are read as a
map, extra tokens dropped), and whether the head is GAP -> linear (CAM applies) or not (IBD takes
the gradient route, paper eq. 12)."""

from __future__ import annotations

import argparse

from ibd.commands.modelargs import add_model_flags, load_from_args
from ibd.nets import architectures, heads
from ibd.nets.load import classifier_layer


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archs", action="store_true", help="list the architecture names")
    add_model_flags(parser)


def run(args: argparse.Namespace) -> int:
    if args.archs:
        print("\n".join(architectures.available()))
        return 0
    loaded = load_from_args(args)
    head = heads.inspect(loaded.model, loaded.layer, loaded.input_size)
    classifier, _ = classifier_layer(loaded.model)
    classifier_module = loaded.model.get_submodule(classifier)
    inputs = getattr(classifier_module, "in_features", getattr(classifier_module, "in_channels", 0))
    shown = ", ".join(loaded.classes[:8]) + (" ..." if len(loaded.classes) > 8 else "")
    lines = {
        "name": loaded.name,
        "arch": loaded.arch,
        "classes": f"{len(loaded.classes)}: {shown}",
        "feature layer": f"{loaded.layer} ({'--layer' if args.layer else 'default'})",
        "feature map": f"{head.channels} x {head.grid[0]} x {head.grid[1]} (D x H x W)",
        "layer output": head.layout.describe(),
        "head": head.route(),
        "classifier input": f"{inputs} features ({classifier})",
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
