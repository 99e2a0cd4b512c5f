"""Significance of concepts (ibd.significance, docs/significance.md): Holm and the Monte-Carlo
p-value by hand, the statistics against least squares solved independently, planted concepts
significant and a random direction not (under both nulls), reproducibility from the seed, the
extended decompose.json / explanations.json round trips, old files still loading, the pictures'
marks, the evaluation's table, and one-line errors of the command line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tinyhome
from basisfiles import write_basis
from PIL import Image
from test_basis import planted_store

from ibd import basis as basis_module
from ibd import significance as sg
from ibd.cli import main
from ibd.decomposition import Decomposition, solve
from ibd.decomposition_figure import _link_style
from ibd.errors import UserError
from ibd.evaluation import scoring as ev
from ibd.evaluation import significance as es
from ibd.explain import records
from ibd.explain.render import picture_of_record, render

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- by hand ----------------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06)
    adjusted = sg.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adjusted <= 0.05) == [True, False, False, True]
    assert sg.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert sg.holm([0.2]) == pytest.approx([0.2])  # one test: unchanged


def test_monte_carlo_p_by_hand() -> None:
    # 2 of 4 null values are >= 2.0 (a NaN, a direction explaining nothing new, counts below)
    p = sg.monte_carlo_p(np.array([2.0, 5.0]), np.array([[1, 2, 3, np.nan], [1, 2, 3, 4.0]]))
    assert p == pytest.approx([3 / 5, 1 / 5])
    assert sg.monte_carlo_error(0.6, 4) == pytest.approx(np.sqrt(0.6 * 0.4 / 4))


def test_combining_nulls_takes_the_larger_p_and_its_error() -> None:
    observed = np.array([1.0, 1.0])
    nulls = {"a": np.array([[0.0] * 9, [2.0] * 9]), "b": np.array([[0.0] * 3 + [2.0], [0.0] * 4])}
    tests = sg.combine(observed, nulls, alpha=0.5)
    assert tests.by_null["a"] == pytest.approx([0.1, 1.0])
    assert tests.by_null["b"] == pytest.approx([0.4, 0.2])
    assert tests.p_value == pytest.approx([0.4, 1.0])
    assert tests.p_error == pytest.approx([np.sqrt(0.4 * 0.6 / 4), 0.0])
    assert tests.p_adjusted == pytest.approx([0.8, 1.0])
    assert list(tests.significant) == [False, False]


def test_statistics_against_least_squares() -> None:
    rng = np.random.default_rng(4)
    q = sg.standardize_rows(rng.normal(size=(5, 9)))
    w, a = rng.normal(size=9), rng.normal(size=9)
    concepts = [3, 0, 4]
    observed, _ = sg.statistics(q, w, concepts, {}, which=[0, 1, 2])
    by_image, _ = sg.statistics(q, w, concepts, {}, a=a)
    s = np.linalg.lstsq(q[concepts].T, w, rcond=None)[0]
    for i, c in enumerate(concepts):
        rest = [d for d in concepts if d != c]
        part = q[c] - q[rest].T @ np.linalg.lstsq(q[rest].T, q[c], rcond=None)[0]
        assert observed[i] == pytest.approx(s[i] * np.linalg.norm(part))
        # t^2 is the drop of ||r||^2 when the concept joins the others last
        r_without = w - q[rest].T @ np.linalg.lstsq(q[rest].T, w, rcond=None)[0]
        r_with = w - q[concepts].T @ s
        assert observed[i] ** 2 == pytest.approx(r_without @ r_without - r_with @ r_with)
        # u is the increase of the explained logit (P_S w) . a
        assert by_image[i] == pytest.approx((r_without - r_with) @ a)
    # one concept alone: t = w . q_c; a null direction equal to another chosen concept
    # explains nothing new (NaN, counted below the observed value)
    alone, _ = sg.statistics(q, w, [2], {})
    assert alone == pytest.approx([w @ q[2]])
    _, null = sg.statistics(q, w, [3, 0], {"x": q[[0, 1]]}, which=[0])
    assert np.isnan(null["x"][0, 0]) and np.isfinite(null["x"][0, 1])


# -- planted concepts -------------------------------------------------------------------------


def planted(seed: int = 1, concepts: int = 10, dim: int = 48):
    """A basis of random concept vectors plus one more random direction (the last row), and a
    class vector 2 q_0 + 1.5 q_1 + noise."""
    rng = np.random.default_rng(seed)
    q = sg.standardize_rows(rng.normal(size=(concepts + 1, dim)))
    w = 2.0 * q[0] + 1.5 * q[1] + 0.3 * rng.normal(size=dim)
    return q, w


def test_planted_concepts_are_significant_and_a_random_direction_is_not() -> None:
    q, w = planted()
    vectors, rho = sg.gaussian_null(q[:-1], 1000, seed=0)
    assert 0 < rho < 1
    random_index = len(q) - 1
    tests = sg.term_tests(q, w, [0, 1, random_index], {"gaussian": vectors})
    assert list(tests.significant) == [True, True, False]
    assert tests.p_value[0] == pytest.approx(1 / 1001)  # no draw explains as much as q_0
    assert tests.p_value[1] < 0.01
    assert tests.p_value[2] > 0.05
    # one image whose features show both planted concepts: both contributions significant
    a = 3.0 * q[0] + 2.0 * q[1] + 0.1 * np.random.default_rng(2).normal(size=q.shape[1])
    image = sg.term_tests(q, w, [0, 1, random_index], {"gaussian": vectors}, a=a)
    assert list(image.significant) == [True, True, False]


def test_the_classifier_null_on_a_planted_store(tmp_path: Path) -> None:
    store, _ = planted_store(tmp_path, rate=0.03)
    settings = basis_module.Settings.for_procedure("paper", batch_size=256)
    learned = basis_module.learn(store, settings, progress=False, log=lambda _: None)
    null = sg.draw_null(learned, classifier_draws=160, gaussian_draws=400, seed=3, store=store)
    assert null.draws == {"gaussian": 400, "classifiers": 160}
    assert np.allclose(np.linalg.norm(null.vectors["classifiers"], axis=1), 1, atol=1e-5)
    assert np.allclose(null.vectors["classifiers"].mean(axis=1), 0, atol=1e-6)
    # the random sets are whole images, as many as match the real concepts' positives
    per_image = store.grid[0] * store.grid[1]
    sizes = [m["trained_positives"] for m in learned.meta["concepts"]]
    expected = [int(np.ceil(sizes[j % len(sizes)] / per_image)) for j in range(160)]
    assert null.meta["classifiers"]["positive_images"] == expected
    q = learned.q.astype(np.float64)
    rng = np.random.default_rng(0)
    direction = sg.standardize_rows(rng.normal(size=(1, q.shape[1])))
    q_plus = np.vstack([q, direction])
    w = 2.0 * q[0] + 1.5 * q[1] + 0.2 * rng.normal(size=q.shape[1])
    tests = sg.term_tests(q_plus, w, [0, 1, len(q)], {"classifiers": null.vectors["classifiers"]})
    assert list(tests.significant) == [True, True, False]
    # same seed, same classifiers; another seed, other ones
    again = sg.classifier_null(store, learned, 20, seed=3)[0]
    assert np.array_equal(again, sg.classifier_null(store, learned, 20, seed=3)[0])
    assert not np.allclose(again, sg.classifier_null(store, learned, 20, seed=4)[0])


def test_p_values_are_reproducible_from_the_seed() -> None:
    q, w = planted(concepts=12, dim=40)
    basis = basis_module.Basis(
        names=[f"c{i}" for i in range(len(q))],
        categories=[""] * len(q),
        weight=q.astype(np.float32),
        bias=np.zeros(len(q), np.float32),
        ap=np.ones(len(q), np.float32),
        meta={},
        stored_q=q.astype(np.float32),
    )
    weights = np.stack([w, q[2] + 0.5 * q[5] + 0.4 * np.random.default_rng(9).normal(size=40)])
    dec = solve(basis.q.astype(np.float64), weights, max_concepts=4)

    def p_values(seed: int) -> np.ndarray:
        null = sg.draw_null(basis, kinds=["gaussian"], gaussian_draws=300, seed=seed)
        tested = sg.with_significance(dec, weights, basis.q.astype(np.float64), null)
        assert tested.p_values is not None
        return tested.p_values

    first = p_values(7)
    assert np.array_equal(first, p_values(7), equal_nan=True)
    assert not np.array_equal(first, p_values(8), equal_nan=True)


# -- files ------------------------------------------------------------------------------------


def decomposition_with_p_values() -> tuple[Decomposition, np.ndarray, np.ndarray]:
    q, w = planted(concepts=8, dim=32)
    weights = np.stack([w, 0.8 * q[3] + 0.3 * np.random.default_rng(5).normal(size=32)])
    names = [f"c{i}" for i in range(len(q))]
    dec = replace(solve(q, weights, max_concepts=3), class_names=["harbor", "beach"],
                  concept_names=names)  # fmt: skip
    null = sg.NullBasis({"gaussian": sg.gaussian_null(q, 500, seed=0)[0]}, {"seed": 0})
    return sg.with_significance(dec, weights, q, null), weights, q


def test_decompose_json_round_trip_with_p_values(tmp_path: Path) -> None:
    dec, _, _ = decomposition_with_p_values()
    assert dec.p_values is not None and dec.significant is not None
    path = dec.save(tmp_path / "dec.json")
    document = json.loads(path.read_text())
    first = document["classes"][0]["concepts"][0]
    assert set(first) == {
        "name", "index", "coefficient", "p_value", "p_error", "p_adjusted", "significant"
    }  # fmt: skip
    assert document["meta"]["significance"]["alpha"] == 0.05
    loaded = Decomposition.load(path)
    n = dec.counts
    for k in range(2):
        assert loaded.p_values[k, : n[k]] == pytest.approx(dec.p_values[k, : n[k]])
        assert loaded.p_adjusted[k, : n[k]] == pytest.approx(dec.p_adjusted[k, : n[k]])
        assert list(loaded.significant[k, : n[k]]) == list(dec.significant[k, : n[k]])
        # Holm within the class, alpha 0.05
        assert loaded.p_adjusted[k, : n[k]] == pytest.approx(sg.holm(dec.p_values[k, : n[k]]))
    assert loaded.to_dict()["classes"] == document["classes"]


def test_old_decompose_json_without_p_values_loads(tmp_path: Path) -> None:
    dec, _, _ = decomposition_with_p_values()
    document = json.loads(dec.save(tmp_path / "dec.json").read_text())
    for entry in document["classes"]:
        for concept in entry["concepts"]:
            for key in ("p_value", "p_error", "p_adjusted", "significant"):
                del concept[key]
    (tmp_path / "old.json").write_text(json.dumps(document))
    old = Decomposition.load(tmp_path / "old.json")
    assert old.p_values is None and old.significant is None
    assert "p_value" not in old.to_dict()["classes"][0]["concepts"][0]
    document["classes"][0]["concepts"][0]["p_value"] = 1.5
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="p_value must be a number in 0..1"):
        Decomposition.load(tmp_path / "bad.json")


def explanation_record(flags: list[bool | None]) -> records.Explanation:
    components = []
    for j, flag in enumerate(flags):
        extra = {} if flag is None else {"p_value": 0.5, "p_adjusted": 0.9, "significant": flag}
        components.append(records.Component(f"concept{j}", 1.0, f"0-{j}", extra))
    return records.Explanation(
        "img.png", "m", "ibd", 0, "harbor", 4.0, components, 1.0, (2, 2), {"probability": 0.9}
    )


def test_explanations_round_trip_and_old_records(tmp_path: Path) -> None:
    explanation = explanation_record([True, False, None])
    maps = {f"0-{j}": np.eye(2, dtype=np.float32) * (j + 1) for j in range(3)}
    records.write(tmp_path, [explanation], maps)
    (found,), heatmaps = records.read(tmp_path)
    assert found["components"][0]["significant"] is True
    assert found["components"][1]["p_adjusted"] == 0.9
    assert "p_value" not in found["components"][2]
    picture = picture_of_record(found, heatmaps)
    assert [t.significant for t in picture.terms] == [True, False, None]
    bad = explanation_record([True])
    bad.components[0].extra["p_value"] = -0.1
    with pytest.raises(UserError, match="p_value must be a number in 0..1"):
        records.write(tmp_path / "bad", [bad], {"0-0": np.eye(2, dtype=np.float32)})


def test_pictures_grey_out_what_is_not_significant() -> None:
    picture = picture_of_record(
        explanation_record([True, False]).to_dict(),
        {"0-0": np.eye(2, dtype=np.float32), "0-1": np.eye(2, dtype=np.float32)},
    )
    size = 96
    drawn = np.asarray(render(picture, Image.new("RGB", (40, 40), "white"), size=size, top=2))
    # panels: input, class map, term 0 (significant), term 1 (n.s.), residual
    caption = slice(drawn.shape[0] - 2 * (size // 14 + 4) - 8, drawn.shape[0])

    def darkest(panel: int) -> int:
        x = 8 + panel * (size + 6)
        return int(drawn[caption, x : x + size].min())

    assert darkest(2) < 60  # dark text
    assert darkest(3) > 120  # light grey text
    style = _link_style({"significant": False}, "red", 5.0)
    assert style["color"] != "red" and style["linestyle"] != "-" and style["linewidth"] <= 1.2
    assert _link_style({}, "red", 5.0)["color"] == "red"


# -- evaluation ---------------------------------------------------------------------------------


def test_evaluation_of_significant_terms_against_the_rules(tmp_path: Path) -> None:
    dec, _, _ = decomposition_with_p_values()
    path = dec.save(tmp_path / "dec.json")
    document = json.loads(path.read_text())
    # class 0 lists c0, c1 and a third term; mark the third not significant by hand
    for entry in document["classes"]:
        for i, concept in enumerate(entry["concepts"]):
            concept["significant"] = i < 2
    path.write_text(json.dumps(document))
    third = document["classes"][0]["concepts"][2]["name"]
    world = ev.World(
        (
            ev.WorldClass(0, "harbor", ("c0", "c1"), (), ()),
            ev.WorldClass(1, "beach", ("c3",), (), ()),
        ),
        {},
    )
    found = [
        {"method": "ibd", "model": "m", "class_name": "harbor", "components": [
            {"label": "c0", "significant": True}, {"label": third, "significant": False},
            {"label": "c1", "significant": True}]},
        {"method": "cam", "model": "m", "class_name": "harbor", "components": [{"label": "x"}]},
    ]  # fmt: skip
    result = es.evaluate_significance(path, world, k=3, explanations=found)
    harbor = result.classes[0]
    assert (harbor.components, harbor.significant) == (3, 2)
    assert harbor.precision_all == pytest.approx(2 / 3)
    assert harbor.precision_significant == pytest.approx(1.0)
    (row,) = result.explanations
    assert (row.explanations, row.components, row.tested, row.significant) == (1, 3, 3, 2)
    assert row.correct_all == pytest.approx(2 / 3) and row.correct_significant == 1.0
    lines = es.significance_section(result)
    assert lines[0] == "## Significance of the concepts"
    assert any(line.startswith("| harbor | 3 | 2 |") for line in lines)
    rows = (es.write_significance_csv(tmp_path / "sig.csv", result)).read_text().splitlines()
    assert rows[0] == ",".join(es.CSV_COLUMNS)
    assert rows[1].startswith("class,harbor,3,2,")
    assert rows[-1].startswith("explanations,m,3,2,")
    old = tmp_path / "old.json"
    for entry in document["classes"]:
        for concept in entry["concepts"]:
            concept.pop("significant")
            concept.pop("p_value")
            concept.pop("p_error")
            concept.pop("p_adjusted")
    old.write_text(json.dumps(document))
    with pytest.raises(UserError, match="has no p-values"):
        es.class_rows(old, world)


# -- command line -------------------------------------------------------------------------------


@pytest.fixture()
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    q, w = planted(concepts=8, dim=24)
    write_basis(tmp_path / "basis.npz", q.astype(np.float32).astype(np.float64))
    np.save(tmp_path / "W.npy", np.stack([w, 0.9 * q[4] + 0.7 * q[6]]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IBD_HOME", str(tmp_path / "home"))
    return tmp_path


BASE = "decompose --basis basis.npz --class-weights W.npy --out out.json"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (f"{BASE} --null-draws 10", "--null-draws: only with --significance"),
        (f"{BASE} --significance --null bogus", "--null: unknown null bogus"),
        (f"{BASE} --significance --null gaussian --null-draws 0", "--null-draws must be at least"),
        (f"{BASE} --significance --alpha 1.5", "--alpha must lie in (0, 1)"),
        (f"{BASE} --significance --null classifiers", "needs the basis' feature store"),
        ("explain --method cam --significance x.png", "--significance is for --method ibd"),
        ("explain --method ibd --alpha 0.1 x.png", "--alpha: only with --significance"),
    ],
)
def test_cli_errors_are_one_line(inputs: Path, capsys, argv: str, message: str) -> None:
    assert main(argv.split()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err
    assert message in err
    assert not (inputs / "out.json").exists()


def test_cli_decompose_with_significance(inputs: Path, capsys) -> None:
    argv = f"{BASE} --significance --null gaussian --null-draws 300 --seed 2".split()
    assert main(argv) == 0
    assert "terms significant" in capsys.readouterr().out
    document = json.loads((inputs / "out.json").read_text())
    null = sg.NullBasis.load(inputs / "out.null.npz")
    assert null.draws == {"gaussian": 300} and null.meta["seed"] == 2
    harbor = {c["name"]: c for c in document["classes"][0]["concepts"]}
    assert harbor["concept0"]["significant"] and harbor["concept1"]["significant"]
    assert document["meta"]["significance"]["nulls"] == {"gaussian": 300}
    first = (inputs / "out.json").read_text()
    assert main(argv) == 0
    assert (inputs / "out.json").read_text() == first  # reproducible from the seed


def test_cli_explain_with_significance(tmp_path: Path, monkeypatch, capsys) -> None:
    home = tinyhome.build(tmp_path)
    monkeypatch.setenv("IBD_HOME", str(home))
    monkeypatch.chdir(home)
    weights = ["--weights", "models/tiny.pt"]
    assert main(["explain", "--method", "ibd", *weights, "--significance", "imgs"]) == 2
    assert "run `ibd decompose --significance`" in capsys.readouterr().err
    assert main(["decompose", *weights, "--significance", "--null", "gaussian"]) == 0
    argv = ["explain", "--method", "ibd", *weights, "--significance", "--out", "ex", "imgs"]
    assert main(argv) == 0
    found, _ = records.read(home / "ex")
    for record in found:
        p = [c["p_value"] for c in record["components"]]
        adjusted = [c["p_adjusted"] for c in record["components"]]
        assert adjusted == pytest.approx(sg.holm(p))  # Holm per explanation
        assert [c["significant"] for c in record["components"]] == [x <= 0.05 for x in adjusted]
    # a null drawn for another basis is refused
    other = sg.NullBasis({"gaussian": np.ones((3, 512), np.float32)}, {"format": sg.NULL_FORMAT,
                         "basis_fingerprint": "0" * 64})  # fmt: skip
    other.save(home / "other.null.npz")
    argv += ["--null", "other.null.npz"]
    assert main(argv) == 2
    assert "drawn for another basis" in capsys.readouterr().err


def test_cli_decompose_with_the_classifier_null(tmp_path: Path, monkeypatch, capsys) -> None:
    store, _ = planted_store(tmp_path, rate=0.03)
    settings = basis_module.Settings.for_procedure("paper", batch_size=256)
    learned = basis_module.learn(store, settings, progress=False, log=lambda _: None)
    learned.save(tmp_path / "b.npz")
    q = learned.q.astype(np.float64)
    np.save(tmp_path / "W.npy", np.stack([2.0 * q[0] + 1.5 * q[1], q[2] + q[3]]))
    monkeypatch.chdir(tmp_path)
    argv = "decompose --basis b.npz --class-weights W.npy --out d.json --significance"
    argv += f" --features {store.path} --classifier-draws 150 --null-draws 300"
    assert main(argv.split()) == 0
    assert "classifiers 150" in capsys.readouterr().out
    document = json.loads((tmp_path / "d.json").read_text())
    assert document["meta"]["significance"]["nulls"] == {"gaussian": 300, "classifiers": 150}
    assert document["meta"]["significance"]["null_meta"]["classifiers"]["procedure"] == "paper"
    first = {c["name"]: c["significant"] for c in document["classes"][0]["concepts"]}
    assert first["c0"] and first["c1"]
