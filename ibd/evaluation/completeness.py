"""How complete the named concepts are: the share of the logit they explain, and Yeh's
completeness score of the class decomposition (Yeh, Kim, Arik, Li, Pfister and Ravikumar, "On
Completeness-aware Concept-Based Explanations in Deep Neural Networks", NeurIPS 2020, section 3,
definition 3.1).

**Share of the logit.** An IBD (or Network Dissection) explanation splits the explained class's
logit into the contributions of its named components and a residual (paper eq. 9-11:
h_k(a) = sum_i s_i q_i . a + r_k . a + b_k), so sum(contributions) + residual = logit. Its share
is sum(contributions) / logit (undefined at logit 0), read from the explanation files; per class,
the mean over the class's explanations, and beside it the ratio of the sums (sum of all
contributions / sum of all logits), which a logit near 0 cannot dominate.

**Yeh's completeness score.** With the model's pooled features a = GAP(A) (paper eq. 9's a) and
its linear head h(a) = W a + b, the named concepts S (every concept any class's decomposition
w_k = sum_i s_i q_i + r_k names, paper eq. 6) span a subspace of the feature space; P is the
orthogonal projection onto span{q_i : i in S}, P = U U^T for an orthonormal basis U of it. Then

    eta = (acc(W P a + b) - a_r) / (acc(W a + b) - a_r)

acc the accuracy against the images' true classes and a_r = 1 / K the accuracy of a random
guess among the K classes. Yeh defines eta with the best map g from the concept scores back to
the features (sup over g); the projection is one such map (P a is a linear function of the
scores q_i . a, their least-squares reconstruction of a), so this eta is a lower bound of
theirs that needs no training. It is 1 when the span holds every class vector w_k
(w_k . P a = (P w_k) . a = w_k . a: the same predictions) and falls as the named concepts miss
more of what the classes use. Undefined (n/a) when the model's accuracy on the images is not
above chance by a one-sided binomial test at 0.05 (`above_chance`), or the head is not linear
in GAP(A) (Network Dissection's and the Grad-CAM variant's models).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ibd import paths
from ibd.basis import Basis
from ibd.data.images import load_batch
from ibd.decomposition import Decomposition, solve
from ibd.errors import UserError
from ibd.evaluation.items import resolve_image
from ibd.evaluation.scoring import CONCEPT_METHODS, read_decomposition_model
from ibd.explain import records
from ibd.explain.loop import feature_probe
from ibd.nets.hooks import eval_mode, run
from ibd.nets.load import LoadedModel, final_linear

MAX_CONCEPTS = 7  # per class when the decomposition is made here, as `ibd decompose`

# (model, method, image, class index): an explanation record's identity
ShareKey = tuple[str, str, Path, int]


@dataclass(frozen=True)
class LogitShare:
    """One explanation's logit and the sum of its named components' contributions."""

    logit: float
    named: float

    @property
    def share(self) -> float:
        """sum(contributions) / logit; nan at logit 0."""
        return self.named / self.logit if self.logit != 0 else math.nan


def _share_entry(record: Any, directory: Path) -> tuple[ShareKey, LogitShare] | None:
    method = str(record["method"])
    if method not in CONCEPT_METHODS or record.get("residual") is None:
        return None
    key = (
        str(record["model"]),
        method,
        resolve_image(str(record["image"]), directory),  # as the items, so the keys meet
        int(record["class_index"]),
    )
    named = sum(float(c["contribution"]) for c in record["components"])
    return key, LogitShare(float(record["score"]), named)


def read_shares(directory: Path, limit: int | None) -> dict[ShareKey, LogitShare]:
    """The logit shares of the first `limit` records (all when None) of an explanation
    directory, for the methods that split the logit (ibd, netdissect)."""
    found, _ = records.read(directory)
    out: dict[ShareKey, LogitShare] = {}
    if not isinstance(found, list):
        return out
    for n, record in enumerate(found[:limit] if limit is not None else found):
        try:
            entry = _share_entry(record, directory)
        except (KeyError, TypeError, ValueError) as exc:
            where = directory / "explanations.json"
            raise UserError(f"{where} record {n}: malformed ({exc})") from None
        if entry is not None:
            out.setdefault(*entry)
    return out


@dataclass(frozen=True)
class ClassShare:
    """The logit shares of one (model, class)'s explanations by one method."""

    model: str
    method: str
    class_name: str
    explanations: int
    share: float  # mean of sum(contributions) / logit
    pooled_share: float  # sum of contributions / sum of logits


