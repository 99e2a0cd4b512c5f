"""Admin: authentication (bearer, password + CSRF), dashboard numbers, escaping, exports."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from sqlalchemy import text
from werkzeug.security import generate_password_hash

from hitserver.export import TIDY_COLUMNS, WIDE_COLUMNS
from hitserver.loading import load_batch

TOKEN = "admin-token-for-tests-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = generate_password_hash(PASSWORD)
ADMIN_ROUTES = [
    ("GET", "/admin/"),
    ("GET", "/admin/batches/tb"),
    ("GET", "/admin/export.csv"),
    ("GET", "/admin/export.csv?format=wide"),
    ("POST", "/admin/workers/1/block"),
    ("POST", "/admin/workers/1/unblock"),
    ("POST", "/admin/batches/tb/close"),
    ("POST", "/admin/logout"),
]


@pytest.fixture
def app(make_app, write_batch, tmp_path: Path, clock):
    """Batch tb (3 items, item 3 a catch trial expecting 3), N = 2, and four answers."""
    app = make_app(admin_password_hash=PASSWORD_HASH)
    batch = write_batch(tmp_path, "tb", 3, catch={2: [3]})
    load_batch(app.extensions["hitserver"].engine, batch, assignments_per_item=2)
    client = app.test_client()
    plan = [
        ("ann", 1, "<script>alert('x')</script> & more", 10),
        ("ann", 2, "second", 20),
        ("ann", 3, "catch passed", 30),
        ("bob", 5, 'bob, "quoted"\nnewline', 40),
    ]
    for worker, choice, reason, seconds in plan:
        new = client.post("/api/assignments", json={"worker_id": worker}).json
        clock.advance(seconds)
        response = client.post(
            f"/api/assignments/{new['assignment_id']}/response",
            json={"token": new["token"], "choice": choice, "reason": reason},
        )
        assert response.status_code == 201
    return app


def test_admin_routes_need_credentials(app) -> None:
    client = app.test_client()
    before = client.get("/admin/export.csv", headers=ADMIN).data
    for method, path in ADMIN_ROUTES:
        missing = client.open(path, method=method)
        assert missing.status_code == 401, path
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = client.open(path, method=method, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403, path
        basic = client.open(path, method=method, headers={"Authorization": "Basic YTpi"})
        assert basic.status_code == 401, path
    with app.extensions["hitserver"].engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM workers WHERE blocked")).scalar() == 0
    assert client.get("/admin/export.csv", headers=ADMIN).data == before


def test_dashboard_numbers(app) -> None:
    client = app.test_client()
    summary = client.get("/admin/", headers={**ADMIN, "Accept": "application/json"}).json
    # Durations: 10, 20, 30, 40 s -> median 25.
    assert summary == [
        {
            "batch": "tb",
            "items": 3,
            "needed": 6,
            "ratings": 4,
            "complete_items": 1,
            "open_assignments": 0,
            "workers": 2,
            "median_s": 25.0,
        }
    ]
    html = client.get("/admin/", headers=ADMIN).get_data(as_text=True)
    assert "1 / 3" in html and "4 / 6" in html and "25.0" in html


def test_batch_page_escapes_reasons_and_shows_catch_pass_rates(app) -> None:
    html = app.test_client().get("/admin/batches/tb", headers=ADMIN).get_data(as_text=True)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in html
    ann = re.search(r"<td>ann</td>(.*?)</tr>", html, re.S).group(1)
    assert "1 / 1 (100%)" in ann
    bob = re.search(r"<td>bob</td>(.*?)</tr>", html, re.S).group(1)
    assert "1 / 1" not in bob and "-" in bob
    assert app.test_client().get("/admin/batches/nope", headers=ADMIN).status_code == 404
    assert (
        "frame-ancestors 'none'"
        in (app.test_client().get("/admin/", headers=ADMIN).headers["Content-Security-Policy"])
    )


def test_password_login_with_csrf_then_block_a_worker(app) -> None:
    client = app.test_client()
    form = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/admin/login", data={"password": PASSWORD}).status_code == 400
    wrong = client.post("/admin/login", data={"password": "guess", "csrf_token": token})
    assert wrong.status_code == 403
    ok = client.post("/admin/login", data={"password": PASSWORD, "csrf_token": token})
    assert ok.status_code == 302
    page = client.get("/admin/batches/tb")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    # The session changed on login: the old CSRF token is void.
    new_token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    assert new_token != token
    with app.extensions["hitserver"].engine.connect() as conn:
        bob = conn.execute(text("SELECT id FROM workers WHERE platform_worker_id = 'bob'")).scalar()
    url = f"/admin/workers/{bob}/block"
    assert client.post(url, data={"batch": "tb"}).status_code == 400
    assert client.post(url, data={"batch": "tb", "csrf_token": token}).status_code == 400
    done = client.post(url, data={"batch": "tb", "csrf_token": new_token})
    assert done.status_code == 302 and done.headers["Location"].endswith("/admin/batches/tb")
    with app.extensions["hitserver"].engine.connect() as conn:
        assert conn.execute(text("SELECT platform_worker_id FROM workers WHERE blocked")).all() == [
            ("bob",)
        ]
    client.post("/admin/logout", data={"csrf_token": new_token})
    assert client.get("/admin/").status_code == 401


def test_tidy_export_is_the_ratings_view(app) -> None:
    client = app.test_client()
    body = client.get("/admin/export.csv", headers=ADMIN)
    assert body.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.get_data(as_text=True))))
    assert tuple(rows[0]) == TIDY_COLUMNS
    assert [(r["item_id"], r["worker_id"], r["choice"], r["duration_s"]) for r in rows] == [
        ("tb-0001", "ann", "1", "10.0"),
        ("tb-0001", "bob", "5", "40.0"),
        ("tb-0002", "ann", "2", "20.0"),
        ("tb-0003", "ann", "3", "30.0"),
    ]
    assert rows[1]["reason"] == 'bob, "quoted"\nnewline'
    assert rows[0]["accepted_at"] == "2026-03-01T12:00:00.000Z"
    assert rows[0]["submitted_at"] == "2026-03-01T12:00:10.000Z"
    assert {r["status"] for r in rows} == {"submitted"}
    assert {r["simulated"] for r in rows} == {"0"}
    with app.extensions["hitserver"].engine.connect() as conn:
        view = conn.execute(text("SELECT * FROM ratings ORDER BY item_id, worker_id")).all()
    assert [str(v.choice) for v in view] == [r["choice"] for r in rows]


def test_wide_export_has_mturk_columns(app) -> None:
    client = app.test_client()
    body = client.get("/admin/export.csv?format=wide&batch=tb", headers=ADMIN)
    rows = list(csv.DictReader(io.StringIO(body.get_data(as_text=True))))
    assert tuple(rows[0]) == WIDE_COLUMNS
    first = rows[0]
    assert first["WorkerId"] == "ann"
    assert first["AssignmentStatus"] == "Submitted"
    assert first["AcceptTime"] == "Sun Mar 01 12:00:00 UTC 2026"
    assert first["WorkTimeInSeconds"] == "10"
    assert first["Input.item_id"] == "tb-0001"
    assert first["Input.image"] == "images/0001.png"
    assert first["Answer.choice"] == "1"
    assert client.get("/admin/export.csv?format=xml", headers=ADMIN).status_code == 400
    assert client.get("/admin/export.csv?batch=nope", headers=ADMIN).status_code == 404
