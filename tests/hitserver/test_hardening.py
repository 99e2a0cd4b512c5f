"""Issue 28 (what an adversarial probe of the server found), one test or more per item, on
SQLite and PostgreSQL where the database matters. Each failed on the code before the fix."""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from analysis.ratings import read_csv
from hitserver.app import create_app
from hitserver.config import load_settings
from hitserver.database import _alembic_config, in_transaction, make_engine, upgrade
from hitserver.errors import UserError
from hitserver.loading import load_batch
from hitserver.policy import claim as take
from hitserver.policy import submit

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": "Bearer admin-token-for-tests-0123456789abcdef"}
PASSWORD = "correct horse battery staple"
STRONG = "s" * 40


def claim(client: FlaskClient, worker: str, **extra: Any) -> Any:
    return client.post("/api/assignments", json={"worker_id": worker, **extra})


def answer(client: FlaskClient, new: dict[str, Any], reason: str = "ok", choice: int = 2) -> Any:
    return client.post(
        f"/api/assignments/{new['assignment_id']}/response",
        json={"token": new["token"], "choice": choice, "reason": reason},
    )


def rows(app: Flask, sql: str) -> list[Any]:
    with app.extensions["hitserver"].engine.connect() as conn:
        return list(conn.execute(text(sql)))


@pytest.fixture
def loaded(make_app, write_batch, tmp_path: Path):
    """make(**settings) -> an app with batch `tb` (3 items) loaded with N = 2."""

    def make(n: int = 2, items: int = 3, **settings: Any) -> Flask:
        app = make_app(**settings)
        batch = write_batch(tmp_path, "tb", items)
        load_batch(app.extensions["hitserver"].engine, batch, assignments_per_item=n)
        return app

    return make


# 1. A locked database answers 503 with Retry-After (it answered 500), on a real server.


