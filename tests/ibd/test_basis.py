"""Concept basis learning: recovery of known concept directions, the sampling and the hard
negatives on hand cases, batched training equal to each concept trained alone with torch's own
optimisers on the same (shared) steps, the trainers' negatives and weight mapping step by step,
AP and q by hand, the basis.npz contract, and `ibd basis learn` end to end."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from test_features import write_broden, write_model
from torch import nn

from ibd import basis
from ibd.cli import main
from ibd.data import features
from ibd.data.broden import Concept
from ibd.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Identity(nn.Module):
    """The 'image' is the feature map: layer `features` passes it through."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class Planted(torch.utils.data.Dataset):
    """Feature maps a(i,j) = noise + strength * sum_c [c at (i,j)] u_c, orthonormal u_c:
    concept c's positives are exactly the positions where a has a large component along u_c.
    Every fourth image is held out ('val'). `train_only` concepts never occur in val images."""

    def __init__(
        self,
        n: int = 160,
        dim: int = 16,
        concepts: int = 4,
        grid: int = 4,
        strength: float = 6.0,
        rate: float = 0.15,
        train_only: tuple[int, ...] = (),
    ) -> None:
        rng = np.random.default_rng(3)
        self.u = np.linalg.qr(rng.normal(size=(dim, concepts)))[0].T
        self.masks = rng.random((n, concepts, grid, grid)) < rate
        self.splits = np.where(np.arange(n) % 4 == 3, "val", "train")
        self.masks[np.ix_(self.splits == "val", list(train_only))] = False
        planted = np.einsum("nchw,cd->ndhw", self.masks, self.u)
        self.x = (rng.normal(size=(n, dim, grid, grid)) + strength * planted).astype(np.float32)
        self.concepts = [Concept(c, c + 1, f"c{c}", "object", n) for c in range(concepts)]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "image": torch.from_numpy(self.x[i]),
            "mask": torch.from_numpy(self.masks[i]),
            "index": i,
            "path": f"p{i}",
        }

    def image_path(self, i: int) -> Path:
        return Path(f"p{i}")

    def split_of(self, i: int) -> str:
        return str(self.splits[i])


def planted_store(tmp_path: Path, **kwargs: Any) -> tuple[features.FeatureStore, Planted]:
    data = Planted(**kwargs)
    spec = features.StoreSpec(
        model={"name": "planted"}, layer="features", dataset={"fingerprint": repr(kwargs)}
    )
    store = features.build(Identity(), data, tmp_path / "store", spec, progress=False)
    return store, data


def quiet(**overrides: Any) -> dict[str, Any]:
    return {"progress": False, "log": lambda _: None, **overrides}


# -- formulas by hand ---------------------------------------------------------------------


def test_average_precision_by_hand_with_ties() -> None:
    scores = torch.tensor([[0.9, 0.5], [0.8, 0.5], [0.7, 0.9], [0.6, 0.1]])
    labels = torch.tensor([[1, 1], [0, 0], [1, 0], [0, 1]], dtype=torch.bool)
    ap = basis.average_precision(scores, labels)
    # column 0: hits at ranks 1 and 3: (1/2)(1/1) + (1/2)(2/3)
    # column 1: 0.9 (miss); the tie at 0.5 is one threshold: recall 1/2 at precision 1/3;
    #           0.1 (hit): recall 1 at precision 2/4
    assert ap.tolist() == pytest.approx([0.5 + 1 / 3, 1 / 6 + 1 / 4])
    assert torch.isnan(basis.average_precision(scores[:, :1], torch.zeros(4, 1, dtype=torch.bool)))


def test_q_standardisation_by_hand() -> None:
    w = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [0.0, 0.0, 4.0]])
    q = basis.standardize(w)
    # (w - mean) / norm: [-1, 0, 1] / sqrt(2); constant row -> 0; [-4, -4, 8]/3 / ||.||
    assert q[0] == pytest.approx([-(0.5**0.5), 0.0, 0.5**0.5])
    assert q[1].tolist() == [0.0, 0.0, 0.0]
    assert q[2] == pytest.approx(np.array([-1.0, -1.0, 2.0]) / 6**0.5)


def hand_bank(y: np.ndarray, pool: np.ndarray, x: np.ndarray | None = None) -> basis.Bank:
    y_t = torch.from_numpy(y)
    x_t = torch.from_numpy(x if x is not None else np.zeros((len(y), 1), np.float32))
    return basis.Bank(np.arange(len(y)), x_t, y_t, y_t.clone(), torch.from_numpy(pool))


