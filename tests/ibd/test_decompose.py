"""Class decomposition (paper eq. 3-6): known answers, a brute-force NNLS oracle, the authors'
Gram-Schmidt pursuit transcribed directly, and the `ibd decompose` command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from basisfiles import write_basis
from scipy.linalg import hadamard
from scipy.optimize import nnls

from ibd.cli import main
from ibd.decomposition import gram_schmidt_pursuit, greedy_nnls, solve


def standardised(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def orthonormal_basis(count: int = 8, dim: int = 16) -> np.ndarray:
    # rows of a Hadamard matrix other than the all-ones one: zero mean and mutually orthogonal,
    # so after scaling they are standardised exactly
    return hadamard(dim)[1 : count + 1].astype(np.float64) / np.sqrt(dim)


def random_problem(seed: int, concepts: int = 25, dim: int = 12, classes: int = 6):
    rng = np.random.default_rng(seed)
    # correlated concepts (three shared directions), like real concept classifiers, so that
    # the positivity constraint often rejects the candidate with the smallest residual
    shared = rng.normal(size=(3, dim))
    q = standardised(
        rng.normal(size=(concepts, dim)) + 2.0 * rng.normal(size=(concepts, 3)) @ shared
    )
    # half the classes are positive mixtures of a few concepts plus noise, half pure noise
    mix = np.where(rng.random((classes, concepts)) < 0.15, rng.random((classes, concepts)), 0.0)
    w = rng.normal(size=(classes, dim)) * np.where(np.arange(classes) % 2, 1.0, 0.3)[:, None]
    return q, w + mix @ q


def brute_force_nnls(q: np.ndarray, w: np.ndarray, max_concepts: int = 7, tol: float = 1e-6):
    """Eq. 6 literally: scipy's NNLS for every candidate at every step; a candidate counts only
    when all its coefficients are > 0. Also counts the steps where the constraint changed the
    choice (the unconstrained-by-positivity best candidate was inadmissible)."""
    chosen: list[int] = []
    coef = np.zeros(0)
    fraction = 1.0
    norm2 = float(w @ w)
    bites = 0
    for _ in range(max_concepts):
        best = None
        best_any = None
        for c in range(len(q)):
            if c in chosen:
                continue
            x, rnorm = nnls(q[[*chosen, c]].T, w)
            if best_any is None or rnorm < best_any[0]:
                best_any = (rnorm, c)
            if np.all(x > 0) and (best is None or rnorm < best[0]):
                best = (rnorm, c, x)
        if best is None or fraction - best[0] ** 2 / norm2 < tol:
            break
        bites += best_any[1] != best[1]
        chosen.append(best[1])
        coef = best[2]
        fraction = best[0] ** 2 / norm2
    return chosen, coef, fraction, bites


def gram_schmidt_direct(q: np.ndarray, w: np.ndarray, steps: int):
    """The authors' `decompose_Gram_Schmidt` loop for one class, transcribed step by step."""
    target = w / np.linalg.norm(w)
    residual = target.copy()
    ortho = {i: qc / np.linalg.norm(qc) for i, qc in enumerate(q)}
    order = []
    for _ in range(steps):
        best = max(ortho, key=lambda i: float(ortho[i] @ target))
        u = ortho.pop(best)
        residual = residual - u * float(u @ residual)
        order.append(best)
        for i, v in ortho.items():
            v = v - u * float(u @ v)
            ortho[i] = v / np.linalg.norm(v)
    coef = np.linalg.pinv(q[order].T) @ target
    return order, coef, float(residual @ residual)


# --- the paper's solver --------------------------------------------------------------------


def test_exact_sum_of_two_concepts_is_recovered() -> None:
    q = orthonormal_basis()
    w = (2.0 * q[1] + 0.5 * q[3])[None, :]
    dec = greedy_nnls(q, w)
    assert dec.terms(0) == [(1, pytest.approx(2.0)), (3, pytest.approx(0.5))]
    assert dec.counts[0] == 2
    assert dec.residual_fraction[0] == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(dec.residuals[0], 0.0, atol=1e-12)
    # after one concept, 0.5^2 of ||w||^2 = 4.25 is left
    assert dec.fraction_steps[0, 0] == pytest.approx(0.25 / 4.25)
    assert np.isnan(dec.fraction_steps[0, 2])


