"""Class decomposition: write each class weight vector as a sparse sum of concept vectors.

Paper section 2.1, eq. 3-6: w_k = s_1 q_{c_1} + ... + s_n q_{c_n} + r_k, where the q_c are the
standardised concept vectors of the basis (`basis.npz` array `q`, C x D) and w_k is row k of the
classifier's K x D weight matrix (the bias is not decomposed). Two solvers:

- `greedy_nnls` (the paper, default): eq. 6, greedy selection with positive coefficients.
- `gram_schmidt_pursuit` (the authors' code, `--solver omp`): orthogonal matching pursuit.

Both return a `Decomposition` whose coefficients refer to the raw class weights, so that
w_k = sum_i s_i q_{c_i} + r_k holds exactly and an image's logit splits into concept
contributions s_i q_{c_i}.a plus the residual r_k.a + b_k (paper 2.3).

Everything is batched over classes and candidates through the Gram matrix G = Q Q^T and the
projections B = W Q^T, so no least-squares problem is solved per candidate.

`decompose` is the public entry (`ibd.decompose`): class weights or a model, and a basis, in; a
named `Decomposition` out, which `save`s and `load`s `decompose.json` (docs/contracts.md 6: its
one writer and its one reader, below). `read_class_weights` reads a K x D `.npy`.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ibd.errors import UserError

if TYPE_CHECKING:
    from ibd.basis import Basis
    from ibd.nets.load import LoadedModel

SOLVERS = ("nnls", "omp")

# A candidate whose direction orthogonal to the chosen concepts is shorter than this (relative
# to its own norm) lies in their span: adding it cannot change the residual.
_DEPENDENT = 1e-10


@dataclass(frozen=True)
class Decomposition:
    """The decomposition of K class vectors over a basis of C concepts in R^D.

    concepts: K x n int, the chosen concept indices of each class in the order chosen, padded
        with -1 where a class stopped early (n = max_concepts, or C if smaller).
    coefficients: K x n float64, s_i for the raw class weight w_k (0 in padded slots).
    residuals: K x D float64, r_k = w_k - sum_i s_i q_{c_i}.
    residual_fraction: K, ||r_k||^2 / ||w_k||^2 (0 for an all-zero w_k).
    fraction_steps: K x n, the residual fraction after each step (NaN after a class stopped).
    weight_norm: K, ||w_k||; the authors' coefficients for w_k / ||w_k|| are s_i / ||w_k||.
    class_names, concept_names: the names of the K classes and of the basis' C concepts (empty
        when the solver was called on bare arrays; a file's class without a name is "").
    meta: what was decomposed (model, basis, settings), written to `decompose.json`.
    source: the file it was loaded from ("" when made here); errors name it.
    p_values, p_errors, p_adjusted, significant: K x n, each term's Monte-Carlo p-value against
        random directions, its standard error, Holm's adjustment within the class and whether
        that is <= alpha (`ibd.significance.with_significance`); None when untested, NaN /
        False in padded slots and for terms a file gives no p-value.
    A decomposition read from a file has no `residuals` (None): the file does not hold them.
    """

    solver: str
    concepts: np.ndarray
    coefficients: np.ndarray
    residuals: np.ndarray | None
    residual_fraction: np.ndarray
    fraction_steps: np.ndarray
    weight_norm: np.ndarray
    class_names: list[str] = field(default_factory=list)
    concept_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    p_values: np.ndarray | None = None
    p_errors: np.ndarray | None = None
    p_adjusted: np.ndarray | None = None
    significant: np.ndarray | None = None

    @property
    def counts(self) -> np.ndarray:
        """Number of concepts chosen per class."""
        return (self.concepts >= 0).sum(axis=1)

    @property
    def mean_residual_fraction(self) -> float:
        return float(self.residual_fraction.mean()) if len(self.residual_fraction) else 0.0

    def mean_fraction_by_step(self) -> np.ndarray:
        """Mean residual fraction over classes after 1..n steps; a class that stopped early
        keeps its last value (comparable with the authors' ResNet18-Places365 decomposition, whose
        figures benchmarks/RESULTS.md quotes under "Figures behind the code")."""
        start = np.where(self.weight_norm > 0, 1.0, 0.0)[:, None]
        path = np.concatenate([start, self.fraction_steps], axis=1)
        for t in range(1, path.shape[1]):
            path[:, t] = np.where(np.isnan(path[:, t]), path[:, t - 1], path[:, t])
        return path[:, 1:].mean(axis=0)

    def terms(self, k: int) -> list[tuple[int, float]]:
        """(concept index, coefficient) of class k, in the order chosen."""
        n = int(self.counts[k])
        pairs = zip(self.concepts[k, :n], self.coefficients[k, :n], strict=True)
        return [(int(c), float(s)) for c, s in pairs]

    def term_significance(self, k: int, i: int) -> dict[str, Any]:
        """The optional significance fields of term i of class k in `decompose.json`
        (docs/contracts.md 6): `p_value`, `p_error`, `p_adjusted`, `significant`; {} when the
        term has no p-value."""
        if self.p_values is None or not math.isfinite(float(self.p_values[k, i])):
            return {}
        fields: dict[str, Any] = {"p_value": float(self.p_values[k, i])}
        for name, values in (("p_error", self.p_errors), ("p_adjusted", self.p_adjusted)):
            if values is not None and math.isfinite(float(values[k, i])):
                fields[name] = float(values[k, i])
        if self.significant is not None:
            fields["significant"] = bool(self.significant[k, i])
        return fields

    def to_dict(self) -> dict[str, Any]:
        """The `decompose.json` document (docs/contracts.md 6), concepts in the order chosen."""
        classes = []
        for k, name in enumerate(self.class_names):
            n = int(self.counts[k])
            classes.append(
                {
                    "index": k,
                    "name": name,
                    "concepts": [
                        {
                            "name": self.concept_names[c],
                            "index": c,
                            "coefficient": s,
                            **self.term_significance(k, i),
                        }
                        for i, (c, s) in enumerate(self.terms(k))
                    ],
                    "residual_fraction": float(self.residual_fraction[k]),
                    "residual_fraction_steps": [float(x) for x in self.fraction_steps[k, :n]],
                    "weight_norm": float(self.weight_norm[k]),
                }
            )
        used = np.unique(self.concepts[self.concepts >= 0])
        meta = {
            **self.meta,
            "solver": self.solver,
            "num_classes": len(self.class_names),
            "num_concepts": len(self.concept_names),
            "concepts_used": len(used),
            "coefficients_for": "raw class weights w_k (divide by weight_norm for unit w_k)",
            "mean_residual_fraction_by_step": [float(x) for x in self.mean_fraction_by_step()],
            "mean_residual_fraction": self.mean_residual_fraction,
        }
        return {"classes": classes, "meta": meta}

    def save(self, path: str | Path) -> Path:
        """Write `decompose.json` (replacing an earlier file only once it is written)."""
        out = Path(path)
        if out.is_dir():
            raise UserError(f"{out} is a directory; give the decompose.json file to write")
        tmp = out.with_name(out.name + ".tmp")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
            tmp.replace(out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write {out}: {exc.strerror}") from None
        return out

    @classmethod
    def load(cls, path: str | Path) -> Decomposition:
        """Read a `decompose.json`; one-line errors for a missing, unreadable or malformed file.
        Per class, `name`, `residual_fraction_steps` and `weight_norm` may be absent."""
        path = Path(path)
        document = _read_document(path)
        classes = _parse_classes(path, document)
        width = max((len(terms) for _, terms, _, _ in classes), default=0)
        concepts = np.full((len(classes), width), -1, dtype=np.int64)
        coefficients = np.zeros((len(classes), width))
        steps = np.full((len(classes), width), np.nan)
        for k, (_, terms, _, entry) in enumerate(classes):
            for i, (c, s, _) in enumerate(terms):
                concepts[k, i], coefficients[k, i] = c, s
            given = [float(x) for x in entry.get("residual_fraction_steps") or []][:width]
            steps[k, : len(given)] = given
        meta = document.get("meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        return cls(
            solver=str(meta.get("solver", "")),
            concepts=concepts,
            coefficients=coefficients,
            residuals=None,
            residual_fraction=np.array([fraction for _, _, fraction, _ in classes]),
            fraction_steps=steps,
            weight_norm=np.array([float(e.get("weight_norm", np.nan)) for *_, e in classes]),
            class_names=[name for name, *_ in classes],
            concept_names=_concept_names(path, classes),
            meta=meta,
            source=str(path),
            **_significance_arrays(path, classes, width),
        )

    def check_fits(
        self, weight: np.ndarray, class_names: list[str], q: np.ndarray, concept_names: list[str]
    ) -> None:
        """Refuse (UserError) unless this decomposes exactly these class weights (K x D) over
        this basis (q, C x D): same class count and names, each concept at its index in the
        basis, and each class's residual fraction what its terms leave of w_k (a file made
        from another model, or from this one before a retraining, fails that)."""
        where = self.source or "the decomposition"
        if len(self.class_names) != len(class_names):
            raise UserError(
                f"{where} decomposes {len(self.class_names)} classes but the model has "
                f"{len(class_names)}: was it made from another model?"
            )
        for k, (mine, theirs) in enumerate(zip(self.class_names, class_names, strict=True)):
            if mine and mine != theirs:
                raise UserError(
                    f"{where}: class {k} is {mine!r} but the model's class {k} is {theirs!r}: "
                    "was it made from another model?"
                )
        for c in np.unique(self.concepts[self.concepts >= 0]).tolist():
            name = self.concept_names[c] if c < len(self.concept_names) else ""
            if c >= len(concept_names) or concept_names[c] != name:
                raise UserError(
                    f"{where}: concept {name!r} is not index {c} of the basis; "
                    "was it made with another basis?"
                )
        w = np.asarray(weight, dtype=np.float64)
        for k, class_name in enumerate(class_names):
            residual = w[k] - sum((s * q[c] for c, s in self.terms(k)), np.zeros(w.shape[1]))
            norm = float(w[k] @ w[k])
            fraction = float(residual @ residual) / norm if norm > 0 else 0.0
            if abs(fraction - float(self.residual_fraction[k])) > 1e-4:
                raise UserError(
                    f"{where}: class {class_name!r} leaves {fraction:.4f} of the model's class "
                    f"weight unexplained, but the file says {self.residual_fraction[k]:.4f}: it "
                    "decomposes other weights or another basis (another model, or either one "
                    "before retraining); rerun `ibd decompose`"
                )


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"decomposition not found: {path} (run `ibd decompose`)") from None
    except OSError as exc:
        raise UserError(f"cannot read decomposition {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a decompose.json: {type(exc).__name__} {exc}") from None
    if not isinstance(document, dict):
        raise UserError(f"{path} is not a decompose.json: not a JSON object")
    return document


# One class of a decompose.json: its name ("" when absent), its (index, coefficient, name)
# terms, its residual fraction and the entry itself (for the optional keys).
_ClassEntry = tuple[str, list[tuple[int, float, str]], float, dict[str, Any]]


def _parse_classes(path: Path, document: dict[str, Any]) -> list[_ClassEntry]:
    """The classes of a decompose.json in index order, each index 0..K-1 present once."""
    try:
        parsed = {
            int(entry["index"]): (
                str(entry.get("name") or ""),
                [
                    (int(c["index"]), float(c["coefficient"]), str(c["name"]))
                    for c in entry["concepts"]
                ],
                float(entry["residual_fraction"]),
                entry,
            )
            for entry in document["classes"]
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path} is not a decompose.json: {type(exc).__name__} {exc}") from None
    if missing := sorted(set(range(len(parsed))) - set(parsed)):
        raise UserError(f"{path} has no class {missing[0]} (classes must be numbered 0..K-1)")
    for k in range(len(parsed)):
        name, terms, fraction, _ = parsed[k]
        numbers = [fraction, *(s for _, s, _ in terms)]
        if not all(math.isfinite(x) for x in numbers):
            raise UserError(f"{path}: class {name or k!r} has a NaN or infinite number")
        if any(c < 0 for c, _, _ in terms):
            raise UserError(f"{path}: class {name or k!r} has a negative concept index")
    return [parsed[k] for k in range(len(parsed))]


_SIGNIFICANCE_FIELDS = ("p_value", "p_error", "p_adjusted")


def _significance_arrays(
    path: Path, classes: list[_ClassEntry], width: int
) -> dict[str, np.ndarray | None]:
    """The optional per-term p-value fields of a decompose.json as K x n arrays (NaN, False
    where a term has none); all None when no term has a `p_value` (a file from before them)."""
    shape = (len(classes), width)
    arrays = {name: np.full(shape, np.nan) for name in _SIGNIFICANCE_FIELDS}
    significant = np.zeros(shape, dtype=bool)
    found = False
    for k, (name, _, _, entry) in enumerate(classes):
        for i, concept in enumerate(entry["concepts"]):
            for key in _SIGNIFICANCE_FIELDS:
                value = concept.get(key) if isinstance(concept, dict) else None
                if value is None:
                    continue
                if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise UserError(
                        f"{path}: class {name or k!r}, concept {i}: {key} must be a number "
                        f"in 0..1, got {value!r}"
                    )
                arrays[key][k, i] = float(value)
                found = True
            flag = concept.get("significant") if isinstance(concept, dict) else None
            if flag is not None and not isinstance(flag, bool):
                raise UserError(
                    f"{path}: class {name or k!r}, concept {i}: significant must be true or "
                    f"false, got {flag!r}"
                )
            significant[k, i] = bool(flag)
    if not found:
        return {"p_values": None, "p_errors": None, "p_adjusted": None, "significant": None}
    return {
        "p_values": arrays["p_value"],
        "p_errors": arrays["p_error"],
        "p_adjusted": arrays["p_adjusted"],
        "significant": significant,
    }


def _concept_names(path: Path, classes: list[_ClassEntry]) -> list[str]:
    """Concept names by basis index as the file names them ("" for an index it never uses);
    an index named two ways is an error."""
    names: dict[int, str] = {}
    for _, terms, _, _ in classes:
        for c, _, name in terms:
            if names.setdefault(c, name) != name:
                raise UserError(f"{path}: concept {c} is named both {names[c]!r} and {name!r}")
    return [names.get(c, "") for c in range(max(names, default=-1) + 1)]


def _as_arrays(q: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(q, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if q.ndim != 2 or w.ndim != 2:
        raise ValueError(f"expected 2-D arrays, got q {q.shape} and w {w.shape}")
    if q.shape[1] != w.shape[1]:
        raise ValueError(f"dimension mismatch: q is {q.shape}, w is {w.shape}")
    return q, w


def _candidates(
    gram: np.ndarray, proj: np.ndarray, chosen: np.ndarray, coef: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least squares over [C|q_c] for every candidate c of every class, in closed form.

    With chosen set S (n classes x m indices), its current least-squares coefficients s_S, and
    residual r = w - Q_S^T s_S, adding q_c gives by the Schur complement of G_SS:
        u_c = G_SS^{-1} G_Sc,  delta_c = G_cc - G_cS u_c = ||q_c - P_S q_c||^2,
        p_c = q_c . r = b_c - G_cS s_S,
        s_c = p_c / delta_c,  s_S' = s_S - u_c s_c,
        ||r'||^2 = ||r||^2 - p_c^2 / delta_c.
    Returns p (n x C), delta (n x C), s_c (n x C) and s_S' (n x m x C); delta is 0 for chosen
    or dependent candidates, whose other values are then meaningless.
    """
    n, m = chosen.shape
    diag = np.diag(gram)
    g_sc = gram[chosen]  # n x m x C
    p = proj - np.einsum("nm,nmc->nc", coef, g_sc)
    if m:
        g_ss = gram[chosen[:, :, None], chosen[:, None, :]]
        u = np.linalg.solve(g_ss, g_sc)
        delta = diag - np.einsum("nmc,nmc->nc", g_sc, u)
    else:
        u = np.zeros((n, 0, gram.shape[0]))
        delta = np.broadcast_to(diag, p.shape).copy()
    delta[delta <= _DEPENDENT * diag] = 0.0
    np.put_along_axis(delta, chosen, 0.0, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_c = np.where(delta > 0, p / np.where(delta > 0, delta, 1.0), 0.0)
    s_rest = coef[:, :, None] - u * s_c[:, None, :]
    return p, delta, s_c, s_rest


def _refit(q: np.ndarray, w: np.ndarray, concepts: np.ndarray) -> np.ndarray:
    """s = [q_S]^+ w_k per class (the pseudo-inverse, eq. 5); padded slots get 0."""
    cols = np.where(concepts[:, :, None] >= 0, q[np.maximum(concepts, 0)], 0.0)  # K x n x D
    return np.einsum("knd,kd->kn", np.linalg.pinv(np.swapaxes(cols, 1, 2)), w)


def _finish(
    solver: str,
    q: np.ndarray,
    w: np.ndarray,
    concepts: np.ndarray,
    fraction_steps: np.ndarray,
) -> Decomposition:
    coefficients = _refit(q, w, concepts)
    residuals = w - np.einsum("kn,knd->kd", coefficients, q[np.maximum(concepts, 0)])
    norm2 = np.einsum("kd,kd->k", w, w)
    r2 = np.einsum("kd,kd->k", residuals, residuals)
    fraction = np.divide(r2, norm2, out=np.zeros_like(r2), where=norm2 > 0)
    return Decomposition(
        solver=solver,
        concepts=concepts,
        coefficients=coefficients,
        residuals=residuals,
        residual_fraction=fraction,
        fraction_steps=fraction_steps,
        weight_norm=np.sqrt(norm2),
    )


def greedy_nnls(
    q: np.ndarray, w: np.ndarray, max_concepts: int = 7, tol: float = 1e-6
) -> Decomposition:
    """The paper's greedy non-negative decomposition (eq. 6), for all classes at once.

    Starting from C = [] and r = w_k, each step adds the concept
        c* = argmin_c  min_{s > 0} ||w_k - [C|q_c] s||            (eq. 6)
    and stops after `max_concepts` concepts, or when the best candidate lowers the residual
    fraction ||r||^2 / ||w_k||^2 by less than `tol`, or when no candidate is admissible.

    Admissibility (the "s > 0" of eq. 6): a candidate is admissible when the non-negative least
    squares optimum over [C|q_c] has every coefficient strictly positive. When the NNLS optimum
    sets a coefficient to zero, the strict minimum of eq. 6 is not attained: the candidate either
    adds nothing (s_c = 0) or would silently replace an earlier concept (some s_i = 0), so it is
    skipped; the chosen set only grows and its coefficients stay > 0. This is exactly what a
    loop of `scipy.optimize.nnls` over every candidate computes when it keeps the candidates
    with all coefficients > 0 and takes the smallest residual among them.

    Exact batched solution: an NNLS optimum with all coefficients > 0 is an interior point of
    the feasible set, hence the unconstrained least-squares optimum; conversely a positive
    least-squares solution is the NNLS optimum. So c is admissible iff the least-squares
    solution over [C|q_c] is positive, and its residual is then the least-squares one:
        ||r'||^2 = ||r||^2 - (q_c . r)^2 / ||q_c - P_C q_c||^2,
    computed for every candidate and class from G = Q Q^T by a Schur-complement update (see
    `_candidates`). The final coefficients are the pseudo-inverse fit over the chosen set
    (eq. 5), equal to the NNLS solution because it is positive.
    """
    q, w = _as_arrays(q, w)
    num_classes, num_concepts = w.shape[0], q.shape[0]
    n = min(int(max_concepts), num_concepts)
    gram = q @ q.T
    proj = w @ q.T
    norm2 = np.einsum("kd,kd->k", w, w)
    concepts = np.full((num_classes, n), -1, dtype=np.int64)
    coef = np.zeros((num_classes, n))
    steps = np.full((num_classes, n), np.nan)
    fraction = np.ones(num_classes)
    growing = norm2 > 0
    for m in range(n):
        rows = np.flatnonzero(growing)
        if not len(rows):
            break
        p, delta, s_c, s_rest = _candidates(gram, proj[rows], concepts[rows, :m], coef[rows, :m])
        admissible = (delta > 0) & (s_c > 0) & np.all(s_rest > 0, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(admissible, p * p / np.where(delta > 0, delta, 1.0), -np.inf)
        best = np.argmax(gain, axis=1)
        best_gain = gain[np.arange(len(rows)), best] / norm2[rows]
        take = best_gain >= tol
        growing[rows[~take]] = False
        rows, best, best_gain = rows[take], best[take], best_gain[take]
        picked = np.flatnonzero(take)
        concepts[rows, m] = best
        coef[rows, :m] = s_rest[picked, :, best]
        coef[rows, m] = s_c[picked, best]
        fraction[rows] -= best_gain
        steps[rows, m] = fraction[rows]
    return _finish("nnls", q, w, concepts, steps)


def gram_schmidt_pursuit(q: np.ndarray, w: np.ndarray, max_concepts: int = 7) -> Decomposition:
    """The authors' decomposition (`decompose_Gram_Schmidt` in CSAILVision/IBD): greedy pursuit.

    The class weight is L2-normalised, w^ = w_k / ||w_k|| (not centred). Each candidate keeps a
    direction u_c, initially q_c / ||q_c||, made orthogonal to every chosen concept and
    renormalised (Gram-Schmidt). Each step picks the largest signed projection
        c* = argmax_c u_c . w^ = argmax_c (q_c . r) / ||q_c - P_C q_c||
    (r = w^ - P_C w^ the current residual), for exactly `max_concepts` steps (fewer only when
    every remaining candidate lies in the span of the chosen ones). The final coefficients are
    the pseudo-inverse fit s = [C]^+ w (the authors add the residual's positive and negative
    parts as two extra columns, which leaves the concept coefficients unchanged because the
    residual is orthogonal to C). Non-negativity is not enforced: a coefficient can be <= 0,
    and the authors' display zeroes the heatmap of such a concept.

    The selection and the residual fraction do not depend on the scale of w_k; coefficients are
    reported for the raw w_k (divide by `weight_norm` for the authors' numbers).
    """
    q, w = _as_arrays(q, w)
    num_classes, num_concepts = w.shape[0], q.shape[0]
    n = min(int(max_concepts), num_concepts)
    norm = np.linalg.norm(w, axis=1)
    w_hat = w / np.where(norm > 0, norm, 1.0)[:, None]
    gram = q @ q.T
    proj = w_hat @ q.T
    concepts = np.full((num_classes, n), -1, dtype=np.int64)
    coef = np.zeros((num_classes, n))
    steps = np.full((num_classes, n), np.nan)
    fraction = np.ones(num_classes)
    growing = norm > 0
    for m in range(n):
        rows = np.flatnonzero(growing)
        if not len(rows):
            break
        p, delta, s_c, s_rest = _candidates(gram, proj[rows], concepts[rows, :m], coef[rows, :m])
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(delta > 0, p / np.sqrt(np.where(delta > 0, delta, 1.0)), -np.inf)
        best = np.argmax(score, axis=1)
        take = np.isfinite(score[np.arange(len(rows)), best])
        growing[rows[~take]] = False
        rows, best = rows[take], best[take]
        picked = np.flatnonzero(take)
        concepts[rows, m] = best
        coef[rows, :m] = s_rest[picked, :, best]
        coef[rows, m] = s_c[picked, best]
        fraction[rows] -= score[picked, best] ** 2
        steps[rows, m] = fraction[rows]
    return _finish("omp", q, w, concepts, steps)


def solve(
    q: np.ndarray,
    w: np.ndarray,
    solver: str = "nnls",
    max_concepts: int = 7,
    tol: float = 1e-6,
) -> Decomposition:
    """Decompose every row of `w` (K x D) over the concept vectors `q` (C x D) with `solver`
    (bare arrays in, an unnamed `Decomposition` out; `decompose` names it)."""
    if solver == "nnls":
        return greedy_nnls(q, w, max_concepts=max_concepts, tol=tol)
    if solver == "omp":
        return gram_schmidt_pursuit(q, w, max_concepts=max_concepts)
    raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")


def decompose(
    class_weights_or_model: np.ndarray | LoadedModel,
    basis: Basis | str | Path,
    *,
    solver: str = "nnls",
    max_concepts: int = 7,
    tol: float = 1e-6,
    class_names: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Decomposition:
    """Decompose each class's weight vector over the basis' concept vectors (paper eq. 3-6).

    `class_weights_or_model`: a K x D array, or a model handle (`ibd.load_model`, `Model.wrap`)
    whose final linear layer holds them. `basis`: an `ibd.Basis` or the path of a `basis.npz`.
    `class_names` default to the model's classes, else `class_<k>`. `meta` (what was
    decomposed: model, sources) goes first into the file's meta, then `dim` and `settings`.
    `tol` is the nnls stopping threshold on ||r||^2 / ||w||^2."""
    from ibd.basis import Basis

    if solver not in SOLVERS:
        raise UserError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    if max_concepts < 1:
        raise UserError(f"max_concepts must be at least 1, got {max_concepts}")
    if not tol >= 0:
        raise UserError(f"tol must be a number >= 0, got {tol}")
    if not isinstance(basis, Basis):
        basis = Basis.load(basis)
    w, names, model_name = _class_weights(class_weights_or_model, class_names)
    q = basis.q.astype(np.float64)
    if q.shape[1] != w.shape[1]:
        raise UserError(
            f"dimension mismatch: the basis has concept vectors of D={q.shape[1]} but the class "
            f"weights have D={w.shape[1]}"
        )
    settings: dict[str, Any] = {"max_concepts": max_concepts}
    if solver == "nnls":
        settings["tol"] = tol
    given = meta if meta is not None else {"model": model_name, "basis_meta": basis.meta}
    return replace(
        solve(q, w, solver=solver, max_concepts=max_concepts, tol=tol),
        class_names=names,
        concept_names=list(basis.names),
        meta={**given, "dim": int(q.shape[1]), "settings": settings},
    )


def _class_weights(
    source: np.ndarray | LoadedModel, class_names: list[str] | None
) -> tuple[np.ndarray, list[str], str | None]:
    """(K x D float64 weights, class names, model name or None) of an array or a model."""
    from ibd.nets.load import LoadedModel, final_linear

    if isinstance(source, LoadedModel):
        w = final_linear(source.model)[0].double().cpu().numpy()
        names, model_name = list(class_names or source.classes), source.name
    else:
        w = np.asarray(source.detach().cpu() if hasattr(source, "detach") else source)
        if w.ndim != 2 or w.shape[0] == 0 or w.dtype.kind not in "fiu":
            raise UserError(f"class weights must be a non-empty K x D number array, got {w.shape}")
        w = w.astype(np.float64)
        names, model_name = list(class_names or [f"class_{k}" for k in range(len(w))]), None
    if not np.all(np.isfinite(w)):
        raise UserError("class weights hold NaN or infinite values")
    if len(names) != w.shape[0]:
        raise UserError(f"{len(names)} class names for {w.shape[0]} class weight rows")
    return w, names, model_name


_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUM"


def read_class_weights(path: str | Path) -> np.ndarray:
    """A K x D class weight matrix from a `.npy` (`ibd decompose --class-weights`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"class weights file not found: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == _ZIP_MAGIC:
        raise UserError(f"{path} is an .npz archive; --class-weights takes one K x D .npy array")
    if magic != _NPY_MAGIC:
        raise UserError(f"{path} is not a .npy file (save the K x D matrix with numpy.save)")
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read class weights {path}: {first}") from None
    if w.ndim != 2 or w.shape[0] == 0 or w.dtype.kind not in "fiu":
        raise UserError(
            f"{path}: class weights must be a non-empty K x D number array, got {w.shape}"
        )
    if not np.all(np.isfinite(w)):
        raise UserError(f"{path}: class weights hold NaN or infinite values")
    return w.astype(np.float64)
