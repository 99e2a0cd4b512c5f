"""The interpretable basis: one logistic classifier per concept on per-position features
(paper 2.2 and 3.1), all concepts trained at once.

Concept c's classifier is h_c(a) = sigmoid(w_c . a + b_c) on the feature vector a = a(i,j) of one
position of the feature grid; its label is the concept mask downsampled to the grid (the store
holds both, see `ibd.data.features`). The basis vector is the standardised weight

    q_c = (w_c - mean(w_c)) / ||w_c - mean(w_c)||                         (paper 2.2)

with the mean over the D components of w_c; the bias is not part of the basis.

Training never treats concepts one after another. The C classifiers form one linear layer
W (C x D), b (C); every concept has its own training set, given as a sample mask over a shared
bank of positions held in memory (a random pool of training positions plus each concept's
positives). A step scores a block of bank rows for all concepts with one matrix product and
lets each concept learn only from the rows in its own set.

What is each concept's own and what is shared. The sample masks keep each concept's loss its
own: concept c's gradient comes only from its own rows, and a step in which c has no rows leaves
c's weights and optimiser state untouched. So, *given the same steps and the same training set*,
c's weights are those of c trained alone (up to float rounding). But the steps and the sets are
not c's alone:

- the paper trainer cuts each epoch's blocks from the union of all concepts' rows
  (`epoch_blocks`), so how many steps c takes and how many of its rows each step holds depend on
  the other concepts: on the concept world, chimney (693 rows) takes 99 Adam steps per epoch
  holding a median of 7 of its rows, not 1024;
- random negatives (the paper's training negatives and mining refills, the authors' candidate
  pool) follow one random priority over the bank's rows (`random_negatives`), and the bank holds
  every concept's positives, so which pool rows c draws depends on the other concepts too.

Adding or dropping concepts therefore changes the other concepts' steps and negatives, and so
their weights; the same store, concepts and settings give the same run again. What is
drawn per concept (which positives are kept beyond `max_positives`, the authors' initial
weights, first-epoch negatives and shuffles) comes from streams keyed by the concept's store
index (`_concept_rng`) and does not depend on the other concepts.

Procedures (paper section 2.2 and the authors' code; docs/basis.md 2):

- `authors` (the default): see below.
- `paper`: per concept a training set of its positives and ratio x as many negatives
  (1:20), drawn at random from the pool; logistic loss. Then five rounds of hard-negative mining:
  score every bank position and rebuild c's ratio x n_pos negatives from its highest-scoring
  negatives (a `hard_fraction` of them, default half) and fresh random ones (the rest), retrain.
  With hard_fraction = 1 every negative is replaced by a hard one; on the concept world that
  lowers the held-out mAP (small concepts' hardest "negatives" are mostly cells that show the
  concept off-centre), hence the default. Objective: the mean logistic loss of w . a + b on
  the raw features plus (l2/2) s^2 ||w||^2, s^2 = mean_d var(a_d) the features' overall scale
  (so a global rescaling of the features rescales w and leaves q as it was). Optimiser (the
  paper does not name one): Adam, `epochs` passes per round, on features standardised per
  dimension, x~_d = (x_d - mu_d) / sigma_d with sigma_d = max(std_d, s / 10), where the penalty
  is sum_d (l2/2) (s / sigma_d)^2 w~_d^2, the same objective; the weights are mapped back to the
  raw features, w = w~ / sigma, b = b~ - w . mu. Standardisation only conditions the
  optimisation: a penalty on w~ itself would leave a dimension of tiny spread almost free in
  raw units, and its raw weight w~_d / sigma_d would dominate q_c (as a near-dead channel of a
  VGG-style network did on the concept world: benchmarks/RESULTS.md, "Figures behind the code").
- `authors` (CSAILVision/IBD's code; the default): the 1:20 negatives are a pool of
  candidates; each of 15 epochs trains on all positives and 2 x n_pos negatives, the
  highest-scoring of the pool under the previous epoch's classifier (random in the first
  epoch); plain SGD, lr 0.01, 128 samples per concept per step, loss
  (sigmoid(w . a + b) - y)^2, no weight decay, raw features. The default because its class
  decompositions follow the concept world's rules far better (the paper procedure detects
  concepts better): docs/basis.md, "Which procedure, and why".

Evaluation: average precision of each classifier over every position of the held-out images
(the store's `val` split; no training image is ever scored), and the mAP (paper Table 1); also
the AP on each concept's held-out positives plus 20 times as many random held-out negatives, the
authors' fixed validation protocol, which is what Table 1's numbers measure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ibd.data.features import FeatureStore
from ibd.errors import UserError

PROCEDURES = ("paper", "authors")
BASIS_FORMAT = "ibd-basis-1"
TRAIN_SPLIT = "train"
HELD_OUT_SPLIT = "val"
EVAL_RATIO = 20  # negatives per positive of the authors' fixed validation sets (Table 1)
_CHUNK_ROWS = 1 << 16
_SCORE_BUDGET = 1 << 28  # bytes of float32 scores held at once when scoring many positions
_GATHER_BUDGET = 1 << 24  # floats gathered at once by the per-concept SGD step
_AP_BUDGET = 1 << 22  # positions x concepts per AP computation (~50 bytes of work each)
_COUNT_BUDGET = 1 << 24  # bytes of int64 partial counts when counting a B x C mask
SCALE_FLOOR = 0.1  # of the features' overall scale s: the least sigma_d that standardises


@dataclass(frozen=True)
class Settings:
    """Training settings; `for_procedure` fills the defaults of each procedure. The field
    defaults are those of the default procedure, the authors' (`Settings()` equals
    `Settings.for_procedure("authors")`); build the paper procedure's settings with
    `Settings.for_procedure("paper", ...)`, which sets its own rounds, epochs, batch size and
    L2 penalty (noted as "paper:" below)."""

    procedure: str = "authors"
    ratio: int = 20  # negatives per positive: training set (paper), candidate pool (authors)
    rounds: int = 0  # hard-negative mining rounds after the first training (paper: 5)
    hard_fraction: float = 0.5  # of each mining round's negatives, the rest fresh random (paper)
    epochs: int = 15  # in all (authors) / passes per round (paper: 10)
    lr: float = 0.01
    batch_size: int = 128  # samples per concept per step (authors) / bank rows (paper: 1024)
    l2: float = 0.0  # L2 penalty (paper: 1e-4; the authors' procedure has none)
    hard_ratio: int = 2  # negatives per positive in each epoch (authors)
    max_positives: int = 4000  # per concept, subsampled beyond this
    pool_size: int = 200_000  # random training positions in the bank
    bank_memory_mb: int = 3072  # the bank's budget: pool and positives shrink to fit it
    min_positives: int = 10  # positions, in the training and in the held-out images
    seed: int = 0

    @classmethod
    def for_procedure(cls, procedure: str, **overrides: Any) -> Settings:
        if procedure not in PROCEDURES:
            raise UserError(f"unknown procedure '{procedure}' (choose {', '.join(PROCEDURES)})")
        base: dict[str, Any] = {"procedure": procedure}
        if procedure == "authors":  # the field defaults
            paper_only = [
                k for k in ("rounds", "hard_fraction", "l2") if overrides.get(k) is not None
            ]
            if paper_only:
                flags = ", ".join(k.replace("_", "-") for k in paper_only)
                raise UserError(f"{flags}: only for the paper procedure")
        else:
            base.update(rounds=5, epochs=10, lr=0.01, batch_size=1024, l2=1e-4)
        base.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**base)
        settings.check()
        return settings

    def check(self) -> None:
        positive = (
            "ratio",
            "epochs",
            "batch_size",
            "hard_ratio",
            "max_positives",
            "pool_size",
            "bank_memory_mb",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1")
        if self.rounds < 0 or self.min_positives < 1:
            raise UserError("rounds must be >= 0 and min-positives >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise UserError(f"l2 must be a finite number >= 0, got {self.l2}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")
        if not 0 <= self.hard_fraction <= 1:
            raise UserError("hard-fraction must lie in 0..1")


# -- small pieces ------------------------------------------------------------------------


def standardize(weight: np.ndarray) -> np.ndarray:
    """q_c = (w_c - mean(w_c)) / ||w_c - mean(w_c)|| row by row (paper 2.2); a constant row,
    which has no direction, gives a zero row."""
    centred = weight - weight.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision of each column, AP = sum_n (R_n - R_{n-1}) P_n over the distinct
    score thresholds from high to low (R recall, P precision at the threshold; tied scores form
    one threshold), as scikit-learn's `average_precision_score`. NaN for a column without
    positives. scores, labels: P x G; returns G float64."""
    ordered, order = torch.sort(scores, dim=0, descending=True, stable=True)
    hits = labels.gather(0, order).double()
    tp = hits.cumsum(0)
    rank = torch.arange(1, len(scores) + 1, dtype=torch.float64)[:, None]
    last_of_tie = torch.ones_like(ordered, dtype=torch.bool)
    last_of_tie[:-1] = ordered[:-1] != ordered[1:]
    tp_at_ends = torch.where(last_of_tie, tp, 0.0)
    previous = torch.cat([torch.zeros_like(tp[:1]), tp_at_ends.cummax(0).values[:-1]])
    gain = torch.where(last_of_tie, (tp - previous) * tp / rank, 0.0)
    return gain.sum(0) / tp[-1]


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def column_counts(mask: torch.Tensor) -> torch.Tensor:
    """True entries of each column of a boolean B x C mask (int64), counted over row chunks:
    `mask.sum(0)` on a boolean tensor first makes a B x C int64 copy (8 times the mask)."""
    counts = torch.zeros(mask.shape[1], dtype=torch.int64)
    for part in _chunks(len(mask), max(1, _COUNT_BUDGET // (8 * max(1, mask.shape[1])))):
        counts += mask[part].sum(0)
    return counts


def _concept_rng(seed: int, concept: int, *stage: int) -> np.random.Generator:
    """Per-concept random stream keyed by the concept's store index: the draws taken from it
    (which of c's positives are kept, the authors' initial weights, first-epoch negatives and
    shuffles) do not depend on which other concepts are trained with it. The streams shared by
    all concepts, keyed (seed, 0, purpose, ...), do: the pool, the random-negative priority over
    the bank's rows, the paper trainer's block order (see the module docstring). Per-concept
    streams are keyed (seed, 1, concept, ...)."""
    return np.random.default_rng([seed, 1, concept, *stage])


# -- the bank of training positions -----------------------------------------------------


@dataclass
class Bank:
    """Training positions held in memory. `x` B x D float32 features, `y` B x C true labels,
    `positive` B x C the positives each concept trains on (all, or `max_positives` of them),
    `pool` B: the row belongs to the uniform random pool that random negatives come from."""

    rows: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    positive: torch.Tensor
    pool: torch.Tensor

    @property
    def num_positives(self) -> torch.Tensor:
        return column_counts(self.positive)


def count_positives(store: FeatureStore, images: np.ndarray, concepts: np.ndarray) -> np.ndarray:
    """Positive positions of each concept over the given images."""
    rows = store.rows_of(images)
    counts = np.zeros(len(concepts), dtype=np.int64)
    for part in _chunks(len(rows), _CHUNK_ROWS):
        counts += store.read_labels(rows[part])[:, concepts].sum(0)
    return counts


# bytes per bank row besides its D float32 features: the label and positive masks and up to
# four more positions x concepts boolean masks while negatives are rebuilt
_MASKS_PER_ROW = 6


def bank_limits(settings: Settings, dim: int, positives: np.ndarray) -> tuple[int, int]:
    """(pool size, positives per concept) for a bank that fits `settings.bank_memory_mb`: a row
    costs 4 D bytes of features plus `_MASKS_PER_ROW` bytes per concept. When the pool and
    every concept's positives (at most `max_positives`) fit, the settings as they are;
    otherwise the pool takes at most half of the budget and the per-concept cap is the largest
    that fits the rest (`positives` = each concept's positive count). So the bank, and the
    memory of training, stop growing with the dataset."""
    row_bytes = 4 * dim + _MASKS_PER_ROW * max(1, len(positives))
    rows = max(2, settings.bank_memory_mb * 2**20 // row_bytes)
    cap = settings.max_positives
    if settings.pool_size + int(np.minimum(positives, cap).sum()) <= rows:
        return settings.pool_size, cap
    pool = min(settings.pool_size, rows // 2)
    room = rows - pool
    low, high = 1, cap  # the largest cap t with sum(min(n_c, t)) <= room (at least 1)
    while low < high:
        mid = (low + high + 1) // 2
        if int(np.minimum(positives, mid).sum()) <= room:
            low = mid
        else:
            high = mid - 1
    return pool, low


def _positive_hits(
    store: FeatureStore, rows: np.ndarray, concepts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row, concept position) of every positive label among `rows`, grouped by concept (rows
    ascending within each), as int32 pairs: 8 bytes per positive, read in chunks."""
    hits_r: list[np.ndarray] = []
    hits_c: list[np.ndarray] = []
    for part in _chunks(len(rows), _CHUNK_ROWS):
        r, c = np.nonzero(store.read_labels(rows[part])[:, concepts])
        hits_r.append(rows[part][r].astype(np.int32))
        hits_c.append(c.astype(np.int32))
    hit_rows, hit_concepts = np.concatenate(hits_r), np.concatenate(hits_c)
    order = np.argsort(hit_concepts, kind="stable")
    return hit_rows[order], hit_concepts[order]


def build_bank(
    store: FeatureStore,
    images: np.ndarray,
    concepts: np.ndarray,
    settings: Settings,
    progress: bool = False,
) -> Bank:
    """The pool (`pool_size` training positions drawn uniformly) plus every concept's positives
    (at most `max_positives`, drawn uniformly), their features read in row order; both shrink
    to fit `bank_memory_mb` (`bank_limits`)."""
    rows = store.rows_of(images)
    hit_rows, hit_concepts = _positive_hits(store, rows, concepts)
    bounds = np.searchsorted(hit_concepts, np.arange(len(concepts) + 1))
    pool_size, cap = bank_limits(settings, store.dim, np.diff(bounds))
    shared = np.random.default_rng([settings.seed, 0, 0])
    pool_rows = (
        rows if len(rows) <= pool_size else np.sort(shared.choice(rows, pool_size, replace=False))
    )
    chosen: list[np.ndarray] = []
    for k, concept in enumerate(concepts):
        mine = hit_rows[bounds[k] : bounds[k + 1]].astype(np.int64)
        if len(mine) > cap:
            pick = _concept_rng(settings.seed, int(concept), 0).choice(
                len(mine), cap, replace=False
            )
            mine = np.sort(mine[pick])
        chosen.append(mine)
    del hit_rows, hit_concepts
    bank_rows = np.union1d(pool_rows, np.concatenate(chosen))
    x = torch.empty(len(bank_rows), store.dim, dtype=torch.float32)
    y = torch.empty(len(bank_rows), len(concepts), dtype=torch.bool)
    parts = list(_chunks(len(bank_rows), _CHUNK_ROWS))
    for part in tqdm(parts, desc="reading bank", unit="chunk", disable=not progress):
        x[part] = torch.from_numpy(store.read_vectors(bank_rows[part]))
        y[part] = torch.from_numpy(store.read_labels(bank_rows[part])[:, concepts])
    positive = torch.zeros_like(y)
    for k, mine in enumerate(chosen):
        positive[torch.from_numpy(np.searchsorted(bank_rows, mine)), k] = True
    pool = torch.from_numpy(np.isin(bank_rows, pool_rows))
    return Bank(bank_rows, x, y, positive, pool)


def first_k(candidates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mask of the first `counts[c]` true entries of each column c, rows in order."""
    return candidates & (candidates.cumsum(0) <= counts)


def random_negatives(
    bank: Bank,
    counts: torch.Tensor,
    seed: Sequence[int],
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """B x C mask: for concept c, `counts[c]` pool rows negative for c (and not in
    `exclude[:, c]`), drawn uniformly; fewer when the pool has fewer. Every concept ranks the
    pool by one shared random priority (from the stream `seed`) and takes its first negatives,
    so the sets overlap as much as the sampling allows."""
    priority = torch.from_numpy(np.random.default_rng(list(seed)).random(len(bank.rows)))
    order = torch.argsort(torch.where(bank.pool, priority, 2.0))[: int(bank.pool.sum())]
    chosen = torch.zeros_like(bank.y)
    group = max(1, _SCORE_BUDGET // (8 * max(1, len(order))))
    for part in _chunks(bank.y.shape[1], group):
        negative = ~bank.y[order, part]
        if exclude is not None:
            negative &= ~exclude[order, part]
        chosen[order, part] = first_k(negative, counts[part])
    return chosen


def scores_by_group(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> Iterator[tuple[slice, torch.Tensor]]:
    """(concept slice, B x G scores x W_g^T + b_g) for groups of concepts that fit the budget."""
    group = max(1, _SCORE_BUDGET // (4 * max(1, len(x))))
    for part in _chunks(len(weight), group):
        yield part, torch.addmm(bias[part], x, weight[part].T)


def hardest_negatives(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    candidates: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """B x C mask: for concept c, the `counts[c]` candidate rows (candidates[:, c]) with the
    highest scores w_c . x + b_c (all candidates when there are fewer)."""
    chosen = torch.zeros_like(candidates)
    for part, scores in scores_by_group(x, weight, bias):
        # masked in place and dropped before the next group: one B x G score buffer at a time
        masked = scores.masked_fill_(~candidates[:, part], -torch.inf)
        for j, c in enumerate(range(part.start, part.stop)):
            k = int(min(int(counts[c]), int(candidates[:, c].sum())))
            if k:
                chosen[masked[:, j].topk(k).indices, c] = True
        del scores, masked
    return chosen


def mine_negatives(
    bank: Bank,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    counts: torch.Tensor,
    hard_fraction: float,
    seed: Sequence[int],
) -> torch.Tensor:
    """One round of hard-negative mining: for concept c, the round(hard_fraction x counts[c])
    highest-scoring negatives of the whole bank, and the rest of its `counts[c]` negatives
    drawn afresh from the pool. hard_fraction = 1 replaces every negative by a hard one."""
    wanted = (counts * hard_fraction).round().long()
    hard = hardest_negatives(x, weight, bias, ~bank.y, wanted)
    return hard | random_negatives(bank, counts - column_counts(hard), seed, exclude=hard)


# -- the two trainers -------------------------------------------------------------------


@dataclass
class Adam:
    """Adam (Kingma & Ba) with a step count per concept: a concept that is not `active` in a
    step (none of its rows in the block) takes no step and its count does not advance, so its
    updates are those of torch.optim.Adam on that concept alone over the steps in which it is
    active. Which steps those are is not the concept's own choice (see `fit_masked`). Gradient of
    the L2 penalty sum_d (l2_d/2) w_d^2 is added to w's gradient (torch.optim.Adam's
    `weight_decay` when `l2` is one number; it may also be a D-vector, one per dimension); the
    bias is not penalised."""

    lr: float
    l2: float | torch.Tensor
    shape: tuple[int, int]
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c, d = self.shape
        self.state = {
            "t": torch.zeros(c, dtype=torch.float64),
            "mw": torch.zeros(c, d),
            "vw": torch.zeros(c, d),
            "mb": torch.zeros(c),
            "vb": torch.zeros(c),
        }

    def step(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        grad_w: torch.Tensor,
        grad_b: torch.Tensor,
        active: torch.Tensor,
    ) -> None:
        s = self.state
        s["t"][active] += 1
        t = s["t"][active]
        c1 = (1 - self.beta1**t).float()
        c2 = (1 - self.beta2**t).float()
        for p, g, m, v, cw, cb in (
            (weight, grad_w + self.l2 * weight, s["mw"], s["vw"], c1[:, None], c2[:, None]),
            (bias, grad_b, s["mb"], s["vb"], c1, c2),
        ):
            ma = m[active].mul_(self.beta1).add_(g[active], alpha=1 - self.beta1)
            va = v[active].mul_(self.beta2).addcmul_(g[active], g[active], value=1 - self.beta2)
            m[active], v[active] = ma, va
            p[active] -= self.lr * (ma / cw) / ((va / cb).sqrt() + self.eps)


def epoch_blocks(
    num_rows: int, active: torch.Tensor, block: int, rng: np.random.Generator
) -> list[torch.Tensor]:
    """One epoch's steps for the shared-bank trainer: the rows in some concept's set, in a
    random order, cut into blocks of `block` rows. The blocks are shared by all concepts: a
    concept's rows are spread over about |union of all sets| / block steps."""
    order = torch.from_numpy(rng.permutation(num_rows))
    return list(order[active[order]].split(block))


def fit_masked(
    x: torch.Tensor,
    y: torch.Tensor,
    member: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    epochs: int,
    block: int,
    lr: float,
    l2: float | torch.Tensor,
    seed: tuple[int, ...],
    on_epoch: Callable[[], None] | None = None,
    adam: Adam | None = None,
    first_epoch: int = 0,
    after_epoch: Callable[[int, torch.Tensor, torch.Tensor, Adam], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression of every concept on its own rows of a shared bank, all at once.

    Each step takes a block X_s of bank rows and minimises, for every concept c with rows in the
    block, the mean logistic loss over its rows M_c = {r in block : member[r, c]}:
        L_c = 1/|M_c| sum_{r in M_c} [log(1 + exp(z_rc)) - y_rc z_rc] + sum_d l2_d/2 w_cd^2,
        z = X_s W^T + b,  dL_c/dz_rc = sigmoid(z_rc) - y_rc,
    so the gradient of all C classifiers is one product G^T X_s (G = masked residuals / |M_c|).

    Each concept's loss is its own (the masks), but the step schedule is shared: the blocks are
    cut from the union of all concepts' rows (`epoch_blocks`), so the number of steps concept c
    takes per epoch and |M_c| in each depend on the other concepts' sets, not only on c's (a
    concept with 693 rows among many others can take ~100 steps of ~7 rows each rather than one
    of 693). Given the schedule, c's updates are those of torch.optim.Adam on c alone over its
    rows of each block in which it has any. Returns new (weight, bias); the inputs are not
    modified. To go on with an interrupted fit, pass the optimiser state (`adam`) and the
    weights saved after epoch `first_epoch - 1` (`after_epoch` is called after every epoch with
    what to save): the remaining epochs are then those of the uninterrupted fit."""
    weight, bias = weight.clone(), bias.clone()
    adam = adam if adam is not None else Adam(lr=lr, l2=l2, shape=tuple(weight.shape))
    active_rows = member.any(1)
    for epoch in range(first_epoch, epochs):
        rng = np.random.default_rng([*seed, epoch])
        for rows in epoch_blocks(len(x), active_rows, block, rng):
            xs, mask = x[rows], member[rows]
            count = mask.sum(0)
            residual = torch.sigmoid(torch.addmm(bias, xs, weight.T)) - y[rows].float()
            g = residual * mask / count.clamp(min=1)
            adam.step(weight, bias, g.T @ xs, g.sum(0), count > 0)
        if after_epoch is not None:
            after_epoch(epoch, weight, bias, adam)
        if on_epoch is not None:
            on_epoch()
    return weight, bias


def sgd_epoch_mse(
    x: torch.Tensor,
    y: torch.Tensor,
    sets: list[np.ndarray],
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    batch: int,
    lr: float,
    rngs: list[np.random.Generator],
) -> None:
    """One epoch of the authors' trainer, in place: concept c runs plain SGD over its own rows
    `sets[c]` (shuffled by `rngs[c]`) in batches of `batch`, on the loss
        L_c = 1/m sum_r (sigmoid(w_c . x_r + b_c) - y_rc)^2,
        dL_c/dz_r = 2/m (p_r - y_rc) p_r (1 - p_r).
    Step t gathers batch t of every concept that still has one (a C x batch x D block)."""
    width = max((len(s) for s in sets), default=0)
    order = torch.full((len(sets), width), -1, dtype=torch.long)
    for c, (rows, rng) in enumerate(zip(sets, rngs, strict=True)):
        order[c, : len(rows)] = torch.from_numpy(rng.permutation(rows))
    group = max(1, _GATHER_BUDGET // (batch * x.shape[1]))
    for start in range(0, width, batch):
        step = order[:, start : start + batch]
        live = (step >= 0).any(1).nonzero().flatten()
        for part in live.split(group):
            idx = step[part]
            valid = idx >= 0
            safe = idx.clamp(min=0)
            xs = x[safe]
            p = torch.sigmoid(torch.einsum("cbd,cd->cb", xs, weight[part]) + bias[part, None])
            target = y[safe, part[:, None]].float()
            g = 2 * (p - target) * p * (1 - p) * valid / valid.sum(1, keepdim=True)
            weight[part] -= lr * torch.einsum("cb,cbd->cd", g, xs)
            bias[part] -= lr * g.sum(1)


# -- checkpoints -------------------------------------------------------------------------


class Checkpoint:
    """Training state saved after every epoch (`torch.save` to a temporary file, then an
    atomic rename), so that a run killed at any point, even by SIGKILL, goes on from its last
    finished epoch and ends with the same weights as an uninterrupted run. `key` identifies the
    run (store, concepts, settings); a file with another key is ignored and replaced."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path, self.key = Path(path), key

    def load(self) -> dict[str, Any] | None:
        try:
            state = torch.load(self.path, weights_only=True)
        except FileNotFoundError:
            return None
        except Exception:  # a foreign or damaged file: start afresh
            return None
        return state if isinstance(state, dict) and state.get("key") == self.key else None

    def save(self, **state: Any) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            torch.save({"key": self.key, **state}, tmp)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write the checkpoint {self.path}: {exc}") from None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _pack_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.numpy(), axis=0))


def _unpack_mask(packed: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed.numpy(), axis=0, count=rows).astype(bool))


# -- procedures -------------------------------------------------------------------------


@dataclass
class Fit:
    """Raw classifier weights (C x D), biases (C), and what the training saw."""

    weight: np.ndarray
    bias: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    seconds: float


def standardize_features(
    x: torch.Tensor, in_place: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(x~, mu, sigma, s): x~ = (x - mu) / sigma per dimension, s = sqrt(mean_d std_d^2) the
    features' overall scale, sigma_d = max(std_d, SCALE_FLOOR * s) (1 when every dimension is
    constant), so a dimension of tiny spread is not blown up to unit variance. With `in_place`,
    x itself becomes x~ (no copy); otherwise x~ is one new tensor, filled in place (no temporary
    besides it). Either way the values are those of (x - mu) / sigma."""
    mu = x.mean(0)
    std = x.std(0)
    scale = float(std.double().square().mean().sqrt())
    if not scale > 0:
        scale = 1.0
    sigma = std.clamp(min=SCALE_FLOOR * scale)
    xt = x if in_place else x.clone()
    return xt.sub_(mu).div_(sigma), mu, sigma, scale


def train_paper(
    bank: Bank,
    concepts: np.ndarray,
    settings: Settings,
    progress: bool = False,
    *,
    in_place: bool = False,
    checkpoint: Checkpoint | None = None,
) -> Fit:
    """Paper procedure on standardised features (see the module docstring). The standardised
    features take a copy of `bank.x`, or with `in_place` replace it (the bank's raw features are
    then gone: for callers that do not need them afterwards, such as `learn`). With a
    `checkpoint`, the state after every epoch is saved there and a saved state is taken up."""
    started = time.perf_counter()
    xt, mu, sigma, scale = standardize_features(bank.x, in_place)
    # (l2/2) s^2 ||w||^2 on the raw weights w = w~ / sigma, written for w~
    penalty = settings.l2 * (scale / sigma) ** 2
    n_pos = bank.num_positives
    counts = settings.ratio * n_pos
    run = _PaperRun.start(bank, len(concepts), xt.shape[1], settings, checkpoint)
    bar = tqdm(
        total=(settings.rounds + 1) * settings.epochs,
        initial=run.round * settings.epochs + run.epoch,
        desc="basis (paper)",
        unit="epoch",
        disable=not progress,
    )
    with bar:
        for round_ in range(run.round, settings.rounds + 1):
            if run.negative is None:
                run.negative = (
                    random_negatives(bank, counts, (settings.seed, 0, 1, 0))
                    if round_ == 0
                    else mine_negatives(
                        bank,
                        xt,
                        run.weight,
                        run.bias,
                        counts,
                        settings.hard_fraction,
                        (settings.seed, 0, 1, round_),
                    )
                )
            run.round = round_
            adam = None
            if run.adam is not None:
                adam = Adam(lr=settings.lr, l2=penalty, shape=tuple(run.weight.shape))
                adam.state = run.adam
            run.weight, run.bias = fit_masked(
                xt,
                bank.y,
                bank.positive | run.negative,
                run.weight,
                run.bias,
                epochs=settings.epochs,
                block=settings.batch_size,
                lr=settings.lr,
                l2=penalty,
                seed=(settings.seed, 0, 2, round_),
                on_epoch=lambda: bar.update(1),
                adam=adam,
                first_epoch=run.epoch,
                after_epoch=run.saver(checkpoint, settings.epochs),
            )
            run.last_negative, run.negative, run.adam, run.epoch = run.negative, None, None, 0
    assert run.last_negative is not None
    raw_w = run.weight / sigma
    raw_b = run.bias - raw_w @ mu
    return Fit(
        raw_w.numpy(),
        raw_b.numpy(),
        n_pos.numpy(),
        column_counts(run.last_negative).numpy(),
        time.perf_counter() - started,
    )


@dataclass
class _PaperRun:
    """Where the paper trainer is: round, next epoch in it, weights, that round's optimiser
    state and negatives (None: a fresh Adam / negatives still to be drawn or mined)."""

    round: int
    epoch: int
    weight: torch.Tensor
    bias: torch.Tensor
    adam: dict[str, torch.Tensor] | None
    negative: torch.Tensor | None
    last_negative: torch.Tensor | None = None  # the finished round's (for the counts)

    @classmethod
    def start(
        cls,
        bank: Bank,
        concepts: int,
        dim: int,
        settings: Settings,
        checkpoint: Checkpoint | None,
    ) -> _PaperRun:
        state = checkpoint.load() if checkpoint is not None else None
        if state is None:
            return cls(0, 0, torch.zeros(concepts, dim), torch.zeros(concepts), None, None)
        round_, epoch = int(state["round"]), int(state["epoch"])
        negative = _unpack_mask(state["negative"], len(bank.rows))
        if epoch >= settings.epochs:  # the round was finished: mine the next one's negatives
            return cls(round_ + 1, 0, state["weight"], state["bias"], None, None, negative)
        adam = {k: state[f"adam_{k}"] for k in ("t", "mw", "vw", "mb", "vb")}
        return cls(round_, epoch, state["weight"], state["bias"], adam, negative)

    def saver(
        self, checkpoint: Checkpoint | None, epochs: int
    ) -> Callable[[int, torch.Tensor, torch.Tensor, Adam], None] | None:
        if checkpoint is None:
            return None
        negative = self.negative
        assert negative is not None
        packed = _pack_mask(negative)

        def save(epoch: int, weight: torch.Tensor, bias: torch.Tensor, adam: Adam) -> None:
            last = epoch + 1 >= epochs
            checkpoint.save(
                round=self.round,
                epoch=epoch + 1,
                weight=weight,
                bias=bias,
                negative=packed,
                # the optimiser state matters only within a round
                **({} if last else {f"adam_{k}": v for k, v in adam.state.items()}),
            )

        return save


def train_authors(
    bank: Bank,
    concepts: np.ndarray,
    settings: Settings,
    progress: bool = False,
    *,
    checkpoint: Checkpoint | None = None,
) -> Fit:
    """The authors' procedure on raw features (see the module docstring). With a `checkpoint`,
    the weights after every epoch are saved there and a saved state is taken up (an epoch's
    negatives are the hardest under the previous epoch's weights, so those are all it needs)."""
    started = time.perf_counter()
    d = bank.x.shape[1]
    n_pos = bank.num_positives
    candidates = random_negatives(bank, settings.ratio * n_pos, (settings.seed, 0, 1, 0))
    per_epoch = settings.hard_ratio * n_pos
    state = checkpoint.load() if checkpoint is not None else None
    if state is None:
        first = 0
        bound = 1 / np.sqrt(d)
        init = [_concept_rng(settings.seed, int(c), 1) for c in concepts]
        weight = torch.from_numpy(np.stack([r.uniform(-bound, bound, d) for r in init])).float()
        bias = torch.from_numpy(np.array([r.uniform(-bound, bound) for r in init])).float()
    else:
        first, weight, bias = int(state["epoch"]), state["weight"], state["bias"]
    positives = [(bank.positive[:, k]).nonzero().flatten().numpy() for k in range(len(concepts))]
    epochs = tqdm(range(first, settings.epochs), desc="basis (authors)", disable=not progress)
    for epoch in epochs:
        if epoch == 0:
            negative = _first_negatives(candidates, concepts, per_epoch, settings.seed)
        else:
            negative = hardest_negatives(bank.x, weight, bias, candidates, per_epoch)
        sets = [
            np.concatenate([positives[k], (negative[:, k]).nonzero().flatten().numpy()])
            for k in range(len(concepts))
        ]
        rngs = [_concept_rng(settings.seed, int(c), 3, epoch) for c in concepts]
        sgd_epoch_mse(
            bank.x,
            bank.y,
            sets,
            weight,
            bias,
            batch=settings.batch_size,
            lr=settings.lr,
            rngs=rngs,
        )
        if checkpoint is not None:
            checkpoint.save(epoch=epoch + 1, weight=weight, bias=bias)
    return Fit(
        weight.numpy(),
        bias.numpy(),
        n_pos.numpy(),
        column_counts(candidates).numpy(),
        time.perf_counter() - started,
    )


def _first_negatives(
    candidates: torch.Tensor, concepts: np.ndarray, per_epoch: torch.Tensor, seed: int
) -> torch.Tensor:
    """The authors' first epoch: per concept, `per_epoch` of its candidates at random."""
    negative = torch.zeros_like(candidates)
    for k, c in enumerate(concepts):
        pool = (candidates[:, k]).nonzero().flatten().numpy()
        pick = _concept_rng(seed, int(c), 2).permutation(pool)
        negative[torch.from_numpy(pick[: int(per_epoch[k])]), k] = True
    return negative


TRAINERS = {"paper": train_paper, "authors": train_authors}


def peak_memory_mib() -> float | None:
    """The process's peak resident memory so far (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, else KiB


def check_finite(fit: Fit, names: Sequence[str]) -> None:
    """UserError naming the concepts whose trained weight or bias is not finite (a diverging
    run, e.g. a learning rate far too large): such a basis must not be saved."""
    bad = np.flatnonzero(~(np.isfinite(fit.weight).all(1) & np.isfinite(fit.bias)))
    if len(bad):
        shown = ", ".join(names[i] for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise UserError(
            f"training diverged: non-finite weights for {len(bad)} of {len(names)} concepts "
            f"({shown}); try a smaller lr"
        )


# -- evaluation and the whole pipeline --------------------------------------------------


def held_out_ap(
    store: FeatureStore,
    images: np.ndarray,
    concepts: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    ratio: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(AP over every position of `images`, AP at 1:`ratio`) of each classifier, scored with
    the raw weights. The second is the authors' fixed validation protocol (behind the paper's
    Table 1): all held-out positives of c and `ratio` times as many held-out negatives drawn
    uniformly (one seeded draw shared by the concepts). Concepts are taken in groups whose P x G
    scores fit the budget, one pass over the images' features per group."""
    rows = store.rows_of(images)
    w = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    order = torch.from_numpy(np.random.default_rng([seed, 0, 3]).permutation(len(rows)))
    group = max(1, _SCORE_BUDGET // (4 * max(1, len(rows))))
    ap_all = np.empty(len(concepts))
    ap_ratio = np.empty(len(concepts))
    parts = list(_chunks(len(concepts), group))
    for part in tqdm(parts, desc="held-out AP", unit="group", disable=not progress):
        scores = torch.empty(len(rows), part.stop - part.start)
        labels = torch.empty(len(rows), part.stop - part.start, dtype=torch.bool)
        for chunk in _chunks(len(rows), _CHUNK_ROWS):
            x = torch.from_numpy(store.read_vectors(rows[chunk]))
            scores[chunk] = torch.addmm(b[part], x, w[part].T)
            labels[chunk] = torch.from_numpy(store.read_labels(rows[chunk])[:, concepts[part]])
        keep = labels.clone()
        keep[order] |= first_k(~labels[order], ratio * column_counts(labels))
        # Left-out positions score -inf: one last threshold after every positive, adding no
        # recall, so the AP is that of the kept positions alone.
        sampled = torch.where(keep, scores, -torch.inf)
        for cols in _chunks(part.stop - part.start, max(1, _AP_BUDGET // len(rows))):
            at = slice(part.start + cols.start, part.start + cols.stop)
            ap_all[at] = average_precision(scores[:, cols], labels[:, cols]).numpy()
            ap_ratio[at] = average_precision(sampled[:, cols], labels[:, cols]).numpy()
    return ap_all, ap_ratio


@dataclass
class Basis:
    """A learned concept basis (docs/contracts.md 5): `Basis.learn(features)` trains it,
    `save(path)` writes `basis.npz` and `Basis.load(path)` reads it (the file's one writer and
    one reader, side by side below). `q` is the standardised C x D concept vectors (paper 2.2):
    a loaded basis keeps the file's `q` exactly (`stored_q`)."""

    names: list[str]
    categories: list[str]
    weight: np.ndarray
    bias: np.ndarray
    ap: np.ndarray
    meta: dict[str, Any]
    stored_q: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def q(self) -> np.ndarray:
        if self.stored_q is not None:
            return self.stored_q
        return standardize(self.weight.astype(np.float64)).astype(np.float32)

    @property
    def mean_ap(self) -> float:
        return float(np.mean(self.ap)) if len(self.ap) else float("nan")

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "names": np.array(self.names, dtype=str),
            "categories": np.array(self.categories, dtype=str),
            "weight": self.weight.astype(np.float32),
            "bias": self.bias.astype(np.float32),
            "q": self.q,
            "ap": self.ap.astype(np.float32),
            "meta": np.array(json.dumps(self.meta)),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **self.arrays())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Basis:
        """Read a `basis.npz`. Only `q` and `names` are required (a basis converted from the
        authors' files may hold no more): a missing `weight` is `q`, `bias` zeros, `categories`
        empty, `ap` NaN, `meta` {}; one-line errors for anything unreadable."""
        path = Path(path)
        arrays = _load_npz_arrays(path)
        q, names = arrays["q"], arrays["names"]
        if q.ndim != 2 or q.shape[0] == 0 or q.dtype.kind not in "fiu":
            raise UserError(
                f"{path}: array q must be a non-empty C x D number array, got {q.shape}"
            )
        if not np.all(np.isfinite(q)):
            raise UserError(f"{path}: array q holds NaN or infinite values")
        if names.ndim != 1 or names.dtype.kind not in "US" or len(names) != q.shape[0]:
            raise UserError(f"{path}: array names must hold {q.shape[0]} strings, one per row of q")
        count = q.shape[0]
        categories = arrays.get("categories", np.array([""] * count))
        return cls(
            names=[_text(n) for n in names],
            categories=[_text(c) for c in categories.reshape(-1)][:count],
            weight=arrays.get("weight", q),
            bias=arrays.get("bias", np.zeros(count, np.float32)),
            ap=arrays.get("ap", np.full(count, np.nan, np.float32)),
            meta=_basis_meta(arrays.get("meta")),
            stored_q=q,
        )

    @classmethod
    def learn(
        cls,
        features: FeatureStore | str | Path,
        procedure: str = "authors",
        *,
        progress: bool = False,
        log: Callable[[str], None] = print,
        **settings: Any,
    ) -> Basis:
        """Train the concept classifiers on a feature store (`ibd features`, or its directory)
        with `procedure` 'authors' (the default) or 'paper' and any `Settings` field as a
        keyword (the paper-only ones, `rounds`, `hard_fraction` and `l2`, with 'paper')."""
        store = features if isinstance(features, FeatureStore) else FeatureStore(features)
        return learn(
            store, Settings.for_procedure(procedure, **settings), progress=progress, log=log
        )


_ZIP_MAGIC = b"PK\x03\x04"


def _load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UserError(f"basis file not found: {path}")
    with path.open("rb") as f:
        if f.read(4) != _ZIP_MAGIC:
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
            return {k: archive[k] for k in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"cannot read basis {path}: {first}") from None


def _text(value: object) -> str:
    """A string array element as text (byte strings, dtype S, are UTF-8)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _basis_meta(array: np.ndarray | None) -> dict[str, Any]:
    """The `meta` array's JSON object; {} when absent or not a JSON object."""
    if array is None:
        return {}
    try:
        parsed = json.loads(_text(array.item()))
    except (json.JSONDecodeError, ValueError):  # not JSON, or not one element
        return {}
    return parsed if isinstance(parsed, dict) else {}


@dataclass
class Selection:
    """Concepts kept for training (store indices) and those dropped, with their counts."""

    kept: np.ndarray
    train_positives: np.ndarray  # per store concept
    held_out_positives: np.ndarray
    dropped: list[dict[str, Any]]


def select_concepts(store: FeatureStore, min_positives: int) -> Selection:
    """Keep concepts with at least `min_positives` positive positions in the training images and
    in the held-out images; report the others."""
    train = store.images_in(TRAIN_SPLIT)
    held = store.images_in(HELD_OUT_SPLIT)
    if len(train) == 0 or len(held) == 0:
        found = ", ".join(sorted(set(store.splits.tolist())))
        raise UserError(
            f"feature store {store.path} needs '{TRAIN_SPLIT}' and '{HELD_OUT_SPLIT}' images "
            f"(the dataset's index.csv split column); it has: {found}"
        )
    everything = np.arange(store.num_concepts)
    n_train = count_positives(store, train, everything)
    n_held = count_positives(store, held, everything)
    keep = (n_train >= min_positives) & (n_held >= min_positives)
    dropped = [
        {
            "name": store.concepts[c]["name"],
            "train_positives": int(n_train[c]),
            "held_out_positives": int(n_held[c]),
        }
        for c in np.flatnonzero(~keep)
    ]
    return Selection(np.flatnonzero(keep), n_train, n_held, dropped)


def learn(
    store: FeatureStore,
    settings: Settings,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    checkpoint: str | Path | None = None,
) -> Basis:
    """Train, evaluate on held-out images, and assemble the basis. With `checkpoint` (a file
    path), training saves its state there after every epoch and a re-run with the same store,
    concepts and settings goes on from it (the result is that of an uninterrupted run); the file
    is removed once the basis is assembled."""
    rare = [
        {"name": d["name"], "category": d.get("category"), "image_count": d.get("image_count")}
        for d in store.dropped
    ]
    if rare:
        names = ", ".join(str(d["name"]) for d in rare[:10]) + (", ..." if len(rare) > 10 else "")
        log(f"{len(rare)} labels left out of the store, in fewer than --min-images images: {names}")
    selection = select_concepts(store, settings.min_positives)
    if selection.dropped:
        log(
            f"dropped {len(selection.dropped)} of {store.num_concepts} concepts with fewer than "
            f"{settings.min_positives} positive positions in '{TRAIN_SPLIT}' or "
            f"'{HELD_OUT_SPLIT}' images:"
        )
        for d in selection.dropped:
            log(f"  {d['name']}: {d['train_positives']} train, {d['held_out_positives']} held-out")
    kept = selection.kept
    if len(kept) == 0:
        raise UserError(
            f"no concept has {settings.min_positives} positive positions in both splits"
        )
    train_images = store.images_in(TRAIN_SPLIT)
    held_images = store.images_in(HELD_OUT_SPLIT)
    bank = build_bank(store, train_images, kept, settings, progress)
    log(
        f"training {len(kept)} concept classifiers ({settings.procedure} procedure) on a bank of "
        f"{len(bank.rows)} positions x D={store.dim}: {bank.x.numel() * 4 / 2**20:.0f} MiB of "
        f"features, held once (no standardised copy), and {bank.y.numel() / 2**20:.0f} MiB per "
        f"positions x concepts mask (up to 6 at once while negatives are rebuilt)"
    )
    # The bank's raw features are not needed after training: the paper trainer standardises
    # them in place instead of holding a second copy (the authors' trains on them as they are).
    options: dict[str, Any] = {"in_place": True} if settings.procedure == "paper" else {}
    saved = None
    if checkpoint is not None:
        identity = {
            "store": store.header.get("key"),
            "concepts": kept.tolist(),
            "bank": len(bank.rows),
            "settings": dataclasses.asdict(settings),
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        saved = options["checkpoint"] = Checkpoint(checkpoint, key)
    fit = TRAINERS[settings.procedure](bank, kept, settings, progress, **options)
    # the bank (features and masks) is not needed for the evaluation: give its memory back
    # before the held-out scores take theirs (at D = 2048 and 818 concepts the two together
    # made a 6.3 GB peak with a 2048 MiB bank)
    bank_positions = len(bank.rows)
    del bank
    peak = peak_memory_mib()
    log(
        f"trained in {fit.seconds:.0f} s"
        + (f"; peak memory of this process so far {peak:.0f} MiB" if peak is not None else "")
    )
    concepts = [store.concepts[c] for c in kept]
    check_finite(fit, [str(c["name"]) for c in concepts])
    ap, ap_ratio = held_out_ap(
        store, held_images, kept, fit.weight, fit.bias, EVAL_RATIO, settings.seed, progress
    )
    h, w = store.grid
    meta = {
        "format": BASIS_FORMAT,
        "model": store.header["model"].get("name"),
        "layer": store.header["layer"],
        "dataset": store.header["dataset"],
        "features": str(store.path),
        "feature_grid": [h, w],
        "dim": store.dim,
        "settings": dataclasses.asdict(settings),
        "mAP": float(np.mean(ap)),
        "mAP_1to20": float(np.mean(ap_ratio)),
        "train_images": len(train_images),
        "held_out_images": len(held_images),
        "held_out_positions": len(held_images) * h * w,
        "bank_positions": bank_positions,
        "train_seconds": fit.seconds,
        "concepts": [
            {
                "name": c["name"],
                "number": c.get("number"),
                "train_positives": int(selection.train_positives[k]),
                "trained_positives": int(fit.positives[i]),
                "negatives": int(fit.negatives[i]),
                "held_out_positives": int(selection.held_out_positives[k]),
                "ap_1to20": float(ap_ratio[i]),
            }
            for i, (k, c) in enumerate(zip(kept, concepts, strict=True))
        ],
        "dropped": selection.dropped,
        "dropped_min_images": rare,
    }
    if saved is not None:
        saved.clear()
    return Basis(
        names=[str(c["name"]) for c in concepts],
        categories=[str(c.get("category", "")) for c in concepts],
        weight=fit.weight,
        bias=fit.bias,
        ap=ap,
        meta=meta,
    )