def test_negative_part_is_left_in_the_residual() -> None:
    q = orthonormal_basis()
    w = (q[1] - q[2])[None, :]
    dec = greedy_nnls(q, w)
    # q_2 would need coefficient -1, every other concept adds nothing: one concept only
    assert dec.terms(0) == [(1, pytest.approx(1.0))]
    assert np.allclose(dec.residuals[0], -q[2])
    assert dec.residual_fraction[0] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_nnls_equals_brute_force_scipy_nnls(seed: int) -> None:
    q, w = random_problem(seed)
    dec = greedy_nnls(q, w, max_concepts=7, tol=1e-6)
    for k in range(len(w)):
        chosen, coef, fraction, _ = brute_force_nnls(q, w[k])
        assert [c for c, _ in dec.terms(k)] == chosen
        assert np.allclose([s for _, s in dec.terms(k)], coef, atol=1e-6, rtol=0)
        assert dec.residual_fraction[k] == pytest.approx(fraction, abs=1e-9)


def test_brute_force_comparison_exercises_the_positivity_constraint() -> None:
    # the equality above would be weak if positivity never changed a choice
    bites = 0
    for seed in range(6):
        q, w = random_problem(seed)
        bites += sum(brute_force_nnls(q, w[k])[3] for k in range(len(w)))
    assert bites >= 10


