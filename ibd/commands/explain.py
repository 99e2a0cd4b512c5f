"""`ibd explain --method ibd|netdissect|cam|gradcam [model flags] [--out DIR] [IMAGE ...]`.

Writes DIR/explanations.json and DIR/heatmaps.npz (docs/contracts.md 4), and with --render a
picture of each explanation (DIR/render/*.png, paper Fig. 1/4 style) and DIR/index.html. With no
images, explains the concept world's held-out `explain` split; with no model flags, its reference
model. `--method ibd --significance` adds a p-value to each component against the random
directions `ibd decompose --significance` saved (docs/significance.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ibd import paths
from ibd.commands.modelargs import add_model_flags, load_from_args
from ibd.data.scenes import read as read_scenes
from ibd.errors import UserError
from ibd.explain.loop import Explainer
from ibd.explain.records import METHODS, write
from ibd.nets.load import LoadedModel
from ibd.nets.model import class_index
from ibd.significance import ALPHA


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files or directories")
    parser.add_argument("--method", required=True, choices=METHODS, help="explanation method")
    parser.add_argument("--out", help="output directory (default: $IBD_HOME/explanations/M/METHOD)")
    parser.add_argument("--target", help="explain this class (index or name) instead of top-1")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--relu", action="store_true", help="cam/gradcam: keep positive evidence")
    parser.add_argument("--limit", type=int, help="explain only the first N images")
    parser.add_argument(
        "--render",
        action="store_true",
        help="also draw each explanation (DIR/render/*.png) and a gallery page (DIR/index.html)",
    )
    parser.add_argument(
        "--render-style",
        choices=("overlay", "mask"),
        default="overlay",
        help="--render: heatmaps as a JET overlay (default) or the study's top-20%% mask",
    )
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
    concept.add_argument(
        "--significance",
        action="store_true",
        help="ibd: a p-value per component against random directions (Holm per image); "
        "needs the null of `ibd decompose --significance`",
    )
    concept.add_argument(
        "--null",
        metavar="NPZ",
        help="--significance: the null directions (default: <decomposition stem>.null.npz "
        "beside the decomposition file)",
    )
    concept.add_argument(
        "--alpha", type=float, help="--significance: level after Holm (default 0.05)"
    )
    add_model_flags(parser)


def image_paths(given: Sequence[str]) -> list[str]:
    """Image arguments with directories expanded to the images they hold (sorted)."""
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    out: list[str] = []
    for item in given:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
            if not found:
                raise UserError(f"no images in directory {path}")
            out.extend(str(p) for p in found)
        else:
            out.append(item)
    return out


def world_explain_images() -> list[str]:
    scenes = paths.world_dir() / "scenes.csv"
    if not scenes.exists():
        raise UserError(
            f"no images given and {scenes} does not exist: run `ibd world build` or pass images"
        )
    rows = [s for s in read_scenes(paths.world_dir(), classes=False) if s.split == "explain"]
    if any(not s.image for s in rows):
        raise UserError(f"{scenes}: an `explain` row has no image")
    return [str(s.path) for s in rows]


def explainer_for(args: argparse.Namespace, model: LoadedModel) -> Explainer:
    """The explainer of `--method`, with its files resolved from the flags and $IBD_HOME."""
    if args.method == "cam":
        from ibd.explain.cam import CAM

        return CAM(model, relu=args.relu)
    if args.method == "gradcam":
        from ibd.explain.cam import GradCAM

        return GradCAM(model, relu=args.relu)
    if args.method == "ibd":
        return ibd_explainer(args, model)
    from ibd.explain.netdissect import NetDissect

    tally = Path(args.tally) if args.tally else paths.dissect_dir(model.name) / "tally.csv"
    if not tally.exists():
        raise UserError(f"dissection not found: {tally} (run `ibd dissect` or pass --tally)")
    return NetDissect(model, tally, top=args.top)


def ibd_explainer(args: argparse.Namespace, model: LoadedModel) -> Explainer:
    """IBD with --basis (default: the model's) and --decomposition. The default decomposition
    file is used when it exists and the explanation decomposes class weights (not per-image
    gradients); with an explicit --basis it is used only if it decomposes over that basis,
    else the class weights are decomposed here, with a note on stderr."""
    from ibd.explain.basis_decomposition import IBD
    from ibd.explain.loop import feature_probe

    basis = Path(args.basis) if args.basis else paths.basis_path(model.name)
    if not basis.exists():
        raise UserError(f"basis not found: {basis} (run `ibd basis learn` or pass --basis)")
    default = paths.decompose_path(model.name)
    decomposition = Path(args.decomposition) if args.decomposition else None
    gradient_route = args.gradient_decomposition or not feature_probe(model)[1]
    if decomposition is None and default.exists() and not gradient_route:
        decomposition = default
    options: dict[str, Any] = {"top": args.top, "gradient": args.gradient_decomposition}
    if args.significance:
        options["null"] = null_file(args, decomposition or default)
        options["alpha"] = ALPHA if args.alpha is None else args.alpha
    try:
        return IBD(model, basis, decomposition, **options)
    except UserError:
        if not (args.basis and decomposition is not None and not args.decomposition):
            raise
    print(
        f"note: {decomposition} is not a decomposition of {model.name}'s class weights over "
        f"{basis}; decomposing them here (pass --decomposition to use a file)",
        file=sys.stderr,
    )
    return IBD(model, basis, None, **options)


def null_file(args: argparse.Namespace, decomposition: Path) -> Path:
    """--null, else the null `ibd decompose --significance` saved beside the decomposition."""
    from ibd.significance import null_path

    path = Path(args.null) if args.null else null_path(decomposition)
    if not path.is_file():
        raise UserError(
            f"null directions not found: {path} (run `ibd decompose --significance`, or pass "
            "--null)"
        )
    return path


def check_significance_flags(args: argparse.Namespace) -> None:
    """--null and --alpha only with --significance, which only IBD has; alpha in (0, 1)."""
    if not args.significance:
        given = [f for f, v in (("--null", args.null), ("--alpha", args.alpha)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)}: only with --significance")
        return
    if args.method != "ibd":
        raise UserError(f"--significance is for --method ibd, not {args.method}")
    if args.alpha is not None and not 0 < args.alpha < 1:
        raise UserError(f"--alpha must lie in (0, 1), got {args.alpha}")


def run(args: argparse.Namespace) -> int:
    check_significance_flags(args)
    for flag, value, least in (("batch-size", args.batch_size, 1), ("top", args.top, 1)):
        if value < least:
            raise UserError(f"--{flag} must be at least {least}, got {value}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    model = load_from_args(args)
    out = Path(args.out) if args.out else paths.explanations_dir(model.name, args.method)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; it must be a directory (created if missing)")
    images = image_paths(args.images) if args.images else world_explain_images()
    if args.limit is not None:
        images = images[: args.limit]
    if not images:
        raise UserError("no images to explain")
    target = class_index(model, args.target) if args.target else None
    explainer = explainer_for(args, model)
    if args.method != "gradcam" and explainer.needs_gradients and not args.gradient_decomposition:
        from ibd.nets.heads import route_note

        print(f"note: {model.name}: {route_note(model.layer)}", file=sys.stderr)
    records = explainer(images, target, batch_size=args.batch_size, progress=True)
    write(out, records)
    print(f"{len(records)} {args.method} explanations of {model.name} -> {out}")
    if args.significance:
        flags = [c.extra.get("significant") for e in records for c in e.components]
        print(
            f"significance: {sum(f is True for f in flags)} of {len(flags)} components significant"
        )
    if args.render:
        from ibd.explain.gallery import write_gallery

        print(f"pictures -> {write_gallery(out, style=args.render_style)}")
    return 0
