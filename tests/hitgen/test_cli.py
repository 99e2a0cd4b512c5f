"""The `hitgen build` command line: defaults under $IBD_HOME, study configs, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hitgen.cli import main


def run(*args: str) -> int:
    return main(["build", "--jobs", "1", *args])


def manifest(batch: Path) -> dict:
    return json.loads((batch / "manifest.json").read_text())


def test_defaults_read_and_write_under_ibd_home(world) -> None:
    assert run("--pair", "ibd,gradcam", "--model", "ref", "--n", "3") == 0
    batch = world.home / "batches" / "fig8-ref-ibd-vs-gradcam"
    m = manifest(batch)
    assert len(m["items"]) == 3 + 0  # floor(3 * 0.1 / 0.9 + 0.5) = 0 catch trials
    assert {it["second"]["method"] for it in m["items"]} == {"gradcam"}
    assert not list(batch.parent.glob(".*"))  # no staging left behind


def test_console_script_reports_one_line_without_traceback(world, tmp_path: Path) -> None:
    env = {**os.environ, "IBD_HOME": str(world.home)}
    command = [sys.executable, "-m", "hitgen.cli", "build", "--pair", "ibd,cam"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2
    # with no --model, the concept world's reference model
    expected = f"{world.home}/explanations/world_resnet/ibd/explanations.json: not found"
    assert done.stderr.startswith(f"hitgen build: error: {expected}")
    assert len(done.stderr.strip().splitlines()) == 1
    usage = subprocess.run([*command, "--n", "many"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2
    assert usage.stderr.strip().splitlines() == [
        "hitgen build: error: argument --n: invalid int value: 'many'"
    ]


def test_model_is_taken_from_the_directory_when_not_named(world, tmp_path: Path) -> None:
    dirs = [str(world.dir("ref", "ibd")), str(world.dir("ref", "cam"))]
    assert run("--pair", "ibd,cam", "--explanations", *dirs, "--out", str(tmp_path / "b")) == 0
    assert manifest(tmp_path / "b")["focus"] == {"method": "ibd", "model": "ref"}


def test_existing_batches_are_replaced_only_with_force(world, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b"
    assert run("--pair", "ibd,cam", "--model", "ref", "--n", "2", "--out", str(out)) == 0
    (out / "stale.txt").write_text("from an older build")
    before = (out / "manifest.json").read_bytes()
    assert run("--pair", "ibd,cam", "--model", "ref", "--n", "3", "--out", str(out)) == 2
    assert "batch exists (use --force to replace it)" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == before
    assert run("--pair", "ibd,cam", "--model", "ref", "--n", "3", "--out", str(out), "--force") == 0
    assert len(manifest(out)["items"]) == 3 and not (out / "stale.txt").exists()

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    args = ["--pair", "ibd,cam", "--model", "ref", "--out", str(precious), "--force"]
    assert run(*args) == 2
    assert "is not a hitgen batch" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"


def test_study_config_builds_several_batches(world, tmp_path: Path) -> None:
    config = tmp_path / "study" / "study.toml"
    config.parent.mkdir()
    rel = os.path.relpath(world.home, config.parent)
    config.write_text(
        f"""
seed = 5
n = 4
catch_rate = 0.2

[[batches]]
pair = ["ibd", "netdissect"]
explanations = ["{rel}/explanations/ref/ibd", "{rel}/explanations/ref/netdissect"]
out = "out/fig8"

