"""`ibd basis learn [model flags] [--dataset DIR] [--out basis.npz] [--procedure authors|paper]`:
learn one classifier per concept on the model's feature layer (paper 2.2, 3.1), evaluate them on
held-out images (per-concept AP and mAP, paper Table 1) and write `basis.npz`
(docs/contracts.md 5).

The default procedure is the authors' (their code, behind their published decomposition): on
the concept world its class decompositions match the world's rules far better. `--procedure
paper` (the paper's text: 1:20 negatives and hard-negative mining) gives the better concept
detectors. The numbers: docs/basis.md, "Which procedure, and why".

The features come from the feature store of `ibd features` (built or reused here, cached under
$IBD_HOME/features/<model>/). An existing store is reused in its own dtype (float16 or float32);
one built with other settings (model, layer, dataset, categories, min images) is an error unless
`--rebuild` is given. With no flags: the concept world's reference model.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ibd import paths
from ibd.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    from ibd.basis import PROCEDURES
    from ibd.commands.features import add_store_flags
    from ibd.commands.modelargs import add_model_flags

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    learn = sub.add_parser(
        "learn", help="train the concept classifiers and write basis.npz", description=__doc__
    )
    learn.add_argument(
        "--out", metavar="NPZ", help="basis file (default $IBD_HOME/basis/<model>.npz)"
    )
    train = learn.add_argument_group("training (defaults depend on --procedure)")
    train.add_argument(
        "--procedure",
        choices=sorted(PROCEDURES),
        default="authors",
        help="authors (default): 15 epochs of 1:2 hardest negatives from a 1:20 pool, SGD, "
        "sigmoid + MSE (decompositions closer to the concept world's rules); paper: 1:20 "
        "resampling + 5 rounds of hard-negative mining, logistic loss (better concept "
        "detectors)",
    )
    train.add_argument("--ratio", type=int, help="negatives per positive (default 20)")
    train.add_argument(
        "--rounds", type=int, help="paper only: hard-negative mining rounds (default 5)"
    )
    train.add_argument(
        "--hard-fraction",
        type=float,
        help="paper only: share of each mining round's negatives that are the hardest, the rest "
        "fresh random ones (default 0.5; 1 = replace all by hard ones)",
    )
    train.add_argument("--epochs", type=int, help="authors: in all (15); paper: per round (10)")
    train.add_argument("--lr", type=float, help="learning rate (default 0.01)")
    train.add_argument(
        "--train-batch",
        type=int,
        dest="train_batch",
        help="authors: samples per concept per step (128); paper: bank rows per step (1024)",
    )
    train.add_argument(
        "--l2",
        type=float,
        help="paper only: L2 penalty on the raw weights, times the features' mean variance "
        "(default 1e-4; the authors' procedure has none)",
    )
    train.add_argument(
        "--max-positives", type=int, help="positive positions per concept, subsampled (4000)"
    )
    train.add_argument("--pool-size", type=int, help="random training positions in the bank")
    train.add_argument(
        "--bank-memory",
        type=int,
        metavar="MIB",
        help="memory budget of the training bank; the pool and the positives per concept "
        "shrink to fit it (default 3072)",
    )
    train.add_argument(
        "--min-positives",
        type=int,
        help="drop concepts with fewer positive positions in train or held-out images (10)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_store_flags(learn)
    learn.add_argument(
        "--rebuild",
        action="store_true",
        help="replace an existing feature store built with other settings (default: refuse; "
        "a store differing only in --float16 is used as it is)",
    )
    add_model_flags(learn)


def check_output_file(path: Path) -> None:
    """Fail now, before any work, when `path` cannot be written as a file."""
    if path.is_dir():
        raise UserError(f"basis output {path} is a directory: give --out a file such as basis.npz")
    paths.check_creatable(path)


def save_basis(basis: Any, out: Path) -> None:
    try:
        basis.save(out)
    except OSError as exc:
        out.with_name(out.name + ".tmp.npz").unlink(missing_ok=True)
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from ibd.basis import Settings, learn
    from ibd.commands.features import store_from_args
    from ibd.commands.modelargs import load_from_args

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)

    settings = Settings.for_procedure(
        args.procedure,
        ratio=args.ratio,
        rounds=args.rounds,
        hard_fraction=args.hard_fraction,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.train_batch,
        l2=args.l2,
        max_positives=args.max_positives,
        pool_size=args.pool_size,
        bank_memory_mb=args.bank_memory,
        min_positives=args.min_positives,
        seed=args.seed,
    )
    loaded = load_from_args(args)
    out = Path(args.out) if args.out else paths.basis_path(loaded.name)
    check_output_file(out)
    store = store_from_args(args, loaded, progress=not args.quiet, keep_existing=not args.rebuild)
    # killed half way (even by SIGKILL), a re-run goes on from the last finished epoch
    checkpoint = out.with_name(out.name + ".partial.pt")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)  # a fresh $IBD_HOME has no basis/
    basis = learn(store, settings, progress=not args.quiet, checkpoint=checkpoint)
    save_basis(basis, out)
    order = basis.ap.argsort()
    worst = ", ".join(f"{basis.names[i]} {basis.ap[i]:.2f}" for i in order[:3])
    best = ", ".join(f"{basis.names[i]} {basis.ap[i]:.2f}" for i in order[::-1][:3])
    print(
        f"{loaded.name}: mAP {basis.mean_ap:.3f} over {len(basis.names)} concepts on "
        f"{basis.meta['held_out_images']} held-out images (best: {best}; worst: {worst}) -> {out}"
    )
    return 0
