"""What a robot shows: at most four components, only those with a positive contribution for
methods whose components are terms of the class score (ibd, netdissect); an image with nothing
to show is left out and listed under `skipped`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from explanation_dirs import explanation_dir

from hitgen.cli import main

HEAT = np.arange(20, dtype=np.float32).reshape(4, 5)


def parts(*contributions: float) -> list[tuple[str, float, np.ndarray]]:
    return [(f"c{i}", value, HEAT) for i, value in enumerate(contributions)]


def build(*args: str) -> int:
    return main(["build", "--jobs", "1", "--catch-rate", "0", *args])


@pytest.mark.parametrize("method", ["ibd", "netdissect"])
def test_only_positive_contributions_are_shown(world, tmp_path: Path, capsys, method: str) -> None:
    rows = [
        (world.image(0), "harbor", parts(2.0, -0.5, 1.0, 0.0, 0.3)),  # 3 positive, out of order
        (world.image(1), "beach", parts(0.1, 0.5, 0.4, 0.3, 0.2, -1.0)),  # 5 positive: top 4
        (world.image(2), "kitchen", parts(-0.2, 0.0, -3.0)),  # nothing to show
    ]
    first = explanation_dir(tmp_path / method, method, rows)
    # CAM's one component is the class map; its score may be negative and it is still shown
    cam_rows = [(image, cls, [(cls, -1.5, HEAT)]) for image, cls, _ in rows]
    cam = explanation_dir(tmp_path / "cam", "cam", cam_rows)
    out = tmp_path / "batch"
    args = ["--pair", f"{method},cam", "--explanations", str(first), str(cam), "--out", str(out)]
    assert build(*args) == 0
    m = json.loads((out / "manifest.json").read_text())
    shown = {Path(it["source_image"]).name: it["first"]["concepts"] for it in m["items"]}
    assert shown == {"img00.png": ["c0", "c2", "c4"], "img01.png": ["c1", "c2", "c3", "c4"]}
    assert sorted(it["second"]["concepts"] for it in m["items"]) == [["beach"], ["harbor"]]
    reason = f"no positive contribution: {method}"
    assert m["skipped"] == [{"image": str(world.image(2).resolve()), "reason": reason}]
    harbor = next(it for it in m["items"] if it["class_name"] == "harbor")
    page = (out / harbor["page"]).read_text()
    expected = '<span class="reason">1. c0</span> <span class="reason">2. c2</span> '
    assert expected + '<span class="reason">3. c4</span></p>' in page
    assert "skipped 1 images (1 no positive contribution; see manifest.json)" in (
        capsys.readouterr().err
    )


def test_wrong_catch_trials_never_borrow_an_explanation_with_nothing_to_show(
    world, tmp_path: Path, capsys
) -> None:
    ref = [(world.image(i), "harbor", parts(1.0, 0.5)) for i in (0, 3)]
    ref.append((world.image(1), "beach", parts(1.0)))
    other = [(world.image(i), "harbor", parts(0.7)) for i in (0, 3)]
    other.append((world.image(1), "beach", parts(-0.4, -0.1)))  # the only other-class donor
    dirs = [
        str(explanation_dir(tmp_path / "ref", "ibd", ref)),
        str(explanation_dir(tmp_path / "other", "ibd", other, model="other")),
    ]
    args = ["--models", "ref,other", "--method", "ibd", "--explanations", *dirs]
    assert main(["build", "--jobs", "1", *args, "--catch-rate", "0.5", "--catch-types",
                 "wrong", "--out", str(tmp_path / "b")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.strip() == (
        "hitgen build: error: cannot make a 'wrong' catch trial: no other/ibd explanation of "
        "another class has a component with a positive contribution (use --catch-types identical)"
    )
    assert not (tmp_path / "b").exists()
