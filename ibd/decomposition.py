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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """

    solver: str
    concepts: np.ndarray
    coefficients: np.ndarray
    residuals: np.ndarray
    residual_fraction: np.ndarray
    fraction_steps: np.ndarray
    weight_norm: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """Number of concepts chosen per class."""
        return (self.concepts >= 0).sum(axis=1)

    @property
    def mean_residual_fraction(self) -> float:
        return float(self.residual_fraction.mean()) if len(self.residual_fraction) else 0.0

    def mean_fraction_by_step(self) -> np.ndarray:
        """Mean residual fraction over classes after 1..n steps; a class that stopped early
        keeps its last value (comparable with the authors' 0.885, 0.841, ... in REFERENCE 3)."""
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


def decompose(
    q: np.ndarray,
    w: np.ndarray,
    solver: str = "nnls",
    max_concepts: int = 7,
    tol: float = 1e-6,
) -> Decomposition:
    """Decompose every row of `w` (K x D) over the concept vectors `q` (C x D) with `solver`."""
    if solver == "nnls":
        return greedy_nnls(q, w, max_concepts=max_concepts, tol=tol)
    if solver == "omp":
        return gram_schmidt_pursuit(q, w, max_concepts=max_concepts)
    raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