class Locker:
    """Holds the database's write lock from another connection until released."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.release = threading.Event()
        self.held = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        if self.db_url.startswith("sqlite"):
            conn = sqlite3.connect(self.db_url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            self.held.set()
            self.release.wait(60)
            conn.execute("ROLLBACK")
            conn.close()
            return
        engine = create_engine(self.db_url)
        with engine.begin() as conn:
            conn.execute(text("LOCK TABLE item_slots, assignments IN ACCESS EXCLUSIVE MODE"))
            self.held.set()
            self.release.wait(60)
        engine.dispose()

    def __enter__(self) -> Locker:
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.thread.join(20)


@pytest.mark.slow  # a live server
def test_a_locked_database_answers_503_with_retry_after(
    db_url: str, write_batch, tmp_path: Path, live
) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    load_batch(engine, write_batch(tmp_path, "tb", 3), assignments_per_item=2)
    engine.dispose()
    env = {"HITSERVER_DB_LOCK_TIMEOUT_S": "1"}
    with live.running_server(db_url, tmp_path / "server.log", env=env) as server:
        client = live.Http(server.port, timeout=10.0)
        status, first = client.request("POST", "/api/assignments", {"worker_id": "w0"})
        assert status == 201
        with Locker(db_url):
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10.0)
            conn.request("POST", "/api/assignments", body=b'{"worker_id": "w1"}')
            response = conn.getresponse()
            body = response.read()
            waited = time.monotonic() - started
            assert response.status == 503, body
            assert response.getheader("Retry-After") == "1"
            assert b"busy" in body or b"unavailable" in body
            assert waited < 8  # bounded by the lock timeout, not by 8 retries of it
            reason = {"token": first["token"], "choice": 3, "reason": "locked"}
            status, _ = client.request(
                "POST", f"/api/assignments/{first['assignment_id']}/response", reason
            )
            assert status == 503
            conn.close()
        # The lock is gone: the same requests succeed, the retried answer is stored once.
        status, _ = client.request("POST", "/api/assignments", {"worker_id": "w1"})
        assert status == 201
        status, _ = client.request(
            "POST", f"/api/assignments/{first['assignment_id']}/response", reason
        )
        assert status == 201
        client.close()
    log = (tmp_path / "server.log").read_text()
    assert "sqlite3.OperationalError" not in log
    lock_wait = "OperationalError: database is locked" if "sqlite" in db_url else "LockNotAvailable"
    assert f"answered 503, the database stayed busy: {lock_wait}" in log


# 2. Exports neutralise formula-leading text cells; analysis reads the stored text back.

FORMULAS = [
    '=HYPERLINK("http://evil.example","click")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "'=already quoted",
    "plain reason",
]


def test_exports_neutralise_formulas_and_analysis_reads_the_stored_reasons(
    loaded, tmp_path: Path
) -> None:
    app = loaded(n=6, items=1)
    client = app.test_client()
    for i, reason in enumerate(FORMULAS):
        new = claim(client, f"-w{i}").json  # ids may start with "-" or "@" too
        assert answer(client, new, reason).status_code == 201
    stored = sorted(r[0] for r in rows(app, "SELECT reason FROM ratings"))
    assert stored == sorted(FORMULAS)
    dangerous = ("=", "+", "-", "@", "\t", "\r")
    for fmt, reason_column in (("tidy", "reason"), ("wide", "Answer.reason")):
        response = client.get(f"/admin/export.csv?format={fmt}", headers=ADMIN)
        assert response.status_code == 200
        table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert len(table) == len(FORMULAS)
        for row in table:
            for value in row.values():
                assert not value.startswith(dangerous), (fmt, value)
        reasons = sorted(row[reason_column] for row in table)
        assert reasons == sorted(
            "'" + r if r.startswith((*dangerous, "'")) else r for r in FORMULAS
        )
        if fmt == "tidy":
            path = tmp_path / "tidy.csv"
            path.write_bytes(response.data)
            read = read_csv(path)
            assert sorted(read["reason"]) == sorted(FORMULAS)
            assert sorted(read["worker_id"]) == [f"-w{i}" for i in range(len(FORMULAS))]


# 3. Slot hoarding and row spam.


def test_one_open_assignment_per_worker_is_a_database_constraint(loaded) -> None:
    app = loaded()
    client = app.test_client()
    first = claim(client, "w1").json
    again = claim(client, "w1")
    # The same task again under a new token; the old token no longer submits.
    assert again.status_code == 201
    assert again.json["assignment_id"] == first["assignment_id"]
    assert again.json["token"] != first["token"]
    assert answer(client, first).status_code == 403
    assert rows(app, "SELECT count(*) FROM assignments")[0][0] == 1
    # The database itself refuses a second open assignment, whatever the code does.
    engine = app.extensions["hitserver"].engine
    with (
        pytest.raises(IntegrityError, match="one_open|assignments.worker_id"),
        engine.begin() as conn,
    ):
        item, worker = conn.execute(
            text("SELECT i.id, w.id FROM items i, workers w WHERE i.key = 'tb-0002'")
        ).one()
        conn.execute(text("UPDATE item_slots SET holder = 'a2' WHERE item_id = :i AND slot = 0"),
                     {"i": item})  # fmt: skip
        conn.execute(
            text(
                "INSERT INTO assignments (id, item_id, batch_id, worker_id, slot, token_sha256,"
                " status, accepted_at) SELECT 'a2', id, batch_id, :w, 0, 'x', 'accepted',"
                " CURRENT_TIMESTAMP FROM items WHERE id = :i"
            ),
            {"w": worker, "i": item},
        )
    assert answer(client, again.json).status_code == 201
    assert claim(client, "w1").json["item_id"] == "tb-0002"


def test_nothing_left_writes_no_worker_rows(loaded) -> None:
    app = loaded(n=1, items=2)
    client = app.test_client()
    for worker in ("w1", "w2"):
        assert answer(client, claim(client, worker).json).status_code == 201
    for i in range(25):
        assert claim(client, f"spam-{i}").status_code == 204
        response = client.get(f"/prolific?PROLIFIC_PID=spam{i}&STUDY_ID=s&SESSION_ID=x{i}")
        assert response.status_code == 302
        assert client.get("/work/next").headers["Location"].endswith("/work/done")
    assert rows(app, "SELECT count(*) FROM workers")[0][0] == 2


def test_new_worker_ids_and_claims_are_limited_per_address(loaded) -> None:
    app = loaded(n=3, items=4, new_workers_per_hour=3, claims_per_minute=8)
    client = app.test_client()
    news = [claim(client, f"w{i}") for i in range(3)]
    assert [r.status_code for r in news] == [201, 201, 201]
    refused = claim(client, "w3")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    # A Prolific link with a fresh PID from the same address is refused as well, with a page.
    other = app.test_client()
    other.get("/prolific?PROLIFIC_PID=fresh&STUDY_ID=s&SESSION_ID=x")
    page = other.get("/work/next")
    assert page.status_code == 429 and page.mimetype == "text/html"
    # Known workers go on; another address has its own count.
    assert answer(client, news[0].json).status_code == 201
    assert claim(client, "w0").status_code == 201
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert claim(elsewhere, "w3").status_code == 201
    # Claims per minute: 8 from this address so far served or refused at most once each.
    served = sum(claim(client, "w1").status_code == 201 for _ in range(10))
    assert served < 10
    assert claim(client, "w1").status_code == 429
    assert rows(app, "SELECT count(*) FROM workers")[0][0] == 4


def test_production_refuses_local_entry_unless_the_config_says_so(tmp_path: Path) -> None:
    environ = {
        "HITSERVER_ENV": "production",
        "HITSERVER_SECRET_KEY": STRONG,
        "HITSERVER_ADMIN_TOKEN": "t" * 40,
        "IBD_HOME": str(tmp_path),
    }
    with pytest.raises(UserError, match="HITSERVER_LOCAL_ENTRY"):
        create_app(load_settings(environ))
    for value, admits in (("false", False), ("true", True)):
        app = create_app(load_settings({**environ, "HITSERVER_LOCAL_ENTRY": value}))
        assert app.extensions["hitserver"].settings.admits_local is admits
        app.extensions["hitserver"].engine.dispose()
    assert load_settings({}).admits_local  # development: on unless switched off
    # Production limits claims and new ids per address unless the config says otherwise.
    production = load_settings({**environ, "HITSERVER_LOCAL_ENTRY": "true"})
    assert (production.claim_limit, production.new_worker_limit) == (600, 100)
    assert (load_settings({}).claim_limit, load_settings({}).new_worker_limit) == (0, 0)


# 5. Admin log-in: throttled per address; log-out revokes the session server-side.


class Browser:
    """A cookie-keeping HTTP client for one real server (http.client)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def send(self, method: str, path: str, form: dict[str, str] | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.text = response.read().decode()
        set_cookie = response.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";", 1)[0]
        conn.close()
        return response

    def csrf(self, path: str) -> str:
        page = self.send("GET", path).text
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def login(self, password: str) -> Any:
        return self.send("POST", "/admin/login", {"csrf_token": self.csrf("/admin/login"),
                                                 "password": password})  # fmt: skip


