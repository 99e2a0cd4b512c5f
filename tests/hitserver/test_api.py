"""Every outcome of the JSON API of docs/contracts.md 10, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from hitserver.blueprints import api
from hitserver.loading import load_batch
from hitserver.models import Assignment

ADMIN = {"Authorization": "Bearer admin-token-for-tests-0123456789abcdef"}


def claim(client: FlaskClient, worker: str, **extra: Any) -> Any:
    return client.post("/api/assignments", json={"worker_id": worker, **extra})


def answer(client: FlaskClient, new: dict[str, Any], choice: Any = 2, reason: Any = "ok") -> Any:
    return client.post(
        f"/api/assignments/{new['assignment_id']}/response",
        json={"token": new["token"], "choice": choice, "reason": reason},
    )


def rows(app: Flask, sql: str) -> list[Any]:
    with app.extensions["hitserver"].engine.connect() as conn:
        return list(conn.execute(text(sql)))


@pytest.fixture
def setup(make_app, write_batch, tmp_path: Path):
    """An app with batch `tb` (3 items, item 2 a catch trial) loaded with N=2."""

    def build(n: int = 2, items: int = 3, cap: int | None = None, **settings: Any):
        app = make_app(**settings)
        batch = write_batch(tmp_path, "tb", items, catch={2: [3]})
        load_batch(
            app.extensions["hitserver"].engine,
            batch,
            assignments_per_item=n,
            max_items_per_worker=cap,
        )
        return app, app.test_client(), batch

    return build


def test_health(setup) -> None:
    _, client, _ = setup()
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_claim_shows_the_task_but_not_which_explanation_is_which(setup) -> None:
    _, client, batch = setup()
    response = claim(client, "w1")
    assert response.status_code == 201
    body = response.json
    assert body["item_id"] == "tb-0001"
    assert len(body["token"]) >= 40 and len(body["assignment_id"]) >= 20
    task = body["task"]
    manifest = json.loads((batch / "manifest.json").read_text())
    item = manifest["items"][0]
    assert item["robot_a"] == "first"
    assert task["robot_a"]["concepts"] == item["first"]["concepts"]
    assert task["robot_b"]["concepts"] == item["second"]["concepts"]
    assert task["robot_a"]["masks"] == [f"/b/tb/{m}" for m in item["first"]["masks"]]
    assert task["class_name"] == "harbor"
    assert task["progress"] == "item 1 of 3"
    assert set(task) == {"page_url", "image_url", "class_name", "robot_a", "robot_b", "progress"}
    assert set(task["robot_a"]) == {"concepts", "masks"}
    assert "world_resnet" not in response.get_data(as_text=True)
    # The images are served byte for byte; the page as a preview with a base href.
    image = client.get(task["image_url"])
    assert image.status_code == 200
    assert image.data == (batch / item["image"]).read_bytes()
    page = client.get(task["page_url"]).get_data(as_text=True)
    assert '<base href="/b/tb/pages/">' in page
    assert 'id="hit-config"' not in page
    # The manifest (which says which robot is which) is never served.
    assert client.get("/b/tb/manifest.json").status_code == 404
    assert client.get("/b/tb/pages/../manifest.json").status_code == 404


def test_robot_a_follows_the_manifest_placement(setup) -> None:
    _, client, batch = setup(n=1)
    first = claim(client, "w1").json
    second = claim(client, "w2").json  # (one open assignment per worker: w1 would get tb-0001)
    assert second["item_id"] == "tb-0002"
    manifest = json.loads((batch / "manifest.json").read_text())
    item = manifest["items"][1]
    assert item["robot_a"] == "second"
    assert second["task"]["robot_a"]["concepts"] == item["second"]["concepts"]
    assert second["task"]["robot_b"]["concepts"] == item["first"]["concepts"]
    assert first["task"]["progress"] == "item 1 of 3"
    assert second["task"]["progress"] == "item 1 of 3"  # nothing answered yet
    assert answer(client, first).status_code == 201
    assert claim(client, "w1").json["task"]["progress"] == "item 2 of 3"


def test_breadth_first_exactly_n_distinct_workers_then_204(setup) -> None:
    app, client, _ = setup(n=2, items=3)
    order = []
    for worker in ("w1", "w1", "w1", "w2", "w2", "w2"):
        new = claim(client, worker)
        assert new.status_code == 201
        order.append((worker, new.json["item_id"]))
        assert answer(client, new.json).status_code == 201
    assert order == [
        ("w1", "tb-0001"),
        ("w1", "tb-0002"),
        ("w1", "tb-0003"),
        ("w2", "tb-0001"),
        ("w2", "tb-0002"),
        ("w2", "tb-0003"),
    ]
    # w1 has had every item; the items are full for w3.
    for worker in ("w1", "w3"):
        response = claim(client, worker)
        assert response.status_code == 204
        assert response.data == b""
    counts = rows(
        app,
        "SELECT item_id, count(*), count(DISTINCT worker_id) FROM ratings GROUP BY item_id "
        "ORDER BY item_id",
    )
    assert [tuple(r) for r in counts] == [("tb-0001", 2, 2), ("tb-0002", 2, 2), ("tb-0003", 2, 2)]


def test_submit_201_then_identical_200_then_different_409(setup, clock) -> None:
    app, client, _ = setup()
    new = claim(client, "w1").json
    clock.advance(12.5)
    first = answer(client, new, 4, "  Robot B names the boat.  ")
    assert first.status_code == 201
    assert first.json["choice"] == 4
    assert first.json["reason"] == "Robot B names the boat."
    assert first.json["submitted_at"] == "2026-03-01T12:00:12.500000Z"
    clock.advance(3)
    again = answer(client, new, 4, "Robot B names the boat.")
    assert again.status_code == 200
    assert again.json == first.json
    different = answer(client, new, 5, "Robot B names the boat.")
    assert different.status_code == 409
    assert "different answer" in different.json["error"]
    stored = rows(app, "SELECT choice, reason, duration_s, status, accepted_at FROM ratings")
    assert [tuple(r) for r in stored] == [
        (4, "Robot B names the boat.", 12.5, "submitted", "2026-03-01T12:00:00.000Z")
    ]


def test_wrong_token_403_unknown_assignment_404(setup) -> None:
    app, client, _ = setup()
    new = claim(client, "w1").json
    wrong = dict(new, token="not-the-token")
    response = answer(client, wrong)
    assert response.status_code == 403
    assert response.json["field"] == "token"
    assert rows(app, "SELECT count(*) FROM responses")[0][0] == 0
    missing = dict(new, assignment_id="a" + "0" * 24)
    assert answer(client, missing).status_code == 404
    assert answer(client, dict(new, assignment_id="x" * 500)).status_code == 404
    # Nothing was stored by any of these: the right token still works.
    assert answer(client, new).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"not json", 400, "body"),
        (b"[1, 2]", 400, "body"),
        (b"null", 400, "body"),
        (b"[" * 5000 + b"]" * 5000, 400, "body"),
        ({"choice": 2, "reason": "x"}, 400, "token"),
        ({"token": 7, "choice": 2, "reason": "x"}, 400, "token"),
        ({"token": "T", "reason": "x"}, 400, "choice"),
        ({"token": "T", "choice": 2}, 400, "reason"),
        ({"token": "T", "choice": 2, "reason": "x", "extra": 1}, 400, "extra"),
        ({"token": "T", "choice": "two", "reason": "x"}, 400, "choice"),
        ({"token": "T", "choice": 2.0, "reason": "x"}, 400, "choice"),
        ({"token": "T", "choice": True, "reason": "x"}, 400, "choice"),
        ({"token": "T", "choice": 0, "reason": "x"}, 422, "choice"),
        ({"token": "T", "choice": 6, "reason": "x"}, 422, "choice"),
        ({"token": "T", "choice": 10**30, "reason": "x"}, 422, "choice"),
        ({"token": "T", "choice": 2, "reason": ""}, 422, "reason"),
        ({"token": "T", "choice": 2, "reason": " \n\t "}, 422, "reason"),
        ({"token": "T", "choice": 2, "reason": "x" * 2001}, 422, "reason"),
        ({"token": "T", "choice": 2, "reason": "bell\x07"}, 422, "reason"),
        ({"token": "T", "choice": 2, "reason": ["x"]}, 400, "reason"),
    ],
)
def test_bad_answers_name_the_field(setup, body: Any, status: int, field: str) -> None:
    app, client, _ = setup()
    new = claim(client, "w1").json
    if isinstance(body, dict) and body.get("token") == "T":
        body = dict(body, token=new["token"])
    url = f"/api/assignments/{new['assignment_id']}/response"
    if isinstance(body, bytes):
        response = client.post(url, data=body, content_type="application/json")
    else:
        response = client.post(url, json=body)
    assert response.status_code == status
    assert response.json["field"] == field
    assert field in response.json["error"]
    assert rows(app, "SELECT count(*) FROM responses")[0][0] == 0


def test_choice_as_digit_string_and_reason_limits_from_settings(setup) -> None:
    _, client, _ = setup(reason_min_chars=5, reason_max_chars=10)
    new = claim(client, "w1").json
    assert answer(client, new, "3", "abcd").status_code == 422
    assert answer(client, new, "3", "abcdefghijk").status_code == 422
    response = answer(client, new, "3", "abcde")
    assert response.status_code == 201
    assert response.json["choice"] == 3


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "worker_id"),
        ({"worker_id": ""}, 422, "worker_id"),
        ({"worker_id": "has space"}, 422, "worker_id"),
        ({"worker_id": 5}, 400, "worker_id"),
        ({"worker_id": "w", "platform": "mturk"}, 422, "platform"),
        ({"worker_id": "w", "platform": "martian"}, 422, "platform"),
        ({"worker_id": "w", "batch": "nope"}, 422, "batch"),
        ({"worker_id": "w", "colour": "red"}, 400, "colour"),
    ],
)
def test_bad_claims_name_the_field(setup, body: dict, status: int, field: str) -> None:
    app, client, _ = setup()
    response = client.post("/api/assignments", json=body)
    assert response.status_code == status
    assert response.json["field"] == field
    assert rows(app, "SELECT count(*) FROM assignments")[0][0] == 0


def test_expired_assignment_is_refused_and_its_slot_reissued(setup, clock) -> None:
    app, client, _ = setup(n=1, items=1, assignment_timeout_s=60)
    late = claim(client, "w1").json
    assert claim(client, "w2").status_code == 204
    clock.advance(61)
    reissued = claim(client, "w2")
    assert reissued.status_code == 201
    assert reissued.json["item_id"] == late["item_id"]
    refused = answer(client, late)
    assert refused.status_code == 409
    assert "expired" in refused.json["error"]
    assert answer(client, reissued.json).status_code == 201
    states = rows(
        app, "SELECT status, slot, expired_at IS NOT NULL FROM assignments ORDER BY accepted_at"
    )
    assert [tuple(r) for r in states] == [("expired", None, True), ("submitted", 0, False)]


def test_returned_assignment_frees_the_slot_and_is_not_offered_again(setup) -> None:
    app, client, _ = setup(n=1, items=1)
    new = claim(client, "w1").json
    url = f"/api/assignments/{new['assignment_id']}/return"
    assert client.post(url, json={"token": "wrong"}).status_code == 403
    assert client.post(url, json={"token": new["token"]}).status_code == 200
    assert client.post(url, json={"token": new["token"]}).status_code == 409
    assert answer(client, new).status_code == 409
    # A repeat worker is refused: w1 had the item already.
    assert claim(client, "w1").status_code == 204
    assert claim(client, "w2").status_code == 201
    states = rows(app, "SELECT status, slot, returned_at IS NOT NULL FROM assignments")
    assert sorted(tuple(r) for r in states) == [("accepted", 0, False), ("returned", None, True)]


def test_cap_per_worker(setup) -> None:
    _, client, _ = setup(n=3, items=4, cap=2)
    first = claim(client, "w1").json
    assert first["task"]["progress"] == "item 1 of 2"
    assert answer(client, first).status_code == 201
    second = claim(client, "w1").json
    assert second["task"]["progress"] == "item 2 of 2"
    assert answer(client, second).status_code == 201
    assert claim(client, "w1").status_code == 204
    assert claim(client, "w2").status_code == 201


def test_blocked_worker_gets_nothing_and_cannot_submit(setup) -> None:
    app, client, _ = setup()
    new = claim(client, "w1").json
    worker_id = rows(app, "SELECT id FROM workers WHERE platform_worker_id = 'w1'")[0][0]
    blocked = client.post(f"/admin/workers/{worker_id}/block", headers=ADMIN)
    assert blocked.status_code == 200
    assert blocked.json == {"worker": worker_id, "blocked": True}
    assert claim(client, "w1").status_code == 403
    assert answer(client, new).status_code == 403
    assert client.post(f"/admin/workers/{worker_id}/unblock", headers=ADMIN).status_code == 200
    assert answer(client, new).status_code == 201


def test_local_entry_can_be_switched_off(setup) -> None:
    _, client, _ = setup(local_entry=False)
    response = claim(client, "w1")
    assert response.status_code == 403
    assert response.json["field"] == "platform"


def test_batch_filter_and_closed_batches(setup, write_batch, tmp_path: Path) -> None:
    app, client, _ = setup(n=1, items=1)
    other = write_batch(tmp_path, "ob", 2)
    load_batch(app.extensions["hitserver"].engine, other, assignments_per_item=1)
    assert claim(client, "w1", batch="ob").json["item_id"] == "ob-0001"
    closed = client.post("/admin/batches/ob/close", headers=ADMIN)
    assert closed.json == {"batch": "ob", "open": False}
    response = claim(client, "w1", batch="ob")
    assert response.status_code == 422
    assert claim(client, "w1").json["item_id"] == "tb-0001"
    assert claim(client, "w2").status_code == 204


def test_simulated_workers_are_flagged(setup) -> None:
    app, client, _ = setup()
    for worker, platform in (("sim-1", "simulated"), ("person", "local")):
        new = claim(client, worker, platform=platform).json
        assert answer(client, new).status_code == 201
    flagged = rows(app, "SELECT worker_id, platform, simulated FROM ratings ORDER BY worker_id")
    assert [tuple(r) for r in flagged] == [("person", "local", 0), ("sim-1", "simulated", 1)]


def test_request_too_large_is_413_not_500(setup) -> None:
    _, client, _ = setup()
    new = claim(client, "w1").json
    response = answer(client, new, 2, "x" * 100_000)
    assert response.status_code == 413
    assert response.is_json


def test_the_longest_assignment_timeout_still_claims(setup, clock) -> None:
    """30 days is the largest timeout the settings accept; its deadline is computed fine (a
    timeout of 10**14 s used to make every claim a 500; test_config checks it is refused)."""
    app, client, _ = setup(n=1, items=1, assignment_timeout_s=30 * 24 * 3600)
    assert claim(client, "w1").status_code == 201
    with app.extensions["hitserver"].engine.connect() as conn:
        expires = conn.execute(select(Assignment.expires_at)).scalar_one()
    assert expires - clock.now == timedelta(days=30)


def test_a_write_the_database_refuses_is_409_not_500(setup, monkeypatch) -> None:
    """A CHECK failure is no lost race: it is not retried (finding 3), and the request gets a
    JSON 409 instead of a 500 (SQLite) or, after 8 retries, a 503 (PostgreSQL)."""
    app, client, _ = setup()
    new = claim(client, "w1").json

    def breaks_a_check(conn, *_args) -> None:
        conn.execute(text("UPDATE assignments SET status = 'approved'"))  # no approved_at

    monkeypatch.setattr(api, "submit", breaks_a_check)
    response = answer(client, new)
    assert response.status_code == 409
    assert response.json == {"error": "the request conflicts with stored data", "field": None}
    assert rows(app, "SELECT status FROM assignments")[0][0] == "accepted"
