"""`ibd world build`: write the procedural concept world (Broden format, docs/world.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="world_command", metavar="ACTION")
    build = sub.add_parser(
        "build",
        help="render the world's images and label planes",
        description="Render the concept world into a Broden-format directory with world.json "
        "(scene classes and their rules) and scenes.csv (train/val/test/explain). Reuses an "
        "existing world built with the same seed and settings.",
    )
    build.add_argument(
        "--out", type=Path, default=None, help="output directory (default: $IBD_HOME/world)"
    )
    build.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    build.add_argument("--images", type=int, default=None, help="number of images (default 3000)")
    build.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (default: the CPUs available)",
    )
    build.add_argument(
        "--force", action="store_true", help="rebuild even if the output already holds this world"
    )


def run(args: argparse.Namespace) -> int:
    from ibd import paths
    from ibd.errors import UserError
    from ibd.world.writer import WorldSettings, build

    if args.world_command != "build":
        raise UserError("say what to do: `ibd world build [--out DIR] [--seed S] [--images N]`")
    settings = WorldSettings(seed=args.seed)
    if args.images is not None:
        settings = WorldSettings(seed=args.seed, images=args.images)
    out = args.out or paths.world_dir()
    start = time.perf_counter()
    built = build(out, settings, workers=args.workers, force=args.force)
    if built:
        print(f"wrote {settings.images} images to {out} in {time.perf_counter() - start:.1f} s")
    else:
        print(f"{out} is up to date (seed {settings.seed}, {settings.images} images)")
    return 0