@pytest.fixture
def admin_server(db_url: str, write_batch, tmp_path: Path, live):
    engine = make_engine(db_url)
    upgrade(engine)
    load_batch(engine, write_batch(tmp_path, "tb", 2), assignments_per_item=1)
    engine.dispose()
    env = {"HITSERVER_ADMIN_PASSWORD_HASH": generate_password_hash(PASSWORD)}
    with live.running_server(db_url, tmp_path / "server.log", env=env) as server:
        yield server


@pytest.mark.slow  # a live server
def test_admin_logout_revokes_a_copied_cookie(admin_server) -> None:
    browser = Browser(admin_server.port)
    assert browser.login(PASSWORD).status == 302
    assert browser.send("GET", "/admin/").status == 200
    copied = browser.cookie
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.send("GET", "/admin/").text)
    assert browser.send("POST", "/admin/logout", {"csrf_token": token.group(1)}).status == 302
    thief = Browser(admin_server.port)
    thief.cookie = copied
    assert thief.send("GET", "/admin/").status == 401
    assert thief.send("GET", "/admin/export.csv").status == 401


@pytest.mark.slow  # a live server
def test_admin_login_is_throttled_per_address(admin_server) -> None:
    browser = Browser(admin_server.port)
    for _ in range(5):
        assert browser.login("wrong").status == 403
    throttled = browser.login(PASSWORD)  # even the right password waits its turn
    assert throttled.status == 429
    wait = int(throttled.getheader("Retry-After"))
    assert 1 <= wait <= 2
    time.sleep(wait + 0.2)
    assert browser.login("wrong again").status == 403
    assert browser.login(PASSWORD).status == 429  # the wait doubled
    time.sleep(int(browser.login(PASSWORD).getheader("Retry-After")) + 0.2)
    assert browser.login(PASSWORD).status == 302
    assert browser.send("GET", "/admin/").status == 200


def test_admin_sessions_expire_server_side(loaded, clock) -> None:
    app = loaded(admin_password_hash=generate_password_hash(PASSWORD))
    assert app.permanent_session_lifetime.total_seconds() <= 12 * 3600
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert (
        client.post("/admin/login", data={"csrf_token": token, "password": PASSWORD}).status_code
        == 302
    )
    assert client.get("/admin/").status_code == 200
    clock.advance(8 * 3600 + 1)
    assert client.get("/admin/").status_code == 401