def test_random_negatives_keep_the_ratio_and_come_from_the_pool() -> None:
    y = np.zeros((200, 2), dtype=bool)
    y[:2, 0] = True  # concept 0: 2 positives -> 40 negatives
    y[:10, 1] = True  # concept 1: 20 positives -> 400 wanted; the pool (rows 0..194) holds
    y[190:, 1] = True  # 195 - 15 of its negatives
    pool = np.ones(200, dtype=bool)
    pool[195:] = False  # rows 195..199 are positives kept outside the pool
    bank = hand_bank(y, pool)
    chosen = basis.random_negatives(bank, 20 * bank.num_positives, seed=(0,))
    assert chosen.sum(0).tolist() == [40, 180]
    assert not (chosen & bank.y).any()
    assert not chosen[~bank.pool].any()
    again = basis.random_negatives(bank, 20 * bank.num_positives, seed=(0,))
    assert torch.equal(chosen, again)
    other = basis.random_negatives(bank, 20 * bank.num_positives, seed=(1,))
    assert not torch.equal(chosen[:, 0], other[:, 0])


def test_hard_negatives_are_the_top_scoring_candidates() -> None:
    x = torch.tensor([[5.0], [1.0], [4.0], [3.0], [2.0], [6.0]])
    weight = torch.tensor([[1.0], [-1.0]])
    bias = torch.zeros(2)
    candidates = torch.ones(6, 2, dtype=torch.bool)
    candidates[0, 0] = candidates[5, 0] = False  # concept 0's positives
    candidates[1, 1] = False  # concept 1's positive
    chosen = basis.hardest_negatives(x, weight, bias, candidates, torch.tensor([2, 3]))
    # concept 0 scores x: best candidates 4.0 (row 2), 3.0 (row 3)
    # concept 1 scores -x: best candidates -2 (row 4), -3 (row 3), -4 (row 2)
    assert chosen[:, 0].nonzero().flatten().tolist() == [2, 3]
    assert chosen[:, 1].nonzero().flatten().tolist() == [2, 3, 4]
    few = basis.hardest_negatives(x, weight, bias, candidates, torch.tensor([10, 10]))
    assert torch.equal(few, candidates)  # fewer candidates than asked: all of them


def test_a_mining_round_takes_the_hardest_half_and_fresh_random_negatives() -> None:
    x = torch.arange(40, dtype=torch.float32)[:, None]  # the score of concept 0 is x itself
    y = torch.zeros(40, 1, dtype=torch.bool)
    y[[39, 0]] = True  # positives: the top row and the bottom row
    pool = np.ones(40, dtype=bool)
    bank = hand_bank(y.numpy(), pool, x.numpy())
    w, b = torch.ones(1, 1), torch.zeros(1)
    chosen = basis.mine_negatives(bank, x, w, b, torch.tensor([10]), 0.5, seed=(4,))[:, 0]
    rows = chosen.nonzero().flatten().tolist()
    assert len(rows) == 10 and 39 not in rows and 0 not in rows
    assert rows[-5:] == [34, 35, 36, 37, 38]  # the five highest-scoring negatives
    hard = torch.zeros(40, 1, dtype=torch.bool)
    hard[34:39] = True
    rest = basis.random_negatives(bank, torch.tensor([5]), (4,), exclude=hard)
    assert rows[:5] == rest[:, 0].nonzero().flatten().tolist()  # the others: a seeded draw
    every = basis.mine_negatives(bank, x, w, b, torch.tensor([10]), 1.0, seed=(4,))[:, 0]
    assert every.nonzero().flatten().tolist() == list(range(29, 39))


# -- batched training equals each concept trained alone ---------------------------------------


def test_batched_logistic_training_equals_torch_adam_per_concept() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=gen)
    y = torch.rand(300, 3, generator=gen) < 0.3
    member = torch.rand(300, 3, generator=gen) < 0.4
    member[:, 2] &= torch.arange(300) < 40  # a concept absent from most blocks
    kw = {"epochs": 3, "block": 64, "lr": 0.05, "l2": 0.01}
    w, b = basis.fit_masked(x, y, member, torch.zeros(3, 6), torch.zeros(3), seed=(7,), **kw)
    active = member.any(1)
    for c in range(3):
        wc = torch.zeros(6, requires_grad=True)
        bc = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([{"params": [wc], "weight_decay": 0.01}, {"params": [bc]}], lr=0.05)
        for epoch in range(3):
            for rows in basis.epoch_blocks(300, active, 64, np.random.default_rng([7, epoch])):
                mine = rows[member[rows, c]]
                if len(mine) == 0:
                    continue
                loss = F.binary_cross_entropy_with_logits(x[mine] @ wc + bc, y[mine, c].float())
                opt.zero_grad()
                loss.backward()
                opt.step()
        assert torch.allclose(w[c], wc.detach(), atol=2e-6), c
        assert torch.allclose(b[c : c + 1], bc.detach(), atol=2e-6), c


