"""The `hitserver` command line: load, export, hash-password, the MTurk production gate, and
one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from werkzeug.security import check_password_hash

from hitserver.cli import main
from hitserver.mturk.client import PRODUCTION_ENDPOINT, SANDBOX_ENDPOINT, make_client


def run(*args: str, stdin: str = "", env_home: Path | None = None) -> subprocess.CompletedProcess:
    env = None
    if env_home is not None:
        import os

        env = {**os.environ, "IBD_HOME": str(env_home)}
        env.pop("HITSERVER_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "hitserver.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_load_twice_then_export_through_the_console_script(write_batch, tmp_path: Path) -> None:
    batch = write_batch(tmp_path, "tb", 2)
    home = tmp_path / "home"
    first = run("load", str(batch), "--assignments", "3", env_home=home)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "loaded tb: 2 items x 3 workers\n"
    assert (home / "hitserver.sqlite").is_file()
    again = run("load", str(batch), "--assignments", "3", env_home=home)
    assert again.stdout == "tb: already loaded, nothing added\n"
    exported = run("export", env_home=home)
    assert exported.returncode == 0
    assert next(csv.reader(io.StringIO(exported.stdout)))[:3] == ["batch", "item_id", "worker_id"]


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    result = run("load", str(tmp_path / "nowhere"), "--assignments", "2", env_home=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("hitserver load: error: ")
    assert "manifest.json: not found" in lines[0]


def test_flag_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["load", str(tmp_path), "--assignments", "0"])
    assert stop.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("IBD_HOME", str(tmp_path))
    assert main(["simulate", "--raters", "3"]) == 2
    assert "no batches given" in capsys.readouterr().err


def test_export_to_a_file_and_to_an_unwritable_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = tmp_path / "ratings.csv"
    assert main(["export", "--db", db, "--format", "wide", "--out", str(out)]) == 0
    assert out.read_text().startswith("HITId,HITTypeId,AssignmentId,WorkerId")
    assert "wrote 0 ratings" in capsys.readouterr().err
    code = main(["export", "--db", db, "--out", str(tmp_path / "no" / "such" / "x.csv")])
    assert code == 2
    assert capsys.readouterr().err.startswith("hitserver export: error: cannot write")


def test_bad_database_url_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--db", "mysql://x/y"]) == 2
    assert "only sqlite and postgresql" in capsys.readouterr().err


def test_hash_password_reads_stdin() -> None:
    result = run("hash-password", stdin="a long enough password\n")
    assert result.returncode == 0
    assert check_password_hash(result.stdout.strip(), "a long enough password")
    short = run("hash-password", stdin="short\n")
    assert short.returncode == 2 and "at least 12" in short.stderr


def test_production_is_refused_as_mturk_closed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    refused = run("mturk", "balance", "--production", "--db", db, stdin="production\n")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "hitserver mturk: error: Amazon Mechanical Turk closed on 2026-09-30; --production is "
        "refused (real studies: hitserver prolific ...)"
    )


def test_clients_point_at_the_sandbox_unless_production() -> None:
    assert make_client(False).meta.endpoint_url == SANDBOX_ENDPOINT
    assert make_client(True).meta.endpoint_url == PRODUCTION_ENDPOINT
    assert make_client(False).meta.region_name == "us-east-1"


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The single stderr line of a failed command, without its `hitserver CMD: error: ` part."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    prefix = f"hitserver {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0].removeprefix(prefix)


def test_manifests_that_used_to_crash_load(
    write_batch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    batch = write_batch(tmp_path, "nul", 1)
    manifest = json.loads((batch / "manifest.json").read_text())
    manifest["items"][0]["image"] = "images/\x00x.png"
    (batch / "manifest.json").write_text(json.dumps(manifest))
    assert main(["load", str(batch), "--assignments", "2", "--db", db]) == 2
    assert one_line_error(capsys, "load") == (
        f"{batch / 'manifest.json'}: items[0].image: 'images/\\x00x.png' contains a NUL character"
    )
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "manifest.json").write_text("[" * 100_000)
    assert main(["load", str(deep), "--assignments", "2", "--db", db]) == 2
    assert one_line_error(capsys, "load") == (
        f"{deep / 'manifest.json'}: JSON nested too deeply to be a manifest"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["load", "BATCH", "--assignments", "1"],
        ["export"],
        ["run", "--port", "8123"],
        ["mturk", "sync", "tb"],
        ["mturk", "approve", "tb"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_database_folder_that_cannot_be_made_is_one_line(
    command: list[str], write_batch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("in the way")
    folder = tmp_path / "a-file" / "sub"
    argv = [str(write_batch(tmp_path, "tb", 1)) if a == "BATCH" else a for a in command]
    assert main([*argv, "--db", f"sqlite:///{folder / 'db.sqlite'}"]) == 2
    assert one_line_error(capsys, command[0]) == (
        f"cannot create the folder {folder} for the database: Not a directory"
    )


@pytest.mark.parametrize("port", ["70000", "0", "-5", "http"])
def test_run_refuses_a_port_outside_1_to_65535(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["run", f"--port={port}"])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    reason = f"'{port}' is not an integer" if port == "http" else f"{port} is not a TCP port"
    assert last.startswith(f"hitserver run: error: argument --port: {reason}")


def test_unknown_batch_names_are_errors_not_empty_results(
    write_batch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert (
        main(["load", str(write_batch(tmp_path, "tb", 1)), "--assignments", "1", "--db", db]) == 0
    )
    capsys.readouterr()
    out = tmp_path / "ratings.csv"
    assert main(["export", "--batch", "typo", "--out", str(out), "--db", db]) == 2
    assert one_line_error(capsys, "export") == "no batch named 'typo' is loaded"
    assert not out.exists()
    assert main(["export", "--batch", "typo", "--db", db]) == 2
    assert one_line_error(capsys, "export") == "no batch named 'typo' is loaded"
    # Nothing is sent to MTurk: the name is checked first (no stubbed responses needed).
    assert main(["mturk", "approve", "typo", "--db", db]) == 2
    assert one_line_error(capsys, "mturk") == "no batch named 'typo' is loaded"
    assert main(["export", "--batch", "tb", "--out", str(out), "--db", db]) == 0
    assert out.read_text().startswith("batch,item_id,worker_id")