# 6. Identifiers must match whole; invisible characters are no reason.


@pytest.mark.parametrize(
    "worker_id", ["alice\n", "alice\r\n", "alice\u200b", "\u202ealice", "al ice", "alice\x00"]
)
def test_ids_with_trailing_newlines_or_invisible_characters_are_refused(loaded, worker_id) -> None:
    app = loaded()
    client = app.test_client()
    response = claim(client, worker_id)
    assert response.status_code == 422, response.json
    assert response.json["field"] == "worker_id"
    assert claim(client, "alice", batch="tb\n").status_code == 400
    assert rows(app, "SELECT count(*) FROM workers")[0][0] == 0


def test_a_blocked_prolific_participant_cannot_return_with_a_newline(loaded) -> None:
    app = loaded()
    client = app.test_client()
    client.get("/prolific?PROLIFIC_PID=P1&STUDY_ID=s&SESSION_ID=x")
    assert client.get("/work/next").status_code == 302
    worker = rows(app, "SELECT id FROM workers WHERE platform_worker_id = 'P1'")[0][0]
    assert client.post(f"/admin/workers/{worker}/block", headers=ADMIN).status_code == 200
    again = app.test_client()
    response = again.get("/prolific?PROLIFIC_PID=P1%0A&STUDY_ID=s&SESSION_ID=x")
    assert response.status_code == 400
    assert rows(app, "SELECT count(*) FROM workers")[0][0] == 1


@pytest.mark.parametrize(
    "reason", ["\u200b\u200b\u200b", "\u3164", " \u200d\u2060 ", "\u202e", "\u2800\u2800", "\ufeff"]
)
def test_a_reason_of_invisible_characters_is_no_reason(loaded, reason: str) -> None:
    app = loaded()
    client = app.test_client()
    new = claim(client, "w1").json
    response = answer(client, new, reason)
    assert response.status_code == 422
    assert response.json["field"] == "reason"
    assert answer(client, new, "visible \u200b too").status_code == 201


# 7. Participants who share a Prolific SESSION_ID both work, and errors on pages are pages.


def test_a_shared_prolific_session_id_locks_nobody_out(loaded) -> None:
    app = loaded(n=2, items=1)
    pages = []
    for pid in ("P1", "P2"):
        client = app.test_client()
        client.get(f"/prolific?PROLIFIC_PID={pid}&STUDY_ID=s&SESSION_ID=shared")
        step = client.get("/work/next")
        assert step.status_code == 302, step.get_data(as_text=True)
        page = client.get(step.headers["Location"])
        assert page.status_code == 200 and page.mimetype == "text/html"
        config = re.search(r'<script id="hit-config" type="application/json">(.*?)</script>',
                           page.get_data(as_text=True)).group(1)  # fmt: skip
        pages.append((client, config))
    for client, config in pages:
        values = json.loads(config)
        response = client.post(
            values["submit_url"], json={"token": values["token"], "choice": 3, "reason": "same"}
        )
        assert response.status_code == 201
    got = sorted(rows(app, "SELECT worker_id, platform_assignment_id FROM ratings"))
    assert [tuple(r) for r in got] == [("P1", "shared"), ("P2", "shared")]


def test_database_refusals_on_pages_are_pages_not_json(loaded) -> None:
    app = loaded()

    @app.get("/work/boom")
    def boom() -> str:
        raise IntegrityError("INSERT", {}, Exception("refused"))

    response = app.test_client().get("/work/boom")
    assert response.status_code == 409
    assert response.mimetype == "text/html"
    assert "conflicts with stored data" in response.get_data(as_text=True)


# 8. Preview pages only post to MTurk (server check and the CSP's form-action).


def test_preview_pages_refuse_a_foreign_submit_site(loaded) -> None:
    app = loaded()
    client = app.test_client()
    page = "/b/tb/pages/tb-0001.html"
    evil = client.get(f"{page}?assignmentId=A1&turkSubmitTo=https://evil.example")
    assert evil.status_code == 400
    assert "turkSubmitTo" in evil.get_data(as_text=True)
    fine = client.get(f"{page}?assignmentId=A1&turkSubmitTo=https://workersandbox.mturk.com")
    assert fine.status_code == 200
    policy = fine.headers["Content-Security-Policy"]
    assert "form-action 'self' https://www.mturk.com https://workersandbox.mturk.com" in policy
    assert "form-action" in client.get("/mturk/items/tb-0001").headers["Content-Security-Policy"]
    assert (
        "form-action 'self'"
        in client.get("/admin/", headers=ADMIN).headers["Content-Security-Policy"]
    )