[[batches]]
models = "ref,other"
method = "ibd"
explanations = ["{rel}/explanations/ref/ibd", "{rel}/explanations/other/ibd"]
batch = "trust-ibd"
n = 5
"""
    )
    assert run("--config", str(config), "--catch-rate", "0") == 0
    fig8 = manifest(config.parent / "out" / "fig8")
    assert (fig8["batch"], fig8["seed"], len(fig8["items"])) == ("fig8-ref-ibd-vs-netdissect", 5, 4)
    trust = manifest(world.home / "batches" / "trust-ibd")
    assert trust["experiment"] == "model-vs-model" and len(trust["items"]) == 5
    assert trust["items"][0]["id"].startswith("trust-ibd-")


def test_json_config_and_image_list(world, tmp_path: Path) -> None:
    wanted = [world.image(i) for i in (0, 4, 8)]
    listing = tmp_path / "images.txt"
    listing.write_text("# three images\n" + "\n".join(str(p) for p in wanted) + "\n")
    config = tmp_path / "study.json"
    config.write_text(json.dumps({"pair": "ibd,cam", "model": "ref", "catch_types": ["identical"]}))
    out = tmp_path / "b"
    assert run("--config", str(config), "--images", str(listing), "--out", str(out)) == 0
    items = manifest(out)["items"]
    regular = sorted(Path(it["source_image"]).name for it in items if it["catch"] is None)
    assert regular == ["img00.png", "img04.png", "img08.png"]
    assert [it["catch"]["type"] for it in items if it["catch"]] == []  # 3 * 0.1/0.9 rounds to 0


def corrupt_heatmap(world, tmp_path: Path) -> list[str]:
    target = tmp_path / "bad"
    target.mkdir()
    entries = json.loads((world.dir("ref", "ibd") / "explanations.json").read_text())
    for entry in entries:
        entry["image"] = str((world.dir("ref", "ibd") / entry["image"]).resolve())
    (target / "explanations.json").write_text(json.dumps(entries))
    with np.load(world.dir("ref", "ibd") / "heatmaps.npz") as store:
        maps = {k: store[k] for k in store.files}
    maps["ref/ibd/2/1"] = np.zeros((3, 3), dtype=np.float32)
    np.savez(target / "heatmaps.npz", **maps)
    return ["--pair", "ibd,cam", "--explanations", str(target), str(world.dir("ref", "cam"))]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pair", "ibd"], "--pair: expected 2 names"),
        (["--pair", "ibd,lime"], "--pair: unknown method 'lime'"),
        (["--pair", "cam,cam"], "compare two different methods"),
        (["--models", "ref,ref", "--method", "ibd"], "compare two different models"),
        (["--models", "ref,other"], "needs both --models A,B and --method M"),
        (["--pair", "ibd,cam", "--method", "ibd"], "not both"),
        ([], "say what to compare"),
        (["--pair", "ibd,cam", "--model", "ref", "--catch-rate", "1.5"], "--catch-rate: must be"),
        (["--pair", "ibd,cam", "--model", "ref", "--catch-types", "easy"], "unknown type 'easy'"),
        (["--pair", "ibd,cam", "--model", "ref", "--n", "0"], "--n: need at least one"),
        (["--pair", "ibd,cam", "--model", "ref", "--batch", "a/b"], "--batch: 'a/b' must use"),
        (["--pair", "ibd,cam", "--model", "nobody"], "explanations/nobody/ibd/explanations.json"),
        (["--pair", "ibd,cam", "--model", "ref", "--jobs", "0"], "--jobs: need at least 1"),
        ("corrupt", "heatmap 'ref/ibd/2/1' has shape (3, 3), expected (4, 5)"),
    ],
)
def test_user_errors_name_the_problem(world, tmp_path: Path, capsys, args, message) -> None:
    if args == "corrupt":
        args = corrupt_heatmap(world, tmp_path)
    assert main(["build", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hitgen build: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_broken_inputs_are_reported_with_their_file(world, tmp_path: Path, capsys) -> None:
    ibd = world.dir("ref", "ibd")
    (ibd / "explanations.json").write_text("[{")
    assert run("--pair", "ibd,cam", "--model", "ref") == 2
    assert f"{ibd}/explanations.json: not valid JSON" in capsys.readouterr().err
    (ibd / "explanations.json").write_text(json.dumps([{"method": "ibd", "model": "ref"}]))
    assert run("--pair", "ibd,cam", "--model", "ref") == 2
    assert "entry 0: missing field 'image'" in capsys.readouterr().err
    config = tmp_path / "study.toml"
    config.write_text('pair = "ibd,cam"\ncolour = "red"\n')
    assert run("--config", str(config)) == 2
    assert "unknown setting 'colour'" in capsys.readouterr().err


def test_wrong_catch_trials_need_a_second_class(world, tmp_path: Path, capsys) -> None:
    dirs = []
    for method in ("ibd", "cam"):  # copies holding only the harbor images
        source = world.dir("ref", method)
        entries = json.loads((source / "explanations.json").read_text())
        kept = [e for e in entries if e["class_name"] == "harbor"]
        for entry in kept:
            entry["image"] = str((source / entry["image"]).resolve())
        target = tmp_path / method
        target.mkdir()
        (target / "explanations.json").write_text(json.dumps(kept))
        (target / "heatmaps.npz").write_bytes((source / "heatmaps.npz").read_bytes())
        dirs.append(str(target))
    args = ["--pair", "ibd,cam", "--explanations", *dirs, "--catch-rate", "0.5"]
    assert run(*args) == 2
    assert "every ref/cam explanation predicts 'harbor'" in capsys.readouterr().err
    assert run(*args, "--catch-types", "identical", "--out", str(tmp_path / "b")) == 0
    assert len(manifest(tmp_path / "b")["items"]) == 16  # 8 harbor images + 8 catch trials


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("explanations = [1, 2]", "--explanations: give one directory, or one per side, as paths"),
        ('explanations = ["a", "b", "c"]', "--explanations: give one directory, or one per side"),
        ("out = 5", "--out: expected a directory path, got 5"),
        ('images = "one.png"', "images: expected a list of image paths"),
        ("catch_types = 0", "--catch-types: expected names separated by commas, got 0"),
    ],
)
def test_config_values_of_the_wrong_type_are_one_line(
    world, tmp_path: Path, capsys, setting: str, message: str
) -> None:
    config = tmp_path / "study.toml"
    config.write_text(f'pair = "ibd,cam"\nmodel = "ref"\n{setting}\n')
    assert run("--config", str(config)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hitgen build: error: {message}") and err.count("\n") == 1, err


def test_listed_images_without_explanations_are_skipped_and_recorded(
    world, tmp_path: Path, capsys
) -> None:
    extra = tmp_path / "extra.png"  # a photo that no explanation covers
    extra.write_bytes(world.image(0).read_bytes())
    listing = tmp_path / "images.txt"
    listed = [str(world.image(0)), str(extra), str(world.image(4))]
    listing.write_text("\n".join(listed) + "\n")
    out = tmp_path / "b"
    args = ["--pair", "ibd,cam", "--model", "ref", "--catch-rate", "0"]
    assert run(*args, "--images", str(listing), "--out", str(out)) == 0
    notes = capsys.readouterr().err.splitlines()
    assert (
        f"hitgen build: 1 listed image(s) have no explanation on either side ({extra}); left out"
    ) in notes
    m = manifest(out)
    assert m["skipped"] == [{"image": str(extra), "reason": "no explanation"}]
    assert len(m["items"]) == 2
    assert m["created_with"] == (
        "hitgen build --pair ibd,cam --model ref --n 200 --seed 0 --catch-rate 0 "
        "--catch-types identical,wrong --max-side 256 --images <(printf '%s\\n' "
        + " ".join(listed)
        + ")"
    )
    # the recorded command rebuilds the same batch
    env = {
        **os.environ,
        "IBD_HOME": str(world.home),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    again = tmp_path / "again"
    command = f"{m['created_with']} --jobs 1 --out {again}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (again / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
