"""The scale benchmark's pieces: the Broden-shaped generator read by the real reader, the
synthetic feature stores in the store's real format, and `benchmarks/scale.py --quick` end to
end (every stage runs in its own child, with its peak RSS and the growth exponents)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ibd.data.broden import BrodenDataset, decode_plane
from ibd.data.features import FeatureStore

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import broden_synth  # noqa: E402

ALL = ("color", "object", "part", "material", "scene", "texture")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return broden_synth.write_broden(
        tmp_path_factory.mktemp("synth") / "broden", 80, workers=1, progress=False
    )


def test_the_generator_writes_brodens_layout(synth: Path) -> None:
    with (synth / "index.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "split", "ih", "iw", "sh", "sw", *ALL]
    assert len(rows) == 80
    assert {(r["ih"], r["iw"], r["sh"], r["sw"]) for r in rows} == {("224", "224", "112", "112")}
    assert {r["split"] for r in rows} == {"train", "val"}
    # several part planes in some images, whole-image scene / texture numbers in others
    assert any(len(r["part"].split(";")) > 1 for r in rows)
    assert any(r["scene"].isdigit() for r in rows) and any(r["texture"].isdigit() for r in rows)
    with (synth / "label.csv").open(newline="") as handle:
        labels = {int(r["number"]): r for r in csv.DictReader(handle)}
    assert len(labels) == 1198 and min(labels) == 1
    assert any(";" in r["category"] for r in labels.values())  # listed in two categories
    plane = decode_plane(synth / "images" / rows[0]["object"])
    assert plane.shape == (112, 112)
    assert set(np.unique(plane).tolist()) <= set(labels)
    for r in rows[:5]:
        assert (synth / "images" / r["image"]).is_file()


def test_the_real_reader_reads_the_generated_data(synth: Path) -> None:
    data = BrodenDataset(synth, ALL, min_images=1)
    assert len(data) == 80
    counts = np.array([c.image_count for c in data.concepts])
    assert counts.max() >= 10 * np.median(counts)  # long-tailed
    mask = data.load_mask(0)
    assert mask.shape == (len(data.concepts), 112, 112) and mask.any()
    assert data.load_image(0).shape == (3, 224, 224)


def test_the_synthetic_store_holds_the_readers_labels(synth: Path, tmp_path: Path) -> None:
    store = FeatureStore(
        broden_synth.write_store(synth, tmp_path / "s", dim=32, workers=0, progress=False)
    )
    data = BrodenDataset(synth, ("object", "part"), min_images=10, mask_size=(7, 7))
    assert (store.num_images, store.grid, store.dim) == (80, (7, 7), 32)
    assert store.concept_names == [c.name for c in data.concepts]
    for i in (0, 41, 79):
        assert np.array_equal(store.concept_masks(i), data.load_mask(i).numpy())
    features = torch.from_numpy(np.asarray(store.features, dtype=np.float32))
    assert features.min() >= 0 and features.max() > 1


def test_the_direct_store_draws_what_the_broden_writer_draws(synth: Path, tmp_path: Path) -> None:
    store = FeatureStore(
        broden_synth.write_store_direct(tmp_path / "d", 80, dim=16, chunk=32, progress=False)
    )
    data = BrodenDataset(synth, ("object", "part"), min_images=1, mask_size=(7, 7))
    index = {name: k for k, name in enumerate(store.concept_names)}
    for i in (0, 33, 79):
        direct = store.concept_masks(i)
        read = data.load_mask(i).numpy()
        for c, concept in enumerate(data.concepts):
            assert np.array_equal(direct[index[concept.name]], read[c]), concept.name
    assert store.paths[5] == "synth/000005.jpg"


def test_scale_quick_runs_every_stage(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick"]
    run = subprocess.run(
        [*command, "--work", str(tmp_path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    stages = {(r["stage"], r["n"]) for r in records}
    assert {s for s, _ in stages} == set(broden_synth_stages())
    assert all("error" not in r for r in records), [r for r in records if "error" in r]
    assert all(0 < r["peak_rss_gb"] < 6 for r in records)
    assert {r["n"] for r in records if r["stage"] == "dissect"} == {60, 120}
    assert "exponent b, CPU" in run.stdout
    assert not (tmp_path / "n60").exists()  # each N's data removed after its stages


def broden_synth_stages() -> tuple[str, ...]:
    import scale

    return scale.STAGES
