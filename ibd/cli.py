"""`ibd` console script: dispatches to one module per subcommand under `ibd.commands`.

Subcommand modules are imported only when used, so `ibd --help` answers without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ibd import __version__
from ibd.errors import OneLineParser, run_command

# name -> (module under ibd.commands, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "world": ("world", "build the procedural concept world (Broden format) [world build]"),
    "train": ("train", "train a scene classifier on the concept world or an image folder"),
    "features": ("features", "extract a layer's features over a concept dataset into a store"),
    "basis": ("basis", "learn the concept basis: per-concept classifiers [basis learn]"),
    "decompose": ("decompose", "decompose class weights into concepts (paper eq. 6)"),
    "dissect": ("dissect", "Network Dissection: label each unit with its best-IoU concept"),
    "explain": ("explain", "explain predictions with ibd, netdissect, cam or gradcam"),
    "evaluate": ("evaluate", "score explanations against the concept world's ground truth"),
    "info": ("info", "show a checkpoint's architecture, classes, layer and preprocessing"),
}


def _load(name: str):
    module_name, _ = SUBCOMMANDS[name]
    try:
        return importlib.import_module(f"ibd.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"ibd.commands.{module_name}":
            return None
        raise


def _parser(selected: str | None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ibd",
        description="Interpretable Basis Decomposition and its baselines. "
        "Every command defaults to the concept world under $IBD_HOME (default ./ibd-data).",
    )
    parser.add_argument("--version", action="version", version=f"ibd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = _load(name)
            if module is not None:
                module.configure(sp)
                sp.set_defaults(_run=module.run)
            else:
                sp.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    selected = selected if selected in SUBCOMMANDS else None
    parser = _parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    run = getattr(args, "_run", None)
    if run is None:
        print(f"ibd {args.command}: not built yet (see the open issues)", file=sys.stderr)
        return 3
    return run_command(f"ibd {args.command}", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
