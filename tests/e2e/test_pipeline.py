"""The whole path on a tiny concept world, through the console scripts as a user runs them:
world -> model -> basis -> decomposition -> explanations -> batches -> live server ->
simulated answers over HTTP -> statistics and figures, with numbers checked at every step."""

from __future__ import annotations

import csv
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def cli(home: Path, *args: str) -> str:
    env = {**os.environ, "IBD_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


def test_the_whole_study_on_a_tiny_world(home: Path) -> None:
    # 1. the world, in Broden format, with rules that hold
    cli(home, "ibd", "world", "build", "--images", "200", "--seed", "1")
    world = json.loads((home / "world/world.json").read_text())
    assert len(world["classes"]) >= 10
    with (home / "world/scenes.csv").open() as handle:
        scenes = list(csv.DictReader(handle))
    assert len(scenes) == 200 and {r["split"] for r in scenes} == {
        "train",
        "val",
        "test",
        "explain",
    }

    # 2. a reference model and its mirror
    cli(home, "ibd", "train", "--arch", "world_resnet", "--epochs", "4")
    cli(home, "ibd", "train", "--arch", "world_resnet_mirror")
    import torch

    ckpt = torch.load(home / "models/world_resnet.pt", weights_only=True)
    assert 0.0 <= ckpt["accuracy"]["test"] <= 1.0 and ckpt["classes"] == [
        c["name"] for c in world["classes"]
    ]
    mirror = torch.load(home / "models/world_resnet_mirror.pt", weights_only=True)
    first_conv = next(k for k, v in ckpt["state_dict"].items() if v.ndim == 4)
    assert torch.equal(mirror["state_dict"][first_conv], ckpt["state_dict"][first_conv].flip(-1))

    # 3. the concept basis: standardised q, APs in [0, 1]
    cli(home, "ibd", "basis", "learn", "--epochs", "3", "--quiet")  # the authors' procedure
    with np.load(home / "basis/world_resnet.npz") as npz:
        q, ap, names = npz["q"], npz["ap"], list(npz["names"])
    np.testing.assert_allclose(q.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-4)
    assert len(names) >= 5 and ((ap >= 0) & (ap <= 1)).all()

    # 4. the class decomposition reproduces its residual fractions from the files
    cli(home, "ibd", "decompose")
    dec = json.loads((home / "decompose/world_resnet.json").read_text())
    weight = ckpt["state_dict"][next(k for k in ckpt["state_dict"] if k.endswith("fc.weight"))]
    for entry in dec["classes"]:
        w = weight[entry["index"]].double().numpy()
        r = w - sum(c["coefficient"] * q[c["index"]].astype(np.float64) for c in entry["concepts"])
        assert entry["residual_fraction"] == pytest.approx((r @ r) / (w @ w), abs=1e-3)
        assert all(c["coefficient"] > 0 for c in entry["concepts"])

    # 5. explanations: concept contributions + residual == logit; CAM for both models
    for method in ("ibd", "cam"):
        cli(home, "ibd", "explain", "--method", method)
    cli(home, "ibd", "explain", "--method", "cam", "--weights",
        str(home / "models/world_resnet_mirror.pt"))  # fmt: skip
    records = json.loads((home / "explanations/world_resnet/ibd/explanations.json").read_text())
    assert len(records) == sum(r["split"] == "explain" for r in scenes)
    for rec in records:
        total = sum(c["contribution"] for c in rec["components"]) + rec["residual"]
        assert total == pytest.approx(rec["score"], abs=1e-3)

    # 5b. ground truth: every method faces the same concept pointing trials; the contribution
    # ranking reorders only the decomposition's own concepts
    cli(home, "ibd", "evaluate", "--no-faithfulness", "--out", str(home / "evaluate"))
    with (home / "evaluate/summary.csv").open() as handle:
        summary = {(r["model"], r["method"]): r for r in csv.DictReader(handle)}
    trials = {m: summary[("world_resnet", m)]["concept_trials"] for m in ("ibd", "cam", "random")}
    assert len(set(trials.values())) == 1 and int(trials["ibd"]) > 0, trials
    for method in ("ibd", "cam", "random"):
        assert 0.0 <= float(summary[("world_resnet", method)]["concept_pointing"]) <= 1.0
    decomposed = {e["name"]: {c["name"] for c in e["concepts"]} for e in dec["classes"]}
    with (home / "evaluate/decomposition_by_contribution.csv").open() as handle:
        by_contribution = list(csv.DictReader(handle))
    assert by_contribution
    for row in by_contribution:
        assert set(filter(None, row["top"].split(";"))) <= decomposed[row["class"]]
    # counterfactual images (grey by default): chance is 1 / the concepts each image shows,
    # which the stored masks tell independently of the renderer
    from ibd.data.broden import BrodenDataset

    dataset = BrodenDataset(home / "world", categories=["object", "part"], min_images=1)
    position = {dataset.image_path(i).resolve(): i for i in range(len(dataset))}
    with (home / "evaluate/explanations.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["method"] == "ibd"]
    assert rows and all(r["cf_effect"] for r in rows)
    for row in rows[:5]:
        masks = dataset.load_mask(position[Path(row["image"]).resolve()])
        shown = sum(bool(masks[c.index].any()) for c in dataset.concepts)
        assert float(row["cf_chance"]) == pytest.approx(1 / shown)
        assert row["cf_hit"] in ("True", "False")
    ibd = summary[("world_resnet", "ibd")]
    assert float(ibd["cf_hit"]) >= 0.0 and int(ibd["cf_measured"]) == len(rows)
    with (home / "evaluate/counterfactual.csv").open() as handle:
        reliance = list(csv.DictReader(handle))
    firsts = [r for r in reliance if r["rank"] == "1" and r["model"] == "world_resnet"]
    assert {r["class"] for r in firsts} == {r["class"] for r in by_contribution}
    document = json.loads((home / "evaluate/evaluate.json").read_text())["counterfactual"]
    own = document["mean"]["precision_lenient"]
    assert document["fill"] == "grey" and document["model"] == "world_resnet"
    by_model = document["precision_by_model"]  # the mirror: over its CAM explanations' images
    assert set(by_model) == {"world_resnet", "world_resnet_mirror"}
    assert by_model["world_resnet"] == own and 0 <= by_model["world_resnet_mirror"] <= 1
    report = (home / "evaluate/report.md").read_text()
    assert f"The model's own ranking, by counterfactual images (grey), scores {own:.3f}" in report

    # 6. batches for both experiments
    cli(home, "hitgen", "build", "--pair", "ibd,cam", "--n", "8", "--catch-rate", "0.2")
    cli(home, "hitgen", "build", "--models", "world_resnet,world_resnet_mirror", "--method",
        "cam", "--n", "8")  # fmt: skip
    batches = sorted(p.parent for p in (home / "batches").glob("*/manifest.json"))
    assert len(batches) == 2
    items = {b.name: json.loads((b / "manifest.json").read_text())["items"] for b in batches}
    total_items = sum(len(v) for v in items.values())

    # 7. a live server, simulated raters over HTTP, every slot filled exactly once
    db = home / "hitserver.sqlite"
    cli(home, "hitserver", "load", "--assignments", "2", *map(str, batches))
    port = free_port()
    env = {**os.environ, "IBD_HOME": str(home)}
    server = subprocess.Popen(
        [str(BIN / "hitserver"), "run", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        cli(home, "hitserver", "simulate", "--url", f"http://127.0.0.1:{port}", "--raters", "6",
            *map(str, batches))  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT item_id, worker_id, choice, simulated FROM ratings").fetchall()
    assert len(rows) == 2 * total_items
    assert len({(i, w) for i, w, _, _ in rows}) == len(rows)  # nobody rated an item twice
    assert all(s == 1 and 1 <= c <= 5 for _, _, c, s in rows)

    # 8. statistics and figures, only with the simulated answers admitted
    refused = subprocess.run(
        [str(BIN / "analysis"), "stats", "--out", str(home / "stats")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0  # simulated answers are left out unless asked for
    cli(home, "analysis", "stats", "--include-simulated", "--out", str(home / "stats"))
    cli(home, "analysis", "plot", "--include-simulated", "--out", str(home / "figures"))
    with (home / "stats/comparisons.csv").open() as handle:
        comparisons = list(csv.DictReader(handle))
    counted = {
        name: 2 * sum(1 for it in batch_items if it["kind"] != "catch")
        for name, batch_items in items.items()
    }
    all_workers = [int(c["n_ratings"]) for c in comparisons if c["setting"] == "all workers"]
    assert sorted(all_workers) == sorted(counted.values())  # catch trials are not counted
    for name in ("fig8", "fig9"):
        assert (home / "figures" / f"{name}.png").stat().st_size > 10_000
