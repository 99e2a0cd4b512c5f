"""The two hot routes' SQL, on SQLite and PostgreSQL: how many statements a claim and a submit
run, which index finds a free slot, the item fields a claim returns, and the statistics that
PostgreSQL's planner gets when a batch is loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from hitserver.app import create_app
from hitserver.config import Settings
from hitserver.database import in_transaction, make_engine, upgrade
from hitserver.loading import load_batch
from hitserver.policy import claim, submit

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


class Statements:
    """The SQL an engine runs while recording (transaction control left out)."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.recording = False
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if self.recording and not sql.startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            self.seen.append((sql, params))

    def run(self, engine: Engine, work: Any) -> Any:
        self.seen.clear()
        self.recording = True
        try:
            return in_transaction(engine, work)
        finally:
            self.recording = False


def _claim(worker: str) -> Any:
    return lambda conn: claim(
        conn, platform="local", worker_key=worker, now=NOW, timeout_s=600, batch="hp"
    )


def test_claim_is_three_statements_and_submit_two(engine: Engine, write_batch, tmp_path) -> None:
    load_batch(engine, write_batch(tmp_path, "hp", 4), assignments_per_item=2)
    sql = Statements(engine)
    sql.run(engine, _claim("w1"))  # first sight of w1 also inserts the worker
    assert any(s.startswith("INSERT INTO workers") for s, _ in sql.seen)
    first = in_transaction(engine, _claim("w1"))
    in_transaction(engine, lambda c: submit(c, first.assignment_id, first.token, 4, "why", NOW))
    new = sql.run(engine, _claim("w1"))  # a known worker with no open assignment
    assert [s.split()[0] for s, _ in sql.seen] == ["SELECT", "UPDATE", "INSERT"]
    stored = sql.run(engine, lambda c: submit(c, new.assignment_id, new.token, 4, "why", NOW))
    assert stored.created and stored.item_key == new.item_key
    assert [s.split()[0] for s, _ in sql.seen] == ["UPDATE", "INSERT"]
    # The repeat takes the checked path and finds the stored answer.
    again = sql.run(engine, lambda c: submit(c, new.assignment_id, new.token, 4, "why", NOW))
    assert not again.created and again.submitted_at == NOW


def test_claims_return_the_fields_of_the_item_whose_slot_they_took(
    engine: Engine, write_batch, tmp_path
) -> None:
    load_batch(engine, write_batch(tmp_path, "hp", 6), assignments_per_item=3)
    with engine.connect() as conn:
        items = {
            row.id: row
            for row in conn.execute(
                text("SELECT id, key, page, image, class_name, spec FROM items")
            )
        }
    claims = [in_transaction(engine, _claim(f"w{i}")) for i in range(18)]
    assert all(c is not None for c in claims)
    with engine.connect() as conn:
        held = {r[0]: r[1] for r in conn.execute(text("SELECT holder, item_id FROM item_slots"))}
    for new in claims:
        item = items[new.item_id]
        assert held[new.assignment_id] == new.item_id
        assert (new.item_key, new.page, new.image, new.class_name) == (
            item.key,
            item.page,
            item.image,
            item.class_name,
        )
        assert json.loads(new.spec) == json.loads(item.spec)
    # Breadth first: slot 0 of all six items, then slot 1, then slot 2.
    assert [c.item_key for c in claims[:6]] == [f"hp-{i:04d}" for i in range(1, 7)]


def test_a_free_slot_is_found_through_the_free_slot_index(
    engine: Engine, write_batch, tmp_path: Path
) -> None:
    """Without it the database sorts every free slot of the batch on each claim."""
    load_batch(engine, write_batch(tmp_path, "hp", 300), assignments_per_item=10)
    for i in range(20):
        in_transaction(engine, _claim(f"w{i}"))
    sql = Statements(engine)
    sql.run(engine, _claim("w20"))  # (w0 holds an open assignment: it would get that again)
    take = [(s, p) for s, p in sql.seen if s.startswith("UPDATE item_slots")]
    assert len(take) == 1
    statement, params = take[0]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " | ".join(
                row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            )
            assert "ix_item_slots_free" in plan
            assert "TEMP B-TREE" not in plan
        else:
            plan = " | ".join(
                row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params)
            )
            assert "ix_item_slots_free" in plan
            assert "Sort" not in plan


@pytest.mark.postgres
def test_loading_gives_postgresql_the_new_rows_statistics(
    pg_schema_url: str, write_batch, tmp_path: Path
) -> None:
    engine = make_engine(pg_schema_url)
    upgrade(engine)
    load_batch(engine, write_batch(tmp_path, "hp", 40), assignments_per_item=5)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, reltuples FROM pg_class WHERE relnamespace = "
                "current_schema()::regnamespace AND relname IN ('items', 'item_slots')"
            )
        )
        counted = {row[0]: row[1] for row in rows}
    engine.dispose()
    assert counted == {"items": 40, "item_slots": 200}


def test_the_pool_keeps_a_connection_per_serving_thread(db_url: str) -> None:
    """Connections beyond the pool's size are closed when returned: under load that would
    start a PostgreSQL backend process per request."""
    app = create_app(Settings(database_url=db_url, secret_key="x" * 40), threads=12)
    engine = app.extensions["hitserver"].engine
    assert engine.pool.size() == 13  # the serving threads and the SQLite writer
    engine.dispose()


@pytest.mark.postgres
def test_a_claim_takes_one_slot_whatever_plan_postgresql_picks(
    pg_schema_url: str, write_batch, tmp_path: Path
) -> None:
    """With the free-slot search on the inner side of a nested loop, PostgreSQL runs it once
    per outer row, and each run after the first skips the row just taken (locked and updated
    by this very statement) and finds the next: one claim would take every free slot. The
    planner picked such a plan in a hostile-traffic run (the holder's unique constraint then
    refused every attempt and the claim answered 503); here the plan is forced."""
    engine = make_engine(pg_schema_url)
    upgrade(engine)
    load_batch(engine, write_batch(tmp_path, "hp", 6), assignments_per_item=3)
    rescanning = [
        "SET LOCAL enable_hashjoin = off",
        "SET LOCAL enable_mergejoin = off",
        "SET LOCAL enable_material = off",
        "SET LOCAL enable_hashagg = off",
        "SET LOCAL enable_sort = off",
    ]

    def claim_with_that_plan(conn: Any) -> Any:
        for setting in rescanning:
            conn.exec_driver_sql(setting)
        return _claim("w1")(conn)

    new = in_transaction(engine, claim_with_that_plan)
    with engine.connect() as conn:
        held = conn.execute(text("SELECT holder FROM item_slots WHERE holder IS NOT NULL"))
        holders = [row[0] for row in held]
    engine.dispose()
    assert holders == [new.assignment_id]