def class_shares(entries: Iterable[tuple[str, str, str, LogitShare]]) -> list[ClassShare]:
    """Per (model, method, class) of (model, method, class name, share) entries, sorted."""
    groups: dict[tuple[str, str, str], list[LogitShare]] = defaultdict(list)
    for model, method, class_name, share in entries:
        groups[(model, method, class_name)].append(share)
    rows = []
    for (model, method, class_name), shares in sorted(groups.items()):
        defined = [s.share for s in shares if not math.isnan(s.share)]
        logits = sum(s.logit for s in shares)
        rows.append(
            ClassShare(
                model,
                method,
                class_name,
                len(shares),
                float(np.mean(defined)) if defined else math.nan,
                sum(s.named for s in shares) / logits if logits != 0 else math.nan,
            )
        )
    return rows


# ------------------------------------------------------------------------- Yeh's completeness


def projector(vectors: np.ndarray) -> np.ndarray:
    """D x D orthogonal projection onto the span of the rows of `vectors` (n x D), U U^T with
    U an orthonormal basis of the span (directions whose singular value is below 1e-10 of the
    largest count as dependent)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.size == 0:
        return np.zeros((vectors.shape[1], vectors.shape[1]))
    _, sigma, vt = np.linalg.svd(vectors, full_matrices=False)
    basis = vt[sigma > sigma[0] * 1e-10]
    return basis.T @ basis


@dataclass(frozen=True)
class Score:
    """Accuracies and eta of the completeness score (module docstring)."""

    accuracy: float
    projected_accuracy: float
    random_accuracy: float
    eta: float  # nan when accuracy <= random_accuracy


def completeness_score(
    pooled: np.ndarray,
    labels: Sequence[int],
    weight: np.ndarray,
    bias: np.ndarray,
    concepts: np.ndarray,
) -> Score:
    """eta of features `pooled` (N x D) with true `labels`, the head W (K x D), b (K) and the
    named concept vectors `concepts` (n x D)."""
    pooled = np.asarray(pooled, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    truth = np.asarray(labels)
    if pooled.shape[0] == 0 or pooled.shape[0] != truth.shape[0]:
        raise ValueError("need one label per feature vector, at least one")
    projected = pooled @ projector(concepts)
    accuracy = float(np.mean((pooled @ weight.T + bias).argmax(axis=1) == truth))
    kept = float(np.mean((projected @ weight.T + bias).argmax(axis=1) == truth))
    chance = 1.0 / weight.shape[0]
    eta = (
        (kept - chance) / (accuracy - chance)
        if above_chance(accuracy, len(truth), chance)
        else math.nan
    )
    return Score(accuracy, kept, chance, eta)


def above_chance(accuracy: float, n: int, chance: float, alpha: float = 0.05) -> bool:
    """Whether `accuracy` on n images is above `chance` by a one-sided binomial test at
    `alpha`: eta divides by accuracy - chance, so an accuracy within sampling noise of chance
    (a model trained on shuffled labels: 0.090 against 1/12 on 300 images) would make it
    arbitrarily large."""
    from scipy.stats import binomtest

    correct = round(accuracy * n)
    return accuracy > chance and binomtest(correct, n, chance, alternative="greater").pvalue < alpha


@dataclass(frozen=True)
class Completeness:
    """Yeh's completeness score of one model's class decomposition on its explained images;
    nan values and a `note` when it could not be computed."""

    model: str
    images: int
    classes: int
    concepts: tuple[str, ...]  # the named concepts whose span is kept
    source: str  # where the decomposition came from
    accuracy: float
    projected_accuracy: float
    random_accuracy: float
    eta: float
    note: str | None = None


def not_computed(model: str, images: int, note: str) -> Completeness:
    return Completeness(model, images, 0, (), "", math.nan, math.nan, math.nan, math.nan, note)


@dataclass(frozen=True)
class CompletenessInputs:
    """Where the basis and the decomposition come from."""

    basis: Path | None = None  # None: $IBD_HOME/basis/<model>.npz
    decomposition: Path | None = None  # a decompose.json, used for the model it names
    batch_size: int = 64


def _decomposition(
    loaded: LoadedModel, basis: Basis, weight: np.ndarray, inputs: CompletenessInputs
) -> tuple[Decomposition, str]:
    """The model's decomposition over the basis: the given decompose.json when it is of this
    model, else $IBD_HOME/decompose/<model>.json, when it fits the weights and the basis
    (`Decomposition.check_fits`); otherwise made here (nnls, 7 concepts, as `ibd decompose`)."""
    candidates = [paths.decompose_path(loaded.name)]
    given = inputs.decomposition
    if given is not None and read_decomposition_model(given) == loaded.name:
        candidates.insert(0, given)
    for path in candidates:
        if path.is_file():
            try:
                found = Decomposition.load(path)
                found.check_fits(weight, list(loaded.classes), basis.q, list(basis.names))
            except UserError:
                continue
            return found, str(path)
    q = basis.q.astype(np.float64)
    return solve(q, weight, max_concepts=MAX_CONCEPTS), "made here (nnls, 7 concepts)"


def pooled_features(loaded: LoadedModel, images: Sequence[Path], batch_size: int) -> np.ndarray:
    """GAP(A) of the model's feature layer for each image, N x D."""
    out = []
    for start in range(0, len(images), batch_size):
        part = [str(p) for p in images[start : start + batch_size]]
        batch, _ = load_batch(part, loaded.input_size, loaded.mean, loaded.std)
        with eval_mode(loaded.model), torch.no_grad():
            forward = run(loaded.model, loaded.layer, batch.to(loaded.device))
        out.append(forward.features.mean(dim=(2, 3)).double().cpu().numpy())
    return np.concatenate(out)


