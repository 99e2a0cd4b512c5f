"""`ibd decompose`: decompose each class's weight vector into concepts (paper 2.1, eq. 3-6).

The class weights come from a model's final linear layer (`--arch/--weights`) or from a K x D
`.npy` (`--class-weights`); the concept vectors are the standardised `q` of a `basis.npz`
(docs/contracts.md 5). Writes `decompose.json` (docs/contracts.md 6). With no flags it reads
the concept world's reference model and basis under $IBD_HOME.

`--significance` adds a Monte-Carlo p-value to every term (`ibd.significance`,
docs/significance.md): random directions drawn like the basis' vectors and concept classifiers
trained on random image sets, saved beside the output as `<stem>.null.npz` for `ibd explain
--significance` to reuse.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ibd import paths
from ibd.decomposition import SOLVERS
from ibd.errors import UserError

if TYPE_CHECKING:
    from ibd.basis import Basis
    from ibd.data.features import FeatureStore
    from ibd.decomposition import Decomposition


def configure(parser: argparse.ArgumentParser) -> None:
    from ibd.commands.modelargs import add_model_flags

    parser.add_argument(
        "--basis", metavar="NPZ", help="concept basis (default $IBD_HOME/basis/<model>.npz)"
    )
    parser.add_argument(
        "--class-weights",
        metavar="NPY",
        help="K x D class weight matrix instead of a model (with --labels for class names)",
    )
    parser.add_argument(
        "--out", metavar="JSON", help="output (default $IBD_HOME/decompose/<model>.json)"
    )
    parser.add_argument(
        "--solver",
        choices=SOLVERS,
        default="nnls",
        help="nnls: the paper's greedy non-negative selection (eq. 6); "
        "omp: the authors' Gram-Schmidt pursuit (default nnls)",
    )
    parser.add_argument(
        "--max-concepts", type=int, default=7, metavar="N", help="concepts per class (default 7)"
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=1e-6,
        help="nnls: stop when a step lowers ||r||^2/||w||^2 by less than this (default 1e-6)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="also draw the classes' decompositions as the paper's Fig. 3 (OUT with .png)",
    )
    add_significance_flags(parser)
    add_model_flags(parser)


def add_significance_flags(parser: argparse.ArgumentParser) -> None:
    from ibd.significance import CLASSIFIER_DRAWS, GAUSSIAN_DRAWS, NULL_KINDS

    group = parser.add_argument_group("significance (docs/significance.md)")
    group.add_argument(
        "--significance",
        action="store_true",
        help="add a p-value per term against random concept directions (Holm within the "
        "class) and save the null beside OUT as <stem>.null.npz",
    )
    group.add_argument(
        "--null",
        metavar="KINDS",
        help=f"nulls to test against, comma-separated from {', '.join(NULL_KINDS)} "
        "(default both; a term must beat each)",
    )
    group.add_argument(
        "--null-draws",
        type=int,
        metavar="R",
        help=f"gaussian null: random directions drawn (default {GAUSSIAN_DRAWS})",
    )
    group.add_argument(
        "--classifier-draws",
        type=int,
        metavar="R",
        help=f"classifier null: random-image-set classifiers trained (default {CLASSIFIER_DRAWS})",
    )
    group.add_argument(
        "--features",
        metavar="DIR",
        help="classifier null: the basis' feature store (default: the one its meta names, "
        "else $IBD_HOME/features/<model>)",
    )
    group.add_argument("--seed", type=int, metavar="S", help="null draws' seed (default 0)")
    group.add_argument(
        "--alpha", type=float, metavar="A", help="significance level after Holm (default 0.05)"
    )


_SIGNIFICANCE_ONLY = ("null", "null_draws", "classifier_draws", "features", "seed", "alpha")


def significance_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The checked significance settings of the flags (None without --significance)."""
    from ibd.significance import ALPHA, CLASSIFIER_DRAWS, GAUSSIAN_DRAWS, NULL_KINDS

    if not args.significance:
        given = [n for n in _SIGNIFICANCE_ONLY if getattr(args, n) is not None]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise UserError(f"{flags}: only with --significance")
        return None
    kinds = [k.strip() for k in (args.null or ",".join(NULL_KINDS)).split(",") if k.strip()]
    unknown = [k for k in kinds if k not in NULL_KINDS]
    if unknown or not kinds:
        raise UserError(
            f"--null: unknown null {', '.join(unknown) or repr(args.null)} "
            f"(choose from {', '.join(NULL_KINDS)})"
        )
    options = {
        "kinds": list(dict.fromkeys(kinds)),
        "gaussian_draws": GAUSSIAN_DRAWS if args.null_draws is None else args.null_draws,
        "classifier_draws": (
            CLASSIFIER_DRAWS if args.classifier_draws is None else args.classifier_draws
        ),
        "seed": 0 if args.seed is None else args.seed,
    }
    alpha = ALPHA if args.alpha is None else args.alpha
    for flag, value in (
        ("--null-draws", options["gaussian_draws"]),
        ("--classifier-draws", options["classifier_draws"]),
    ):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if options["seed"] < 0:
        raise UserError(f"--seed must be >= 0, got {options['seed']}")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must lie in (0, 1), got {alpha}")
    return {**options, "alpha": alpha}


