"""`hitgen` console script."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hitgen import __version__
from hitgen.errors import UserError
from hitgen.paths import ibd_home
from ibd.errors import OneLineParser, run_command

SUBCOMMANDS: dict[str, str] = {
    "build": "build a task batch: --pair ibd,cam (Fig. 8) or --models A,B --method ibd (Fig. 9)",
}


def _configure_build(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to compare (or a --config file)")
    what.add_argument(
        "--pair",
        metavar="M1,M2",
        help="method vs method: two of ibd, netdissect, "
        "cam, gradcam; M1 is the one being evaluated",
    )
    what.add_argument("--model", help="with --pair: the model (default world_resnet)")
    what.add_argument("--models", metavar="A,B", help="model vs model: A is the reference")
    what.add_argument("--method", help="with --models: the explanation method")
    what.add_argument(
        "--explanations",
        nargs="+",
        metavar="DIR",
        help="explanation directory, "
        "one for both sides or one per side (default "
        "$IBD_HOME/explanations/<model>/<method>)",
    )
    what.add_argument(
        "--images",
        type=Path,
        metavar="FILE",
        help="only these images: a text file with one image path per line",
    )
    what.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="study config (.toml or .json) naming one or more batches",
    )
    how = parser.add_argument_group("how")
    how.add_argument("--n", type=int, help="regular items (default 200, or all images if fewer)")
    how.add_argument("--seed", type=int, help="random seed (default 0)")
    how.add_argument(
        "--catch-rate", type=float, help="fraction of items that are catch trials (default 0.1)"
    )
    how.add_argument(
        "--catch-types", metavar="T1,T2", help="identical, wrong or both (default); '' for none"
    )
    how.add_argument(
        "--max-side",
        type=int,
        help="shrink photos to at most this many pixels per side (default 256; 0 keeps them)",
    )
    how.add_argument(
        "--standalone",
        action="store_true",
        default=None,
        help="inline images into pages (previews; pages exceed MTurk's 64 KB)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--batch", help="batch name (default from what is compared)")
    out.add_argument("--out", help="batch directory (default $IBD_HOME/batches/<batch>)")
    out.add_argument("--force", action="store_true", help="replace an existing batch")
    out.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="rendering processes (default %(default)s)",
    )


def _read_image_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the image list ({exc})") from None
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, under their config-file names."""
    keys = (
        "pair",
        "model",
        "models",
        "method",
        "explanations",
        "n",
        "seed",
        "catch_rate",
        "catch_types",
        "max_side",
        "standalone",
        "batch",
        "out",
    )
    given = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.images is not None:
        given["images"] = _read_image_list(args.images)
    return given


def _run_build(args: argparse.Namespace) -> int:
    from hitgen.build import plan_batch, write_batch
    from hitgen.output import Destination, check_distinct
    from hitgen.spec import EXPERIMENT_KEYS, read_config, resolve

    if args.jobs < 1:
        raise UserError(f"--jobs: need at least 1, got {args.jobs}")
    home = ibd_home()
    given = _given(args)
    entries = read_config(args.config) if args.config is not None else [{}]
    if len(entries) > 1:
        clash = [key for key in EXPERIMENT_KEYS if key in given]
        if clash:
            raise UserError(
                f"--{clash[0].replace('_', '-')} cannot apply to the {len(entries)} batches "
                f"of {args.config}; put it in the file"
            )
    specs = [resolve({**entry, **given}, home) for entry in entries]
    # every batch is planned (and its directory checked) before any is written, so that a study
    # whose batches would overwrite each other is refused whole
    plans = [plan_batch(spec, home, force=args.force) for spec in specs]
    if len(plans) > 1:
        check_distinct(
            [Destination(f"batches[{i}]", p.batch, p.target) for i, p in enumerate(plans)],
            where=f"{args.config}: ",
        )
    for plan in plans:
        write_batch(plan, force=args.force, workers=args.jobs, log=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="hitgen",
        description="Render 'Which Robot Do You Trust?' task batches (paper 3.4, Fig. 5). "
        "Defaults to the concept world under $IBD_HOME (default ./ibd-data).",
    )
    parser.add_argument("--version", action="version", version=f"hitgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        _configure_build(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run_command(f"hitgen {args.command}", lambda: _run_build(args), UserError)


if __name__ == "__main__":
    sys.exit(main())
