"""End to end, over real HTTP on 127.0.0.1: `hitgen build` a small batch, `hitserver load`,
`hitserver prolific publish` to the Prolific stand-in, simulated participants enter through the
study URL on a real `hitserver run` (gunicorn), answer, and come back with the right completion
code; then `sync`, `approve`, `reject` and `bonus` leave both sides consistent."""

from __future__ import annotations

import http.cookiejar
import importlib.util
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text

from hitgen.cli import main as hitgen_main
from hitserver.cli import main
from hitserver.database import make_engine

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
OK, FAIL = "E2E-DONE-7", "E2E-FAILED-7"


def _load(name: str, path: Path) -> ModuleType:
    module_name = f"hitserver_tests_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


standin_module = _load("prolific_standin", HERE / "prolific_standin.py")
participant = _load("prolific_participant", HERE / "prolific_participant.py")
hitgen_world = _load("hitgen_world", HERE.parent / "hitgen" / "conftest.py")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def live_transport(port: int) -> Any:
    """One participant's browser, minus the rendering: cookies kept, redirects not followed."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect
    )

    def send(method: str, path: str, body: Any) -> tuple[int, str, str]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers
        )
        try:
            with opener.open(request, timeout=20) as response:
                return (
                    response.status,
                    response.headers.get("Location", ""),
                    response.read().decode(),
                )
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers.get("Location", ""), exc.read().decode()

    return send


def build_batch(tmp_path: Path) -> tuple[Path, list[int]]:
    """A real `hitgen build` batch: 3 items and one identical-explanations catch trial."""
    world = hitgen_world.make_world(tmp_path / "home")
    out = tmp_path / "batches" / "pe2e"
    assert hitgen_main(["build", "--pair", "ibd,cam", "--model", "ref", "--n", "3",
                        "--jobs", "1", "--catch-rate", "0.25", "--catch-types", "identical",
                        "--batch", "pe2e",
                        "--explanations", str(world.dir("ref", "ibd")),
                        str(world.dir("ref", "cam")), "--out", str(out)]) == 0  # fmt: skip
    items = json.loads((out / "manifest.json").read_text())["items"]
    catch = [item for item in items if item["kind"] == "catch"]
    assert len(items) == 4 and len(catch) == 1
    return out, catch[0]["catch"]["expected_choices"]


def run(argv: list[str], capsys: Any) -> str:
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out.strip()


def test_a_study_on_prolific_from_build_to_paid_bonuses(
    tmp_path: Path, live: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    batch, expected = build_batch(tmp_path)
    passing = expected[0]
    failing = next(c for c in range(1, 6) if c not in expected)
    db = f"sqlite:///{tmp_path / 'study.sqlite'}"
    codes = {"HITSERVER_PROLIFIC_COMPLETION_CODE": OK, "HITSERVER_PROLIFIC_FAILED_CODE": FAIL}
    for name, value in codes.items():
        monkeypatch.setenv(name, value)
    assert "loaded pe2e: 4 items x 3 workers" in run(
        ["load", str(batch), "--assignments", "3", "--db", db], capsys
    )

    with (
        standin_module.running_standin(page_size=2) as standin,
        live.running_server(db, tmp_path / "server.log", env=codes) as server,
    ):
        monkeypatch.setenv("PROLIFIC_API_TOKEN", standin_module.TOKEN)
        monkeypatch.setenv("PROLIFIC_API_URL", standin.url)
        published = run(
            ["prolific", "publish", "pe2e", "--reward-cents", "120", "--estimated-minutes", "4",
             "--places", "3", "--url", "https://study.example.org", "--db", db],
            capsys,
        )  # fmt: skip
        [study] = standin.state.studies.values()
        assert published == f"Prolific study {study['id']} (created): ACTIVE"

        people = {"alice": passing, "bob": failing, "carol": passing}
        sessions = {}
        for pid, choice in people.items():
            sid, url = standin.enter(study["id"], pid)
            assert url.startswith("https://study.example.org/prolific?PROLIFIC_PID=")
            code = participant.answer_all(live_transport(server.port), url, choice, f"{pid}: why")
            assert code == (FAIL if pid == "bob" else OK)
            assert standin.complete(sid, code) == "AWAITING REVIEW"
            sessions[pid] = sid

        assert run(["prolific", "sync", "pe2e", "--db", db], capsys) == (
            "3 submissions on Prolific: 3 new, 0 changed, 0 unchanged; here 0 approved and "
            "0 rejected to match; 0 mismatches"
        )
        approved = run(["prolific", "approve", "pe2e", "--send", "--db", db], capsys)
        assert approved.endswith("2 sent, 0 failed")
        rejected = run(["prolific", "reject", "pe2e", "--send", "--db", db], capsys)
        assert f"REJECT {sessions['bob']} (participant bob; failed 1/1 catch trials)" in rejected
        assert rejected.endswith("1 sent, 0 failed")
        paid = run(["prolific", "bonus", "pe2e", "--cents", "30", "--send", "--db", db], capsys)
        assert paid.endswith(
            "2 new bonuses (0.60); 1 set up, 1 paid, 1 confirmed on the submissions"
        )
        again = run(["prolific", "bonus", "pe2e", "--cents", "30", "--send", "--db", db], capsys)
        assert again.endswith(
            "0 new bonuses (0.00); 0 set up, 0 paid, 0 confirmed on the submissions"
        )
        assert run(["prolific", "sync", "pe2e", "--db", db], capsys).endswith(
            "0 new, 0 changed, 3 unchanged; here 0 approved and 0 rejected to match; 0 mismatches"
        )
        assert run(["prolific", "stop", "pe2e", "--db", db], capsys) == (
            "Prolific study of pe2e: COMPLETED"  # every submission reviewed
        )
        assert run(["prolific", "status", "pe2e", "--db", db], capsys).splitlines() == [
            f"Prolific study {study['id']} ({study['internal_name']}): COMPLETED, 3 of 3 places "
            "taken",
            "here, as of the last sync: 2 APPROVED, 1 REJECTED; bonuses paid 0.60",
        ]
        assert run(["prolific", "stop", "pe2e", "--db", db], capsys).endswith("COMPLETED")

    # Both sides agree: Prolific's review, our assignments, and one payment per bonus.
    theirs = {s["participant_id"]: s["status"] for s in standin.state.submissions.values()}
    assert theirs == {"alice": "APPROVED", "bob": "REJECTED", "carol": "APPROVED"}
    assert sorted((sub, cents) for _, sub, cents in standin.state.payments) == sorted(
        [(sessions["alice"], 30), (sessions["carol"], 30)]
    )
    engine = make_engine(db)
    with engine.connect() as conn:
        ours = conn.execute(
            text("SELECT worker_id, status, count(*) FROM ratings GROUP BY worker_id, status")
        ).all()
        recorded = dict(
            conn.execute(text("SELECT participant_id, status FROM prolific_submissions")).all()
        )
    engine.dispose()
    assert sorted(tuple(r) for r in ours) == [
        ("alice", "approved", 4), ("bob", "rejected", 4), ("carol", "approved", 4),
    ]  # fmt: skip
    assert recorded == theirs
