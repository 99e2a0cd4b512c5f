"""`ibd decompose`: decompose each class's weight vector into concepts (paper 2.1, eq. 3-6).

The class weights come from a model's final linear layer (`--arch/--weights`) or from a K x D
`.npy` (`--class-weights`); the concept vectors are the standardised `q` of a `basis.npz`
(docs/contracts.md 5). Writes `decompose.json` (docs/contracts.md 6). With no flags it reads
the concept world's reference model and basis under $IBD_HOME.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ibd import paths
from ibd.decompose import SOLVERS, Decomposition, decompose
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
    add_model_flags(parser)


_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUM"


def _magic(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4)


def _load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UserError(f"basis file not found: {path}")
    if _magic(path) != _ZIP_MAGIC:
        raise UserError(f"{path} is not an .npz archive (see docs/contracts.md 5)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read basis {path}: {first}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path} is not an .npz archive (see docs/contracts.md 5)")
    with archive:
        missing = [k for k in ("q", "names") if k not in archive.files]
        if missing:
            raise UserError(f"{path} lacks array(s) {', '.join(missing)} of a concept basis")
        try:
            return {k: archive[k] for k in ("q", "names", "meta") if k in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"cannot read basis {path}: {first}") from None


def _text(value: object) -> str:
    """A string array element as text (byte strings, dtype S, are UTF-8)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_basis(path: Path) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """(q as C x D float64, concept names, the basis meta) from a `basis.npz`."""
    arrays = _load_npz_arrays(path)
    q, names = arrays["q"], arrays["names"]
    if q.ndim != 2 or q.shape[0] == 0 or q.dtype.kind not in "fiu":
        raise UserError(f"{path}: array q must be a non-empty C x D number array, got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise UserError(f"{path}: array q holds NaN or infinite values")
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) != q.shape[0]:
        raise UserError(f"{path}: array names must hold {q.shape[0]} strings, one per row of q")
    meta: dict[str, Any] = {}
    if "meta" in arrays:
        try:
            parsed = json.loads(_text(arrays["meta"].item()))
        except (json.JSONDecodeError, ValueError):  # not JSON, or not one element
            parsed = None
        if isinstance(parsed, dict):
            meta = parsed
    return q.astype(np.float64), [_text(n) for n in names], meta


def read_class_weights(path: Path) -> np.ndarray:
    """A K x D class weight matrix from a `.npy`."""
    if not path.is_file():
        raise UserError(f"class weights file not found: {path}")
    magic = _magic(path)
    if magic == _ZIP_MAGIC:
        raise UserError(f"{path} is an .npz archive; --class-weights takes one K x D .npy array")
    if magic != _NPY_MAGIC:
        raise UserError(f"{path} is not a .npy file (save the K x D matrix with numpy.save)")
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read class weights {path}: {first}") from None
    if w.ndim != 2 or w.shape[0] == 0 or w.dtype.kind not in "fiu":
        raise UserError(
            f"{path}: class weights must be a non-empty K x D number array, got {w.shape}"
        )
    if not np.all(np.isfinite(w)):
        raise UserError(f"{path}: class weights hold NaN or infinite values")
    return w.astype(np.float64)


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


def to_json(
    dec: Decomposition,
    class_names: list[str],
    concept_names: list[str],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The `decompose.json` document (docs/contracts.md 6), concepts in the order chosen."""
    classes = []
    for k, name in enumerate(class_names):
        n = int(dec.counts[k])
        classes.append(
            {
                "index": k,
                "name": name,
                "concepts": [
                    {"name": concept_names[c], "index": c, "coefficient": s}
                    for c, s in dec.terms(k)
                ],
                "residual_fraction": float(dec.residual_fraction[k]),
                "residual_fraction_steps": [float(x) for x in dec.fraction_steps[k, :n]],
                "weight_norm": float(dec.weight_norm[k]),
            }
        )
    used = np.unique(dec.concepts[dec.concepts >= 0])
    full_meta = {
        **meta,
        "solver": dec.solver,
        "num_classes": len(class_names),
        "num_concepts": len(concept_names),
        "concepts_used": len(used),
        "coefficients_for": "raw class weights w_k (divide by weight_norm for unit w_k)",
        "mean_residual_fraction_by_step": [float(x) for x in dec.mean_fraction_by_step()],
        "mean_residual_fraction": dec.mean_residual_fraction,
    }
    return {"classes": classes, "meta": full_meta}


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
    q, concept_names, basis_meta = read_basis(basis_path)
    if q.shape[1] != w.shape[1]:
        where = source.get("class_weights") or source["weights"]
        raise UserError(
            f"dimension mismatch: {basis_path} has concept vectors of D={q.shape[1]} but "
            f"{where} has class weights of D={w.shape[1]}"
        )

    dec = decompose(q, w, solver=args.solver, max_concepts=args.max_concepts, tol=args.tol)
    settings: dict[str, Any] = {"max_concepts": args.max_concepts}
    if args.solver == "nnls":
        settings["tol"] = args.tol
    meta = {
        "model": model,
        **source,
        "basis": str(basis_path),
        "basis_meta": basis_meta,
        "dim": int(q.shape[1]),
        "settings": settings,
    }
    document = to_json(dec, class_names, concept_names, meta)
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    print(
        f"decomposed {len(class_names)} classes over {len(concept_names)} concepts "
        f"({args.solver}): mean residual fraction {dec.mean_residual_fraction:.3f}, "
        f"{document['meta']['concepts_used']} concepts used -> {out}"
    )
    return 0
