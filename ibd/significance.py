"""Significance of each concept of a decomposition: is it more than chance? (issue 27, item 3)

IBD names concepts with coefficients (paper eq. 3-6) and with shares of an image's logit
(eq. 9-11). A greedy fit over C candidates always finds *some* concepts, so a reader needs to
know which of them carry more of the class than a random direction would in their place. As
TCAV (Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
Activation Vectors", ICML 2018) does for its concept vectors, each concept is tested against a
null distribution of random concept vectors, with a Monte-Carlo p-value.

**The statistic.** For class k with chosen concepts S (the decomposition's terms, in any order)
and concept i in S, let P_{-i} be the orthogonal projection onto the span of the other chosen
vectors {q_j : j in S, j != i} and q_i' = q_i - P_{-i} q_i the part of q_i they do not span.
The least-squares coefficients of eq. 5 give s_i = (w_k . q_i') / ||q_i'||^2, so

    t_i = s_i ||q_i'|| = (w_k . q_i') / ||q_i'||                          (class statistic)

is the signed length of the part of w_k that concept i alone explains: t_i^2 is the drop in
||r_k||^2 when q_i joins the others last, and the sign is that of its coefficient. For one
image with pooled features a (eq. 9-11; the summed features and the pooled gradient w_k(A) on
the eq. 12 route), the same concept's *unique contribution* to the logit is

    u_i = s_i (q_i' . a) = (w_k . q_i')(q_i' . a) / ||q_i'||^2            (image statistic)

the increase of the explained logit (P_S w_k) . a when q_i joins the others last. Both are
invariant to the scale of q_i, bounded (|t_i| <= ||w_k||), and defined for any direction in
place of q_i. For a random direction v put in the place of q_i (and w_k refit over the others
and v), the null statistics are t(v) = (w_k . v') / ||v'|| and u(v) = (w_k . v')(v' . a) / ||v'||^2
with v' = v - P_{-i} v. The test is one-sided: a concept is evidence for the class when it
explains more, in the direction of the class, than a random vector would.

**The p-value.** With R null directions v_1..v_R,

    p = (1 + #{r : T(v_r) >= T_observed}) / (1 + R)

(Davison and Hinkley, "Bootstrap Methods and their Application", 1997, section 4.2; North,
Curtis and Sham, Am. J. Hum. Genet. 71, 2002: never 0, and valid at any R), with Monte-Carlo
standard error sqrt(p (1 - p) / R). When several nulls are used (below), a concept's p-value
is the largest of its p-values under each (the intersection-union test: significant only when
it beats every null). The p-values of one class (one explanation) are then corrected for the
number of components with Holm's step-down method (Holm 1979, "A simple sequentially
rejective multiple test procedure", Scand. J. Statist. 6):

    p~_(j) = max_{l <= j} min(1, (m - l + 1) p_(l))       (p_(1) <= ... <= p_(m))

and a component is significant when p~ <= alpha (0.05). The smallest p~ a class can reach is
m / (1 + R), so R must exceed m / alpha - 1 (139 for 7 components at 0.05).

**The nulls.** Two families of random directions, each standardised like q_c (paper 2.2:
centred over the D components, unit length):

- `gaussian`: draws v ~ N(mu, Sigma) with mu and Sigma the mean and covariance of the learned
  q_c. With C < D concepts the sample covariance has rank C - 1 (its draws would only be random
  mixtures of the learned vectors), so Sigma is the Ledoit-Wolf shrinkage estimate
  (1 - rho) S + rho (tr S / D) I with their sample estimate of rho (Ledoit and Wolf 2004, "A
  well-conditioned estimator for large-dimensional covariance matrices", J. Multivariate Anal.
  88). Why not isotropic draws scaled to the norm of q_c: the q_c of a
  real basis lie in the few directions the features vary in, where the class vectors lie too
  (docs/basis.md); an isotropic direction in R^D has a projection of about ||w_k|| / sqrt(D) on
  any class vector, a null every concept would beat. A draw from the basis' own mean and
  covariance holds directions like the learned ones, and each learned direction with weight
  about 1 / sqrt(C): a conservative null for a small basis.
- `classifiers`: TCAV's random concepts. The concept classifiers are retrained by the basis'
  own trainer (`ibd.basis.TRAINERS`, same procedure and settings) on random positive sets: for
  random concept j, the positions of training images drawn at random, as many whole images as
  it takes to match the number of training positives of real concept j mod C (so every real
  concept's size is matched equally often), against the same negatives' sampling. Its q is the
  standardised weight, as for a real concept. Such a classifier learns what tells a random set
  of images from the rest: a direction of the features, found by the same procedure, that
  means nothing.

Everything here is a pure function of arrays except the classifier null (which reads a feature
store) and the `NullBasis` file: `<decompose stem>.null.npz` beside `decompose.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ibd.errors import UserError

if TYPE_CHECKING:
    from ibd.basis import Bank, Basis
    from ibd.data.features import FeatureStore
    from ibd.decomposition import Decomposition

NULL_FORMAT = "ibd-null-1"
NULL_KINDS = ("gaussian", "classifiers")
ALPHA = 0.05
GAUSSIAN_DRAWS = 1000
CLASSIFIER_DRAWS = 200
STATISTIC = {
    "class": "t_i = s_i ||q_i'|| = (w_k . q_i') / ||q_i'||, q_i' = q_i less its projection on "
    "the other chosen concepts (the signed part of w_k concept i alone explains)",
    "image": "u_i = s_i (q_i' . a): the increase of the explained logit when concept i joins "
    "the others last",
}
_DEPENDENT = 1e-10  # ||v'||^2 below this (relative to ||v||^2): v lies in the others' span


# -- p-values and their correction ------------------------------------------------------------


def monte_carlo_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """p = (1 + #{null >= observed}) / (1 + R) per row: `observed` (n), `null` (n x R). A NaN
    null value (a direction in the others' span, which explains nothing new) counts as below."""
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    at_least = np.sum(np.nan_to_num(null, nan=-np.inf) >= observed[:, None], axis=1)
    return (1.0 + at_least) / (1.0 + null.shape[1])


def monte_carlo_error(p: np.ndarray | float, draws: int) -> np.ndarray:
    """The Monte-Carlo standard error of an estimated p-value, sqrt(p (1 - p) / R)."""
    p = np.asarray(p, dtype=np.float64)
    return np.sqrt(p * (1.0 - p) / max(int(draws), 1))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (module docstring), in the input order: with the
    p-values sorted ascending, p~_(j) = max_{l <= j} min(1, (m - l + 1) p_(l))."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


# -- the statistics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Projected:
    """Null directions of one kind with their products with the basis, computed once:
    `vectors` V (R x D), `on_basis` V q^T (R x C) and `norm2` ||v||^2 (R). Every statistic
    below needs only these, V w and V a, so testing a term costs O(R m^2) (m <= 7 concepts),
    not a projection of R vectors in R^D."""

    vectors: np.ndarray
    on_basis: np.ndarray
    norm2: np.ndarray

    @classmethod
    def of(cls, vectors: np.ndarray, q: np.ndarray) -> Projected:
        v = np.asarray(vectors, dtype=np.float64)
        return cls(v, v @ np.asarray(q, dtype=np.float64).T, np.einsum("rd,rd->r", v, v))


def project(nulls: Mapping[str, np.ndarray | Projected], q: np.ndarray) -> dict[str, Projected]:
    """Each null's `Projected` on basis q (those already projected are kept)."""
    return {k: v if isinstance(v, Projected) else Projected.of(v, q) for k, v in nulls.items()}


def _unique(
    xw: np.ndarray,
    xx: np.ndarray,
    b: np.ndarray,
    xa: np.ndarray | None,
    others: tuple[np.ndarray, np.ndarray, np.ndarray | None],
) -> np.ndarray:
    """t = (w . x') / ||x'||, or with `xa` u = (w . x')(x' . a) / ||x'||^2, for rows x given
    by x . w (`xw`), ||x||^2 (`xx`), Q_o x (`b`, R x m) and x . a (`xa`), where x' = x - P x
    and P = Q_o^T G_o^+ Q_o projects onto the span of the other chosen concepts Q_o (m x D):
        w . x' = x . w - b^T G_o^+ (Q_o w),   ||x'||^2 = ||x||^2 - b^T G_o^+ b,
        x' . a = x . a - b^T G_o^+ (Q_o a).
    `others` = (G_o^+, G_o^+ Q_o w, G_o^+ Q_o a). NaN for a row in the others' span."""
    pinv, pw, pa = others
    norm2 = xx - np.einsum("rm,rm->r", b @ pinv, b)
    live = norm2 > _DEPENDENT * np.maximum(xx, 1e-300)
    safe = np.where(live, norm2, 1.0)
    along = xw - b @ pw
    if xa is None or pa is None:
        return np.where(live, along / np.sqrt(safe), np.nan)
    return np.where(live, along * (xa - b @ pa) / safe, np.nan)


def _pinv(gram: np.ndarray) -> np.ndarray:
    """The pseudo-inverse of a symmetric Gram matrix; eigenvalues below `_DEPENDENT` times the
    largest (a concept in the span of the others) are dropped."""
    if gram.size == 0:
        return np.zeros_like(gram)
    values, vectors = np.linalg.eigh(gram)
    keep = values > _DEPENDENT * max(float(values[-1]), 1e-300)
    return (vectors[:, keep] / values[keep]) @ vectors[:, keep].T


def statistics(
    q: np.ndarray,
    w: np.ndarray,
    concepts: Sequence[int],
    nulls: Mapping[str, np.ndarray | Projected],
    a: np.ndarray | None = None,
    which: Sequence[int] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(observed statistic per tested concept, {null kind: tested x R null statistics}) for the
    chosen `concepts` (basis indices) of class vector `w` (D) over basis `q` (C x D): the class
    statistic t, or with `a` (D, pooled features) the image statistic u (module docstring).
    `which` picks the positions in `concepts` to test (default all). `nulls`: R x D arrays, or
    `Projected` on this q (`project`), which saves their product with the basis."""
    q = np.asarray(q, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    a = None if a is None else np.asarray(a, dtype=np.float64)
    chosen = np.asarray(concepts, dtype=np.int64)
    qs = q[chosen]
    gram, qw = qs @ qs.T, qs @ w
    qa = None if a is None else qs @ a
    projected = project(nulls, q)
    null_w = {k: p.vectors @ w for k, p in projected.items()}
    null_a = {k: None if a is None else p.vectors @ a for k, p in projected.items()}
    positions = list(range(len(chosen))) if which is None else list(which)
    observed = np.empty(len(positions))
    null_stats = {k: np.empty((len(positions), len(p.vectors))) for k, p in projected.items()}
    for row, i in enumerate(positions):
        o = np.array([j for j in range(len(chosen)) if j != i], dtype=np.int64)
        pinv = _pinv(gram[np.ix_(o, o)])
        others = (pinv, pinv @ qw[o], None if qa is None else pinv @ qa[o])
        observed[row] = _unique(
            qw[i : i + 1],
            gram[i : i + 1, i],
            gram[i : i + 1][:, o],
            None if qa is None else qa[i : i + 1],
            others,
        )[0]
        for kind, p in projected.items():
            b = p.on_basis[:, chosen[o]]
            null_stats[kind][row] = _unique(null_w[kind], p.norm2, b, null_a[kind], others)
    return observed, null_stats


@dataclass(frozen=True)
class Tests:
    """The tests of one class (or one explanation's components), in the order given:
    `statistic` (observed), `p_value` (the largest over the nulls), `p_error` (its Monte-Carlo
    standard error), `p_adjusted` (Holm within the group) and `significant` (p_adjusted <=
    alpha). `by_null`: each null's own p-values."""

    statistic: np.ndarray
    p_value: np.ndarray
    p_error: np.ndarray
    p_adjusted: np.ndarray
    significant: np.ndarray
    by_null: dict[str, np.ndarray] = field(default_factory=dict)

    def record(self, j: int) -> dict[str, Any]:
        """The optional fields of component j in decompose.json / explanations.json."""
        return {
            "p_value": float(self.p_value[j]),
            "p_error": float(self.p_error[j]),
            "p_adjusted": float(self.p_adjusted[j]),
            "significant": bool(self.significant[j]),
        }


def combine(
    observed: np.ndarray, null_stats: Mapping[str, np.ndarray], alpha: float = ALPHA
) -> Tests:
    """Monte-Carlo p-values under each null, the largest of them per component, its error
    (under the null that gave it), and Holm's correction over the group."""
    if not null_stats:
        raise ValueError("at least one null is needed")
    by_null = {kind: monte_carlo_p(observed, s) for kind, s in null_stats.items()}
    kinds = list(by_null)
    stacked = np.stack([by_null[k] for k in kinds])
    worst = np.argmax(stacked, axis=0)
    p = stacked[worst, np.arange(len(observed))]
    draws = np.array([null_stats[kinds[k]].shape[1] for k in worst])
    error = np.sqrt(p * (1.0 - p) / np.maximum(draws, 1))
    adjusted = holm(p)
    return Tests(observed, p, error, adjusted, adjusted <= alpha, by_null)


def term_tests(
    q: np.ndarray,
    w: np.ndarray,
    concepts: Sequence[int],
    nulls: Mapping[str, np.ndarray | Projected],
    *,
    a: np.ndarray | None = None,
    which: Sequence[int] | None = None,
    alpha: float = ALPHA,
) -> Tests:
    """Test the chosen `concepts` of one class vector `w` (class statistic t), or with `a`
    one image's components (image statistic u); `which` the positions tested and corrected
    together (an explanation's shown components). See `statistics` and `combine`."""
    observed, null_stats = statistics(q, w, concepts, nulls, a=a, which=which)
    return combine(observed, null_stats, alpha)


# -- the null directions ----------------------------------------------------------------------


def standardize_rows(v: np.ndarray) -> np.ndarray:
    """Rows centred over their components and scaled to unit length, as q_c (paper 2.2)."""
    centred = v - v.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)


def ledoit_wolf(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(mean mu, centred rows X = q - mu, shrinkage rho, target scale m) of the Ledoit-Wolf
    estimate (1 - rho) S + rho m I of the covariance of the rows of q, S = X^T X / C,
    m = tr(S) / D (Ledoit and Wolf 2004). Everything is computed from the C x C
    Gram matrix G = X X^T, never a D x D matrix:
        ||S||_F^2 = ||G||_F^2 / C^2,   d^2 = ||S - m I||_F^2 = ||S||_F^2 - D m^2,
        b^2 = min(d^2, 1/C^2 sum_c ||x_c x_c^T - S||_F^2),
        ||x_c x_c^T - S||_F^2 = ||x_c||^4 - 2/C ||G_c||^2 + ||S||_F^2,   rho = b^2 / d^2."""
    q = np.asarray(q, dtype=np.float64)
    count, dim = q.shape
    mu = q.mean(axis=0)
    x = q - mu
    gram = x @ x.T
    scale = float(np.trace(gram)) / (count * dim)
    s_norm2 = float(np.sum(gram * gram)) / count**2
    d2 = s_norm2 - dim * scale**2
    if count < 2 or d2 <= 1e-300:
        return mu, x, 1.0, max(scale, 1e-12)
    spread = np.diag(gram) ** 2 - 2.0 / count * np.sum(gram * gram, axis=1) + s_norm2
    b2 = min(d2, float(spread.sum()) / count**2)
    return mu, x, b2 / d2, scale


def gaussian_null(q: np.ndarray, draws: int, seed: int) -> tuple[np.ndarray, float]:
    """(R x D float32 directions, shrinkage rho): v = mu + sqrt(1 - rho) X^T z / sqrt(C) +
    sqrt(rho m) e with z ~ N(0, I_C), e ~ N(0, I_D) (an exact draw from N(mu, (1 - rho) S +
    rho m I), `ledoit_wolf`), standardised like q_c. Seeded by (seed, 'gaussian')."""
    if draws < 1:
        raise UserError(f"null draws must be at least 1, got {draws}")
    mu, x, rho, scale = ledoit_wolf(q)
    count, dim = x.shape
    rng = np.random.default_rng([seed, 0])
    z = rng.standard_normal((draws, count))
    e = rng.standard_normal((draws, dim))
    v = mu + math.sqrt(1.0 - rho) * (z @ x) / math.sqrt(count) + math.sqrt(rho * scale) * e
    return standardize_rows(v).astype(np.float32), rho


def random_positive_images(
    train_images: np.ndarray, sizes: Sequence[int], per_image: int, seed: int
) -> list[np.ndarray]:
    """For random concept j, training images drawn at random without replacement, as many
    whole images as it takes to reach `sizes[j]` positions (`per_image` each; all of them when
    there are fewer). Seeded per concept by (seed, 1, j)."""
    out = []
    for j, size in enumerate(sizes):
        count = min(len(train_images), max(1, math.ceil(int(size) / per_image)))
        rng = np.random.default_rng([seed, 1, j])
        out.append(np.sort(rng.choice(train_images, count, replace=False)))
    return out


def random_concept_bank(
    store: FeatureStore, sets: Sequence[np.ndarray], pool_size: int, seed: int
) -> Bank:
    """A training bank (`ibd.basis.Bank`) for random concepts: a uniform pool of `pool_size`
    training positions plus every position of each random concept's images (`sets`), labelled
    positive for that concept only."""
    import torch

    from ibd.basis import TRAIN_SPLIT, Bank

    train_rows = store.rows_of(store.images_in(TRAIN_SPLIT))
    rng = np.random.default_rng([seed, 2])
    pool_rows = (
        train_rows
        if len(train_rows) <= pool_size
        else np.sort(rng.choice(train_rows, pool_size, replace=False))
    )
    mine = [store.rows_of(images) for images in sets]
    rows = np.union1d(pool_rows, np.concatenate(mine)) if mine else pool_rows
    x = torch.from_numpy(store.read_vectors(rows))
    y = torch.zeros(len(rows), len(sets), dtype=torch.bool)
    for j, own in enumerate(mine):
        y[torch.from_numpy(np.searchsorted(rows, own)), j] = True
    pool = torch.from_numpy(np.isin(rows, pool_rows))
    return Bank(rows, x, y, y.clone(), pool)


def classifier_null(
    store: FeatureStore,
    basis: Basis,
    draws: int,
    seed: int,
    *,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(R x D float32 directions, what was done): `draws` random concepts (module docstring)
    trained at once by the basis' own trainer and settings (`ibd.basis.TRAINERS`), their
    weights standardised like q_c. Sizes follow the real concepts' training positives
    (`meta.concepts[].trained_positives`, else counted in the store), capped at
    `max_positives`."""
    from ibd.basis import TRAIN_SPLIT, TRAINERS, standardize

    if draws < 1:
        raise UserError(f"classifier null draws must be at least 1, got {draws}")
    settings = _basis_settings(basis, seed)
    sizes = _concept_sizes(store, basis, settings)
    matched = [min(int(sizes[j % len(sizes)]), settings.max_positives) for j in range(draws)]
    per_image = store.grid[0] * store.grid[1]
    train = store.images_in(TRAIN_SPLIT)
    if len(train) < 2:
        raise UserError(f"feature store {store.path} has fewer than 2 '{TRAIN_SPLIT}' images")
    sets = random_positive_images(train, matched, per_image, seed)
    bank = random_concept_bank(store, sets, settings.pool_size, seed)
    options: dict[str, Any] = {"in_place": True} if settings.procedure == "paper" else {}
    # keys of the trainers' per-concept streams: past any real concept's store index
    keys = np.arange(draws) + store.num_concepts + 1
    fit = TRAINERS[settings.procedure](bank, keys, settings, progress, **options)
    vectors = standardize(fit.weight.astype(np.float64)).astype(np.float32)
    return vectors, {
        "draws": draws,
        "procedure": settings.procedure,
        "settings": dataclasses.asdict(settings),
        "positive_images": [len(s) for s in sets],
        "positive_positions": [len(s) * per_image for s in sets],
        "features": str(store.path),
        "train_seconds": fit.seconds,
    }


def _basis_settings(basis: Basis, seed: int) -> Any:
    """The basis' training settings (its meta), with the null's seed; the paper procedure's
    defaults when the basis does not say."""
    from ibd.basis import Settings

    given = basis.meta.get("settings")
    known = {f.name for f in dataclasses.fields(Settings)}
    values = {k: v for k, v in given.items() if k in known} if isinstance(given, dict) else {}
    try:
        settings = Settings(**{**values, "seed": seed})
        settings.check()
    except (TypeError, ValueError) as exc:
        raise UserError(f"the basis' meta.settings cannot be used: {exc}") from None
    return settings


def _concept_sizes(store: FeatureStore, basis: Basis, settings: Any) -> np.ndarray:
    """Each real concept's number of training positives: `meta.concepts[].trained_positives`
    when every concept has it, else counted over the store's training images by name."""
    from ibd.basis import TRAIN_SPLIT, count_positives

    listed = basis.meta.get("concepts")
    if isinstance(listed, list) and len(listed) == len(basis.names):
        sizes = [c.get("trained_positives") if isinstance(c, dict) else None for c in listed]
        if all(isinstance(s, int) and s > 0 for s in sizes):
            return np.array(sizes, dtype=np.int64)
    index = {name: c for c, name in enumerate(store.concept_names)}
    missing = [n for n in basis.names if n not in index]
    if missing:
        raise UserError(
            f"feature store {store.path} has no concept {missing[0]!r} of the basis: "
            "pass the store the basis was learned on (--features)"
        )
    counts = count_positives(
        store, store.images_in(TRAIN_SPLIT), np.array([index[n] for n in basis.names])
    )
    return np.maximum(np.minimum(counts, settings.max_positives), 1)


# -- the null file ------------------------------------------------------------------------------


def fingerprint(q: np.ndarray) -> str:
    """sha256 of a basis' q as float32 C-order bytes, with its shape: which basis a null is of."""
    array = np.ascontiguousarray(np.asarray(q, dtype=np.float32))
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def null_path(decompose_json: str | Path) -> Path:
    """Where the null beside a decompose.json lives: `<stem>.null.npz`."""
    path = Path(decompose_json)
    return path.with_name(path.stem + ".null.npz")


@dataclass(frozen=True)
class NullBasis:
    """Random directions standing in for the concept vectors of one basis: per null kind
    (`gaussian`, `classifiers`) an R x D array of standardised rows, and `meta` (format, seed,
    the basis' fingerprint, how each was drawn). `save` writes `<stem>.null.npz` and `load`
    reads it (the file's one writer and one reader)."""

    vectors: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def draws(self) -> dict[str, int]:
        return {kind: len(v) for kind, v in self.vectors.items()}

    def check_fits(self, q: np.ndarray, where: str = "the null") -> None:
        """UserError unless this null was drawn for the basis with these q."""
        dims = {v.shape[1] for v in self.vectors.values()}
        if dims != {np.shape(q)[1]}:
            raise UserError(
                f"{where} has directions of D={sorted(dims)} but the basis has D={np.shape(q)[1]}"
            )
        if self.meta.get("basis_fingerprint") not in (None, fingerprint(q)):
            raise UserError(
                f"{where} was drawn for another basis (fingerprint differs): rerun "
                "`ibd decompose --significance`"
            )

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        if out.is_dir():
            raise UserError(f"{out} is a directory; give the .null.npz file to write")
        tmp = out.with_name(out.name + ".tmp.npz")
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in self.vectors.items()}
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, meta=np.array(json.dumps(self.meta)), **arrays)
            tmp.replace(out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
        return out

    @classmethod
    def load(cls, path: str | Path) -> NullBasis:
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"null directions not found: {path} (run `ibd decompose --significance`)"
            )
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"cannot read null directions {path}: {first}") from None
        try:
            meta = json.loads(str(arrays.pop("meta").item()))
        except (KeyError, ValueError, json.JSONDecodeError):
            raise UserError(f"{path} is not a null file: no JSON meta") from None
        if not isinstance(meta, dict) or meta.get("format") != NULL_FORMAT:
            raise UserError(f"{path} is not a null file (format must be '{NULL_FORMAT}')")
        vectors = {k: v for k, v in arrays.items() if k in NULL_KINDS}
        bad = [k for k, v in vectors.items() if v.ndim != 2 or len(v) == 0]
        if not vectors or bad or not all(np.all(np.isfinite(v)) for v in vectors.values()):
            raise UserError(f"{path}: the null directions must be non-empty finite R x D arrays")
        return cls(vectors, meta)


def draw_null(
    basis: Basis,
    *,
    kinds: Sequence[str] = NULL_KINDS,
    gaussian_draws: int = GAUSSIAN_DRAWS,
    classifier_draws: int = CLASSIFIER_DRAWS,
    seed: int = 0,
    store: FeatureStore | None = None,
    progress: bool = False,
) -> NullBasis:
    """The null directions of `basis`: the `kinds` asked for (`classifiers` needs the feature
    store the basis was learned on)."""
    unknown = [k for k in kinds if k not in NULL_KINDS]
    if unknown or not kinds:
        raise UserError(f"unknown null {unknown or kinds!r}: choose from {', '.join(NULL_KINDS)}")
    q = basis.q.astype(np.float64)
    vectors: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {
        "format": NULL_FORMAT,
        "seed": seed,
        "basis_fingerprint": fingerprint(basis.q),
        "num_concepts": len(basis.names),
        "dim": int(q.shape[1]),
    }
    if "gaussian" in kinds:
        vectors["gaussian"], rho = gaussian_null(q, gaussian_draws, seed)
        meta["gaussian"] = {"draws": gaussian_draws, "shrinkage": rho}
    if "classifiers" in kinds:
        if store is None:
            raise UserError("the classifier null needs the basis' feature store")
        vectors["classifiers"], meta["classifiers"] = classifier_null(
            store, basis, classifier_draws, seed, progress=progress
        )
    return NullBasis(vectors, meta)


# -- whole decompositions -------------------------------------------------------------------------


def with_significance(
    decomposition: Decomposition,
    weight: np.ndarray,
    q: np.ndarray,
    null: NullBasis,
    *,
    alpha: float = ALPHA,
    progress: bool = False,
) -> Decomposition:
    """The decomposition with a p-value per term (class statistic t, Holm within each class):
    `p_values`, `p_errors`, `p_adjusted`, `significant` (K x n, NaN / False in padded slots)
    and `meta.significance`. `weight` (K x D) are the decomposed class vectors, `q` the basis."""
    from tqdm import tqdm

    if not 0 < alpha < 1:
        raise UserError(f"alpha must lie in (0, 1), got {alpha}")
    w = np.asarray(weight, dtype=np.float64)
    null.check_fits(q)
    projected = project(null.vectors, q)
    shape = decomposition.concepts.shape
    p, err, adj = (np.full(shape, np.nan) for _ in range(3))
    significant = np.zeros(shape, dtype=bool)
    rows = tqdm(range(shape[0]), desc="significance", unit="class", disable=not progress)
    for k in rows:
        concepts = [c for c, _ in decomposition.terms(k)]
        if not concepts:
            continue
        tests = term_tests(q, w[k], concepts, projected, alpha=alpha)
        n = len(concepts)
        p[k, :n], err[k, :n], adj[k, :n] = tests.p_value, tests.p_error, tests.p_adjusted
        significant[k, :n] = tests.significant
    meta = {**decomposition.meta, "significance": significance_meta(null, alpha, "class")}
    return replace(
        decomposition,
        p_values=p,
        p_errors=err,
        p_adjusted=adj,
        significant=significant,
        meta=meta,
    )


def significance_meta(null: NullBasis, alpha: float, statistic: str) -> dict[str, Any]:
    """What a file records about its p-values (decompose.json meta.significance)."""
    return {
        "statistic": STATISTIC[statistic],
        "p_value": "(1 + #{null >= observed}) / (1 + R), the largest over the nulls",
        "nulls": null.draws,
        "seed": null.meta.get("seed"),
        "correction": "holm, within each class" if statistic == "class" else "holm, per image",
        "alpha": alpha,
        "null_meta": {k: v for k, v in null.meta.items() if k != "format"},
    }


ImageTester = Callable[[np.ndarray, np.ndarray, Sequence[int], Sequence[int]], Tests]


def image_tester(q: np.ndarray, null: NullBasis, alpha: float = ALPHA) -> ImageTester:
    """A function (w, a, concepts, shown) -> Tests for one image's explanation: the class (or
    pooled-gradient) vector w, its pooled features a, the decomposition's concepts and the
    positions among them that the explanation shows (Holm over those)."""
    q64 = np.asarray(q, dtype=np.float64)
    null.check_fits(q64)
    projected = project(null.vectors, q64)

    def tester(
        w: np.ndarray, a: np.ndarray, concepts: Sequence[int], shown: Sequence[int]
    ) -> Tests:
        return term_tests(q64, w, concepts, projected, a=a, which=shown, alpha=alpha)

    return tester