# 9. Small ones: the demo's admin token file, bidi controls on the admin page.


def test_the_demo_writes_its_admin_token_readable_by_its_owner_only(tmp_path: Path) -> None:
    script = (ROOT / "scripts" / "demo.sh").read_text()
    lines = [line for line in script.splitlines() if "admin-token" in line and "echo" not in line
             and "URL" not in line]  # fmt: skip
    assert lines, "demo.sh no longer writes ibd-data/admin-token"
    snippet = "set -euo pipefail\n" + "\n".join(lines)
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(
        ["bash", "-c", f"umask 022; H={home}; BIN={ROOT / '.venv' / 'bin'}\n{snippet}"],
        check=True,
        cwd=ROOT,
    )
    token = home / "admin-token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert len(token.read_text().strip()) >= 40


def test_bidi_controls_in_reasons_are_shown_inert_on_the_admin_page(loaded) -> None:
    app = loaded()
    client = app.test_client()
    new = claim(client, "w1").json
    tricky = "good\u202ereversed\u2066isolated\u2069 text"
    assert answer(client, new, tricky).status_code == 201
    page = client.get("/admin/batches/tb", headers=ADMIN).get_data(as_text=True)
    assert "\u202e" not in page and "\u2066" not in page and "\u2069" not in page
    assert "good[U+202E]reversed[U+2066]isolated[U+2069] text" in page
    # Stored as sent: only the display is made inert.
    assert rows(app, "SELECT reason FROM ratings")[0][0] == tricky


# Migration 0002 on a database that already holds answers (SQLite rebuilds `assignments`).


def test_migration_0002_keeps_every_row_of_a_database_in_use(
    db_url: str, write_batch, tmp_path: Path
) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        config = _alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    batch = write_batch(tmp_path, "tb", 3)
    with engine.begin() as conn:  # a batch loaded at 0001 (the columns it had then)
        conn.execute(
            text(
                "INSERT INTO batches (id, name, experiment, path, manifest_sha256, manifest,"
                " item_count, assignments_per_item, is_open, loaded_at) VALUES (1, 'tb',"
                " 'method-vs-method', :path, 'x', '{}', 3, 2, :yes, :now)"
            ),
            {"path": str(batch), "yes": True, "now": now},
        )
        for i in range(1, 4):
            conn.execute(
                text(
                    "INSERT INTO items (id, batch_id, key, position, kind, page, image,"
                    " class_name, robot_a, spec) VALUES (:i, 1, :key, :i, 'method-vs-method',"
                    " 'pages/x.html', 'images/x.png', 'boat', 'first', '{}')"
                ),
                {"i": i, "key": f"tb-{i:04d}"},
            )
            for slot in range(2):
                conn.execute(
                    text("INSERT INTO item_slots (item_id, slot, batch_id) VALUES (:i, :s, 1)"),
                    {"i": i, "s": slot},
                )
    answered = []
    for worker in ("w1", "w2", "w3"):
        new = in_transaction(
            engine,
            lambda c, w=worker: take(c, platform="prolific", worker_key=w, now=now, timeout_s=60,
                                     platform_assignment_id=f"S-{w}"),
        )  # fmt: skip
        if worker != "w3":  # w3 keeps an open assignment across the upgrade
            in_transaction(
                engine, lambda c, n=new: submit(c, n.assignment_id, n.token, 4, "r", now)
            )
            answered.append(new.assignment_id)

    def snapshot() -> tuple[list[Any], list[Any]]:
        with engine.connect() as conn:
            assignments = conn.execute(
                text("SELECT id, item_id, worker_id, slot, status, platform_assignment_id,"
                     " token_sha256 FROM assignments ORDER BY id")
            ).all()  # fmt: skip
            responses = conn.execute(
                text("SELECT assignment_id, choice, reason FROM responses ORDER BY id")
            ).all()
        return assignments, responses

    before = snapshot()
    upgrade(engine)
    assert snapshot() == before
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT assignment_id FROM ratings")).scalars()) == sorted(
            answered
        )
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    engine.dispose()
