"""examples/quickstart.py runs as a user runs it: it builds a small concept world, explains one
of its images with the four methods through the Python API and writes their pictures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_quickstart_explains_with_all_four_methods_and_draws_them(tmp_path: Path) -> None:
    out = tmp_path / "pictures"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(EXAMPLE), str(out), "--images", "120", "--epochs", "1"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {m.group(1): m for m in re.finditer(r"^ *(\w+): (\S+) \(logit (-?[\d.]+)\)(.*)$",
                                                  result.stdout, re.M)}  # fmt: skip
    assert set(lines) == {"ibd", "cam", "gradcam", "netdissect"}, result.stdout
    assert len({m.group(2) for m in lines.values()}) == 1  # one image, one top-1 class
    assert "residual" in lines["ibd"].group(4) and "residual" in lines["netdissect"].group(4)
    sizes = {}
    for method in lines:
        for style in ("", "-mask"):
            with Image.open(out / f"{method}{style}.png") as picture:
                assert picture.mode == "RGB" and picture.width > picture.height
                sizes[method + style] = picture.size
    # IBD and Network Dissection draw a residual panel beside their terms; CAM and Grad-CAM do not
    assert sizes["ibd"][0] > sizes["cam"][0] and sizes["netdissect"][0] > sizes["gradcam"][0]
    # the example built its world under OUT/home, and a second run reuses it
    assert (out / "home" / "dissect" / "world_resnet" / "tally.csv").is_file()
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0 and "building" not in again.stdout
