"""The `hitserver` command line: load, export, hash-password, the MTurk production gate, and
one-line errors."""

from __future__ import annotations

import csv
import io
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


def test_production_needs_the_typed_confirmation(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    refused = run("mturk", "balance", "--production", "--db", db, stdin="yes\n")
    assert refused.returncode == 2
    assert "PRODUCTION" in refused.stderr
    assert refused.stderr.strip().endswith(
        "hitserver mturk: error: production not confirmed; nothing was sent to MTurk"
    )


def test_clients_point_at_the_sandbox_unless_production() -> None:
    assert make_client(False).meta.endpoint_url == SANDBOX_ENDPOINT
    assert make_client(True).meta.endpoint_url == PRODUCTION_ENDPOINT
    assert make_client(False).meta.region_name == "us-east-1"