def test_stopping_tolerance_matches_brute_force() -> None:
    q, w = random_problem(11)
    dec = greedy_nnls(q, w, max_concepts=7, tol=0.05)
    assert dec.counts.min() < 7
    for k in range(len(w)):
        chosen, coef, _, _ = brute_force_nnls(q, w[k], tol=0.05)
        assert [c for c, _ in dec.terms(k)] == chosen
        assert np.allclose([s for _, s in dec.terms(k)], coef, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_nnls_coefficients_positive_and_residual_orthogonal_to_chosen(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    q = standardised(rng.normal(size=(80, 32)))
    w = rng.normal(size=(20, 32))
    dec = greedy_nnls(q, w)
    for k in range(len(w)):
        idx = [c for c, _ in dec.terms(k)]
        s = np.array([s for _, s in dec.terms(k)])
        assert np.all(s > 0)
        assert np.allclose(dec.residuals[k], w[k] - s @ q[idx], atol=1e-12)
        # least-squares optimality of a positive NNLS solution: Q_S r = 0
        assert np.allclose(q[idx] @ dec.residuals[k], 0.0, atol=1e-10)


def test_residual_fraction_and_zero_class() -> None:
    rng = np.random.default_rng(5)
    q = standardised(rng.normal(size=(30, 10)))
    w = np.vstack([rng.normal(size=(3, 10)), np.zeros((1, 10))])
    for solver in ("nnls", "omp"):
        dec = solve(q, w, solver=solver, max_concepts=4)
        for k in range(3):
            idx = [c for c, _ in dec.terms(k)]
            s = np.array([s for _, s in dec.terms(k)])
            r = w[k] - s @ q[idx]
            assert dec.residual_fraction[k] == pytest.approx((r @ r) / (w[k] @ w[k]))
            assert dec.weight_norm[k] == pytest.approx(np.linalg.norm(w[k]))
        assert dec.counts[3] == 0 and dec.residual_fraction[3] == 0.0
        assert dec.mean_residual_fraction == pytest.approx(dec.residual_fraction.mean())
        by_step = dec.mean_fraction_by_step()
        assert by_step[-1] == pytest.approx(dec.mean_residual_fraction)
        assert np.all(np.diff(by_step) <= 1e-12)


def test_scale_of_class_weights_scales_coefficients_only() -> None:
    q, w = random_problem(3)
    for solver in ("nnls", "omp"):
        a = solve(q, w, solver=solver)
        b = solve(q, 10.0 * w, solver=solver)
        assert np.array_equal(a.concepts, b.concepts)
        assert np.allclose(10.0 * a.coefficients, b.coefficients)
        assert np.allclose(a.residual_fraction, b.residual_fraction)


# --- the authors' Gram-Schmidt pursuit -----------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_omp_equals_direct_gram_schmidt_transcription(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    q = standardised(rng.normal(size=(15, 9)))
    w = rng.normal(size=(4, 9))
    dec = gram_schmidt_pursuit(q, w, max_concepts=5)
    for k in range(len(w)):
        order, coef, residual2 = gram_schmidt_direct(q, w[k], steps=5)
        assert [c for c, _ in dec.terms(k)] == order
        norm = np.linalg.norm(w[k])
        assert np.allclose([s / norm for _, s in dec.terms(k)], coef, atol=1e-9)
        assert dec.residual_fraction[k] == pytest.approx(residual2)


def test_omp_takes_exactly_max_concepts_and_allows_negative_coefficients() -> None:
    q = orthonormal_basis()
    w = (q[1] - q[2] + 0.25 * q[4])[None, :]
    dec = gram_schmidt_pursuit(q, w, max_concepts=3)
    assert dec.counts[0] == 3
    terms = dict(dec.terms(0))
    # the largest signed projections first: q_1 (1), q_4 (0.25), then a zero one
    assert [c for c, _ in dec.terms(0)][:2] == [1, 4]
    assert terms[1] == pytest.approx(1.0) and terms[4] == pytest.approx(0.25)
    rng = np.random.default_rng(9)
    q2 = standardised(rng.normal(size=(40, 12)))
    dec2 = gram_schmidt_pursuit(q2, rng.normal(size=(10, 12)), max_concepts=7)
    assert (dec2.coefficients < 0).any()
    assert np.all(dec2.counts == 7)


# --- the command ---------------------------------------------------------------------------


def test_cli_round_trip_with_class_weights(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    q = standardised(rng.normal(size=(30, 16))).astype(np.float32).astype(np.float64)
    w = rng.normal(size=(5, 16))
    write_basis(tmp_path / "basis.npz", q)
    np.save(tmp_path / "W.npy", w)
    (tmp_path / "labels.txt").write_text("harbor\nbeach\nforest\nstreet\nkitchen\n")
    out = tmp_path / "out" / "dec.json"
    argv = ["decompose", "--basis", str(tmp_path / "basis.npz"), "--class-weights"]
    argv += [str(tmp_path / "W.npy"), "--labels", str(tmp_path / "labels.txt")]
    assert main([*argv, "--out", str(out), "--max-concepts", "5"]) == 0
    assert "mean residual fraction" in capsys.readouterr().out

    doc = json.loads(out.read_text())
    expected = greedy_nnls(q, w, max_concepts=5)
    assert [c["name"] for c in doc["classes"]] == ["harbor", "beach", "forest", "street", "kitchen"]
    for k, entry in enumerate(doc["classes"]):
        assert entry["index"] == k
        assert [(c["index"], c["coefficient"]) for c in entry["concepts"]] == [
            (c, pytest.approx(s, abs=1e-9)) for c, s in expected.terms(k)
        ]
        assert [c["name"] for c in entry["concepts"]] == [
            f"concept{c}" for c, _ in expected.terms(k)
        ]
        assert all(c["coefficient"] > 0 for c in entry["concepts"])
        assert entry["residual_fraction"] == pytest.approx(expected.residual_fraction[k])
    meta = doc["meta"]
    assert meta["solver"] == "nnls"
    assert meta["settings"] == {"max_concepts": 5, "tol": 1e-6}
    assert meta["basis"] == str(tmp_path / "basis.npz")
    assert meta["basis_meta"]["layer"] == "features"
    fractions = [c["residual_fraction"] for c in doc["classes"]]
    assert meta["mean_residual_fraction"] == pytest.approx(np.mean(fractions))


def test_cli_omp_and_ibd_home_defaults(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(2)
    q = standardised(rng.normal(size=(20, 8))).astype(np.float32).astype(np.float64)
    w = rng.normal(size=(3, 8))
    (tmp_path / "basis").mkdir()
    write_basis(tmp_path / "basis" / "world_vgg.npz", q)
    np.save(tmp_path / "world_vgg.npy", w)
    monkeypatch.setenv("IBD_HOME", str(tmp_path))
    argv = ["decompose", "--class-weights", str(tmp_path / "world_vgg.npy"), "--solver", "omp"]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "decompose" / "world_vgg.json").read_text())
    expected = gram_schmidt_pursuit(q, w, max_concepts=7)
    assert doc["meta"]["solver"] == "omp"
    assert [c["name"] for c in doc["classes"]] == ["class_0", "class_1", "class_2"]
    for k, entry in enumerate(doc["classes"]):
        assert len(entry["concepts"]) == 7
        got = [c["coefficient"] / entry["weight_norm"] for c in entry["concepts"]]
        want = [s / np.linalg.norm(w[k]) for _, s in expected.terms(k)]
        assert np.allclose(got, want, atol=1e-9)


def test_cli_from_a_model_checkpoint_with_ibd_home_defaults(tmp_path: Path, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    from ibd.nets import architectures
    from ibd.nets.load import save_checkpoint

    torch.manual_seed(0)
    net = architectures.get("resnet18").build(3)
    (tmp_path / "models").mkdir()
    save_checkpoint(
        tmp_path / "models" / "tiny.pt",
        net,
        arch="resnet18",
        classes=["harbor", "beach", "forest"],
        layer="layer4",
        input_size=(64, 64),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    q = standardised(np.random.default_rng(3).normal(size=(12, 512)))
    (tmp_path / "basis").mkdir()
    write_basis(tmp_path / "basis" / "tiny.npz", q)
    monkeypatch.setenv("IBD_HOME", str(tmp_path))
    # the model name (the weights' stem) picks basis/tiny.npz and decompose/tiny.json
    assert main(["decompose", "--weights", str(tmp_path / "models" / "tiny.pt")]) == 0
    doc = json.loads((tmp_path / "decompose" / "tiny.json").read_text())
    w = net.fc.weight.detach().double().numpy()
    expected = greedy_nnls(q.astype(np.float32).astype(np.float64), w)
    assert [c["name"] for c in doc["classes"]] == ["harbor", "beach", "forest"]
    for k, entry in enumerate(doc["classes"]):
        assert [c["index"] for c in entry["concepts"]] == [c for c, _ in expected.terms(k)]
        assert entry["residual_fraction"] == pytest.approx(expected.residual_fraction[k])
    assert doc["meta"]["arch"] == "resnet18"
    assert doc["meta"]["model"] == "tiny"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    write_basis(tmp_path / "basis.npz", standardised(rng.normal(size=(10, 6))))
    np.save(tmp_path / "W.npy", rng.normal(size=(3, 6)))
    np.save(tmp_path / "W4.npy", rng.normal(size=(3, 4)))
    np.save(tmp_path / "W_nan.npy", np.full((3, 6), np.nan))
    np.save(tmp_path / "W_obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "noq.npz", names=np.array(["a"]))
    np.savez(tmp_path / "badnames.npz", q=np.eye(3, 6), names=np.array(["a", "b"]))
    (tmp_path / "junk.npz").write_text("not a zip")
    (tmp_path / "two.txt").write_text("a\nb\n")
    return tmp_path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--basis basis.npz --class-weights W4.npy", "dimension mismatch: "),
        ("--basis missing.npz --class-weights W.npy", "basis file not found: "),
        ("--basis basis.npz --class-weights missing.npy", "class weights file not found"),
        ("--basis junk.npz --class-weights W.npy", "junk.npz is not an .npz archive"),
        ("--basis W.npy --class-weights W.npy", "W.npy is not an .npz archive"),
        ("--basis noq.npz --class-weights W.npy", "noq.npz lacks array(s) q"),
        ("--basis badnames.npz --class-weights W.npy", "array names must hold 3 strings"),
        ("--basis basis.npz --class-weights basis.npz", "takes one K x D .npy array"),
        ("--basis basis.npz --class-weights junk.npz", "junk.npz is not a .npy file"),
        ("--basis basis.npz --class-weights W_nan.npy", "NaN or infinite"),
        ("--basis basis.npz --class-weights W_obj.npy", "cannot read class weights"),
        ("--basis basis.npz --class-weights W.npy --labels two.txt", "names 2 classes but"),
        ("--basis basis.npz --class-weights W.npy --arch resnet18", "--class-weights replaces"),
        ("--basis basis.npz --class-weights W.npy --normalization authors", "drop --normal"),
        ("--basis basis.npz --class-weights W.npy --device cuda", "drop --device"),
        ("--basis basis.npz --class-weights W.npy --max-concepts 0", "--max-concepts must be"),
        ("--basis basis.npz --class-weights W.npy --tol -1", "--tol must be"),
        ("--basis basis.npz --weights missing.pt", "weights file not found"),
    ],
)
def test_cli_errors_are_one_line(inputs: Path, monkeypatch, capsys, flags, message) -> None:
    monkeypatch.chdir(inputs)
    assert main(["decompose", *flags.split(), "--out", "out.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibd decompose: error: ") and err.count("\n") == 1
    assert message in err
    assert not (inputs / "out.json").exists()


def test_cli_out_that_is_a_directory_is_refused_before_work(inputs: Path, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    (inputs / "taken").mkdir()
    argv = ["decompose", "--basis", "basis.npz", "--class-weights", "W.npy", "--out", "taken"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--out taken is a directory" in err and err.count("\n") == 1
    assert list((inputs / "taken").iterdir()) == [] and not (inputs / "taken.tmp").exists()


def test_cli_reads_byte_string_concept_names(inputs: Path, monkeypatch) -> None:
    monkeypatch.chdir(inputs)
    q = standardised(np.random.default_rng(5).normal(size=(4, 6)))
    np.savez(
        inputs / "bytes.npz",
        q=q,
        names=np.array([b"sky", b"sea", b"boat", b"sand"]),
        meta=np.array(b'{"model": "m"}'),
    )
    argv = ["decompose", "--basis", "bytes.npz", "--class-weights", "W.npy", "--out", "o.json"]
    assert main(argv) == 0
    doc = json.loads((inputs / "o.json").read_text())
    names = {c["name"] for k in doc["classes"] for c in k["concepts"]}
    assert names and names <= {"sky", "sea", "boat", "sand"}
    assert doc["meta"]["basis_meta"] == {"model": "m"}
