"""`ibd decompose`: decompose each class's weight vector into concepts (paper 2.1, eq. 3-6).

The class weights come from a model's final linear layer (`--arch/--weights`) or from a K x D
`.npy` (`--class-weights`); the concept vectors are the standardised `q` of a `basis.npz`
(docs/contracts.md 5). Writes `decompose.json` (docs/contracts.md 6). With no flags it reads
the concept world's reference model and basis under $IBD_HOME.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ibd import paths
from ibd.decomposition import SOLVERS
from ibd.errors import UserError


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
    add_model_flags(parser)


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


def run(args: argparse.Namespace) -> int:
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