def _basis(loaded: LoadedModel, inputs: CompletenessInputs) -> Basis | str:
    """The model's basis, or why there is none."""
    path = inputs.basis or paths.basis_path(loaded.name)
    if not path.is_file():
        return f"no basis {path}"
    try:
        return Basis.load(path)
    except UserError as exc:
        return str(exc)


def _head(loaded: LoadedModel, basis: Basis) -> tuple[np.ndarray, np.ndarray] | str:
    """The head's (W, b), or why eta does not apply."""
    try:
        channels, is_gap = feature_probe(loaded)
        if not is_gap:
            return f"{loaded.name} has no GAP -> linear head"
        weight, bias = final_linear(loaded.model)
    except UserError as exc:
        return str(exc)
    if basis.q.shape[1] != channels:
        return f"the basis has D={basis.q.shape[1]}, the layer {channels} channels"
    return weight.double().cpu().numpy(), bias.double().cpu().numpy()


def model_completeness(
    loaded: LoadedModel, images: Sequence[Path], labels: Sequence[int], inputs: CompletenessInputs
) -> Completeness:
    """Yeh's completeness score of `loaded`'s decomposition on `images` with their true class
    `labels` (indices into the model's classes)."""
    basis = _basis(loaded, inputs)
    if isinstance(basis, str):
        return not_computed(loaded.name, len(images), basis)
    head = _head(loaded, basis)
    if isinstance(head, str):
        return not_computed(loaded.name, len(images), head)
    weight, bias = head
    decomposition, source = _decomposition(loaded, basis, weight, inputs)
    named = sorted({c for k in range(weight.shape[0]) for c, _ in decomposition.terms(k)})
    pooled = pooled_features(loaded, images, inputs.batch_size)
    score = completeness_score(pooled, labels, weight, bias, basis.q[named])
    note = None
    if math.isnan(score.eta):
        note = (
            f"the model's accuracy {score.accuracy:.3f} is not above chance "
            f"({score.random_accuracy:.3f}; one-sided binomial test, alpha 0.05)"
        )
    return Completeness(
        loaded.name,
        len(images),
        weight.shape[0],
        tuple(basis.names[c] for c in named),
        source,
        score.accuracy,
        score.projected_accuracy,
        score.random_accuracy,
        score.eta,
        note,
    )
