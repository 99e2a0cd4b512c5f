"""Database engines (SQLite file or PostgreSQL), schema migrations, and retried transactions.

SQLite runs in WAL mode with `synchronous=FULL` (an acknowledged answer survives a crash or a
power cut), a busy timeout, foreign keys on, and `BEGIN IMMEDIATE` for every transaction so
that writers queue on the lock instead of failing on a read-to-write upgrade. PostgreSQL gets
the same bound as a `lock_timeout`: a request never waits longer than that for a lock, and a
database that stays locked answers 503 (the app's handler), never 500.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from hitserver.errors import UserError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# How long one transaction may wait for a lock (SQLite busy timeout, PostgreSQL lock_timeout).
DEFAULT_LOCK_TIMEOUT_S = SQLITE_BUSY_TIMEOUT_MS / 1000
# Any constant works; it only has to be the same in every process migrating this database.
PG_MIGRATION_LOCK = 0x68697473
# Errors that mean "a concurrent transaction won a race; run again and see what it left":
# PostgreSQL's unique violation, serialization failure, deadlock and lock timeout...
RETRYABLE_PGCODES = {"23505", "40001", "40P01", "55P03"}
# ...and SQLite's unique / primary-key violation and busy or locked database. Every other
# failure (a CHECK, a foreign key, NOT NULL) is a bug or a bad value: it would fail the same way
# on every attempt, so it is raised at once instead of turning into `Busy` after the retries.
RETRYABLE_SQLITE_ERRORS = {
    "SQLITE_CONSTRAINT_UNIQUE",
    "SQLITE_CONSTRAINT_PRIMARYKEY",
    "SQLITE_BUSY",
    "SQLITE_BUSY_SNAPSHOT",
    "SQLITE_BUSY_TIMEOUT",
    "SQLITE_LOCKED",
    "SQLITE_LOCKED_SHAREDCACHE",
}

T = TypeVar("T")
# Each engine's lock timeout, which also bounds `in_transaction`'s retries.
LOCK_TIMEOUTS: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


class Busy(Exception):
    """The database stayed locked or kept conflicting past the retry budget (answer 503)."""

    @property
    def reason(self) -> str:
        """The last lost race or lock wait, on one line (for the server log)."""
        cause = self.__cause__
        if isinstance(cause, DBAPIError) and cause.orig is not None:
            first_line = (str(cause.orig).splitlines() or [""])[0]
            return f"{type(cause.orig).__name__}: {first_line}"
        return "no database error recorded"


def make_engine(
    url: str, *, pool_size: int = 5, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> Engine:
    """An engine for a `sqlite:///FILE` or `postgresql+psycopg://...` URL; a transaction waits
    at most `lock_timeout_s` for a lock."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UserError(f"database URL {url!r} is not a valid SQLAlchemy URL") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise UserError("SQLite needs a file (sqlite:///path/hitserver.sqlite), not memory")
        folder = Path(database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a read-only disk, ...
            reason = exc.strerror or str(exc)
            raise UserError(
                f"cannot create the folder {folder} for the database: {reason}"
            ) from exc
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
        busy_ms = max(1, round(lock_timeout_s * 1000))

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            _sqlite_on_connect(dbapi_connection, busy_ms)

        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        LOCK_TIMEOUTS[engine] = lock_timeout_s
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        # No pre-ping (a round trip per request): a connection PostgreSQL dropped fails once,
        # is invalidated by SQLAlchemy, and `in_transaction` runs the work again.
        engine = create_engine(parsed, pool_size=pool_size, max_overflow=pool_size)
        lock_ms = max(1, round(lock_timeout_s * 1000))

        def on_pg_connect(dbapi_connection: Any, _record: Any) -> None:
            # Without it a claim behind a held table lock waits forever (a hung request).
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {lock_ms}")
            dbapi_connection.commit()

        event.listen(engine, "connect", on_pg_connect)
        LOCK_TIMEOUTS[engine] = lock_timeout_s
        return engine
    raise UserError(f"database URL {url!r}: only sqlite and postgresql are supported")


def _sqlite_on_connect(dbapi_connection: Any, busy_ms: int) -> None:
    # Hand transaction control to the "begin" listener (the pysqlite driver would otherwise
    # open deferred transactions by itself).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # On the driver's connection: SQLAlchemy's statement machinery costs more than the BEGIN.
    # Its errors bypass SQLAlchemy's wrapping, so they are wrapped here: a raw
    # `sqlite3.OperationalError` ("database is locked") would escape both the retry in
    # `in_transaction` and the app's 503 handler and answer 500.
    try:
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise DBAPIError.instance(
            "BEGIN IMMEDIATE", None, exc, sqlite3.Error, hide_parameters=True
        ) from exc


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe when several processes start at once."""
    try:
        if current_revision(engine) == head_revision():
            return
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
            # SQLite: BEGIN IMMEDIATE already holds the write lock for the whole upgrade.
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except OperationalError as exc:
        raise UserError(f"cannot open the database: {exc.orig}") from exc


def _retryable(exc: DBAPIError) -> bool:
    """Whether `exc` is a lost race (or a dropped connection) that running again can win."""
    if exc.connection_invalidated:
        return True
    # psycopg 3 names the SQLSTATE `sqlstate`, psycopg2 `pgcode`.
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code is not None:
        return code in RETRYABLE_PGCODES
    # The sqlite3 module's extended result code name (Python 3.11+).
    name = getattr(exc.orig, "sqlite_errorname", None)
    if name is not None:
        return name in RETRYABLE_SQLITE_ERRORS
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower()


def in_transaction(engine: Engine, work: Callable[[Connection], T], *, attempts: int = 8) -> T:
    """Run `work` in a transaction; when it loses a race (a unique constraint, a serialization
    failure, a deadlock, a lock timeout) or its connection was dropped, run it again from the
    start, at most `attempts` times, then raise `Busy`. Any other database error (a CHECK or
    foreign-key violation, a bad value) is raised at once.

    The database constraints decide every race; retrying re-reads the state the winner left.
    Retries also stop once the engine's lock timeout has passed since the first attempt: a
    database that stayed locked that long is answered with 503 now, not after `attempts`
    more full waits.
    """
    deadline = time.monotonic() + LOCK_TIMEOUTS.get(engine, DEFAULT_LOCK_TIMEOUT_S)
    last: DBAPIError | None = None
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                return work(conn)
        except DBAPIError as exc:
            if not _retryable(exc):
                raise
            last = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.001 * 2**attempt, 0.05))
    raise Busy("the database is busy; try again") from last
