"""`ibd explain --method ibd|netdissect|cam|gradcam [model flags] [--out DIR] [IMAGE ...]`.

Writes DIR/explanations.json and DIR/heatmaps.npz (docs/contracts.md 4). With no images, explains
the concept world's held-out `explain` split; with no model flags, its reference model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ibd import paths
from ibd.commands.modelargs import add_model_flags, load_from_args
from ibd.data.csvfiles import read_rows
from ibd.errors import UserError
from ibd.explain import records as explanations
from ibd.explain.loop import (
    cam_splitter,
    class_index,
    explain_images,
    gradcam_splitter,
    image_paths,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files or directories")
    parser.add_argument(
        "--method", required=True, choices=explanations.METHODS, help="explanation method"
    )
    parser.add_argument("--out", help="output directory (default: $IBD_HOME/explanations/M/METHOD)")
    parser.add_argument("--target", help="explain this class (index or name) instead of top-1")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--relu", action="store_true", help="cam/gradcam: keep positive evidence")
    parser.add_argument("--limit", type=int, help="explain only the first N images")
    concept = parser.add_argument_group("ibd / netdissect")
    concept.add_argument("--basis", help="basis.npz (default: $IBD_HOME/basis/MODEL.npz)")
    concept.add_argument(
        "--decomposition",
        help="decompose.json (default: $IBD_HOME/decompose/MODEL.json; with --basis, only if it "
        "decomposes over that basis, else the class weights are decomposed here)",
    )
    concept.add_argument("--tally", help="NetDissect tally.csv (default: $IBD_HOME/dissect/MODEL/)")
    concept.add_argument(
        "--gradient-decomposition",
        action="store_true",
        help="ibd: decompose the per-image pooled gradient (paper 2.3) even for a GAP model",
    )
    concept.add_argument("--top", type=int, default=7, help="ibd/netdissect: components kept")
    add_model_flags(parser)


def world_explain_images() -> list[str]:
    scenes = paths.world_dir() / "scenes.csv"
    if not scenes.exists():
        raise UserError(
            f"no images given and {scenes} does not exist: run `ibd world build` or pass images"
        )
    rows = [r for r in read_rows(scenes, ["image", "split"]) if r["split"] == "explain"]
    if any(not r["image"] for r in rows):
        raise UserError(f"{scenes}: an `explain` row has no image")
    return [str(paths.world_dir() / r["image"]) for r in rows]


def run(args: argparse.Namespace) -> int:
    for flag, value, least in (("batch-size", args.batch_size, 1), ("top", args.top, 1)):
        if value < least:
            raise UserError(f"--{flag} must be at least {least}, got {value}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    loaded = load_from_args(args)
    out = Path(args.out) if args.out else paths.explanations_dir(loaded.name, args.method)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; it must be a directory (created if missing)")
    images = image_paths(args.images) if args.images else world_explain_images()
    if args.limit is not None:
        images = images[: args.limit]
    if not images:
        raise UserError("no images to explain")
    target = class_index(loaded, args.target) if args.target else None
    if args.method == "cam":
        splitter, needs_gradients = cam_splitter(loaded, args.relu), False
    elif args.method == "gradcam":
        splitter, needs_gradients = gradcam_splitter(loaded, args.relu), True
    else:
        from ibd.explain.concepts import splitter_for

        splitter, needs_gradients = splitter_for(args.method, loaded, args)
    records, heatmaps = explain_images(
        loaded,
        images,
        args.method,
        splitter,
        needs_gradients=needs_gradients,
        targets=target,
        batch_size=args.batch_size,
    )
    explanations.write(out, records, heatmaps)
    print(f"{len(records)} {args.method} explanations of {loaded.name} -> {out}")
    return 0
