"""The schema: migrations from an empty database, the `ratings` view, and the constraints that
enforce the assignment policy even against code that tries to break it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from hitserver import database
from hitserver.database import current_revision, head_revision, in_transaction, make_engine
from hitserver.export import TIDY_COLUMNS
from hitserver.loading import load_batch
from hitserver.models import Base
from hitserver.policy import claim

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def test_upgrade_from_empty_builds_what_the_models_describe(engine: Engine) -> None:
    assert current_revision(engine) is None
    database.upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        columns = list(conn.execute(text("SELECT * FROM ratings")).keys())
    assert tuple(columns) == TIDY_COLUMNS
    assert "ratings" in inspect(engine).get_view_names()
    database.upgrade(engine)  # at head: nothing to do
    assert current_revision(engine) == head_revision()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'db.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    engine.dispose()


@pytest.fixture
def loaded(engine: Engine, write_batch, tmp_path: Path) -> Engine:
    database.upgrade(engine)
    load_batch(
        engine, write_batch(tmp_path, "tb", 1), assignments_per_item=2, max_items_per_worker=1
    )
    with engine.begin() as conn:
        for key, platform, simulated in (("w1", "local", False), ("w2", "local", False)):
            conn.execute(
                text(
                    "INSERT INTO workers (platform, platform_worker_id, simulated, blocked, "
                    "created_at) VALUES (:p, :k, :s, :b, :t)"
                ),
                {"p": platform, "k": key, "s": simulated, "b": False, "t": NOW},
            )
    return engine


def _ids(conn: Any) -> tuple[int, int, int, int]:
    item, batch = conn.execute(text("SELECT id, batch_id FROM items")).one()
    w1 = conn.execute(text("SELECT id FROM workers WHERE platform_worker_id = 'w1'")).scalar()
    w2 = conn.execute(text("SELECT id FROM workers WHERE platform_worker_id = 'w2'")).scalar()
    return item, batch, w1, w2


def _hold(
    conn: Any,
    aid: str,
    item: int,
    batch: int,
    worker: int,
    slot: int | None,
    worker_slot: int | None = None,
    status: str = "accepted",
    take: bool = True,
) -> None:
    """Insert an assignment the way the policy does: take the slot, then insert the row."""
    if take and slot is not None:
        conn.execute(
            text("UPDATE item_slots SET holder = :a WHERE item_id = :i AND slot = :s"),
            {"a": aid, "i": item, "s": slot},
        )
    conn.execute(
        text(
            "INSERT INTO assignments (id, item_id, batch_id, worker_id, slot, worker_slot, "
            "token_sha256, status, accepted_at) VALUES (:a, :i, :b, :w, :s, :ws, 'x', :st, :t)"
        ),
        {
            "a": aid,
            "i": item,
            "b": batch,
            "w": worker,
            "s": slot,
            "ws": worker_slot,
            "st": status,
            "t": NOW,
        },
    )


def _refused(engine: Engine, action: Any) -> None:
    with pytest.raises(IntegrityError), engine.begin() as conn:
        action(conn)


def test_constraints_enforce_the_policy(loaded: Engine) -> None:
    engine = loaded
    with engine.begin() as conn:
        item, batch, w1, w2 = _ids(conn)
        _hold(conn, "a1", item, batch, w1, 0, 0)

    # A slot that does not exist (N = 2: slots 0 and 1).
    _refused(engine, lambda c: _hold(c, "a2", item, batch, w2, 2))
    # A slot held by someone else: the holder does not match.
    _refused(engine, lambda c: _hold(c, "a2", item, batch, w2, 0, take=False))
    # Taking a held slot away from its assignment.
    _refused(engine, lambda c: c.execute(text("UPDATE item_slots SET holder = NULL")))
    # The same worker on the same item again.
    _refused(engine, lambda c: _hold(c, "a2", item, batch, w1, 1))
    # An open assignment without a slot.
    _refused(engine, lambda c: _hold(c, "a2", item, batch, w2, None))
    # Beyond the per-worker cap (K = 1: worker slot 0 only).
    _refused(engine, lambda c: _hold(c, "a2", item, batch, w2, 1, 1))
    # A released assignment that keeps its slot.
    _refused(engine, lambda c: _hold(c, "a2", item, batch, w2, 1, status="expired"))
    # A simulated worker not flagged as simulated.
    _refused(
        engine,
        lambda c: c.execute(
            text(
                "INSERT INTO workers (platform, platform_worker_id, simulated, blocked, "
                "created_at) VALUES ('simulated', 's', :f, :f, :t)"
            ),
            {"f": False, "t": NOW},
        ),
    )

    def respond(conn: Any, aid: str, worker: int, choice: int, reason: str) -> None:
        conn.execute(
            text(
                "INSERT INTO responses (assignment_id, item_id, worker_id, choice, reason, "
                "duration_s, source, received_at) VALUES (:a, :i, :w, :c, :r, 1.0, 'server', :t)"
            ),
            {"a": aid, "i": item, "w": worker, "c": choice, "r": reason, "t": NOW},
        )

    _refused(engine, lambda c: respond(c, "a1", w1, 6, "why"))
    _refused(engine, lambda c: respond(c, "a1", w1, 3, ""))
    _refused(engine, lambda c: respond(c, "a1", w2, 3, "not the assignment's worker"))
    with engine.begin() as conn:
        respond(conn, "a1", w1, 3, "fine")
    _refused(engine, lambda c: respond(c, "a1", w1, 4, "a second answer"))

    # The legal second holder still fits.
    with engine.begin() as conn:
        _hold(conn, "a2", item, batch, w2, 1, 0)
        assert conn.execute(text("SELECT count(*) FROM assignments")).scalar() == 2


def test_racing_claims_for_the_last_slots_never_over_assign(loaded: Engine) -> None:
    """30 threads, each its own worker, race for an item with N = 2 through the policy."""
    engine = loaded
    results: list[Any] = []
    lock = threading.Lock()
    barrier = threading.Barrier(30)

    def worker(index: int) -> None:
        barrier.wait(timeout=30)
        got = in_transaction(
            engine,
            lambda conn: claim(
                conn, platform="local", worker_key=f"r{index}", now=NOW, timeout_s=60
            ),
            attempts=50,
        )
        with lock:
            results.append(got)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 30
    winners = [r for r in results if r is not None]
    assert len(winners) == 2
    assert len({w.worker_id for w in winners}) == 2
    with engine.connect() as conn:
        held = (
            conn.execute(
                text("SELECT slot FROM assignments WHERE status = 'accepted' ORDER BY slot")
            )
            .scalars()
            .all()
        )
    assert held == [0, 1]


def test_a_claim_waits_for_slots_another_claim_is_expiring(loaded: Engine) -> None:
    """Two stale assignments hold the item's two slots. One claim expires both (and takes one)
    but has not committed yet; a second claim must wait and take the other, not answer "nothing
    left" (a worker told that leaves the study, and the slot waits for a newcomer)."""
    engine = loaded
    later = NOW.replace(hour=1)

    def claim_as(worker: str, now: datetime) -> Any:
        return lambda conn: claim(conn, platform="local", worker_key=worker, now=now, timeout_s=60)

    for worker in ("s1", "s2"):
        assert in_transaction(engine, claim_as(worker, NOW)) is not None
    results: list[Any] = []
    with engine.begin() as first:
        assert claim_as("x1", later)(first) is not None  # expired s1's and s2's assignments
        second = threading.Thread(
            target=lambda: results.append(in_transaction(engine, claim_as("x2", later)))
        )
        second.start()
        second.join(timeout=0.5)  # on PostgreSQL it waits on the expired rows' locks
    second.join(timeout=30)
    assert len(results) == 1 and results[0] is not None, "the second claim found nothing"
    with engine.connect() as conn:
        statuses = conn.execute(
            text("SELECT status, count(*) FROM assignments GROUP BY status ORDER BY status")
        ).all()
    assert [tuple(s) for s in statuses] == [("accepted", 2), ("expired", 2)]


