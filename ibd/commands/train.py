"""`ibd train`: train scene classifiers.

- no flags: every concept-world role (world_resnet, world_resnet_mirror, world_vgg,
  world_alexnet, world_vit) on $IBD_HOME/world into $IBD_HOME/models/<role>.pt, reusing up-to-date
  checkpoints;
- `--world DIR --arch NAME --out FILE`: one world model (`--arch world_resnet_mirror` mirrors
  the reference `world_resnet.pt` beside FILE: the one there if it was trained on this world
  with this seed and no training flag is given, else one trained now); world models also
  learn from near misses (`ibd.world.nearmiss`, weight `--near-misses`);
  `--arch world_resnet_shuffled` is the reference network trained on the world's images with
  their labels permuted by `--seed` (the data-randomisation sanity check's model; never
  trained by a plain `ibd train`);
- `--data FOLDER --arch NAME --out FILE [--init-from FILE] [--train head|all]`: any torchvision
  or project architecture on an image folder (torchvision ImageFolder layout).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--world",
        type=Path,
        default=None,
        help="concept world directory (default: $IBD_HOME/world)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="image folder (one sub-folder per class, or train/ and val/ "
        "holding those) instead of the world",
    )
    parser.add_argument(
        "--arch",
        default=None,
        help="architecture (a world role, e.g. world_resnet, or world_resnet_shuffled: "
        "trained on shuffled labels; or any torchvision / project architecture with --data); "
        "default: every world role but world_resnet_shuffled",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="checkpoint to write (default: $IBD_HOME/models/<arch>.pt)",
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="directory for the role checkpoints (default: $IBD_HOME/models)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="with --data: start from the matching tensors of this state dict "
        "(a GAP variant takes torchvision's conv trunk)",
    )
    parser.add_argument(
        "--train",
        dest="train_part",
        choices=("all", "head"),
        default="all",
        help="with --data: train every layer, or only the head (GAP variants: "
        "the added conv + classifier; others: the last linear layer)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    parser.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    parser.add_argument("--batch-size", type=int, default=None, help="override the batch size")
    parser.add_argument(
        "--near-misses",
        type=float,
        default=None,
        metavar="WEIGHT",
        help="world models: weight of the loss on near misses, training images without one "
        "defining concept (default: 1 for the world roles, else 0; 0 = the world's images "
        "only)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: the CPUs available)",
    )
    parser.add_argument(
        "--force", action="store_true", help="retrain even when an up-to-date checkpoint exists"
    )


def _overrides(args: argparse.Namespace) -> dict[str, float]:
    """The training settings the flags override, checked."""
    from ibd.errors import UserError

    overrides = {
        k: v
        for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size))
        if v is not None
    }
    if any(v <= 0 for v in overrides.values()):
        raise UserError("--epochs, --lr and --batch-size must be positive")
    if args.near_misses is not None:
        if not (math.isfinite(args.near_misses) and args.near_misses >= 0):
            raise UserError(f"--near-misses must be a number >= 0, not {args.near_misses}")
        if args.data is not None:
            raise UserError("--near-misses applies to world models only (not --data)")
        overrides["near_misses"] = args.near_misses
    return overrides


def _set_threads(given: int | None) -> None:
    import torch

    from ibd.errors import UserError

    threads = len(os.sched_getaffinity(0)) if given is None else given
    if threads < 1:
        raise UserError("--threads must be positive")
    torch.set_num_threads(threads)


def _train_one(
    args: argparse.Namespace, world: Path, models: Path, overrides: dict[str, float]
) -> None:
    """One world model (--arch), the mirror with its reference when that is not there."""
    from dataclasses import replace

    from ibd.nets.train import (
        MIRROR,
        REFERENCE,
        ROLE_SETTINGS,
        TrainSettings,
        mirror_world_model,
        train_world_model,
        trained_on,
    )

    out = args.out or models / f"{args.arch}.pt"
    if args.arch == MIRROR:
        reference = out.parent / f"{REFERENCE}.pt"
        settings = replace(ROLE_SETTINGS[REFERENCE], seed=args.seed, **overrides)
        # With no training flag, the mirror is of the reference that is there (trained on
        # this world with this seed, maybe with other epochs): it is not replaced behind the
        # user's back by one trained with the default settings.
        if overrides or args.force or not trained_on(reference, world, REFERENCE, args.seed):
            train_world_model(world, REFERENCE, reference, settings, args.device, args.force)
        mirror_world_model(world, reference, out, args.device, args.force)
        return
    base = ROLE_SETTINGS.get(args.arch, TrainSettings())
    settings = replace(base, seed=args.seed, **overrides)
    train_world_model(world, args.arch, out, settings, args.device, args.force)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ibd import paths
    from ibd.commands.modelargs import device_from
    from ibd.errors import UserError
    from ibd.nets.train import ROLES, TrainSettings, train_folder, train_roles

    device_from(args.device)  # an unknown or absent device fails now, not after loading data
    overrides = _overrides(args)
    _set_threads(args.threads)
    start = time.perf_counter()

    if args.data is not None:
        if args.arch is None or args.out is None:
            raise UserError("--data needs --arch and --out")
        settings = replace(TrainSettings(), seed=args.seed, **overrides)
        train_folder(
            args.data, args.arch, args.out, settings, args.init_from, args.train_part, args.device
        )
        return 0
    if args.init_from is not None or args.train_part != "all":
        raise UserError("--init-from and --train apply to --data only")

    world = args.world or paths.world_dir()
    if not (world / "world.json").is_file():
        raise UserError(
            f"no concept world at {world}: run `ibd world build` first"
            + (" (or pass --world DIR)" if args.world is None else "")
        )
    models = args.models or paths.models_dir()
    if args.arch is None:
        if args.out is not None or overrides:
            raise UserError("--out and training overrides need --arch (one model)")
        results = train_roles(world, models, ROLES, args.device, args.force, args.seed)
        print(f"done in {time.perf_counter() - start:.0f} s:")
        for role, result in results.items():
            scores = "  ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items())
            print(f"  {role:22s} {scores}")
        return 0
    _train_one(args, world, models, overrides)
    return 0
