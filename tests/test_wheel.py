"""The wheel holds the four packages with their templates and migrations and nothing else, even
built in a checkout where the demo has written ibd-data/ beside them; installed outside the
checkout, `import ibd` and each console script's --help work from it."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ibd", "hitgen", "hitserver", "analysis")
SCRIPTS = ("ibd", "hitgen", "hitserver", "analysis")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def _files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for package in PACKAGES
        for p in (root / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _junk(checkout: Path) -> None:
    """What a checkout holds beside the packages after `make demo` and some work in it."""
    for name, text in {
        "ibd-data/world/world.json": "{}",
        "ibd-data/world/scenes.csv": "image,split,class_index,class_name\n",
        "ibd-data/batches/b/manifest.json": "{}",
        "ibd-data/batches/b/items/0.html": "<p>",
        "ibd-data/explanations/m/ibd/explanations.json": "[]",
        "ibd_scratch/__init__.py": "",  # a package whose name starts like ours
        "ibd_scratch/notes.json": "{}",
        "hitgen-output/page.html": "<p>",
        "tests/test_nothing.py": "",
        "benchmarks/RESULTS.md": "",
        "docs/notes.md": "",
    }.items():
        path = checkout / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _setuptools_is_recent() -> bool:
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return major >= 77


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the copied checkout, the wheel built in it)."""
    checkout = tmp_path_factory.mktemp("checkout")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, checkout / package, ignore=IGNORED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, checkout / name)
    _junk(checkout)
    dist = tmp_path_factory.mktemp("dist")
    # offline with the venv's own setuptools when it is recent enough; else pip fetches one
    isolation = ["--no-build-isolation"] if _setuptools_is_recent() else []
    command = [sys.executable, "-m", "pip", "wheel", str(checkout), "--no-deps", "-q"]
    result = subprocess.run(
        [*command, "-w", str(dist), *isolation], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = dist.glob("ibd_toolkit-*.whl")
    return checkout, wheel


def test_the_wheel_holds_exactly_the_packages(built: tuple[Path, Path]) -> None:
    checkout, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = {n for n in archive.namelist() if ".dist-info/" not in n}
    expected = _files(checkout)
    assert {"hitgen/templates/page.html", "hitserver/migrations/script.py.mako"} <= expected
    assert sorted(names - expected) == [] and sorted(expected - names) == []


def test_the_installed_wheel_runs_outside_the_checkout(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """A fresh venv holding only the wheel; the dependencies (torch, flask, ...) come from this
    venv's site-packages through a path file, which adds the folder but not its own path files,
    so the editable install of the checkout stays out."""
    _, wheel = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import ibd, hitgen, hitserver, analysis; print(ibd.__file__)"],
        capture_output=True, text=True, cwd=outside, env=env, timeout=120,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-3000:]
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    for script in SCRIPTS:
        shown = subprocess.run(
            [str(venv / "bin" / script), "--help"],
            capture_output=True, text=True, cwd=outside, env=env, timeout=120,
        )  # fmt: skip
        assert shown.returncode == 0, f"{script} --help:\n{shown.stderr[-3000:]}"
        assert "usage:" in shown.stdout.lower()
