"""The data-randomisation sanity check (ibd.evaluation.sanity.run_data_randomisation) on
hand-built networks whose maps are known: test_sanity's planted network (a 1x1 convolution
copying the red, green and blue planes into three feature channels, ReLU, GAP, a linear head)
as the "trained" model, whose class 1 reads green - red, against a "randomised" one whose
class 1 reads the blue plane, unrelated to the scene; and a model against itself."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

import ibd
from ibd.dissect import UnitLabel
from ibd.errors import UserError
from ibd.evaluation import sanity as sn
from ibd.explain.maps import normalize, upsample

from .test_sanity import SIZE, Planted, planted_images, planted_model

CAMS = {"cam": ibd.CAM, "gradcam": ibd.GradCAM}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Tiny tensors: one torch thread (conftest)."""


def aligned_images(count: int = 6, seed: int = 0) -> torch.Tensor:
    """Green images with seeded noise and a red 6 x 6 square at the same place in each: two
    images' maps of green - red share the square, so the random pair is alike."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 3, SIZE, SIZE, generator=g) * 0.2
    x[:, 1] += 0.6
    x[:, 0, 4:10, 5:11] += 1.0
    x[:, 1, 4:10, 5:11] = 0.0
    return x


def blue_model() -> ibd.Model:
    """The planted network with a head on the blue plane: class 1 = blue, class 0 = -blue."""
    net = Planted()
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]))
    labels = ["red", "green"]
    return ibd.Model.wrap(net, layer="features", labels=labels, input_size=SIZE, name="blue")


def test_an_unrelated_model_passes_with_the_similarities_worked_out_by_hand() -> None:
    images = aligned_images()
    result = sn.run_data_randomisation(planted_model(), blue_model(), images, CAMS, CAMS)
    assert result.methods() == ["cam", "gradcam"] and result.images == 6
    assert (result.model, result.randomised) == ("planted", "blue")
    # the trained model predicts green (class 1) everywhere; its map is green - red, the other
    # model's map of class 1 is the blue plane (the 1x1 layer copies the planes, ReLU keeps them)
    expected = {"spearman_abs": [], "spearman": [], "ssim": []}
    pair = {"spearman_abs": [], "spearman": [], "ssim": []}
    trained_maps = [images[n, 1] - images[n, 0] for n in range(6)]
    partner = sn._derangement(6, 0)
    for n in range(6):
        for into, other in ((expected, images[n, 2]), (pair, trained_maps[partner[n]])):
            old = trained_maps[n]
            into["spearman_abs"].append(sn.spearman(old.abs(), other.abs()))
            into["spearman"].append(sn.spearman(old, other))
            up = normalize(upsample(torch.stack([old, other]).double(), (SIZE, SIZE)))
            into["ssim"].append(sn.ssim(up[0], up[1]))
    row = result.row("cam")
    for measure in ("spearman_abs", "spearman", "ssim"):
        assert row.values[measure] == pytest.approx(sum(expected[measure]) / 6, abs=1e-5)
        assert result.baseline("cam")[measure] == pytest.approx(sum(pair[measure]) / 6, abs=1e-5)
    # unrelated maps: near 0, below the random pair (which shares the square) by far
    assert abs(row.values["spearman"]) < 0.2 and abs(row.values["spearman_abs"]) < 0.2
    assert result.baseline("cam")["spearman_abs"] > 0.3
    assert all(result.passes(row)[m] for m in sn.MAP_MEASURES)
    assert result.passed(row) is True and result.passed(result.row("gradcam")) is True
    # Grad-CAM on a GAP head is CAM / HW: the same similarities
    for measure in sn.MAP_MEASURES:
        assert result.row("gradcam").values[measure] == pytest.approx(row.values[measure], 1e-5)


def test_a_model_against_itself_is_identical_and_fails() -> None:
    model = planted_model()
    result = sn.run_data_randomisation(model, model, planted_images(), CAMS, CAMS)
    for method in CAMS:
        row = result.row(method)
        assert row.values["spearman_abs"] == 1.0 and row.values["spearman"] == 1.0
        assert row.values["ssim"] == pytest.approx(1.0, abs=1e-9)
        assert math.isnan(row.values["concept_spearman"])
        assert result.passed(row) is False


def test_each_model_is_explained_with_its_own_tally() -> None:
    """The same network under two tallies that name its units differently: the maps are the
    same (similarity 1), the concept rankings are not, as worked out by hand."""
    names = ["red", "green", "blue"]
    own = [UnitLabel(u, n, "colour", 0.5) for u, n in enumerate(names)]
    renamed = [UnitLabel(u, n, "colour", 0.5) for u, n in enumerate(["green", "blue", "red"])]
    result = sn.run_data_randomisation(
        planted_model(),
        planted_model(),
        planted_images(),
        {"netdissect": lambda m: ibd.NetDissect(m, own)},
        {"netdissect": lambda m: ibd.NetDissect(m, renamed), "cam": ibd.CAM},
    )
    row = result.row("netdissect")
    assert row.values["spearman_abs"] == 1.0 and row.values["ssim"] == pytest.approx(1.0)
    # class 1: units red, green, blue contribute -r, +g, 0. Over the labels (blue, green, red)
    # the trained ranking is (0, g, -r), ranks (2, 3, 1); the renamed one (g, -r, 0), ranks
    # (3, 1, 2): centred (0, 1, -1) . (1, -1, 0) / 2 = -0.5
    assert row.values["concept_spearman"] == pytest.approx(-0.5)
    assert result.passes(row)["concept_spearman"] is not None
    assert result.methods() == ["netdissect"] and result.skipped == ("cam",)


def test_bad_input() -> None:
    model, images = planted_model(), planted_images()
    with pytest.raises(UserError, match="margin"):
        sn.run_data_randomisation(model, model, images, CAMS, CAMS, sn.SanitySettings(margin=-1))
    with pytest.raises(UserError, match="at least two images"):
        sn.run_data_randomisation(model, model, planted_images(1), CAMS, CAMS)
    with pytest.raises(UserError, match="no explanation method"):
        sn.run_data_randomisation(model, model, images, {"cam": ibd.CAM}, {"gradcam": ibd.GradCAM})
    other = ibd.Model.wrap(Planted(), layer="features", labels=["a", "b"], input_size=SIZE)
    with pytest.raises(UserError, match="different classes"):
        sn.run_data_randomisation(model, other, images, CAMS, CAMS)


def test_outputs(tmp_path: Path) -> None:
    result = sn.run_data_randomisation(
        planted_model(), blue_model(), aligned_images(), CAMS, CAMS, sn.SanitySettings(seed=4)
    )
    sn.write_data_randomisation_csv(tmp_path / "data.csv", result)
    with (tmp_path / "data.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(sn.DATA_COLUMNS)
    assert [(r["method"], r["test"]) for r in rows] == [
        ("cam", "data_randomisation"),
        ("cam", "random_pair"),
        ("gradcam", "data_randomisation"),
        ("gradcam", "random_pair"),
    ]
    cam = rows[0]
    assert float(cam["spearman_abs"]) == pytest.approx(
        result.row("cam").values["spearman_abs"], 1e-3
    )
    assert cam["passes"] == "yes" and rows[1]["passes"] == ""
    assert cam["random_pair_ssim"] == rows[1]["ssim"]
    lines = sn.data_randomisation_section(result)
    assert lines[0].startswith("## Data randomisation: planted against blue")
    table = [line for line in lines if line.startswith("| cam |")]
    values = result.row("cam").values
    shown = " / ".join(f"{values[m]:.2f}" for m in sn.MAP_MEASURES)
    assert len(table) == 1 and f"| {shown} | yes | n/a |" in table[0]
    sn.write_data_randomisation_figure(tmp_path / "data.png", result)
    assert (tmp_path / "data.png").read_bytes()[:4] == b"\x89PNG"
