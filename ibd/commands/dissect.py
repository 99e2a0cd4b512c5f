"""`ibd dissect [model flags] [--dataset DIR] [--out DIR] [--quantile Q] [--iou-threshold T]`.

Network Dissection of the model's feature layer over a Broden-format dataset (default: the concept
world). Writes OUT/tally.csv (NetDissect-Lite format), OUT/dissect.json and OUT/tally.npz; OUT
defaults to $IBD_HOME/dissect/<model>/. See docs/dissect.md."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ibd import paths
from ibd.errors import UserError

# Network Dissection uses every Broden category (Bau et al. 2017).
ALL_CATEGORIES = ("color", "object", "part", "material", "scene", "texture")


def configure(parser: argparse.ArgumentParser) -> None:
    from ibd.commands.modelargs import add_model_flags
    from ibd.dissect import CATEGORY_RULES, DEFAULT_IOU_THRESHOLD, DEFAULT_QUANTILE, PRIMARY_RULES

    parser.add_argument(
        "--dataset", metavar="DIR", help="Broden-format directory (default $IBD_HOME/world)"
    )
    parser.add_argument("--out", metavar="DIR", help="output (default $IBD_HOME/dissect/<model>/)")
    parser.add_argument(
        "--quantile",
        type=float,
        default=DEFAULT_QUANTILE,
        help=f"top fraction of each unit's activations that counts as firing "
        f"(default {DEFAULT_QUANTILE}: the top 0.5%%)",
    )
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=DEFAULT_IOU_THRESHOLD,
        help=f"best IoU at which a unit counts as interpretable (default {DEFAULT_IOU_THRESHOLD})",
    )
    parser.add_argument(
        "--categories",
        help="comma-separated categories to label with (default: every one of "
        f"{','.join(ALL_CATEGORIES)} that the dataset has)",
    )
    parser.add_argument(
        "--category-rule",
        choices=CATEGORY_RULES,
        default="image",
        help="which images count toward a unit's activation for a category's concepts: image "
        "(default: the category, or a concept whose primary category it is, is labelled in the "
        "image), overlap (NetDissect-Lite's code: the firing region touches a pixel of the "
        "category), all (every image)",
    )
    parser.add_argument(
        "--primary-category",
        choices=PRIMARY_RULES,
        default="images",
        help="a label listed in several categories counts for: images (default: the category "
        "where it occurs in the most images), coverage (NetDissect-Lite: the one where its pixel "
        "coverage in c_<category>.csv is largest, ties to the last; reproduces its tallies)",
    )
    parser.add_argument(
        "--features",
        metavar="DIR",
        help="take the activations from this feature store (`ibd features` of the same model, "
        "layer and dataset) instead of running the network",
    )
    parser.add_argument("--split", choices=("train", "val"), help="only this split (default all)")
    parser.add_argument(
        "--min-images",
        type=int,
        default=1,
        metavar="N",
        help="drop concepts labelled in fewer than N images (default 1: all, as NetDissect)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_flags(parser)


def _available_categories(dataset_dir: Path) -> list[str]:
    path = dataset_dir / "category.csv"
    if not path.is_file():
        raise UserError(f"missing Broden file: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [row.get("name") or "" for row in csv.DictReader(handle)]
    except (UnicodeDecodeError, csv.Error):
        raise UserError(f"{path} is not a readable CSV file") from None


def _categories(args: argparse.Namespace, dataset_dir: Path) -> list[str]:
    """The categories asked for; by default every Broden category the dataset has (the reader
    rejects a category that is named but absent)."""
    if args.categories is not None:
        chosen = list(dict.fromkeys(c.strip() for c in args.categories.split(",") if c.strip()))
        if not chosen:
            raise UserError("--categories names no category")
        return chosen
    available = _available_categories(dataset_dir)
    chosen = [c for c in ALL_CATEGORIES if c in available]
    if not chosen:
        raise UserError(
            f"{dataset_dir / 'category.csv'} has none of the Broden categories "
            f"{', '.join(ALL_CATEGORIES)}: pass --categories"
        )
    return chosen


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.quantile < 1.0:
        raise UserError(f"--quantile must be between 0 and 1, got {args.quantile}")
    if not 0.0 <= args.iou_threshold <= 1.0:
        raise UserError(f"--iou-threshold must be between 0 and 1, got {args.iou_threshold}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if args.min_images < 1:
        raise UserError(f"--min-images must be at least 1, got {args.min_images}")

    from ibd.commands.modelargs import load_from_args
    from ibd.data.broden import BrodenDataset
    from ibd.dissect import dissect, dissect_store, write_outputs

    dataset_dir = Path(args.dataset) if args.dataset else paths.world_dir()
    if not dataset_dir.is_dir():
        raise UserError(f"dataset directory not found: {dataset_dir}")
    categories = _categories(args, dataset_dir)
    loaded = load_from_args(args)
    dataset = BrodenDataset(
        dataset_dir,
        categories=tuple(categories),
        split=args.split,
        min_images=args.min_images,
        image_size=loaded.input_size,
        mask_size=None,
        mean=loaded.mean,
        std=loaded.std,
    )
    options = {
        "quantile": args.quantile,
        "rule": args.category_rule,
        "primary": args.primary_category,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "progress": not args.quiet,
    }
    if args.features:
        from ibd.data.features import FeatureStore

        store = FeatureStore(args.features)
        if store.header.get("layer") != loaded.layer:
            raise UserError(
                f"feature store {args.features} holds layer {store.header.get('layer')}, "
                f"not {loaded.layer}: pass --layer or build the store for this layer"
            )
        result = dissect_store(store, dataset, **options)
    else:
        result = dissect(loaded.model, loaded.layer, dataset, **options)
    out = Path(args.out) if args.out else paths.dissect_dir(loaded.name)
    # --arch alone builds the architecture with its initial weights: no file to name
    weights = args.weights or (None if args.arch else paths.model_path())
    meta = {
        "model": loaded.name,
        "arch": loaded.arch,
        "layer": loaded.layer,
        "weights": None if weights is None else str(weights),
        "dataset": str(dataset_dir),
        "split": args.split,
        "requested_categories": categories,
        "min_images": args.min_images,
        "input_size": list(loaded.input_size),
    }
    files = write_outputs(out, result, args.iou_threshold, meta)
    good = result.interpretable(args.iou_threshold)
    seconds = sum(result.seconds.values())
    print(
        f"{len(good)} of {len(result.results)} units of {loaded.name}/{loaded.layer} "
        f"interpretable (IoU >= {args.iou_threshold}), {len({r.label for r in good})} concepts; "
        f"{result.num_images} images in {seconds:.0f} s ({result.num_images / seconds:.1f} "
        f"images/s) -> {files['tally']}"
    )
    return 0