def test_batched_authors_sgd_equals_torch_sgd_per_concept() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(100, 5, generator=gen)
    y = torch.rand(100, 2, generator=gen) < 0.5
    sets = [np.arange(0, 70), np.arange(50, 60)]  # 3 steps of 32 vs one short step
    w0 = torch.randn(2, 5, generator=gen)
    b0 = torch.randn(2, generator=gen)
    w, b = w0.clone(), b0.clone()
    rngs = [np.random.default_rng([0, c]) for c in range(2)]
    basis.sgd_epoch_mse(x, y, sets, w, b, batch=32, lr=0.5, rngs=rngs)
    for c in range(2):
        wc = w0[c].clone().requires_grad_()
        bc = b0[c : c + 1].clone().requires_grad_()
        opt = torch.optim.SGD([wc, bc], lr=0.5)
        order = np.random.default_rng([0, c]).permutation(sets[c])
        for start in range(0, len(order), 32):
            rows = torch.from_numpy(order[start : start + 32])
            loss = F.mse_loss(torch.sigmoid(x[rows] @ wc + bc), y[rows, c].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert torch.allclose(w[c], wc.detach(), atol=1e-6), c
        assert torch.allclose(b[c : c + 1], bc.detach(), atol=1e-6), c


# -- the trainers, step by step on a synthetic bank -----------------------------------------


def synthetic_bank(rows: int = 3000, dim: int = 12, concepts: int = 3) -> basis.Bank:
    """Features far from zero mean and unit variance (so that mapping the weights back to raw
    features matters), rare learnable concepts (top 2% of a noisy direction), an 80% pool."""
    gen = torch.Generator().manual_seed(11)
    scale, shift = torch.linspace(0.3, 4.0, dim), torch.linspace(-5.0, 5.0, dim)
    z = torch.randn(rows, dim, generator=gen)
    x = z * scale + shift
    signal = z @ torch.randn(dim, concepts, generator=gen) + 0.5 * torch.randn(
        rows, concepts, generator=gen
    )
    y = signal > signal.quantile(0.98, dim=0)
    pool = torch.rand(rows, generator=gen) < 0.8
    return basis.Bank(np.arange(rows), x, y, y.clone(), pool)


def record_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[dict[str, Any]]:
    """Wrap basis.`name`, recording clones of its arguments at the call and of its result."""
    real = getattr(basis, name)
    calls: list[dict[str, Any]] = []

    def clone(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.clone()
        if isinstance(v, list):
            return [clone(e) for e in v]
        return v.copy() if isinstance(v, np.ndarray) else v

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = {"args": [clone(a) for a in args], "kwargs": dict(kwargs)}
        result = real(*args, **kwargs)
        call["result"] = clone(result) if result is None else tuple(clone(r) for r in result)
        calls.append(call)
        return result

    monkeypatch.setattr(basis, name, wrapper)
    return calls


def assert_top_scoring(
    chosen: torch.Tensor, among: torch.Tensor, scores: torch.Tensor, count: int
) -> None:
    """`chosen` (a mask within `among`) holds `count` rows, and none of the rows of `among` left
    out scores higher than a chosen one (up to float rounding)."""
    assert not (chosen & ~among).any()
    assert int(chosen.sum()) == count
    assert float(scores[chosen].min()) >= float(scores[among & ~chosen].max()) - 1e-5


def test_raw_weights_score_raw_features_as_the_standardised_classifier_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bank = synthetic_bank()
    raw = bank.x.clone()
    calls = record_calls(monkeypatch, "fit_masked")
    settings = basis.Settings.for_procedure("paper", epochs=2, rounds=1, batch_size=256)
    fit = basis.train_paper(bank, np.arange(3), settings)
    assert torch.equal(bank.x, raw)  # not in place: the bank keeps its raw features
    xt = calls[-1]["args"][0]
    # the trainer saw x~ = (x - mu) / sigma per dimension
    expected = (raw.double() - raw.double().mean(0)) / raw.double().std(0)
    assert torch.allclose(xt.double(), expected, atol=1e-5)
    # w . x + b == w~ . x~ + b~ for every bank row: w = w~ / sigma, b = b~ - w . mu
    w_t, b_t = calls[-1]["result"]
    standardised = xt.double() @ w_t.double().T + b_t.double()
    mapped = raw.double() @ torch.from_numpy(fit.weight).double().T + torch.from_numpy(fit.bias)
    assert standardised.abs().max() > 1  # a classifier that says something
    assert torch.allclose(mapped, standardised, atol=1e-4)


def test_standardising_in_place_gives_the_same_weights() -> None:
    settings = basis.Settings.for_procedure("paper", epochs=2, rounds=1, batch_size=256)
    copied = basis.train_paper(synthetic_bank(), np.arange(3), settings)
    bank = synthetic_bank()
    in_place = basis.train_paper(bank, np.arange(3), settings, in_place=True)
    assert np.array_equal(copied.weight, in_place.weight)
    assert np.array_equal(copied.bias, in_place.bias)
    raw = synthetic_bank().x
    assert torch.equal(bank.x, (raw - raw.mean(0)) / raw.std(0))  # the bank's copy, replaced


def test_paper_trainer_minimises_the_penalised_logistic_loss_on_raw_features() -> None:
    # Dimensions of spread 0.05 .. 5: the weights must be the minimiser of
    #   mean logistic loss + (l2/2) s^2 ||w||^2,  s^2 = mean_d var_d,
    # on the raw features (found here by L-BFGS in float64), whatever the standardisation the
    # trainer uses inside. A penalty on the standardised weights, (l2/2) sum_d var_d w_d^2, has
    # its minimiser elsewhere: its raw weight on the low-spread dimension is 650 times larger.
    gen = torch.Generator().manual_seed(2)
    rows = 1500
    z = torch.randn(rows, 4, generator=gen)
    x = z * torch.tensor([0.05, 0.5, 1.0, 5.0]) + torch.tensor([1.0, -2.0, 0.0, 3.0])
    signal = z @ torch.tensor([1.0, -1.0, 0.5, 0.3]) + torch.randn(rows, generator=gen)
    y = (signal > 1.0)[:, None]
    bank = basis.Bank(np.arange(rows), x, y, y.clone(), torch.ones(rows, dtype=torch.bool))
    l2 = 0.05  # every row in the training set, one full-batch Adam step per epoch
    settings = basis.Settings.for_procedure(
        "paper", ratio=rows, rounds=0, epochs=400, batch_size=rows, l2=l2
    )
    fit = basis.train_paper(bank, np.arange(1), settings)
    xd, yd = x.double().numpy(), y[:, 0].double().numpy()
    var = x.double().var(0).numpy()

    def objective(theta: np.ndarray, penalty: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        scores = xd @ w + b
        residual = (1 / (1 + np.exp(-scores)) - yd) / rows
        loss = np.mean(np.logaddexp(0, scores) - yd * scores) + 0.5 * np.sum(penalty * w**2)
        return loss, np.append(xd.T @ residual + penalty * w, residual.sum())

    def minimiser(penalty: np.ndarray) -> np.ndarray:
        options = {"gtol": 1e-12, "ftol": 1e-15, "maxiter": 100_000}
        found = minimize(objective, np.zeros(5), (penalty,), "L-BFGS-B", jac=True, options=options)
        return found.x

    raw = minimiser(l2 * var.mean() * np.ones(4))
    got = np.append(fit.weight[0], fit.bias[0])
    assert got == pytest.approx(raw, abs=1e-4 * np.abs(raw).max())
    on_standardised = minimiser(l2 * var)
    assert abs(on_standardised[0]) > 100 * abs(raw[0])


def test_a_near_dead_feature_dimension_does_not_take_over_q() -> None:
    # A channel that is zero except for a 1e-3 on three positives (as a VGG channel of the
    # concept world is zero on all but 42 of 588,000 positions). Standardised to unit variance
    # with the penalty on the standardised weights, its raw weight was 65,000 (q_c7 = 0.94);
    # the penalty is now on the raw weights, and its spread is floored at a tenth of the
    # features' overall scale so that Adam can hold it near zero.
    gen = torch.Generator().manual_seed(5)
    rows = 4000
    x = torch.randn(rows, 8, generator=gen)
    y = (x[:, :7] @ torch.randn(7, generator=gen) + 0.5 * torch.randn(rows, generator=gen)) > 2.5
    x[:, 7] = 0
    x[y.nonzero().flatten()[:3], 7] = 1e-3
    y = y[:, None]
    bank = basis.Bank(np.arange(rows), x, y, y.clone(), torch.ones(rows, dtype=torch.bool))
    settings = basis.Settings.for_procedure("paper", epochs=10, rounds=1, batch_size=256)
    fit = basis.train_paper(bank, np.arange(1), settings)
    w = fit.weight[0]
    assert abs(w[7]) < 0.01 * np.abs(w[:7]).max()
    assert np.abs(basis.standardize(fit.weight)[0]).argmax() != 7
    _, _, sigma, scale = basis.standardize_features(x)
    assert scale == pytest.approx(float((x.double().var(0).mean()).sqrt()), rel=1e-6)
    assert float(sigma[7]) == pytest.approx(0.1 * scale, rel=1e-6)
    assert torch.equal(sigma[:7], x[:, :7].std(0))  # the others keep their own spread


def test_paper_mining_rounds_train_on_the_highest_scoring_negatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bank = synthetic_bank()
    calls = record_calls(monkeypatch, "fit_masked")
    settings = basis.Settings.for_procedure("paper", epochs=2, rounds=2, batch_size=256)
    fit = basis.train_paper(bank, np.arange(3), settings)
    assert len(calls) == 3  # the first training and two mining rounds
    n_pos = bank.positive.sum(0)
    for round_, call in enumerate(calls):
        xt, _, member, weight, bias = call["args"][:5]
        assert torch.equal(member & bank.positive, bank.positive)
        negative = member & ~bank.positive
        assert not (negative & bank.y).any()
        assert negative.sum(0).tolist() == (20 * n_pos).tolist()
        if round_ == 0:
            assert not (negative & ~bank.pool[:, None]).any()  # random, from the pool
            continue
        # half of them: the highest-scoring negatives of the whole bank under the classifier
        # of the previous round (the one this round starts from); the rest random from the pool
        assert torch.equal(weight, calls[round_ - 1]["result"][0])
        scores = xt @ weight.T + bias
        for c in range(3):
            hard = int(10 * n_pos[c])
            top = torch.zeros(len(xt), dtype=torch.bool)
            top[torch.where(bank.y[:, c], -torch.inf, scores[:, c]).topk(hard).indices] = True
            assert_top_scoring(top, ~bank.y[:, c], scores[:, c], hard)
            assert (negative[top, c]).all(), (round_, c)
            assert not (negative[:, c] & ~top & ~bank.pool).any()
    assert fit.negatives.tolist() == (20 * n_pos).tolist()


def test_authors_epochs_train_on_two_negatives_per_positive_the_hardest_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bank = synthetic_bank()
    calls = record_calls(monkeypatch, "sgd_epoch_mse")
    settings = basis.Settings.for_procedure("authors", epochs=4, lr=0.5)
    fit = basis.train_authors(bank, np.arange(3), settings)
    assert len(calls) == 4
    n_pos = bank.positive.sum(0)
    candidates = basis.random_negatives(bank, 20 * n_pos, (0, 0, 1, 0))
    assert fit.negatives.tolist() == candidates.sum(0).tolist() == (20 * n_pos).tolist()
    for epoch, call in enumerate(calls):
        x, y, sets, weight, bias = call["args"]
        assert torch.equal(x, bank.x) and torch.equal(y, bank.y)  # raw features
        scores = x @ weight.T + bias  # the classifier as this epoch starts
        moved = 0.0
        for c in range(3):
            rows = torch.from_numpy(sets[c])
            assert torch.equal(rows[: int(n_pos[c])], bank.positive[:, c].nonzero().flatten())
            negative = torch.zeros(len(x), dtype=torch.bool)
            negative[rows[int(n_pos[c]) :]] = True
            assert int(negative.sum()) == len(rows) - int(n_pos[c]) == 2 * int(n_pos[c])
            assert not (negative & ~candidates[:, c]).any()
            if epoch > 0:  # the hardest candidates under the previous epoch's classifier
                assert_top_scoring(negative, candidates[:, c], scores[:, c], 2 * int(n_pos[c]))
                moved += float((weight[c] - calls[epoch - 1]["args"][3][c]).abs().max())
        assert epoch == 0 or moved > 0


# -- learning on planted concepts ---------------------------------------------------------


def test_paper_procedure_recovers_the_planted_directions(tmp_path: Path) -> None:
    store, data = planted_store(tmp_path, rate=0.03)
    settings = basis.Settings.for_procedure("paper", batch_size=256)
    learned = basis.learn(store, settings, **quiet())
    cosine = (learned.q * basis.standardize(data.u)).sum(1)
    assert cosine.min() > 0.95
    assert learned.ap.min() > 0.99
    # the training set is 1:20 (the pool, all 120 x 16 training positions, has enough)
    for m in learned.meta["concepts"]:
        assert m["trained_positives"] == m["train_positives"] < 1920 / 21
        assert m["negatives"] == 20 * m["train_positives"]
    # held-out AP is over every held-out position, recomputed here from the raw weights
    rows = store.rows_of(store.images_in("val"))
    scores = store.read_vectors(rows) @ learned.weight.T + learned.bias
    expected = basis.average_precision(
        torch.from_numpy(scores), torch.from_numpy(store.read_labels(rows))
    )
    assert learned.ap == pytest.approx(expected.numpy(), abs=1e-6)


def test_held_out_ap_at_1_to_20_is_the_ap_of_positives_and_a_random_negative_draw(
    tmp_path: Path,
) -> None:
    store, data = planted_store(tmp_path, rate=0.02)
    held = store.images_in("val")
    rows = store.rows_of(held)
    w = np.asarray(data.u, dtype=np.float32)
    b = np.zeros(len(w), dtype=np.float32)
    ap_all, ap_ratio = basis.held_out_ap(store, held, np.arange(4), w, b, ratio=3, seed=5)
    scores = store.read_vectors(rows) @ w.T
    labels = store.read_labels(rows)
    order = np.random.default_rng([5, 0, 3]).permutation(len(rows))
    for c in range(4):
        negatives = [r for r in order if not labels[r, c]][: 3 * int(labels[:, c].sum())]
        kept = np.concatenate([np.flatnonzero(labels[:, c]), negatives])
        expected = basis.average_precision(
            torch.from_numpy(scores[kept, c : c + 1]), torch.from_numpy(labels[kept, c : c + 1])
        )
        assert ap_ratio[c] == pytest.approx(float(expected[0]), abs=1e-9)
        full = basis.average_precision(
            torch.from_numpy(scores[:, c : c + 1]), torch.from_numpy(labels[:, c : c + 1])
        )
        assert ap_all[c] == pytest.approx(float(full[0]), abs=1e-9)
    assert np.all(ap_ratio >= ap_all - 1e-9)  # fewer negatives can only help a ranking here


def test_authors_procedure_learns_the_planted_concepts(tmp_path: Path) -> None:
    store, data = planted_store(tmp_path)
    learned = basis.learn(store, basis.Settings.for_procedure("authors", lr=0.1), **quiet())
    assert learned.meta["settings"]["procedure"] == "authors"
    for m in learned.meta["concepts"]:  # the candidate pool
        assert m["negatives"] == min(20 * m["train_positives"], 1920 - m["train_positives"])
    assert learned.ap.min() > 0.9
    assert (learned.q * basis.standardize(data.u)).sum(1).min() > 0.8


def test_concepts_without_held_out_positives_are_dropped_with_a_report(tmp_path: Path) -> None:
    store, _ = planted_store(tmp_path, train_only=(1,))
    lines: list[str] = []
    learned = basis.learn(
        store,
        basis.Settings.for_procedure("paper", epochs=2, rounds=1),
        progress=False,
        log=lines.append,
    )
    assert learned.names == ["c0", "c2", "c3"]
    assert learned.meta["dropped"] == [
        {
            "name": "c1",
            "train_positives": learned.meta["dropped"][0]["train_positives"],
            "held_out_positives": 0,
        }
    ]
    assert lines[0].startswith("dropped 1 of 4 concepts") and lines[1].startswith("  c1: ")


def test_labels_the_reader_left_out_are_reported_and_kept_in_meta(tmp_path: Path) -> None:
    data = Planted()
    data.dropped = [Concept(-1, 7, "lamp", "object", 3), Concept(-1, 8, "knob", "part", 1)]
    spec = features.StoreSpec(model={"name": "p"}, layer="features", dataset={"min_images": 10})
    store = features.build(Identity(), data, tmp_path / "store", spec, progress=False)
    lines: list[str] = []
    settings = basis.Settings.for_procedure("paper", epochs=1, rounds=0)
    learned = basis.learn(store, settings, progress=False, log=lines.append)
    assert (
        lines[0] == "2 labels left out of the store, in fewer than --min-images images: lamp, knob"
    )
    assert learned.meta["dropped_min_images"] == [
        {"name": "lamp", "category": "object", "image_count": 3},
        {"name": "knob", "category": "part", "image_count": 1},
    ]
    assert learned.names == ["c0", "c1", "c2", "c3"]


def test_basis_npz_follows_the_contract(tmp_path: Path) -> None:
    store, _ = planted_store(tmp_path)
    learned = basis.learn(
        store, basis.Settings.for_procedure("paper", epochs=2, rounds=1), **quiet()
    )
    path = learned.save(tmp_path / "out" / "basis.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert set(arrays) == {"names", "categories", "weight", "bias", "q", "ap", "meta"}
    assert arrays["names"].dtype.kind == "U" and arrays["names"].tolist() == [
        "c0",
        "c1",
        "c2",
        "c3",
    ]
    assert arrays["categories"].tolist() == ["object"] * 4
    assert (arrays["weight"].dtype, arrays["weight"].shape) == (np.float32, (4, 16))
    assert (arrays["bias"].dtype, arrays["bias"].shape) == (np.float32, (4,))
    assert (arrays["q"].dtype, arrays["ap"].dtype) == (np.float32, np.float32)
    w0 = arrays["weight"][0].astype(np.float64)
    centred = w0 - w0.mean()
    assert arrays["q"][0] == pytest.approx(centred / np.linalg.norm(centred), abs=1e-6)
    meta = json.loads(str(arrays["meta"]))
    assert meta["model"] == "planted" and meta["layer"] == "features"
    assert meta["dataset"] == {"fingerprint": "{}"}
    assert meta["settings"]["procedure"] == "paper" and meta["settings"]["seed"] == 0
    assert meta["mAP"] == pytest.approx(float(arrays["ap"].mean()), abs=1e-6)
    loaded = basis.Basis.load(path)  # the file's one reader
    assert loaded.names == ["c0", "c1", "c2", "c3"] and loaded.q.shape == (4, 16)


def test_learning_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    store, _ = planted_store(tmp_path)
    settings = basis.Settings.for_procedure("paper", epochs=2, rounds=1, pool_size=300)
    a = basis.learn(store, settings, **quiet())
    b = basis.learn(store, settings, **quiet())
    c = basis.learn(
        store,
        basis.Settings.for_procedure("paper", epochs=2, rounds=1, pool_size=300, seed=1),
        **quiet(),
    )
    assert np.array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)


def test_memory_budgets_change_the_chunking_not_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = planted_store(tmp_path)
    settings = basis.Settings.for_procedure("paper", epochs=2, rounds=1)
    whole = basis.learn(store, settings, **quiet())
    for name in ("_SCORE_BUDGET", "_AP_BUDGET", "_CHUNK_ROWS"):
        monkeypatch.setattr(basis, name, 8)  # one concept / column / few rows at a time
    chunked = basis.learn(store, settings, **quiet())
    assert np.array_equal(whole.weight, chunked.weight)
    assert np.array_equal(whole.ap, chunked.ap)
    assert whole.meta["mAP_1to20"] == chunked.meta["mAP_1to20"]


def test_the_authors_procedure_is_the_default_and_the_paper_one_keeps_its_own_settings() -> None:
    """docs/basis.md, "Which procedure, and why": the authors' procedure by default, in the
    dataclass and in `for_procedure`; the paper procedure still gets its own numbers."""
    authors = basis.Settings.for_procedure("authors")
    assert basis.Settings() == authors and authors.procedure == "authors"
    assert (authors.epochs, authors.batch_size, authors.l2, authors.rounds) == (15, 128, 0.0, 0)
    paper = basis.Settings.for_procedure("paper")
    assert (paper.procedure, paper.epochs, paper.batch_size) == ("paper", 10, 1024)
    assert (paper.l2, paper.rounds, paper.hard_fraction, paper.lr) == (1e-4, 5, 0.5, 0.01)
    assert basis.Settings.for_procedure("paper", rounds=0, epochs=3).rounds == 0
    # the Python entry point's default, as the command's
    assert inspect.signature(basis.Basis.learn).parameters["procedure"].default == "authors"


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="ratio must be at least 1"):
        basis.Settings.for_procedure("paper", ratio=0)
    with pytest.raises(UserError, match="hard-fraction must lie in 0..1"):
        basis.Settings.for_procedure("paper", hard_fraction=1.5)
    with pytest.raises(UserError, match="rounds, l2: only for the paper procedure"):
        basis.Settings.for_procedure("authors", rounds=2, l2=0.1)
    with pytest.raises(UserError, match="unknown procedure"):
        basis.Settings.for_procedure("other")
    with pytest.raises(UserError, match="seed must be >= 0, got -1"):
        basis.Settings.for_procedure("paper", seed=-1)
    for lr in (float("inf"), float("nan"), 0.0):
        with pytest.raises(UserError, match="lr must be a finite number > 0"):
            basis.Settings.for_procedure("authors", lr=lr)
    with pytest.raises(UserError, match="l2 must be a finite number >= 0"):
        basis.Settings.for_procedure("paper", l2=float("inf"))


def test_the_1_to_20_ap_in_meta_is_the_held_out_ap_at_1_to_20(tmp_path: Path) -> None:
    store, _ = planted_store(tmp_path, strength=1.5, rate=0.05)  # imperfect classifiers
    settings = basis.Settings.for_procedure("paper", epochs=2, rounds=1, seed=2)
    learned = basis.learn(store, settings, **quiet())
    held = store.images_in("val")
    kept = np.arange(4)
    ap, at_20 = basis.held_out_ap(store, held, kept, learned.weight, learned.bias, 20, seed=2)
    _, at_1 = basis.held_out_ap(store, held, kept, learned.weight, learned.bias, 1, seed=2)
    assert np.abs(at_1 - at_20).max() > 1e-3  # the ratio matters on this store
    assert np.array_equal(learned.ap, ap)
    assert learned.meta["mAP_1to20"] == pytest.approx(float(at_20.mean()), abs=1e-12)
    assert [m["ap_1to20"] for m in learned.meta["concepts"]] == pytest.approx(at_20, abs=1e-12)


def test_a_diverging_run_is_a_user_error_naming_the_concepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = planted_store(tmp_path)
    with pytest.raises(
        UserError, match=r"non-finite weights for 4 of 4 concepts \(c0, c1, c2, c3\)"
    ):
        basis.learn(store, basis.Settings.for_procedure("paper", lr=1e38, epochs=2), **quiet())
    real = basis.TRAINERS["authors"]

    def one_nan(*args: Any, **kwargs: Any) -> basis.Fit:
        fit = real(*args, **kwargs)
        fit.bias[2] = np.nan
        return fit

    monkeypatch.setitem(basis.TRAINERS, "authors", one_nan)
    settings = basis.Settings.for_procedure("authors", epochs=2)
    with pytest.raises(UserError, match=r"non-finite weights for 1 of 4 concepts \(c2\)"):
        basis.learn(store, settings, **quiet())


def test_learn_holds_the_features_once_and_logs_the_peak_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = planted_store(tmp_path, n=400, dim=256)
    real = basis.TRAINERS["paper"]
    flags: list[bool] = []

    def trainer(*args: Any, in_place: bool = False) -> basis.Fit:
        flags.append(in_place)
        return real(*args, in_place=in_place)

    monkeypatch.setitem(basis.TRAINERS, "paper", trainer)
    lines: list[str] = []
    basis.learn(
        store,
        basis.Settings.for_procedure("paper", epochs=1, rounds=0),
        progress=False,
        log=lines.append,
    )
    features = 300 * 16 * 256 * 4 / 2**20  # every training position is in the bank
    assert f"{features:.0f} MiB of features, held once (no standardised copy)" in lines[0]
    assert lines[1].startswith("trained in ") and "peak memory of this process" in lines[1]
    assert flags == [True]  # the bank's raw features are standardised in place, not copied


# -- the command --------------------------------------------------------------------------


def test_basis_learn_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_broden(tmp_path / "broden")
    write_model(tmp_path / "model.pt")
    out = tmp_path / "b.npz"
    argv = [
        "basis",
        "learn",
        "--weights",
        str(tmp_path / "model.pt"),
        "--dataset",
        str(tmp_path / "broden"),
        "--features",
        str(tmp_path / "store"),
        "--min-images",
        "1",
        "--min-positives",
        "1",
        "--epochs",
        "3",
        "--quiet",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main([*argv, "--procedure", "paper", "--rounds", "1"]) == 0
    printed = capsys.readouterr().out
    with np.load(out) as npz:
        names, ap, meta = npz["names"].tolist(), npz["ap"], json.loads(str(npz["meta"]))
        assert npz["weight"].shape == (len(names), 512)
    assert names == ["sky", "grass", "house"]  # the small door misses every held-out cell centre
    assert "dropped 1 of 4 concepts" in printed and "  door: 3 train, 0 held-out" in printed
    assert f"mAP {meta['mAP']:.3f} over 3 concepts on 4 held-out images" in printed
    assert meta["model"] == "model" and meta["layer"] == "layer4"
    assert meta["held_out_positions"] == 4 * 2 * 2
    assert np.all((ap >= 0) & (ap <= 1))
    assert features.FeatureStore(tmp_path / "store").num_images == 12
    assert meta["settings"]["procedure"] == "paper" and meta["settings"]["rounds"] == 1
    # the default procedure is the authors'; the paper's options are refused with it
    assert main(argv) == 0
    assert "mAP" in capsys.readouterr().out
    with np.load(out) as npz:
        settings = json.loads(str(npz["meta"]))["settings"]
    assert settings["procedure"] == "authors" and settings["epochs"] == 3
    assert (settings["rounds"], settings["batch_size"], settings["l2"]) == (0, 128, 0.0)
    assert main([*argv, "--rounds", "1"]) == 2
    assert (
        capsys.readouterr().err.strip() == "ibd basis: error: rounds: only for the paper procedure"
    )
    assert main(["basis", "learn", "--ratio", "0"]) == 2
    assert capsys.readouterr().err.strip() == "ibd basis: error: ratio must be at least 1"
