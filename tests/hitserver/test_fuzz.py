"""Fuzzing the HTTP surface with hypothesis: whatever a client sends, no 500, and the database
only ever holds valid answers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from hitserver.loading import load_batch

pytestmark = pytest.mark.slow
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"  # conftest's make_app sets it

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture
def served(make_app, write_batch, tmp_path: Path):
    app = make_app()
    load_batch(
        app.extensions["hitserver"].engine, write_batch(tmp_path, "tb", 2), assignments_per_item=2
    )
    client = app.test_client()
    new = client.post("/api/assignments", json={"worker_id": "fuzzer"}).json
    return app, client, new


def check_database(app) -> None:
    with app.extensions["hitserver"].engine.connect() as conn:
        rows = conn.execute(text("SELECT choice, reason FROM responses")).all()
        per_item = conn.execute(
            text(
                "SELECT max(c) FROM (SELECT count(*) AS c FROM assignments "
                "WHERE status IN ('accepted', 'submitted') GROUP BY item_id) AS t"
            )
        ).scalar()
    assert all(1 <= r.choice <= 5 and r.reason.strip() for r in rows)
    assert per_item is None or per_item <= 2


def test_fuzz_answers(served) -> None:
    app, client, new = served

    @FUZZ
    @given(
        body=st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "token": st.one_of(st.just(new["token"]), st.text(max_size=10), json_values),
                    "choice": st.one_of(st.integers(-3, 8), st.text(max_size=2), json_values),
                    "reason": st.one_of(st.text(max_size=40), json_values),
                    "extra": json_values,
                },
            ),
        ),
        assignment=st.one_of(st.just(new["assignment_id"]), st.text(min_size=1, max_size=50)),
    )
    @example(
        body={"token": new["token"], "choice": 2, "reason": "\ud800"},
        assignment=new["assignment_id"],
    )
    @example(body={"token": "\ud800", "choice": 2, "reason": "r"}, assignment=new["assignment_id"])
    def post(body, assignment: str) -> None:
        url = f"/api/assignments/{quote(assignment, safe='')}/response"
        status = client.post(url, json=body).status_code
        # 308: werkzeug merges a doubled slash (an id containing "/") by redirecting.
        assert status in {200, 201, 308, 400, 403, 404, 405, 409, 413, 422}, (status, body)

    post()
    check_database(app)


def test_fuzz_raw_bodies_and_claims(served) -> None:
    app, client, new = served

    @FUZZ
    @given(
        raw=st.binary(max_size=120),
        claim=st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "worker_id": st.one_of(st.text(max_size=70), json_values),
                    "platform": st.one_of(
                        st.sampled_from(["local", "simulated", "mturk"]), json_values
                    ),
                    "batch": st.one_of(st.just("tb"), json_values),
                },
            ),
        ),
    )
    # A lone surrogate in the token (an escape JSON allows) could not be hashed: it was a 500.
    @example(raw=b'{"token": "\\ud800", "choice": 3, "reason": "x"}', claim={"worker_id": "w"})
    @example(raw=b'{"token": "\\ud800"}', claim={"worker_id": "w"})
    def post(raw: bytes, claim) -> None:
        url = f"/api/assignments/{new['assignment_id']}/response"
        assert client.post(url, data=raw, content_type="application/json").status_code in {400}
        status = client.post("/api/assignments", json=claim).status_code
        assert status in {201, 204, 400, 403, 422}, (status, claim)
        returned = client.post(f"/api/assignments/{new['assignment_id']}/return", data=raw)
        assert returned.status_code in {400}

    post()
    check_database(app)


def test_fuzz_paths_and_headers(served) -> None:
    app, client, _ = served
    prefixes = ["/b/tb/", "/b/", "/work/a/", "/mturk/items/", "/admin/batches/", "/api/", "/"]

    @FUZZ
    @given(
        prefix=st.sampled_from(prefixes),
        # Long names too: past NAME_MAX (255 bytes) the file system refuses them outright.
        rest=st.text(max_size=30) | st.text(min_size=250, max_size=400),
        query=st.dictionaries(
            st.sampled_from(
                [
                    "assignmentId",
                    "workerId",
                    "turkSubmitTo",
                    "hitId",
                    "PROLIFIC_PID",
                    "STUDY_ID",
                    "SESSION_ID",
                    "format",
                    "batch",
                ]
            ),
            st.text(max_size=30),
            max_size=4,
        ),
        # What a header can carry on the wire: printable Latin-1, no line breaks.
        authorization=st.one_of(
            st.none(),
            st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=30),
            st.text(max_size=30).map(lambda t: "Bearer " + t.replace("\r", "").replace("\n", "")),
        ),
    )
    @example(prefix="/b/tb/", rest="images/" + "a" * 300 + ".png", query={}, authorization=None)
    def get(prefix: str, rest: str, query: dict[str, str], authorization) -> None:
        headers = (
            {}
            if authorization is None
            else {"Authorization": authorization.encode("latin-1", "replace").decode("latin-1")}
        )
        response = client.get(prefix + quote(rest), query_string=query, headers=headers)
        assert response.status_code < 500, (prefix, rest, query, response.status_code)
        admin = client.get("/admin/", headers=headers)
        assert admin.status_code in {401, 403}

    get()
    check_database(app)


def test_fuzz_admin_worker_actions(served) -> None:
    app, client, _ = served
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with app.extensions["hitserver"].engine.connect() as conn:
        known = conn.execute(text("SELECT id FROM workers")).scalar_one()

    @FUZZ
    @given(
        worker=st.integers(min_value=-(2**70), max_value=2**70).map(str)
        | st.text(max_size=30).map(lambda t: quote(t, safe="")),
        action=st.sampled_from(["block", "unblock", "delete"]),
    )
    @example(worker=str(10**23), action="block")  # past SQLite's integers: was a 500
    @example(worker=str(2**31), action="unblock")  # past PostgreSQL's integers: was a 400
    def post(worker: str, action: str) -> None:
        response = client.post(f"/admin/workers/{worker}/{action}", headers=bearer)
        # 400: a NUL in the URL, refused at the door.
        expected = {400} if "%00" in worker else {200, 404}
        assert response.status_code in expected, (worker, action, response.status_code)
        if response.status_code == 200:
            assert response.json == {"worker": known, "blocked": action == "block"}

    post()
    check_database(app)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("post", "/api/assignments/{aid}/response", '{"token": "\\ud800", "choice": 3, '
         '"reason": "x"}', 400, "token"),
        ("post", "/api/assignments/{aid}/return", '{"token": "\\ud800"}', 400, "token"),
        ("post", "/api/assignments/{aid}/return", '{"token": "t\u00e9"}', 400, "token"),
        ("get", "/b/tb/images/" + "a" * 300 + ".png", None, 404, None),
        ("get", "/b/tb/images/" + "a/" * 3000 + "x.png", None, 404, None),
        ("post", "/admin/workers/99999999999999999999999/block", None, 404, None),
        ("post", f"/admin/workers/{2**31}/unblock", None, 404, None),
    ],
    ids=["surrogate-token-answer", "surrogate-token-return", "non-ascii-token", "long-name",
         "long-path", "huge-worker-id", "worker-id-2**31"],
)  # fmt: skip
def test_requests_that_once_answered_500(served, method, path, body, status, field) -> None:
    _, client, new = served
    response = getattr(client, method)(
        path.format(aid=new["assignment_id"]),
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == status
    if field is not None:
        assert response.json == {"error": "token: must be the assignment's token string",
                                 "field": field}  # fmt: skip