@pytest.mark.parametrize(
    ("statement", "retried"),
    [
        ("INSERT INTO probe (id, x, y, p) VALUES (2, 1, 1, NULL)", True),  # unique: a race
        ("INSERT INTO probe (id, x, y, p) VALUES (1, 2, 1, NULL)", True),  # primary key: a race
        ("INSERT INTO probe (id, x, y, p) VALUES (2, 2, -1, NULL)", False),  # CHECK
        ("INSERT INTO probe (id, x, y, p) VALUES (2, 2, 1, 99)", False),  # foreign key
        ("INSERT INTO probe (id, x, y, p) VALUES (2, 2, NULL, NULL)", False),  # NOT NULL
    ],
    ids=["unique", "primary-key", "check", "foreign-key", "not-null"],
)
def test_in_transaction_retries_lost_races_only(
    engine: Engine, statement: str, retried: bool
) -> None:
    """A unique violation means a concurrent transaction won: run again and see its rows. A
    CHECK, foreign-key or NOT NULL violation fails the same way every time: raise it at once
    (it used to be retried 8 times and then reported as "the database is busy")."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        conn.execute(
            text(
                "CREATE TABLE probe (id INTEGER PRIMARY KEY, x INTEGER UNIQUE, "
                "y INTEGER NOT NULL CHECK (y > 0), p INTEGER REFERENCES parent (id))"
            )
        )
        conn.execute(text("INSERT INTO probe (id, x, y, p) VALUES (1, 1, 1, NULL)"))
    attempts: list[int] = []

    def work(conn: Any) -> None:
        attempts.append(1)
        conn.execute(text(statement))

    if retried:
        with pytest.raises(database.Busy) as busy:
            in_transaction(engine, work, attempts=3)
        assert len(attempts) == 3
        assert busy.value.reason.startswith(("IntegrityError: ", "UniqueViolation: "))
    else:
        with pytest.raises(IntegrityError):
            in_transaction(engine, work, attempts=3)
        assert len(attempts) == 1
