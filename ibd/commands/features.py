"""`ibd features [model flags] [--dataset DIR] [--out DIR] [--float16]`: extract the model's
feature layer over a Broden-format concept dataset into a feature store (see `ibd.data.features`).

With no flags: the concept world's reference model over $IBD_HOME/world, into
$IBD_HOME/features/<model>/. `ibd basis learn` builds (or reuses) the same store.

A store already at the output directory is reused when it was built with the same settings and
rebuilt otherwise (`ibd features` is the command that builds stores); `ibd basis learn` instead
adopts an existing store's dtype and refuses to replace a store built with other settings
unless given `--rebuild` (see `store_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import uuid
from pathlib import Path
from typing import Any

from ibd import paths
from ibd.errors import UserError


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("concept data and feature store")
    group.add_argument(
        "--dataset", metavar="DIR", help="Broden-format directory (default $IBD_HOME/world)"
    )
    group.add_argument(
        "--features", metavar="DIR", help="store directory (default $IBD_HOME/features/<model>)"
    )
    group.add_argument(
        "--categories",
        default="object,part",
        help="comma-separated Broden categories whose labels are concepts (default object,part)",
    )
    group.add_argument(
        "--min-images",
        type=int,
        default=10,
        metavar="N",
        help="keep concepts present in at least N images (default 10, as the paper)",
    )
    group.add_argument("--float16", action="store_true", help="store activations as float16")
    group.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    group.add_argument(
        "--workers", type=int, default=0, help="DataLoader worker processes (default 0)"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    from ibd.commands.modelargs import add_model_flags

    add_store_flags(parser)
    parser.add_argument("--out", dest="features", metavar="DIR", help="same as --features")
    add_model_flags(parser)


def _model_identity(loaded: Any, args: argparse.Namespace) -> dict[str, Any]:
    from ibd.data.features import file_sha256

    weights = args.weights or (None if args.arch else str(paths.model_path()))
    identity: dict[str, Any] = {
        "name": loaded.name,
        "arch": loaded.arch,
        "weights": str(Path(weights).resolve()) if weights else None,
        "weights_sha256": file_sha256(weights) if weights else None,
        "mirrored": bool(loaded.meta.get("mirrored", False)),
        "input_size": list(loaded.input_size),
        "mean": list(loaded.mean),
        "std": list(loaded.std),
    }
    if weights is None:
        # A randomly initialised network differs on every run: never reuse its store.
        identity["random_init"] = uuid.uuid4().hex
    return identity


def feature_grid(loaded: Any) -> tuple[int, int]:
    """H x W of the feature layer at the model's input size."""
    import torch

    from ibd.nets import hooks

    probe = torch.zeros(1, 3, *loaded.input_size, device=loaded.device)
    with torch.no_grad():
        forward = hooks.run(loaded.model, loaded.layer, probe)
    return int(forward.features.shape[2]), int(forward.features.shape[3])


def store_dir(args: argparse.Namespace, loaded: Any) -> Path:
    """The store directory the flags name, checked to be usable as one (one-line errors)."""
    out = Path(args.features) if args.features else paths.features_dir(loaded.name)
    if out.exists() and not out.is_dir():
        raise UserError(f"feature store directory {out} is a file, not a directory")
    paths.check_creatable(out)
    return out


def _keep_existing(out: Path, spec: Any) -> Any:
    """`ibd basis learn`'s rule for a store already at `out`: the spec to build or reuse.

    Same settings: reuse (or resume). Only the dtype differs: adopt the store's dtype (float16
    and float32 features are the same activations) and say so. Other settings differ: refuse,
    naming them, rather than throw the store away. A store of a randomly initialised model can
    never be reused, so it is replaced without asking."""
    from ibd.data import features

    header = features.existing_header(out)
    if header is None or header.get("key") == spec.key():
        return spec
    old_model = header.get("model")
    if isinstance(old_model, dict) and "random_init" in old_model:
        return spec
    differences = features.spec_differences(header, spec)
    if differences == ["dtype"] and header.get("dtype") in features.DTYPES:
        print(
            f"using the existing {header['dtype']} feature store {out} "
            f"(pass --rebuild to rebuild it as {spec.dtype})",
            file=sys.stderr,
        )
        return dataclasses.replace(spec, dtype=header["dtype"])
    if not differences:  # same settings under another key (an older store format)
        differences = ["key"]
    raise UserError(
        f"the feature store {out} was built with other settings ({', '.join(differences)}): "
        "pass --rebuild to replace it, or --features DIR to build a separate store"
    )


def store_from_args(
    args: argparse.Namespace, loaded: Any, *, progress: bool = True, keep_existing: bool = False
) -> Any:
    """Build or reuse the feature store the flags describe; returns the opened `FeatureStore`.

    `keep_existing` (`ibd basis learn` without `--rebuild`): never replace a store built with
    other settings, see `_keep_existing`."""
    from ibd.data import features
    from ibd.data.broden import BrodenDataset

    out = store_dir(args, loaded)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    if args.min_images < 1:
        raise UserError(f"--min-images must be at least 1, got {args.min_images}")
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    root = Path(args.dataset) if args.dataset else paths.world_dir()
    if not root.is_dir():
        hint = " (run `ibd world build`)" if not args.dataset else ""
        raise UserError(f"concept dataset directory not found: {root}{hint}")
    dataset = BrodenDataset(
        root,
        categories=categories,
        min_images=args.min_images,
        image_size=loaded.input_size,
        mask_size=feature_grid(loaded),
        mean=loaded.mean,
        std=loaded.std,
    )
    spec = features.StoreSpec(
        model=_model_identity(loaded, args),
        layer=loaded.layer,
        dataset={
            "root": str(root.resolve()),
            "fingerprint": features.broden_fingerprint(root, categories, args.min_images),
            "categories": categories,
            "min_images": args.min_images,
        },
        dtype="float16" if args.float16 else "float32",
    )
    if keep_existing:
        spec = _keep_existing(out, spec)
    return features.build(
        loaded.model,
        dataset,
        out,
        spec,
        batch_size=args.batch_size,
        workers=args.workers,
        device=loaded.device,
        progress=progress,
    )


def run(args: argparse.Namespace) -> int:
    from ibd.commands.modelargs import load_from_args

    loaded = load_from_args(args)
    store = store_from_args(args, loaded)
    h, w = store.grid
    splits = {s: int((store.splits == s).sum()) for s in sorted(set(store.splits))}
    print(
        f"feature store {store.path}: {store.num_images} images "
        f"({', '.join(f'{k} {v}' for k, v in splits.items())}), layer {loaded.layer} "
        f"{store.dim} x {h} x {w} {store.header['dtype']}, {store.num_concepts} concepts "
        f"({len(store.dropped)} dropped with fewer than {args.min_images} images)"
    )
    return 0
