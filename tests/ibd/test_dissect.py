"""Network Dissection: streaming thresholds, upsampling, IoU counts, tally.csv, end to end."""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tinynets import PooledConv
from torch import nn

from ibd import dissect as nd
from ibd.errors import UserError

# ------------------------------------------------------------------------------------------------
# Streaming quantile


@pytest.mark.parametrize("q", [0.005, 0.01, 0.137, 0.5, 0.95])
def test_top_quantile_equals_numpy_quantile(q: float) -> None:
    rng = np.random.default_rng(1)
    d, n = 6, 3001
    values = rng.normal(size=(d, n)).astype(np.float32)
    values[2] = rng.integers(0, 4, size=n)  # heavy ties
    values[3] = 0.0  # constant
    values[4, : n // 2] = -values[4, n // 2 : 2 * (n // 2)]  # symmetric
    tq = nd.TopQuantile(d, q, total=n + 500)  # announced more than arrive
    cuts = [0, 1, 7, 400, 401, 1999, n]
    for a, b in itertools.pairwise(cuts):
        tq.update(torch.from_numpy(values[:, a:b]))
    expected = np.quantile(values.astype(np.float64), 1 - q, axis=1)
    np.testing.assert_array_equal(tq.thresholds().numpy(), expected)
    assert tq.top.shape == (d, min(n, nd.top_count(q, n + 500)))


def test_top_quantile_keeps_only_the_top_half_percent() -> None:
    n = 200_000
    assert nd.top_count(0.005, n) == n - int(np.floor(0.995 * (n - 1))) == 1001
    tq = nd.TopQuantile(3, 0.005, total=n)
    rng = np.random.default_rng(2)
    for _ in range(4):
        tq.update(torch.from_numpy(rng.random((3, n // 4), dtype=np.float32)))
        assert tq.top.shape[1] <= 1001
    assert tq.seen == n


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=60),
    st.floats(0.001, 0.999),
    st.integers(1, 7),
)
def test_top_quantile_property(raw: list[int], q: float, block: int) -> None:
    values = np.array(raw, dtype=np.float32)[None, :] / 4
    tq = nd.TopQuantile(1, q, total=len(raw))
    for a in range(0, len(raw), block):
        tq.update(torch.from_numpy(values[:, a : a + block]))
    assert tq.thresholds().item() == np.quantile(values.astype(np.float64), 1 - q)


def test_top_quantile_rejects_bad_input() -> None:
    with pytest.raises(UserError, match="between 0 and 1"):
        nd.TopQuantile(2, 1.0, total=10)
    tq = nd.TopQuantile(2, 0.5, total=3)
    with pytest.raises(ValueError, match="more than the announced 3"):
        tq.update(torch.zeros(2, 4))


# ------------------------------------------------------------------------------------------------
# Upsampling and binarising


def test_activation_masks_are_bilinear_with_half_pixel_centres() -> None:
    # 2 -> 4 with align_corners=False samples at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped):
    # the row [0, 1] becomes [0, 0.25, 0.75, 1].
    f = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    above_07 = nd.activation_masks(f, torch.tensor([0.7]), (4, 4))[0, 0]
    above_02 = nd.activation_masks(f, torch.tensor([0.2]), (4, 4))[0, 0]
    assert above_07.tolist() == [[False, False, True, True]] * 4  # align_corners=True: 1 column
    assert above_02.tolist() == [[False, True, True, True]] * 4  # nearest: 2 columns


def test_upsampling_matches_netdissect_lites_pil_resize() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((7, 7)).astype(np.float32)
    for size in (112, 113):
        pil = np.asarray(Image.fromarray(a, mode="F").resize((size, size), Image.BILINEAR))
        for t in (0.3, 0.8):
            ours = nd.activation_masks(
                torch.from_numpy(a)[None, None], torch.tensor([t]), (size,) * 2
            )
            # equal except where PIL's float rounding lands within 1e-6 of the threshold
            differ = ours[0, 0].numpy() != (pil > t)
            assert np.all(np.abs(pil[differ] - t) < 1e-6)


def test_a_value_just_above_an_interpolated_threshold_fires() -> None:
    # The top values are a = 1 and b, the next float32 above it. q = 0.0097 over 32 values puts
    # T = a + 0.7 (b - a): b > T (b fires in NetDissect-Lite's float64 comparison), but T rounded
    # to the nearest float32 is b itself, and b > b would drop it.
    a = np.float32(1.0)
    b = np.nextafter(a, np.float32(2))
    values = np.zeros((2, 1, 4, 4), dtype=np.float32)
    values[0, 0, 0, 0], values[0, 0, 0, 1] = b, a
    tq = nd.TopQuantile(1, 0.0097, total=32)
    tq.update(torch.from_numpy(values.reshape(1, 32)))
    threshold = tq.thresholds()
    assert threshold.item() == np.quantile(values.astype(np.float64), 1 - 0.0097)
    assert float(a) < threshold.item() < float(b) and np.float32(threshold.item()) == b
    fired = nd.activation_masks(torch.from_numpy(values), threshold, (4, 4))
    assert fired.sum() == 1 and bool(fired[0, 0, 0, 0])  # b alone, as (values > T) in float64
    # the tally takes the same comparison, also where it skips maps that cannot fire
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[0, 0, 0, :2] = True
    acc = nd.IoUAccumulator(1, [0], ["object"], rule="all")
    acc.add(torch.from_numpy(values), threshold, masks, torch.ones(2, 1, dtype=torch.bool))
    assert acc.intersection.tolist() == [[1.0]] and acc.activation.tolist() == [[1.0]]
    # exact values stay; 1/3 rounds up to 0.33333334 in float32, so the one below it is taken
    below = nd.float32_below(torch.tensor([0.5, 1.0 / 3.0], dtype=torch.float64))
    assert below.tolist() == [0.5, 0.3333333134651184] and below.dtype == torch.float32
    assert below[1].item() < 1.0 / 3.0 < np.nextafter(np.float32(below[1]), np.float32(1)).item()


# ------------------------------------------------------------------------------------------------
# Known-answer tally: 2 images of 4 x 4, features at segmentation size (identity upsampling)

SQUARE, ABSENT, HANDLE = 0, 1, 2  # concepts: square (object), absent (object), handle (part)
CATEGORIES = ["object", "part"]


def _grid(*cells: tuple[int, int]) -> np.ndarray:
    g = np.zeros((4, 4), dtype=np.float32)
    for r, c in cells:
        g[r, c] = 1
    return g


def _rows(*rows: int, cols: range = range(4)) -> list[tuple[int, int]]:
    return [(r, c) for r in rows for c in cols]


def known_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """features 2 x 5 x 4 x 4 (0/1, threshold 0.5), masks 2 x 3 x 4 x 4, present 2 x 2.

    image 0: square = rows 0-1 x cols 0-1, handle = row 3; object and part present.
    image 1: square = rows 2-3 x cols 2-3; object present, part absent.
    unit 0 fires exactly on the square; unit 1 on half of image 0's square (row 0, cols 0-1);
    unit 2 on image 0's handle and on image 1's unlabelled row 0; unit 3 on image 0's square +
    handle cols 0-1 and on image 1's row 0; unit 4 never.
    """
    sq0, sq1 = _rows(0, 1, cols=range(2)), _rows(2, 3, cols=range(2, 4))
    masks = np.zeros((2, 3, 4, 4), dtype=bool)
    masks[0, SQUARE], masks[1, SQUARE] = _grid(*sq0), _grid(*sq1)
    masks[0, HANDLE] = _grid(*_rows(3))
    units = [
        (_grid(*sq0), _grid(*sq1)),
        (_grid(*_rows(0, cols=range(2))), _grid()),
        (_grid(*_rows(3)), _grid(*_rows(0))),
        (_grid(*sq0, *_rows(3, cols=range(2))), _grid(*_rows(0))),
        (_grid(), _grid()),
    ]
    features = np.stack([np.stack([u[i] for u in units]) for i in range(2)])
    present = np.array([[True, True], [True, False]])
    return torch.from_numpy(features), torch.from_numpy(masks), torch.from_numpy(present)


def tally_of(rule: str, blocks: list[slice] | None = None) -> nd.Tally:
    features, masks, present = known_case()
    acc = nd.IoUAccumulator(5, [0, 0, 1], CATEGORIES, rule=rule)
    for sl in blocks or [slice(0, 2)]:
        acc.add(features[sl], torch.full((5,), 0.5, dtype=torch.float64), masks[sl], present[sl])
    return acc.result()


def test_known_counts_under_the_image_rule() -> None:
    t = tally_of("image")
    assert t.truth.tolist() == [8, 0, 4]
    # activation per category: image 1 counts for object only
    assert t.activation.tolist() == [[8, 4], [2, 2], [8, 4], [10, 6], [0, 0]]
    assert t.intersection.tolist() == [[8, 0, 0], [2, 0, 0], [0, 0, 4], [4, 0, 2], [0, 0, 0]]
    iou = t.iou().numpy()
    expected = [
        [1.0, 0.0, 0.0],  # exactly the square
        [2 / 8, 0.0, 0.0],  # half of one square: 2 / (2 + 8 - 2)
        [0.0, 0.0, 1.0],  # image 1 lacks part: its 4 firing pixels do not count against handle
        [4 / 14, 0.0, 2 / 8],  # square 4 / (10 + 8 - 4); handle 2 / (6 + 4 - 2)
        [0.0, 0.0, 0.0],  # never fires; empty union for the absent concept gives 0, not NaN
    ]
    np.testing.assert_allclose(iou, expected, rtol=0, atol=1e-15)


def test_known_counts_under_the_overlap_and_all_rules() -> None:
    overlap = tally_of("overlap")
    # unit 2 on image 0 touches only part pixels; image 1's row 0 touches nothing
    assert overlap.activation.tolist() == [[8, 0], [2, 0], [0, 4], [6, 6], [0, 0]]
    np.testing.assert_allclose(overlap.iou()[3].numpy(), [4 / 10, 0, 2 / 8], atol=1e-15)
    everything = tally_of("all")
    assert everything.activation.tolist() == [[8, 8], [2, 2], [8, 8], [10, 10], [0, 0]]
    np.testing.assert_allclose(everything.iou()[2].numpy(), [0, 0, 4 / 8], atol=1e-15)


def test_tally_does_not_depend_on_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tally_of("overlap")
    monkeypatch.setattr(nd, "_BLOCK_ELEMENTS", 1)  # one image per block
    split = tally_of("overlap", [slice(0, 1), slice(1, 2)])
    for a, b in [(whole.intersection, split.intersection), (whole.activation, split.activation)]:
        assert torch.equal(a, b)
    assert torch.equal(whole.truth, split.truth)


@pytest.mark.parametrize("block", [1, 2 * 16, 3 * 16, 1 << 24])
def test_truth_counts_equal_the_mask_sums_in_any_block(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1, 2 or 3 masks of 4 x 4 per block (the last splits an image's masks), or all at once
    monkeypatch.setattr(nd, "_BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(7)
    masks = torch.from_numpy(rng.random((5, 6, 4, 4)) < 0.3)
    masks[:, 2] = False  # a concept never labelled
    masks[1, 4] = True  # a whole-image label
    acc = nd.IoUAccumulator(2, [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    features = torch.zeros(5, 2, 2, 2)
    acc.add(features, torch.ones(2), masks, torch.ones(5, 3, dtype=torch.bool))
    expected = masks.numpy().sum(axis=(0, 2, 3)).astype(np.float64)
    assert acc.truth.dtype == torch.float64
    np.testing.assert_array_equal(acc.truth.numpy(), expected)
    assert expected[2] == 0 and expected[4] >= 16


def test_image_rule_counts_a_category_wherever_one_of_its_concepts_is_labelled() -> None:
    # `present` from index.csv may miss a category whose concept's pixels come from another
    # category's plane; the labelled concepts alone give the same tally as the known case
    features, masks, present = known_case()
    acc = nd.IoUAccumulator(5, [0, 0, 1], CATEGORIES, rule="image")
    acc.add(features, torch.full((5,), 0.5), masks, torch.zeros_like(present))
    expected = tally_of("image")
    assert torch.equal(acc.activation, expected.activation)
    assert torch.equal(acc.intersection, expected.intersection)


def test_best_labels_pick_the_top_concept_per_category_and_overall() -> None:
    results = nd.best_labels(tally_of("image"), ["square", "absent", "handle"])
    assert [(r.unit, r.label, r.category) for r in results] == [
        (0, "square", "object"),
        (1, "square", "object"),
        (2, "handle", "part"),
        (3, "square", "object"),
        (4, "square", "object"),  # all zero: first concept of the first category
    ]
    assert [r.score for r in results] == pytest.approx([1.0, 0.25, 1.0, 4 / 14, 0.0], abs=1e-15)
    part = results[3].per_category["part"]
    assert (part.label, part.truth, part.activation, part.intersect) == ("handle", 4, 6, 2)
    assert part.iou == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------------
# tally.csv


def test_tally_csv_header_rows_and_read_tally_round_trip(tmp_path: Path) -> None:
    results = nd.best_labels(tally_of("image"), ["square", "absent", "handle"])
    path = tmp_path / "tally.csv"
    nd.write_tally(path, results, CATEGORIES)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [
        "unit", "category", "label", "score",
        "object-label", "object-truth", "object-activation", "object-intersect", "object-iou",
        "part-label", "part-truth", "part-activation", "part-intersect", "part-iou",
    ]  # fmt: skip
    # best score first (ties by unit), 1-based units
    assert [r[0] for r in rows[1:]] == ["1", "3", "4", "2", "5"]
    assert rows[3] == [
        "4", "object", "square", repr(4 / 14),
        "square", "8", "10", "4", repr(4 / 14), "handle", "4", "6", "2", "0.25",
    ]  # fmt: skip
    labels = nd.read_tally(path)
    assert labels == [
        nd.UnitLabel(0, "square", "object", 1.0),
        nd.UnitLabel(1, "square", "object", 0.25),
        nd.UnitLabel(2, "handle", "part", 1.0),
        nd.UnitLabel(3, "square", "object", 4 / 14),
        nd.UnitLabel(4, "square", "object", 0.0),
    ]


def test_read_tally_accepts_netdissect_lite_files_and_rejects_bad_ones(tmp_path: Path) -> None:
    lite = tmp_path / "lite.csv"
    lite.write_text(
        "unit,category,label,score,color-label,color-truth,color-activation,color-intersect,"
        "color-iou\n2,color,red-c,0.0812,red-c,100.0,50.0,20.0,0.0812\n1,color,blue-c,0.01,"
        "blue-c,3.0,4.0,0.0,0.01\n"
    )
    assert nd.read_tally(lite) == [
        nd.UnitLabel(0, "blue-c", "color", 0.01),
        nd.UnitLabel(1, "red-c", "color", 0.0812),
    ]
    with pytest.raises(UserError, match="tally file not found"):
        nd.read_tally(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("unit,label,score\n1,x,0.1\n")
    with pytest.raises(UserError, match="no column.*category"):
        nd.read_tally(bad)
    bad.write_text("unit,category,label,score\none,object,x,0.1\n")
    with pytest.raises(UserError, match="line 2: unit must be an integer"):
        nd.read_tally(bad)
    bad.write_text("unit,category,label,score\n1,object,x,0.1\n1,object,y,0.2\n")
    with pytest.raises(UserError, match="line 3: unit 1 appears twice"):
        nd.read_tally(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="not a text CSV"):
        nd.read_tally(bad)


# ------------------------------------------------------------------------------------------------
# End to end through a real network on an in-memory concept dataset


@dataclass(frozen=True)
class Concept:
    index: int
    number: int
    name: str
    category: str
    image_count: int


class ListDataset:
    """Items in the BrodenDataset format, from arrays."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, concepts: list[Concept]) -> None:
        self.images, self.masks, self.concepts = images, masks, concepts

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "image": torch.from_numpy(self.images[i]),
            "mask": torch.from_numpy(self.masks[i]),
            "index": i,
            "path": f"{i}.png",
        }

    def load_image(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.images[i])

    def category_present(self, i: int) -> set[str]:
        return {c.category for c in self.concepts if self.masks[i, c.index].any()}


class ColourUnits(nn.Module):
    """features: 1x1 conv + ReLU with units (R, G, B, R + G, -R): unit k is a fixed function of
    the input colours; then GAP -> linear (a classifier head for hooks.run)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 5, kernel_size=1, bias=False), nn.ReLU())
        weights = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [-1, 0, 0]]
        with torch.no_grad():
            self.features[0].weight.copy_(
                torch.tensor(weights, dtype=torch.float32)[..., None, None]
            )
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def colour_world(n: int = 12, size: int = 16) -> ListDataset:
    """Each image: a red and a green 4 x 4 square (objects), in even images a blue 4 x 4 square
    (a part); the masks are exactly the squares."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 3, size, size), dtype=np.float32)
    masks = np.zeros((n, 3, size, size), dtype=bool)
    for i in range(n):
        corners = rng.choice(size // 4 * (size // 4), size=3, replace=False)
        for channel, corner in enumerate(corners):
            if channel == 2 and i % 2:
                continue
            r, c = divmod(int(corner), size // 4)
            images[i, channel, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 0.5 + rng.random((4, 4))
            masks[i, channel, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = True
    concepts = [
        Concept(0, 10, "red-thing", "object", n),
        Concept(1, 11, "green-thing", "object", n),
        Concept(2, 12, "blue-thing", "part", n // 2),
    ]
    return ListDataset(images, masks, concepts)


def test_dissect_end_to_end_on_a_colour_network(tmp_path: Path) -> None:
    data = colour_world()
    model = ColourUnits().eval()
    # q = 0.2 exceeds the firing fraction of every unit (at most 2 of 16 cells: 12.5%), so
    # T_u = 0 and each unit fires exactly where its colours are
    result = nd.dissect(model, "features", data, quantile=0.2, batch_size=5, progress=False)
    assert result.thresholds.tolist() == [0.0] * 5
    iou = result.tally.iou().numpy()
    np.testing.assert_array_equal(iou[0], [1, 0, 0])
    np.testing.assert_array_equal(iou[3], [0.5, 0.5, 0])
    assert [(r.label, r.score) for r in result.results[:4]] == [
        ("red-thing", 1.0),
        ("green-thing", 1.0),
        ("blue-thing", 1.0),
        ("red-thing", 0.5),  # R + G: red is half its firing, with equal squares 16 / (32)
    ]
    assert result.results[4].score == 0.0  # -R never fires

    # with the default top 0.5% quantile the thresholds equal numpy's over all positions
    result = nd.dissect(model, "features", data, progress=False)
    with torch.no_grad():
        a = model.features(torch.from_numpy(data.images)).numpy()
    expected = np.quantile(a.transpose(1, 0, 2, 3).reshape(5, -1).astype(np.float64), 0.995, axis=1)
    np.testing.assert_array_equal(result.thresholds.numpy(), expected)

    files = nd.write_outputs(tmp_path / "out", result, 0.04, {"model": "colour"})
    assert nd.read_tally(files["tally"]) == [
        nd.UnitLabel(r.unit, r.label, r.category, r.score) for r in result.results
    ]


class NormedUnits(nn.Module):
    """features: 1x1 conv 3 -> 4, batch norm with non-trivial running statistics, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.features[1].running_mean.uniform_(-0.2, 0.2)
            self.features[1].running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_dissect_runs_a_model_in_training_mode_as_in_eval_mode() -> None:
    # A freshly built torchvision-style model is in training mode: batch norm would normalise
    # by each batch's statistics (thresholds depending on the batch size) and overwrite the
    # running statistics. Dissection uses eval mode and gives the model back as it was.
    data = colour_world()
    model = NormedUnits()
    running = model.features[1].running_mean.clone()
    with torch.no_grad():
        a = model.eval().features(torch.from_numpy(data.images)).numpy()
    model.train()
    expected = np.quantile(a.transpose(1, 0, 2, 3).reshape(4, -1).astype(np.float64), 0.995, axis=1)
    for batch_size in (3, 12):
        result = nd.dissect(model, "features", data, batch_size=batch_size, progress=False)
        np.testing.assert_array_equal(result.thresholds.numpy(), expected)
        assert model.training
        assert torch.equal(model.features[1].running_mean, running)


def test_a_failed_write_leaves_the_earlier_outputs_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = colour_world()
    model = ColourUnits().eval()
    out = tmp_path / "out"
    first = nd.dissect(model, "features", data, quantile=0.2, progress=False)
    nd.write_outputs(out, first, 0.04, {"model": "first"})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["dissect.json", "tally.csv", "tally.npz"]

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    # a second dissection whose npz cannot be written: none of its files replaces the first's
    second = nd.dissect(model, "features", data, progress=False)
    monkeypatch.setattr(nd.np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space left"):
        nd.write_outputs(out, second, 0.04, {"model": "second"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ------------------------------------------------------------------------------------------------
# Through the Broden reader and the command line

BRODEN_LABELS = [  # number, name, category
    (1, "red-thing", "object"),
    (2, "green-thing", "object"),
    (3, "blue-thing", "part"),
    (4, "indoor-s", "scene"),
]


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_broden(root: Path, n: int = 12) -> Path:
    """The colour world in Broden's format: 32 x 32 PNG images with 16 x 16 label planes (half
    size, as Broden). Image i has a red and a green 8 x 8 square (objects), a blue one (a part)
    when i is even, and the whole-image scene label `indoor-s` when i % 3 == 0."""
    from ibd.data.broden import encode_plane

    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(5)
    rows, counts = [], {number: 0 for number, _, _ in BRODEN_LABELS}
    for i in range(n):
        pixels = np.zeros((32, 32, 3), dtype=np.uint8)
        planes = {"object": np.zeros((16, 16), int), "part": np.zeros((16, 16), int)}
        for channel, cell in enumerate(rng.choice(16, size=3, replace=False)):
            if channel == 2 and i % 2:
                continue
            r, c = divmod(int(cell), 4)
            pixels[8 * r : 8 * r + 8, 8 * c : 8 * c + 8, channel] = rng.integers(128, 256, (8, 8))
            planes["part" if channel == 2 else "object"][4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = (
                channel + 1
            )
            counts[channel + 1] += 1
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
        encode_plane(planes["object"]).save(images / f"{i:02d}_object.png")
        part = ""
        if i % 2 == 0:
            encode_plane(planes["part"]).save(images / f"{i:02d}_part.png")
            part = f"{i:02d}_part.png"
        scene = "4" if i % 3 == 0 else ""
        counts[4] += i % 3 == 0
        split = "train" if i < n - 2 else "val"
        rows.append([f"{i:02d}.png", split, 32, 32, 16, 16, f"{i:02d}_object.png", part, scene])
    categories = ["object", "part", "scene"]
    _csv(root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", *categories], rows)
    _csv(
        root / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        [[0, "-", "-", 0, 0.0, ""]]
        + [[k, name, f"{cat}({counts[k]})", counts[k], 1.0, ""] for k, name, cat in BRODEN_LABELS],
    )
    _csv(
        root / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [[c, 1, 1, 1, n] for c in categories],
    )
    for cat in categories:
        members = [(k, name) for k, name, c in BRODEN_LABELS if c == cat]
        _csv(
            root / f"c_{cat}.csv",
            ["code", "number", "name", "frequency", "coverage"],
            [[code, k, name, counts[k], 1.0] for code, (k, name) in enumerate(members, start=1)],
        )
    return root


@pytest.fixture(scope="module")
def broden_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_broden(tmp_path_factory.mktemp("dissect") / "broden")


class PooledColourUnits(ColourUnits):
    """ColourUnits followed by 2 x 2 average pooling: 32 x 32 images give 16 x 16 features, the
    label planes' size, so the squares (aligned to the 8-pixel grid) stay exact."""

    def __init__(self) -> None:
        super().__init__()
        self.features.append(nn.AvgPool2d(2))


def test_dissect_through_the_broden_reader_with_scalar_labels(broden_dir: Path) -> None:
    from ibd.data.broden import BrodenDataset

    data = BrodenDataset(
        broden_dir,
        categories=("object", "part", "scene"),
        min_images=1,
        image_size=(32, 32),
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    assert [c.name for c in data.concepts] == [name for _, name, _ in BRODEN_LABELS]
    result = nd.dissect(PooledColourUnits().eval(), "features", data, quantile=0.2, progress=False)
    assert result.thresholds.tolist() == [0.0] * 5
    assert result.tally.categories == ["object", "part", "scene"]
    # 12 images x 16 pixels per square; the scene fills 16 x 16 pixels of 4 images
    assert result.tally.truth.tolist() == [192, 192, 96, 1024]
    iou = result.tally.iou().numpy()
    # unit 0 on the scene: its 4 x 16 red pixels in scene images, against 1024 scene pixels
    np.testing.assert_allclose(iou[0], [1, 0, 0, 64 / 1024], atol=1e-15)
    np.testing.assert_allclose(iou[2], [0, 0, 1, 32 / 1024], atol=1e-15)  # blue: images 0, 6
    np.testing.assert_allclose(iou[3], [0.5, 0.5, 0, 128 / 1024], atol=1e-15)
    assert [(r.label, r.category, r.score) for r in result.results] == [
        ("red-thing", "object", 1.0),
        ("green-thing", "object", 1.0),
        ("blue-thing", "part", 1.0),
        ("red-thing", "object", 0.5),
        ("red-thing", "object", 0.0),
    ]


# ------------------------------------------------------------------------------------------------
# A label listed in two categories (Broden's `object(2);material(1)`) and a whole-image label

MULTI_LABELS = {1: "red-thing", 2: "glass", 3: "wood", 4: "indoor-s"}
MULTI_CATEGORIES = ("object", "material", "scene")
# One image: its squares (colour channel, cell of the 4 x 4 grid of 8 x 8 pixel squares, the
# category plane it is labelled in or None, label number) and whether it has the scene label.
Square = tuple[int, int, str | None, int]


def write_layout(root: Path, layout: list[tuple[list[Square], bool]], seed: int = 0) -> Path:
    """32 x 32 images with 16 x 16 label planes in Broden's format; label.csv and c_*.csv list
    each label under every category it occurs in, with its image counts."""
    from ibd.data.broden import encode_plane

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[int, int]] = {cat: {} for cat in MULTI_CATEGORIES}
    rows = []
    for i, (squares, scene) in enumerate(layout):
        pixels = np.zeros((32, 32, 3), dtype=np.uint8)
        planes: dict[str, np.ndarray] = {}
        for channel, cell, category, number in squares:
            r, c = divmod(cell, 4)
            pixels[8 * r : 8 * r + 8, 8 * c : 8 * c + 8, channel] = rng.integers(128, 256, (8, 8))
            if category is not None:
                plane = planes.setdefault(category, np.zeros((16, 16), int))
                plane[4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = number
        Image.fromarray(pixels).save(root / "images" / f"{i:02d}.png")
        cells = {}
        for category, plane in planes.items():
            cells[category] = f"{i:02d}_{category}.png"
            encode_plane(plane).save(root / "images" / cells[category])
            for number in np.unique(plane[plane > 0]).tolist():
                counts[category][number] = counts[category].get(number, 0) + 1
        if scene:
            cells["scene"] = "4"
            counts["scene"][4] = counts["scene"].get(4, 0) + 1
        rows.append(
            [f"{i:02d}.png", "train", 32, 32, 16, 16, *(cells.get(c, "") for c in MULTI_CATEGORIES)]
        )
    _csv(root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", *MULTI_CATEGORIES], rows)
    label_rows: list[list[object]] = [[0, "-", "-", 0, 0.0, ""]]
    for number, name in MULTI_LABELS.items():
        cats = ";".join(
            f"{c}({counts[c][number]})" for c in MULTI_CATEGORIES if number in counts[c]
        )
        label_rows.append([number, name, cats, 1, 1.0, ""])
    _csv(
        root / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        label_rows,
    )
    _csv(
        root / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [[c, 1, 1, 1, len(layout)] for c in MULTI_CATEGORIES],
    )
    for cat in MULTI_CATEGORIES:
        _csv(
            root / f"c_{cat}.csv",
            ["code", "number", "name", "frequency", "coverage"],
            [
                [code, k, MULTI_LABELS[k], n, 1.0]
                for code, (k, n) in enumerate(sorted(counts[cat].items()), start=1)
            ],
        )
    return root


def multi_dataset(root: Path, image_size: tuple[int, int] = (32, 32)) -> Any:
    from ibd.data.broden import BrodenDataset

    return BrodenDataset(
        root, MULTI_CATEGORIES, min_images=1, image_size=image_size, mean=(0,) * 3, std=(1,) * 3
    )


R, G, B = 0, 1, 2
RED, GLASS, WOOD = (R, 0, "object", 1), (G, 5, "object", 2), (B, 10, "material", 3)
# glass in image 1 only in the material plane, with no object cell: its primary category,
# object (2 images against 1), is absent from image 1's index.csv row
KNOWN_LAYOUT: list[tuple[list[Square], bool]] = [
    ([RED, GLASS], True),
    ([(G, 5, "material", 2), WOOD, (R, 0, None, 0)], False),
    ([RED, WOOD], False),
    ([GLASS, WOOD, (R, 0, None, 0)], True),
]
# (activation per category: object, material, scene; IoU per concept: red-thing, glass, wood,
# indoor-s) of units R, G, B, R + G (-R never fires: all zero). Each square is 16 plane pixels;
# truth: red-thing 32, glass 48, wood 48, indoor-s 2 x 256.
KNOWN_MULTI = {
    # object counts in every image (image 1 through glass), material in 1-3, scene in 0 and 3
    "image": (
        [[64, 48, 32], [48, 32, 32], [48, 48, 16], [112, 80, 64]],
        [[32 / 64, 0, 0, 1 / 16], [0, 1, 0, 1 / 16], [0, 0, 1, 1 / 32], [2 / 7, 3 / 7, 0, 1 / 8]],
    ),
    # glass's pixels in image 1's material plane touch object (its primary category), not material
    "overlap": (
        [[32, 0, 32], [48, 0, 32], [0, 48, 16], [112, 0, 64]],
        [[1, 0, 0, 1 / 16], [0, 1, 0, 1 / 16], [0, 0, 1, 1 / 32], [2 / 7, 3 / 7, 0, 1 / 8]],
    ),
    "all": (
        [[64] * 3, [48] * 3, [48] * 3, [112] * 3],
        [[1 / 2, 0, 0, 1 / 17], [0, 1, 0, 2 / 33], [0, 0, 1, 1 / 34], [2 / 7, 3 / 7, 0, 4 / 35]],
    ),
}


@pytest.fixture(scope="module")
def known_multi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_layout(tmp_path_factory.mktemp("multi") / "broden", KNOWN_LAYOUT)


@pytest.mark.parametrize("rule", nd.CATEGORY_RULES)
def test_a_label_in_two_categories_and_a_scene_under_every_rule(
    known_multi_dir: Path, rule: str
) -> None:
    data = multi_dataset(known_multi_dir)
    assert [(c.name, c.category, c.categories) for c in data.concepts] == [
        ("red-thing", "object", ("object",)),
        ("glass", "object", ("object", "material")),
        ("wood", "material", ("material",)),
        ("indoor-s", "scene", ("scene",)),
    ]
    assert data.category_present(1) == {"material"}
    result = nd.dissect(
        PooledColourUnits().eval(), "features", data, quantile=0.2, rule=rule, progress=False
    )
    tally = result.tally
    assert result.thresholds.tolist() == [0.0] * 5
    assert tally.categories == list(MULTI_CATEGORIES)
    assert tally.truth.tolist() == [32, 48, 48, 512]
    assert tally.intersection.tolist() == [
        [32, 0, 0, 32], [0, 48, 0, 32], [0, 0, 48, 16], [32, 48, 0, 64], [0, 0, 0, 0],
    ]  # fmt: skip
    activation, iou = KNOWN_MULTI[rule]
    assert tally.activation.tolist() == [*activation, [0, 0, 0]]
    np.testing.assert_allclose(tally.iou().numpy(), [*iou, [0] * 4], rtol=0, atol=1e-15)
    assert (tally.intersection <= tally.activation[:, tally.concept_category]).all()
    assert tally.iou().max() == 1.0


def brute_force_layout(n: int = 10) -> list[tuple[list[Square], bool]]:
    """Random cells; red-thing labelled (object) unless i % 3 == 1; glass in the object plane,
    the material plane, both or neither by i % 4; wood (material) in even images; the scene in
    every third. Images 1 and 7 have glass or colour but no object cell."""
    rng = np.random.default_rng(11)
    layout = []
    for i in range(n):
        red, green, blue = (int(x) for x in rng.choice(16, size=3, replace=False))
        squares: list[Square] = [(R, red, "object", 1) if i % 3 != 1 else (R, red, None, 0)]
        glass_in = [["object"], ["material"], ["object", "material"], []][i % 4]
        squares += [(G, green, cat, 2) for cat in glass_in] or [(G, green, None, 0)]
        squares.append((B, blue, "material", 3) if i % 2 == 0 else (B, blue, None, 0))
        layout.append((squares, i % 3 == 0))
    return layout


@pytest.fixture(scope="module")
def random_multi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_layout(tmp_path_factory.mktemp("multi") / "broden", brute_force_layout(), seed=4)


@pytest.mark.parametrize("rule", nd.CATEGORY_RULES)
def test_dissect_matches_a_brute_force_count_under_every_rule(
    random_multi_dir: Path, rule: str
) -> None:
    data = multi_dataset(random_multi_dir)
    glass = data.concepts[1]
    assert (glass.name, glass.category, glass.categories) == (
        "glass",
        "object",
        MULTI_CATEGORIES[:2],
    )
    assert data.category_present(1) == {"material"}  # glass only in the material plane
    model = PooledConv(12, seed=3).eval()
    result = nd.dissect(
        model, "features", data, quantile=0.1, rule=rule, batch_size=3, progress=False
    )
    expected = brute_force(model, data, "features", 0.1, rule)
    tally = result.tally
    np.testing.assert_array_equal(result.thresholds.numpy(), expected["thresholds"])
    for key in ("intersection", "activation", "truth"):
        np.testing.assert_array_equal(getattr(tally, key).numpy(), expected[key], err_msg=key)
    # the counts are not trivial: units meet every concept, the scene included
    assert (expected["intersection"].max(axis=0) > 0).all()
    iou = tally.iou().numpy()
    assert 0 < iou.max() <= 1
    activation = expected["activation"][:, tally.concept_category.numpy()]
    union = activation + expected["truth"] - expected["intersection"]
    np.testing.assert_allclose(iou, expected["intersection"] / union, rtol=1e-15)


def brute_force(
    model: nn.Module, data: Any, layer: str, q: float, rule: str = "image"
) -> dict[str, np.ndarray]:
    """The counts by a plain loop over images, units and concepts, with numpy sets of pixels,
    under any category rule. A concept's category is its primary one; under `image` a category
    counts in an image when its index.csv cell is non-empty or one of its concepts is labelled
    there, under `overlap` when the unit's firing pixels meet a pixel of one of its concepts."""
    from ibd.nets import hooks

    images = torch.stack([data.load_image(i) for i in range(len(data))])
    with torch.no_grad():
        a = hooks.run(model, layer, images).features
    d = a.shape[1]
    t = np.quantile(a.transpose(0, 1).reshape(d, -1).double().numpy(), 1 - q, axis=1)
    cats = nd.category_order([c.category for c in data.concepts])
    inter = np.zeros((d, len(data.concepts)))
    act = np.zeros((d, len(cats)))
    truth = np.zeros(len(data.concepts))
    for i in range(len(data)):
        mask = data[i]["mask"].numpy()
        up = torch.nn.functional.interpolate(
            a[i : i + 1], size=mask.shape[1:], mode="bilinear", align_corners=False
        )[0].numpy()
        labels = [{tuple(p) for p in np.argwhere(m)} for m in mask]
        present = data.category_present(i) | {c.category for c in data.concepts if labels[c.index]}
        truth += [len(pixels) for pixels in labels]
        for u in range(d):
            fire = {tuple(p) for p in np.argwhere(up[u] > np.float32(t[u]))}
            touched = set()
            for c, concept in enumerate(data.concepts):
                inter[u, c] += len(fire & labels[c])
                if fire & labels[c]:
                    touched.add(concept.category)
            counted = {"image": present, "overlap": touched, "all": set(cats)}[rule]
            for g, cat in enumerate(cats):
                act[u, g] += len(fire) * (cat in counted)
    return {"thresholds": t, "intersection": inter, "activation": act, "truth": truth}


@pytest.mark.slow
def test_ibd_dissect_command_matches_a_brute_force_count(
    broden_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import torchvision

    from ibd.cli import main
    from ibd.data.broden import BrodenDataset
    from ibd.nets.load import save_checkpoint

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2).eval()
    mean, std = (0.4, 0.4, 0.4), (0.3, 0.3, 0.3)
    weights = save_checkpoint(
        tmp_path / "r18.pt", model, arch="resnet18", classes=["a", "b"], layer="layer3",
        input_size=(64, 64), mean=mean, std=std,
    )  # fmt: skip
    out = tmp_path / "out"
    argv = ["dissect", "--weights", str(weights), "--dataset", str(broden_dir), "--out", str(out)]
    assert main([*argv, "--quantile", "0.05", "--batch-size", "5", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "of 256 units of r18/layer3 interpretable (IoU >= 0.04)" in said

    data = BrodenDataset(broden_dir, ("object", "part", "scene"), min_images=1,
                         image_size=(64, 64), mean=mean, std=std)  # fmt: skip
    expected = brute_force(model, data, "layer3", 0.05)
    with np.load(out / "tally.npz") as npz:
        for key, value in expected.items():
            np.testing.assert_array_equal(npz[key], value, err_msg=key)
        iou = npz["iou"]
    document = json.loads((out / "dissect.json").read_text())
    assert document["settings"]["category_rule"] == "image"
    assert document["settings"]["upsampling"] == "bilinear, align_corners=False"
    assert document["num_images"] == 12 and document["feature_size"] == [4, 4]
    assert document["weights"] == str(weights)
    names = [name for _, name, _ in BRODEN_LABELS]
    labels = nd.read_tally(out / "tally.csv")
    assert [x.unit for x in labels] == list(range(256))
    for x in labels:
        assert x.label == names[int(iou[x.unit].argmax())]
        assert x.iou == pytest.approx(float(iou[x.unit].max()), abs=1e-6)
    good = sum(x.iou >= 0.04 for x in labels)
    assert document["summary"]["interpretable_units"] == good
    assert f"{good} of 256 units" in said


def test_ibd_dissect_command_from_a_feature_store_gives_the_same_tally(
    broden_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torchvision

    from ibd.cli import main
    from ibd.nets.load import save_checkpoint

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2).eval()
    weights = save_checkpoint(
        tmp_path / "r18.pt", model, arch="resnet18", classes=["a", "b"], layer="layer3",
        input_size=(64, 64), mean=(0.4,) * 3, std=(0.3,) * 3,
    )  # fmt: skip
    common = ["--weights", str(weights), "--dataset", str(broden_dir)]
    store = tmp_path / "store"
    features = ["features", *common, "--out", str(store), "--categories", "object,part"]
    assert main([*features, "--min-images", "1"]) == 0
    dissect = ["dissect", *common, "--quiet", "--quantile", "0.05"]
    assert main([*dissect, "--out", str(tmp_path / "a")]) == 0
    argv = [*dissect, "--out", str(tmp_path / "b")]
    assert main([*argv, "--features", str(store)]) == 0
    capsys.readouterr()
    with np.load(tmp_path / "a" / "tally.npz") as a, np.load(tmp_path / "b" / "tally.npz") as b:
        for key in ("thresholds", "intersection", "activation", "truth", "iou"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a["intersection"].sum() > 0
    assert (tmp_path / "a" / "tally.csv").read_text() == (tmp_path / "b" / "tally.csv").read_text()


def test_ibd_dissect_command_errors_are_one_line(
    broden_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ibd.cli import main

    base = ["dissect", "--arch", "resnet18", "--num-classes", "2", "--dataset", str(broden_dir)]
    cases = [
        (["--quantile", "1.5"], "--quantile must be between 0 and 1, got 1.5"),
        (["--dataset", str(tmp_path / "none")], "dataset directory not found"),
        (["--categories", "object,material"], "has no category material"),
        (["--iou-threshold", "-1"], "--iou-threshold must be between 0 and 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ]
    for args, message in cases:
        assert main([*base, *args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ibd dissect: error: ") and message in err, err
        assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ibd_dissect_command_names_no_weights_file_for_a_bare_architecture(
    broden_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from ibd.cli import main

    out = tmp_path / "out"
    argv = ["dissect", "--arch", "resnet18", "--num-classes", "2", "--layer", "layer1"]
    argv += ["--dataset", str(broden_dir), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    document = json.loads((out / "dissect.json").read_text())
    # not the concept world's default checkpoint, which this run never read
    assert document["weights"] is None and document["arch"] == "resnet18"
    assert "of 64 units of resnet18_random/layer1 interpretable" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# One forward pass: dissection from a feature store; sparse labels; NetDissect-Lite's category rule


@pytest.mark.parametrize("rule", nd.CATEGORY_RULES)
def test_dissection_from_a_float32_feature_store_equals_the_network_path(
    random_multi_dir: Path, rule: str, tmp_path: Path
) -> None:
    from ibd.data import features

    data = multi_dataset(random_multi_dir)
    model = PooledConv(12, seed=3).eval()
    spec = features.StoreSpec(model={"name": "pooled"}, layer="features", dataset={"f": "m"})
    store = features.build(model, data, tmp_path / "store", spec, batch_size=3, progress=False)
    direct = nd.dissect(model, "features", data, quantile=0.1, rule=rule, progress=False)
    stored = nd.dissect_store(store, data, quantile=0.1, rule=rule, batch_size=4, progress=False)
    expected = brute_force(model, data, "features", 0.1, rule)
    np.testing.assert_array_equal(stored.thresholds.numpy(), direct.thresholds.numpy())
    for key in ("intersection", "activation", "truth"):
        got = getattr(stored.tally, key).numpy()
        np.testing.assert_array_equal(got, getattr(direct.tally, key).numpy(), err_msg=key)
        np.testing.assert_array_equal(got, expected[key], err_msg=key)
    assert stored.tally.intersection.sum() > 0
    assert [r.label for r in stored.results] == [r.label for r in direct.results]


def test_a_store_of_other_images_is_refused(random_multi_dir: Path, tmp_path: Path) -> None:
    from ibd.data import features

    data = multi_dataset(random_multi_dir)
    spec = features.StoreSpec(model={"name": "pooled"}, layer="features", dataset={"f": "m"})
    store = features.build(
        PooledConv(12, seed=3).eval(), data, tmp_path / "s", spec, progress=False
    )
    fewer = multi_dataset(random_multi_dir)
    fewer._rows = fewer._rows[1:]  # a dataset of other images
    with pytest.raises(UserError, match="holds 10 images, the dataset 9"):
        nd.dissect_store(store, fewer, progress=False)


def test_sparse_masks_are_the_non_empty_channels_of_the_dense_mask(random_multi_dir: Path) -> None:
    data = multi_dataset(random_multi_dir)
    seen = 0
    for i in range(len(data)):
        dense = data.load_mask(i)
        concepts, masks = data.load_sparse_mask(i)
        expected = dense.flatten(1).any(1).nonzero().flatten()
        assert torch.equal(concepts, expected)
        assert torch.equal(masks, dense[expected])
        seen += len(concepts)
    assert seen > len(data)  # several concepts per image, the scene among them


def _with_coverage(root: Path, out: Path, number: int, category: str, coverage: float) -> Path:
    import shutil

    shutil.copytree(root, out)
    path = out / f"c_{category}.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if int(row["number"]) == number:
            row["coverage"] = str(coverage)
    _csv(path, list(rows[0]), [list(r.values()) for r in rows])
    return out


def test_the_coverage_rule_takes_the_largest_coverage_ties_to_the_last_category(
    known_multi_dir: Path, tmp_path: Path
) -> None:
    data = multi_dataset(known_multi_dir)
    # glass: object in 2 images, material in 1; every coverage is 1.0 in these files
    assert nd.primary_categories(data) == ["object", "object", "material", "scene"]
    tie = nd.primary_categories(data, "coverage")
    assert tie == ["object", "material", "material", "scene"]  # the tie goes to the last
    more = multi_dataset(_with_coverage(known_multi_dir, tmp_path / "more", 2, "object", 1.5))
    assert nd.primary_categories(more, "coverage")[1] == "object"
    less = multi_dataset(_with_coverage(known_multi_dir, tmp_path / "less", 2, "material", 0.5))
    assert nd.primary_categories(less, "coverage")[1] == "object"
    result = nd.dissect(
        PooledColourUnits().eval(),
        "features",
        data,
        quantile=0.2,
        rule="overlap",
        primary="coverage",
        progress=False,
    )
    tally = result.tally
    assert [tally.categories[g] for g in tally.concept_category.tolist()] == tie
    # glass's pixels now count for material: unit G (glass) touches material in images 0, 1, 3
    assert tally.activation[1].tolist() == [0, 48, 32]
    assert result.settings["primary_category"] == "coverage"
    with pytest.raises(UserError, match="primary-category"):
        nd.dissect(PooledColourUnits(), "features", data, primary="pixels", progress=False)
