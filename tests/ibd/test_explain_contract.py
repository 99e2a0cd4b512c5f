"""`ibd explain` end to end for all four methods: the files of docs/contracts.md 4, with every
value recomputed independently (paper eq. 9-11, 13-14), and the command's failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tinyhome
import torch
from basisfiles import write_basis
from tinyhome import CLASSES, CONCEPTS, IMAGES, standardised

from ibd.cli import main
from ibd.data.images import load_batch
from ibd.decomposition import greedy_nnls
from ibd.nets import hooks
from ibd.nets.load import load_model

RECORD_KEYS = {
    "image",
    "model",
    "method",
    "class_index",
    "class_name",
    "score",
    "components",
    "residual",
    "heatmap_shape",
    "probability",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny home of tinyhome.py: a ResNet18 whose class weights mix a 12-concept basis."""
    return tinyhome.build(tmp_path_factory.mktemp("contract"))


@pytest.fixture()
def home(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IBD_HOME", str(root))
    monkeypatch.chdir(root)
    return root


def explain(method: str, out: str, *extra: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    argv = ["explain", "--method", method, "--weights", "models/tiny.pt", "--out", out]
    assert main([*argv, *extra, *IMAGES]) == 0
    records = json.loads(Path(out, "explanations.json").read_text())
    with np.load(Path(out, "heatmaps.npz")) as npz:
        return records, {k: npz[k] for k in npz.files}


def forward(root: Path, target: int | None = None, gradients: bool = False) -> hooks.Forward:
    loaded = load_model(None, root / "models" / "tiny.pt")
    batch, _ = load_batch([root / p for p in IMAGES], (96, 96), loaded.mean, loaded.std)
    return hooks.run(loaded.model, "layer4", batch, target, gradients=gradients)


def class_terms(path: Path) -> list[list[tuple[int, float]]]:
    doc = json.loads(path.read_text())
    return [[(c["index"], c["coefficient"]) for c in k["concepts"]] for k in doc["classes"]]


@pytest.mark.parametrize("method", ["ibd", "cam", "gradcam", "netdissect"])
def test_every_method_writes_the_contract(home: Path, method: str) -> None:
    assert main(["decompose", "--weights", "models/tiny.pt"]) == 0
    records, maps = explain(method, f"out-{method}")
    fwd = forward(home)
    probabilities = torch.softmax(fwd.logits, dim=1)
    tally = {u: (CONCEPTS[(u + 1) % 12], (u + 1) / 1000) for u in range(512)}
    keys = [c["heatmap"] for r in records for c in r["components"]]
    assert len(keys) == len(set(keys)) and set(keys) == set(maps)
    assert [r["image"] for r in records] == IMAGES  # the paths exactly as given
    for n, rec in enumerate(records):
        assert set(rec) == RECORD_KEYS
        k = int(fwd.logits[n].argmax())
        assert (rec["model"], rec["method"], rec["class_index"]) == ("tiny", method, k)
        assert rec["class_name"] == CLASSES[k]
        assert rec["score"] == pytest.approx(float(fwd.logits[n, k]), abs=1e-5)
        assert rec["probability"] == pytest.approx(float(probabilities[n, k]), abs=1e-6)
        assert rec["heatmap_shape"] == [3, 3]
        contributions = [c["contribution"] for c in rec["components"]]
        assert contributions == sorted(contributions, reverse=True)
        for c in rec["components"]:
            assert maps[c["heatmap"]].dtype == np.float32 and maps[c["heatmap"]].shape == (3, 3)
        if method in ("cam", "gradcam"):
            assert rec["residual"] is None
            assert [c["label"] for c in rec["components"]] == [rec["class_name"]]
            continue
        assert sum(contributions) + rec["residual"] == pytest.approx(rec["score"], abs=1e-4)
        if method == "netdissect":
            assert len(rec["components"]) == 7
            for c in rec["components"]:
                assert isinstance(c["unit"], int) and 0 <= c["unit"] < 512
                label, iou = tally[c["unit"]]
                assert c["label"] == label and c["iou"] == pytest.approx(iou)
                np.testing.assert_allclose(maps[c["heatmap"]], fwd.features[n, c["unit"]])


def test_ibd_values_follow_eq_9_to_11_and_rebuild_the_cam_map(home: Path) -> None:
    """Contribution s_i q_i.a, residual r.a + b_k, heatmap q_i^T A with pool(s_i q_i^T A) equal
    to the contribution, and sum_i s_i q_i^T A + r^T A equal to the CAM map w_k^T A."""
    assert main(["decompose", "--weights", "models/tiny.pt", "--out", "dec.json"]) == 0
    records, maps = explain("ibd", "out-ibd-all", "--decomposition", "dec.json", "--top", "12")
    cams, cam_maps = explain("cam", "out-cam-all")
    fwd = forward(home)
    loaded = load_model(None, home / "models" / "tiny.pt")
    w = loaded.model.fc.weight.detach().double().numpy()
    b = loaded.model.fc.bias.detach().double().numpy()
    q = np.load(home / "basis" / "tiny.npz")["q"].astype(np.float64)
    terms = class_terms(home / "dec.json")
    assert all(len(t) >= 2 for t in terms)  # the check below is not about a single concept
    for n, (rec, cam_rec) in enumerate(zip(records, cams, strict=True)):
        k = rec["class_index"]
        a_map = fwd.features[n].double().numpy()
        a = a_map.mean(axis=(1, 2))
        r = w[k] - sum(s * q[c] for c, s in terms[k])
        expected = {CONCEPTS[c]: s * float(q[c] @ a) for c, s in terms[k]}
        got = {c["label"]: c["contribution"] for c in rec["components"]}
        assert got == pytest.approx(expected, abs=1e-5)
        assert rec["residual"] == pytest.approx(float(r @ a) + b[k], abs=1e-4)
        rebuilt = np.einsum("d,dhw->hw", r, a_map)
        coefficient = dict(terms[k])
        for comp in rec["components"]:
            c = CONCEPTS.index(comp["label"])
            heat = maps[comp["heatmap"]]
            np.testing.assert_allclose(heat, np.einsum("d,dhw->hw", q[c], a_map), atol=1e-4)
            assert coefficient[c] * heat.mean() == pytest.approx(comp["contribution"], abs=1e-5)
            rebuilt = rebuilt + coefficient[c] * heat
        cam_map = cam_maps[cam_rec["components"][0]["heatmap"]]
        np.testing.assert_allclose(rebuilt, cam_map, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ibd", "netdissect", "gradcam"])
def test_any_class_on_request(home: Path, method: str) -> None:
    records, _ = explain(method, f"out-{method}-forest", "--target", "forest")
    by_index, _ = explain(method, f"out-{method}-2", "--target", "2")
    fwd = forward(home, target=2)
    for n, rec in enumerate(records):
        assert (rec["class_index"], rec["class_name"]) == (2, "forest")
        assert rec["score"] == pytest.approx(float(fwd.logits[n, 2]), abs=1e-5)
        assert rec["components"] == by_index[n]["components"]
        if method != "gradcam":
            total = sum(c["contribution"] for c in rec["components"]) + rec["residual"]
            assert total == pytest.approx(rec["score"], abs=1e-4)


@pytest.mark.slow
def test_an_explicit_basis_does_not_trip_over_the_default_decomposition(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default decompose/tiny.json decomposes over basis/tiny.npz: with another --basis
    (same concept names), explain decomposes over that basis itself and says so; it used to
    refuse, blaming "another model, or this one before retraining"."""
    basis = home / "basis" / "tiny.npz"
    saved = basis.read_bytes()  # the fixture is shared: the test replaces this file at its end
    try:
        check_explicit_basis(home, capsys)
    finally:
        basis.write_bytes(saved)


def check_explicit_basis(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decompose", "--weights", "models/tiny.pt"]) == 0
    rng = np.random.default_rng(7)
    other = standardised(np.load(home / "basis" / "tiny.npz")["q"] + rng.normal(size=(12, 512)))
    write_basis(home / "other.npz", other, layer="layer4")
    capsys.readouterr()
    records, _ = explain("ibd", "out-other", "--basis", "other.npz")
    assert "decomposing them here" in capsys.readouterr().err
    loaded = load_model(None, home / "models" / "tiny.pt")
    w = loaded.model.fc.weight.detach().double().numpy()
    dec = greedy_nnls(other.astype(np.float32).astype(np.float64), w)
    for rec in records:
        want = {CONCEPTS[c] for c, _ in dec.terms(rec["class_index"])}
        assert {c["label"] for c in rec["components"]} == want
    # the default file is still used when it was made over the basis given
    assert main(["decompose", "--weights", "models/tiny.pt", "--solver", "omp"]) == 0
    capsys.readouterr()
    records, _ = explain("ibd", "out-same", "--basis", "basis/tiny.npz")
    assert "decomposing them here" not in capsys.readouterr().err
    omp = class_terms(home / "decompose" / "tiny.json")
    for rec in records:
        want = {CONCEPTS[c] for c, _ in omp[rec["class_index"]]}
        assert {c["label"] for c in rec["components"]} == want
    # with the default basis, a stale default file is still an error, not silently replaced
    write_basis(home / "basis" / "tiny.npz", other, layer="layer4")
    assert main(["explain", "--method", "ibd", "--weights", "models/tiny.pt", IMAGES[0]]) == 2
    assert "rerun `ibd decompose`" in capsys.readouterr().err


def test_a_failed_write_is_one_line_and_keeps_the_earlier_files(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    explain("cam", "out-keep")
    before = {p.name: p.read_bytes() for p in Path("out-keep").iterdir()}
    Path("out-keep/explanations.json").unlink()
    Path("out-keep/explanations.json").mkdir()  # in the way of the new file
    argv = ["explain", "--method", "gradcam", "--weights", "models/tiny.pt", "--out", "out-keep"]
    assert main([*argv, *IMAGES]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ibd explain: error: cannot write out-keep/explanations.json")
    assert sorted(p.name for p in Path("out-keep").iterdir()) == sorted(before)
    assert Path("out-keep/heatmaps.npz").read_bytes() == before["heatmaps.npz"]


@pytest.mark.parametrize(
    ("scenes", "message"),
    [
        ("image,class_index\nimages/0.png,0\n", "has no column(s) split"),
        ("split,class_index\nexplain,0\n", "has no column(s) image"),
        ("image,split\n,explain\n", "an `explain` row has no image"),
        (b"\xff\xfe\x00bad", "cannot read"),
    ],
)
def test_a_malformed_scenes_csv_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    root: Path,
    scenes: str | bytes,
    message: str,
) -> None:
    (tmp_path / "world").mkdir()
    path = tmp_path / "world" / "scenes.csv"
    path.write_bytes(scenes if isinstance(scenes, bytes) else scenes.encode())
    monkeypatch.setenv("IBD_HOME", str(tmp_path))
    weights = str(root / "models" / "tiny.pt")
    assert main(["explain", "--method", "cam", "--weights", weights, "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibd explain: error: ") and err.count("\n") == 1 and message in err
