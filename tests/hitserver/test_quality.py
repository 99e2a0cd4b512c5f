"""Participant quality: telemetry posted with an answer (stored, exported, validated, never a
500), the server's claim-to-submit time, near-identical reasons and the dashboard's flags, on
SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from hitserver.export import TIDY_COLUMNS
from hitserver.loading import load_batch
from hitserver.quality import near_identical, normalise

ADMIN = {"Authorization": "Bearer admin-token-for-tests-0123456789abcdef"}
CONTRACT = (
    "batch", "item_id", "worker_id", "platform", "assignment_id", "platform_assignment_id",
    "choice", "reason", "accepted_at", "submitted_at", "duration_s", "status", "simulated",
)  # fmt: skip
FULL = {
    "visible_s": 12.5,
    "blur_count": 2,
    "paste_count": 1,
    "pasted_chars": 30,
    "reason_chars": 31,
}


@pytest.fixture
def setup(make_app, write_batch, tmp_path: Path):
    app = make_app()
    batch = write_batch(tmp_path, "tq", 4, catch={3: [3]})
    load_batch(app.extensions["hitserver"].engine, batch, assignments_per_item=3)
    return app, app.test_client()


def claim(client: FlaskClient, worker: str) -> dict[str, Any]:
    response = client.post("/api/assignments", json={"worker_id": worker})
    assert response.status_code == 201
    return response.json


def post(client: FlaskClient, new: dict[str, Any], **extra: Any) -> Any:
    body = {"token": new["token"], "choice": 2, "reason": "the highlights fit", **extra}
    return client.post(f"/api/assignments/{new['assignment_id']}/response", json=body)


def stored(app, assignment_id: str) -> tuple[Any, ...]:
    with app.extensions["hitserver"].engine.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "SELECT duration_s, visible_s, blur_count, paste_count, pasted_chars, "
                    "reason_chars FROM responses WHERE assignment_id = :a"
                ),
                {"a": assignment_id},
            ).one()
        )


def test_telemetry_is_stored_with_the_answer_and_a_retry_keeps_the_first(setup, clock) -> None:
    app, client = setup
    new = claim(client, "w1")
    clock.advance(42.25)
    assert post(client, new, telemetry=FULL).status_code == 201
    assert stored(app, new["assignment_id"]) == (42.25, 12.5, 2, 1, 30, 31)
    # A retry after a lost response: the page has been visible longer by now. Stored once.
    clock.advance(5)
    again = post(client, new, telemetry={**FULL, "visible_s": 20.0, "blur_count": 3})
    assert again.status_code == 200
    assert stored(app, new["assignment_id"]) == (42.25, 12.5, 2, 1, 30, 31)
    with app.extensions["hitserver"].engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM responses")).scalar() == 1


def test_answers_without_telemetry_or_with_part_of_it_still_work(setup, clock) -> None:
    app, client = setup
    old = claim(client, "w1")
    clock.advance(3)
    assert post(client, old).status_code == 201
    assert stored(app, old["assignment_id"]) == (3.0, None, None, None, None, None)
    part = claim(client, "w1")
    assert post(client, part, telemetry={"visible_s": 7, "paste_count": None}).status_code == 201
    assert stored(app, part["assignment_id"])[1:] == (7.0, None, None, None, None)
    null = claim(client, "w1")
    assert post(client, null, telemetry=None).status_code == 201


@pytest.mark.parametrize(
    ("telemetry", "status", "field"),
    [
        ([1, 2], 400, "telemetry"),
        ("fast", 400, "telemetry"),
        ({"visible_s": "12"}, 400, "telemetry.visible_s"),
        ({"visible_s": True}, 400, "telemetry.visible_s"),
        ({"visible_s": -1}, 422, "telemetry.visible_s"),
        ({"visible_s": 1e300}, 422, "telemetry.visible_s"),
        ({"visible_s": 10**400}, 422, "telemetry.visible_s"),
        ({"blur_count": 10**400}, 422, "telemetry.blur_count"),
        ({"blur_count": 1.5}, 400, "telemetry.blur_count"),
        ({"paste_count": -1}, 422, "telemetry.paste_count"),
        ({"pasted_chars": 10**12}, 422, "telemetry.pasted_chars"),
        ({"reason_chars": False}, 400, "telemetry.reason_chars"),
        ({"pasted_text": "secret"}, 400, "telemetry.pasted_text"),
    ],
)
def test_bad_telemetry_is_refused_naming_the_field(setup, telemetry, status, field) -> None:
    app, client = setup
    new = claim(client, "w1")
    response = post(client, new, telemetry=telemetry)
    assert response.status_code == status
    assert response.json["field"] == field
    with app.extensions["hitserver"].engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM responses")).scalar() == 0
    assert post(client, new, telemetry=FULL).status_code == 201  # the assignment is still open


def test_nan_and_infinity_are_refused_not_500(setup) -> None:
    _, client = setup
    new = claim(client, "w1")
    for raw in ("NaN", "Infinity", "-Infinity"):
        telemetry = '"telemetry": {"visible_s": ' + raw + "}"
        body = f'{{"token": "{new["token"]}", "choice": 2, "reason": "x", {telemetry}}}'
        response = client.post(
            f"/api/assignments/{new['assignment_id']}/response",
            data=body,
            content_type="application/json",
        )
        assert response.status_code == 422, raw


def test_export_and_view_append_the_quality_columns_after_the_contract(setup, clock) -> None:
    app, client = setup
    new = claim(client, "w1")
    clock.advance(8)
    post(client, new, telemetry=FULL)
    bare = claim(client, "w2")
    post(client, bare)
    assert TIDY_COLUMNS[: len(CONTRACT)] == CONTRACT
    with app.extensions["hitserver"].engine.connect() as conn:
        columns = tuple(conn.execute(text("SELECT * FROM ratings")).keys())
    assert columns == TIDY_COLUMNS
    response = client.get("/admin/export.csv", headers=ADMIN)
    rows = {r["worker_id"]: r for r in csv.DictReader(io.StringIO(response.text))}
    assert tuple(rows["w1"])[: len(CONTRACT)] == CONTRACT
    assert float(rows["w1"]["duration_s"]) == 8.0
    assert [rows["w1"][k] for k in FULL] == ["12.5", "2", "1", "30", "31"]
    assert [rows["w2"][k] for k in FULL] == ["", "", "", "", ""]


def test_normalise() -> None:
    assert normalise("  Robot A's  HIGHLIGHTS, fit!\n") == "robot a s highlights fit"
    assert normalise("ﬁne_print") == "fine print"  # NFKC ligature; '_' separates words


def test_near_identical_pairs_need_two_workers_length_and_similarity() -> None:
    base = "Robot A highlights the boat and the water, which fit a harbor."
    reasons = [
        base,  # 0 w1
        base.upper() + "!!",  # 1 w2: identical once normalised
        base.replace("boat", "boats"),  # 2 w3: one letter more, Jaccard 50/57 >= 0.8
        base,  # 3 w1 again: the same worker does not count
        "Robot B is better because the sky is not in the picture at all.",  # 4 w4
        "same same",  # 5 w5: too short to compare
        "same same",  # 6 w6
    ]
    owners = ["w1", "w2", "w3", "w1", "w4", "w5", "w6"]
    assert near_identical(reasons, owners) == {0, 1, 2, 3}
    assert near_identical(reasons[:1] + reasons[3:4], ["w1", "w1"]) == set()
    assert near_identical(reasons, owners, min_chars=5) == {0, 1, 2, 3, 5, 6}
    # a word changed in a short reason drops below 0.8
    assert (
        near_identical(["the robot sees a boat here", "the robot sees a tree here"], [1, 2])
        == set()
    )
    assert near_identical([], []) == set()


def test_dashboard_shows_catch_median_time_and_flags(setup, clock) -> None:
    _, client = setup
    # w1: careful, slow, passes the catch trial (tq-0004 expects 3)
    for seconds in (30, 40, 50, 60):
        new = claim(client, "w1")
        clock.advance(seconds)
        choice = 3 if new["item_id"] == "tq-0004" else 2  # the catch trial (index 3)
        words = f"my own words about item {new['item_id']} and its {seconds} second look"
        body = {"token": new["token"], "choice": choice, "reason": words}
        assert (
            client.post(f"/api/assignments/{new['assignment_id']}/response", json=body).status_code
            == 201
        )
    # w2 and w3: fast, paste one shared reason, fail the catch trial
    shared = "Robot A is more reasonable because its regions match the class."
    for worker in ("w2", "w3"):
        for _ in range(4):
            new = claim(client, worker)
            clock.advance(2)
            body = {
                "token": new["token"],
                "choice": 1,
                "reason": shared,
                "telemetry": {"paste_count": 1, "pasted_chars": len(shared), "visible_s": 1.5},
            }
            url = f"/api/assignments/{new['assignment_id']}/response"
            assert client.post(url, json=body).status_code == 201
    page = client.get("/admin/batches/tq", headers=ADMIN)
    assert page.status_code == 200
    html = page.text
    row = {w: html[html.index(f"<td>{w}</td>") :].split("</tr>")[0] for w in ("w1", "w2", "w3")}
    assert "45.0" in row["w1"] and "1 / 1" in row["w1"]  # median of 30, 40, 50, 60
    assert "fast" not in row["w1"] and "pasted" not in row["w1"]
    for worker in ("w2", "w3"):
        assert "0 / 1" in row[worker] and "2.0" in row[worker]
        assert "failed catch trials" in row[worker]
        assert "fast" in row[worker] and "pasted 4" in row[worker]
        assert "near-identical reasons 4" in row[worker]


def test_analysis_reads_the_quality_columns_from_the_database(setup, db_url, tmp_path, clock):
    """Round trip: answers with telemetry through the API, the `ratings` view read by
    `analysis`, its rules applied to what the page measured."""
    from analysis import exclusion
    from analysis.catch import ExclusionRule
    from analysis.study import Sources, load

    _, client = setup
    words = {
        "w1": ["boat and water fit", "sail on the sea", "sky over a harbor", "equal to me"],
        "w2": ["the masks cover boats", "left one is neater", "right misses water", "same"],
        "w3": ["pasted text number one", "pasted text two here", "a third pasted", "fourth"],
    }
    for worker, seconds in (("w1", 20), ("w2", 40), ("w3", 4)):
        for k in range(4):
            new = claim(client, worker)
            clock.advance(seconds + k)
            choice = 3 if new["item_id"] == "tq-0004" else 2
            text_ = words[worker][k]
            pasted = len(text_) if worker == "w3" else 0
            body = {
                "token": new["token"],
                "choice": choice,
                "reason": text_,
                "telemetry": {"paste_count": int(pasted > 0), "pasted_chars": pasted},
            }
            url = f"/api/assignments/{new['assignment_id']}/response"
            assert client.post(url, json=body).status_code == 201
    rules = exclusion.Rules(min_seconds=10, max_pasted=0.5)
    study = load(Sources(db=db_url, manifests=(tmp_path / "tq",)), ExclusionRule(), rules)
    w = study.workers
    assert w["median_duration_s"].to_dict() == {"w1": 21.5, "w2": 41.5, "w3": 5.5}
    assert w["pasted_fraction"].to_dict() == {"w1": 0.0, "w2": 0.0, "w3": 1.0}
    assert study.excluded_workers == ["w3"]
    assert (w.loc["w3", "excluded_time"], w.loc["w3", "excluded_pasted"]) == (True, True)


def test_simulated_raters_send_what_a_page_would_measure() -> None:
    import random

    from hitserver.quality import parse_telemetry
    from hitserver.simulate import CARELESS_REASON, Rater, reason, telemetry

    careful = Rater("sim-0-000", 0.0, 0.1, 0.05, 0.3, careless=False)
    careless = Rater("sim-0-001", 0.0, 0.1, 0.05, 0.3, careless=True)
    rng = random.Random(0)
    texts = [reason(1, None, "boat", rng) for _ in range(50)]
    assert all("'boat'" in t and "robot b" in t.lower() for t in texts)
    assert len(set(texts)) == 50  # wording and a detail of the photo vary
    # two raters writing about the same item seldom write near-identical reasons
    owners = [k % 2 for k in range(50)]
    assert len(near_identical(texts, owners)) <= 5
    for written in texts:
        sent = telemetry(careful, written, rng)
        assert parse_telemetry(sent) is not None  # valid for the server
        assert (sent["paste_count"], sent["pasted_chars"], sent["reason_chars"]) == (
            0, 0, len(written),
        )  # fmt: skip
        assert sent["visible_s"] >= 3.0
    pasted = telemetry(careless, CARELESS_REASON, rng)
    assert (pasted["paste_count"], pasted["pasted_chars"]) == (1, len(CARELESS_REASON))
    assert 1.0 <= pasted["visible_s"] <= 4.0


def test_migration_0003_keeps_the_answers_both_ways(setup, clock) -> None:
    """Down to 0002 (the quality columns go, the view keeps the contract's) and up again: the
    answers stay; what the page measured is gone after the round trip, as the downgrade says."""
    from alembic import command

    from hitserver.database import _alembic_config

    app, client = setup
    new = claim(client, "w1")
    clock.advance(9)
    assert post(client, new, telemetry=FULL).status_code == 201
    engine = app.extensions["hitserver"].engine
    config = _alembic_config()
    for step, target in ((command.downgrade, "0002"), (command.upgrade, "head")):
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            step(config, target)
        with engine.connect() as conn:
            columns = tuple(conn.execute(text("SELECT * FROM ratings")).keys())
            kept = conn.execute(text("SELECT worker_id, choice, duration_s FROM ratings")).all()
        assert columns == (CONTRACT if target == "0002" else TIDY_COLUMNS)
        assert [tuple(r) for r in kept] == [("w1", 2, 9.0)]
    assert stored(app, new["assignment_id"]) == (9.0, None, None, None, None, None)


def test_fuzzed_telemetry_is_stored_or_refused_never_a_500(make_app, write_batch, tmp_path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app = make_app()
    batch = write_batch(tmp_path, "tz", 4)
    # every example may store an answer: slots for all of them
    load_batch(app.extensions["hitserver"].engine, batch, assignments_per_item=150)
    client = app.test_client()
    values = (
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
        | st.lists(st.integers(), max_size=2)
    )  # fmt: skip
    keys = st.sampled_from(["visible_s", "blur_count", "paste_count", "pasted_chars",
                            "reason_chars", "pasted_text", ""])  # fmt: skip
    telemetry = values | st.dictionaries(keys, values, max_size=5)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(telemetry)
    def one(sent: Any) -> None:
        new = claim(client, f"f{uuid.uuid4().hex[:12]}")
        response = post(client, new, telemetry=sent)
        assert response.status_code in (201, 400, 422), (sent, response.status_code)
        if response.status_code != 201:
            assert str(response.json["field"]).startswith("telemetry")
            # the refused answer left the assignment open: give it back for the next example
            url = f"/api/assignments/{new['assignment_id']}/return"
            assert client.post(url, json={"token": new["token"]}).status_code == 200
            return
        with app.extensions["hitserver"].engine.connect() as conn:
            row = conn.execute(
                text("SELECT visible_s, blur_count FROM responses WHERE assignment_id = :a"),
                {"a": new["assignment_id"]},
            ).one()
        expected = sent.get("visible_s") if isinstance(sent, dict) else None
        assert row.visible_s == expected

    one()
