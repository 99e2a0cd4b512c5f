"""Where batches are written: `--force` replaces only real batches, the batches of one study
never overwrite each other, and a failure to write is one line that loses nothing."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import hitgen.build
from hitgen.cli import main
from hitgen.output import move_into_place


def run(*args: str) -> int:
    return main(["build", "--jobs", "1", *args])


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hitgen build: error: "), err
    return lines[0].removeprefix("hitgen build: error: ")


BUILD = ["--pair", "ibd,cam", "--model", "ref", "--n", "2"]


@pytest.mark.parametrize(
    "manifest",
    [
        '{"name": "my extension", "manifest_version": 3}',  # a browser extension's
        "not json at all",
        '["hitgen-manifest-1"]',
        '{"format": "hitgen-manifest-0"}',
    ],
)
def test_force_never_replaces_a_directory_that_is_not_a_batch(
    world, tmp_path: Path, capsys, manifest: str
) -> None:
    webapp = tmp_path / "elsewhere" / "webapp"
    (webapp / "src").mkdir(parents=True)
    (webapp / "manifest.json").write_text(manifest)
    (webapp / "src" / "main.js").write_text("precious")
    before = files(webapp)
    assert run(*BUILD, "--out", str(webapp), "--force") == 2
    assert one_error(capsys) == (
        f"{webapp}: exists and is not a hitgen batch (its manifest.json is not a "
        f"hitgen-manifest-1 manifest); choose another --out"
    )
    assert files(webapp) == before
    assert sorted(p.name for p in webapp.parent.iterdir()) == ["webapp"]  # no staging left


def test_force_replaces_a_real_batch(world, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert run(*BUILD, "--out", str(out)) == 0
    assert run(*BUILD, "--n", "3", "--out", str(out), "--force") == 0
    assert len(json.loads((out / "manifest.json").read_text())["items"]) == 3


STUDY = """
pair = "ibd,cam"
model = "ref"
catch_rate = 0
explanations = ["{home}/explanations/ref/ibd", "{home}/explanations/ref/cam"]
[[batches]]
seed = 1
n = 3
{first}
[[batches]]
seed = 2
n = 5
{second}
"""


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        # both default to $IBD_HOME/batches/fig8-ref-ibd-vs-cam
        ("", "", "would both be written to {home}/batches/fig8-ref-ibd-vs-cam"),
        ('out = "x"', 'out = "./y/../x"', "would both be written to {study}/y/../x"),
        ('out = "x"', 'out = "x/inner"', "would be written one inside the other"),
        ('batch = "a"\nout = "x"', 'batch = "a"\nout = "y"', "are both named 'a'"),
    ],
)
def test_study_batches_that_would_overwrite_each_other_are_refused_before_any_is_written(
    world, tmp_path: Path, capsys, first: str, second: str, message: str
) -> None:
    study = tmp_path / "study"
    study.mkdir()
    config = study / "study.toml"
    config.write_text(STUDY.format(home=world.home, first=first, second=second))
    for force in ([], ["--force"]):
        assert run("--config", str(config), *force) == 2
        error = one_error(capsys)
        assert error.startswith(f"{config}: batches[0] and batches[1] ")
        assert message.format(home=world.home, study=study) in error
    assert sorted(p.name for p in study.iterdir()) == ["study.toml"]
    assert not (world.home / "batches").exists()


def test_out_through_a_regular_file_is_one_line(world, tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    assert run(*BUILD, "--out", str(afile / "batch")) == 2
    assert one_error(capsys) == (f"{afile}/batch: {afile} is not a directory; choose another --out")
    assert afile.read_text() == "keep"


def test_an_unusable_out_name_is_one_line(world, tmp_path: Path, capsys) -> None:
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / ("x" * 300)  # longer than any file system allows a name to be
    assert run(*BUILD, "--out", str(out)) == 2
    assert one_error(capsys) == f"{out}: cannot inspect (File name too long)"
    assert list(out.parent.iterdir()) == []


def test_a_failed_write_names_the_path_and_keeps_the_old_batch(
    world, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out" / "b"
    assert run(*BUILD, "--out", str(out)) == 0
    capsys.readouterr()
    before = files(out)

    def full_disk(path: Path, masks: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(hitgen.build, "write_masks", full_disk)
    assert run(*BUILD, "--n", "3", "--out", str(out), "--force") == 2
    staging = out.parent / ".b.hitgen-tmp"
    assert one_error(capsys) == (
        f"{staging}/masks.npz: cannot write the batch {out} (No space left on device)"
    )
    assert files(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["b"]


def test_a_failed_move_puts_the_old_batch_back(tmp_path: Path) -> None:
    target = tmp_path / "batch"
    target.mkdir()
    (target / "manifest.json").write_text("old")
    with pytest.raises(OSError):
        move_into_place(tmp_path / "missing-staging", target)
    assert (target / "manifest.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch"]