def _from_model(args: argparse.Namespace) -> tuple[np.ndarray, list[str], str, dict]:
    from ibd.commands.modelargs import load_from_args
    from ibd.nets.load import final_linear

    loaded = load_from_args(args)
    w, _ = final_linear(loaded.model)
    source = {"arch": loaded.arch, "weights": str(args.weights or paths.model_path())}
    return w.double().cpu().numpy(), list(loaded.classes), loaded.name, source


def _from_file(args: argparse.Namespace) -> tuple[np.ndarray, list[str], str, dict]:
    model_flags = {
        "--arch": args.arch,
        "--weights": args.weights,
        "--num-classes": args.num_classes,
        "--layer": args.layer,
        "--mirror": args.mirror,
        "--allow-pickle": args.allow_pickle,
        "--normalization": args.normalization,
        "--device": None if args.device == "cpu" else args.device,
    }
    given = [flag for flag, value in model_flags.items() if value not in (None, False)]
    if given:
        raise UserError(f"--class-weights replaces the model: drop {', '.join(given)}")
    from ibd.decomposition import read_class_weights

    path = Path(args.class_weights)
    w = read_class_weights(path)
    if args.labels:
        from ibd.nets.labels import read_labels

        names = read_labels(args.labels)
        if len(names) != w.shape[0]:
            raise UserError(
                f"{args.labels} names {len(names)} classes but {path} has {w.shape[0]} rows"
            )
    else:
        names = [f"class_{k}" for k in range(w.shape[0])]
    return w, names, args.name or path.stem, {"class_weights": str(path)}


def _feature_store(args: argparse.Namespace, basis_meta: dict, model: str) -> FeatureStore:
    """The feature store of the classifier null: --features, the basis' own, or the default."""
    from ibd.data.features import FeatureStore

    if args.features:
        return FeatureStore(args.features)
    named = basis_meta.get("features")
    if isinstance(named, str) and Path(named).is_dir():
        return FeatureStore(named)
    default = paths.features_dir(model)
    if not default.is_dir():
        raise UserError(
            f"the classifier null needs the basis' feature store: none at {default}; pass "
            "--features DIR, or --null gaussian"
        )
    return FeatureStore(default)


def _add_significance(
    args: argparse.Namespace,
    options: dict[str, Any],
    dec: Decomposition,
    w: np.ndarray,
    basis: Basis,
    model: str,
    out: Path,
) -> Decomposition:
    """Draw the null, save it beside `out`, and return the decomposition with p-values."""
    from ibd.significance import draw_null, null_path, with_significance

    store = _feature_store(args, basis.meta, model) if "classifiers" in options["kinds"] else None
    null = draw_null(
        basis,
        kinds=options["kinds"],
        gaussian_draws=options["gaussian_draws"],
        classifier_draws=options["classifier_draws"],
        seed=options["seed"],
        store=store,
        progress=True,
    )
    saved = null.save(null_path(out))
    tested = with_significance(
        dec, w, basis.q.astype(np.float64), null, alpha=options["alpha"], progress=True
    )
    assert tested.significant is not None
    used = tested.counts.sum()
    draws = ", ".join(f"{k} {v}" for k, v in null.draws.items())
    print(
        f"significance: {int(tested.significant.sum())} of {int(used)} terms significant "
        f"(Holm within each class, alpha {options['alpha']}; null draws: {draws}) -> {saved}"
    )
    return tested


def run(args: argparse.Namespace) -> int:
    options = significance_options(args)
    if args.max_concepts < 1:
        raise UserError(f"--max-concepts must be at least 1, got {args.max_concepts}")
    if not args.tol >= 0:
        raise UserError(f"--tol must be a number >= 0, got {args.tol}")
    if args.class_weights:
        w, class_names, model, source = _from_file(args)
    else:
        w, class_names, model, source = _from_model(args)
    basis_path = Path(args.basis) if args.basis else paths.basis_path(model)
    out = Path(args.out) if args.out else paths.decompose_path(model)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give the decompose.json file to write")
    from ibd.basis import Basis
    from ibd.decomposition import decompose

    basis = Basis.load(basis_path)
    if basis.q.shape[1] != w.shape[1]:
        where = source.get("class_weights") or source["weights"]
        raise UserError(
            f"dimension mismatch: {basis_path} has concept vectors of D={basis.q.shape[1]} but "
            f"{where} has class weights of D={w.shape[1]}"
        )
    meta = {"model": model, **source, "basis": str(basis_path), "basis_meta": basis.meta}
    dec = decompose(
        w,
        basis,
        solver=args.solver,
        max_concepts=args.max_concepts,
        tol=args.tol,
        class_names=class_names,
        meta=meta,
    )
    if options is not None:
        dec = _add_significance(args, options, dec, w, basis, model, out)
    dec.save(out)
    print(
        f"decomposed {len(class_names)} classes over {len(basis.names)} concepts "
        f"({args.solver}): mean residual fraction {dec.mean_residual_fraction:.3f}, "
        f"{dec.to_dict()['meta']['concepts_used']} concepts used -> {out}"
    )
    if args.render:
        from ibd.decomposition_figure import draw_decomposition

        print(f"Fig. 3 -> {draw_decomposition(dec.to_dict(), out.with_suffix('.png'))}")
    return 0
