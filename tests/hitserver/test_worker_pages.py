"""Worker pages: local entry, the task page with its hit-config, thank-you, Prolific codes,
MTurk pages (preview writes nothing)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from hitserver.loading import load_batch
from hitserver.pages import fill, script_json

CONFIG_RE = re.compile(r'<script id="hit-config" type="application/json">(.*?)</script>', re.S)


@pytest.fixture
def app(make_app, write_batch, tmp_path: Path):
    app = make_app(prolific_completion_code="C0DE-OK", prolific_failed_code="C0DE-FAIL")
    batch = write_batch(tmp_path, "tb", 3, catch={1: [1, 2]})
    load_batch(app.extensions["hitserver"].engine, batch, assignments_per_item=2)
    app.config["BATCH_DIR"] = batch
    return app


def table_counts(app) -> tuple[int, ...]:
    with app.extensions["hitserver"].engine.connect() as conn:
        return tuple(
            conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("workers", "assignments", "responses")
        )


def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def open_task(client: FlaskClient) -> tuple[str, dict[str, Any], str]:
    """Follow /work/next to the task page; return its path, its hit-config and its HTML."""
    response = client.get("/work/next")
    assert response.status_code == 302
    location = response.headers["Location"]
    if location.endswith("/work/done"):
        return location, {}, ""
    page = client.get(location)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    config = json.loads(CONFIG_RE.search(html).group(1))
    return location, config, html


def submit(client: FlaskClient, config: dict[str, Any], choice: int, reason: str = "why") -> Any:
    return client.post(
        config["submit_url"], json={"token": config["token"], "choice": choice, "reason": reason}
    )


def test_local_worker_answers_every_item_then_sees_thanks(app) -> None:
    client = app.test_client()
    start = client.get("/work")
    assert start.status_code == 200 and "Participant id" in start.get_data(as_text=True)
    # The entry form needs its CSRF token.
    assert client.post("/work/start", data={"worker_id": "p1"}).status_code == 400
    token = csrf(client, "/work")
    response = client.post("/work/start", data={"worker_id": "p1", "csrf_token": token})
    assert response.headers["Location"].endswith("/work/next")

    seen = []
    for number in (1, 2, 3):
        path, config, html = open_task(client)
        assert config["mode"] == "server"
        assert config["progress"] == f"item {number} of 3"
        assert config["next_url"] == "/work/next"
        assert config["submit_url"] == f"/api/assignments/{config['assignment_id']}/response"
        assert path == f"/work/a/{config['assignment_id']}"
        assert '<base href="/b/tb/pages/">' in html
        assert html.count("<!-- hit-config -->") == 0
        # Reloading shows the same task with the same token.
        assert open_task(client)[1] == config
        assert submit(client, config, 3).status_code == 201
        seen.append(config["assignment_id"])
    done, _, _ = open_task(client)
    assert done.endswith("/work/done")
    thanks = client.get("/work/done").get_data(as_text=True)
    assert "You answered 3 tasks" in thanks
    assert "prolific" not in thanks.lower()
    with app.extensions["hitserver"].engine.connect() as conn:
        rows = conn.execute(
            text("SELECT worker_id, platform, assignment_id FROM ratings ORDER BY item_id")
        ).all()
    assert [tuple(r) for r in rows] == [("p1", "local", aid) for aid in seen]


def test_empty_id_gets_a_generated_one_and_bad_ids_are_refused(app) -> None:
    client = app.test_client()
    token = csrf(client, "/work")
    bad = client.post("/work/start", data={"worker_id": "<x>", "csrf_token": token})
    assert bad.status_code == 422
    client.post("/work/start", data={"worker_id": "", "csrf_token": token})
    open_task(client)
    with app.extensions["hitserver"].engine.connect() as conn:
        worker = conn.execute(text("SELECT platform_worker_id FROM workers")).scalar()
    assert re.fullmatch(r"local-[0-9a-f]{12}", worker)


def test_another_session_cannot_open_a_task(app) -> None:
    client = app.test_client()
    client.post("/work/start", data={"worker_id": "p1", "csrf_token": csrf(client, "/work")})
    path, _, _ = open_task(client)
    stranger = app.test_client()
    response = stranger.get(path)
    assert response.status_code == 403
    assert "hit-config" not in response.get_data(as_text=True)


@pytest.mark.parametrize(("catch_choice", "code"), [(2, "C0DE-OK"), (5, "C0DE-FAIL")])
def test_prolific_entry_and_completion_codes(app, catch_choice: int, code: str) -> None:
    client = app.test_client()
    query = "PROLIFIC_PID=5f0c1a2b3c4d5e6f7a8b9c0d&STUDY_ID=study1&SESSION_ID=sess1"
    assert client.get("/prolific?PROLIFIC_PID=x&STUDY_ID=y").status_code == 400
    assert client.get(f"/prolific?{query}").headers["Location"].endswith("/work/next")
    for _ in range(3):
        _, config, _ = open_task(client)
        is_catch = config["progress"] == "item 2 of 3"
        assert submit(client, config, catch_choice if is_catch else 3).status_code == 201
    done, _, _ = open_task(client)  # the task page's next_url: nothing left
    assert done.endswith("/work/done")
    thanks = client.get("/work/done").get_data(as_text=True)
    link = re.search(r'url=(https://[^"]+)"', thanks).group(1).replace("&amp;", "&")
    parsed = urlparse(link)
    assert parsed.netloc == "app.prolific.com"
    assert parse_qs(parsed.query) == {"cc": [code]}
    with app.extensions["hitserver"].engine.connect() as conn:
        rows = conn.execute(
            text("SELECT DISTINCT worker_id, platform, platform_assignment_id FROM ratings")
        ).all()
    assert [tuple(r) for r in rows] == [("5f0c1a2b3c4d5e6f7a8b9c0d", "prolific", "sess1")]


PROLIFIC = "/prolific?PROLIFIC_PID={pid}&STUDY_ID=study1&SESSION_ID=sess1"


def shows_code(page: str) -> bool:
    return "C0DE-" in page or "app.prolific.com" in page


def not_finished(response) -> bool:
    page = response.get_data(as_text=True)
    return (
        response.status_code == 200
        and "<h1>Not finished yet</h1>" in page
        and 'href="/work/next"' in page
        and not shows_code(page)
    )


def test_prolific_done_page_gives_no_code_before_the_participant_is_done(app) -> None:
    client = app.test_client()
    client.get(PROLIFIC.format(pid="p1"))
    # Straight from the study link to the completion page: no answer, no code.
    assert not_finished(client.get("/work/done"))
    _, config, _ = open_task(client)
    assert submit(client, config, 2).status_code == 201
    # One answer, but the server has more for them.
    assert not_finished(client.get("/work/done"))

    # The same participant in a second browser gets the task the first one holds (one open
    # task per participant), under a new token: the first browser's copy no longer submits.
    _, first_task, _ = open_task(client)
    other = app.test_client()  # (every answer is 2, which passes the catch trial)
    other.get(PROLIFIC.format(pid="p1"))
    _, config, _ = open_task(other)
    assert config["assignment_id"] == first_task["assignment_id"]
    assert submit(client, first_task, 2).status_code == 403
    assert submit(other, config, 2).status_code == 201
    _, last_task, _ = open_task(client)  # the last item, held in the first browser
    assert not_finished(other.get("/work/done"))
    assert submit(client, last_task, 2).status_code == 201
    done, _, _ = open_task(other)
    assert done.endswith("/work/done")
    page = other.get("/work/done").get_data(as_text=True)
    assert "You answered 3 tasks" in page
    assert "app.prolific.com/submissions/complete?cc=C0DE-OK" in page


def test_a_participant_who_got_nothing_gets_no_code(app) -> None:
    api = app.test_client()
    for worker in range(6):  # six workers hold every slot of the 3 items x 2 (one each)
        assert api.post("/api/assignments", json={"worker_id": f"w{worker}"}).status_code == 201
    client = app.test_client()
    client.get(PROLIFIC.format(pid="late"))
    done, _, _ = open_task(client)
    assert done.endswith("/work/done")
    response = client.get("/work/done")
    assert response.status_code == 200
    assert "<h1>No tasks for you</h1>" in response.get_data(as_text=True)
    assert not shows_code(response.get_data(as_text=True))


def test_mturk_preview_is_read_only(app) -> None:
    client = app.test_client()
    before = table_counts(app)
    response = client.get(
        "/mturk/items/tb-0001?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=3XYZ"
        "&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com"
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<base href="/b/tb/pages/">' in html
    assert 'id="hit-config"' not in html
    # worker.mturk.com is where MTurk's workers see ExternalQuestion frames today.
    assert response.headers["Content-Security-Policy"] == (
        "frame-ancestors https://www.mturk.com https://workersandbox.mturk.com "
        "https://worker.mturk.com; "
        "form-action 'self' https://www.mturk.com https://workersandbox.mturk.com"
    )
    assert "X-Frame-Options" not in response.headers
    accepted = client.get(
        "/mturk/items/tb-0001?assignmentId=3ABC&hitId=3XYZ&workerId=A1B2C3"
        "&turkSubmitTo=https%3A%2F%2Fwww.mturk.com"
    )
    assert accepted.status_code == 200
    assert table_counts(app) == before == (0, 0, 0)


def test_mturk_page_refuses_foreign_submit_targets_and_unknown_items(app) -> None:
    client = app.test_client()
    evil = client.get("/mturk/items/tb-0001?assignmentId=3ABC&turkSubmitTo=https://evil.example")
    assert evil.status_code == 400
    assert client.get("/mturk/items/nope?assignmentId=3ABC").status_code == 404


def test_mturk_page_refuses_a_blocked_worker(app) -> None:
    with app.extensions["hitserver"].engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO workers (platform, platform_worker_id, simulated, blocked, "
                "created_at) VALUES ('mturk', 'A1B2C3', :f, :t, '2026-01-01')"
            ),
            {"f": False, "t": True},
        )
    response = app.test_client().get("/mturk/items/tb-0001?assignmentId=3ABC&workerId=A1B2C3")
    assert response.status_code == 403


def test_a_page_damaged_after_load_is_503_not_500(app) -> None:
    client = app.test_client()
    (app.config["BATCH_DIR"] / "pages" / "tb-0001.html").write_text("<html>broken</html>")
    assert client.get("/b/tb/pages/tb-0001.html").status_code == 503


def test_config_json_cannot_break_out_of_its_script_element() -> None:
    tricky = {"progress": "</script><script>alert(1)</script><!--", "token": "a&b"}
    encoded = script_json(tricky)
    assert "<" not in encoded and ">" not in encoded and "&" not in encoded
    assert json.loads(encoded) == tricky
    html = fill("<head><!-- hit-config --></head>", '/b/x"y/pages/', tricky)
    assert html.count("</script>") == 1
    assert '<base href="/b/x&quot;y/pages/">' in html
