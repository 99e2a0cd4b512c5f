"""Per-client-address limits kept in the database (table `throttles`), so that every gunicorn
process counts the same requests: claims per minute, new worker ids per hour, and failed admin
log-ins with a growing back-off (issue 28: slot hoarding, password guessing).

Each counter is one row per (scope, address), updated with one atomic upsert. A request that a
limit refuses raises `RateLimited` inside its transaction, which rolls the increment back: only
requests that were served count.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hitserver.models import Throttle
from hitserver.policy import PolicyError

# Failed admin log-ins: this many are free per address, then each one doubles the wait
# (1 s, 2 s, 4 s, ...) up to LOGIN_MAX_WAIT_S; an hour without failures starts over.
LOGIN_FREE_FAILURES = 5
LOGIN_MAX_WAIT_S = 900
LOGIN_WINDOW_S = 3600
KEY_CHARS = 100


class RateLimited(PolicyError):
    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, None)
        self.retry_after_s = max(1, int(retry_after_s + 0.999))


def _upsert(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def count(
    conn: Connection, scope: str, key: str, now: datetime, window_s: int
) -> tuple[int, datetime]:
    """Count one event for (scope, key) in a fixed window of `window_s` seconds; returns the
    count in the current window (this event included) and the window's start."""
    expired = Throttle.window_start <= now - timedelta(seconds=window_s)
    statement = (
        _upsert(conn)(Throttle)
        .values(scope=scope, key=key[:KEY_CHARS], window_start=now, count=1, blocked_until=None)
        .on_conflict_do_update(
            index_elements=["scope", "key"],
            set_={
                "count": case((expired, 1), else_=Throttle.count + 1),
                "window_start": case((expired, now), else_=Throttle.window_start),
            },
        )
        .returning(Throttle.count, Throttle.window_start)
    )
    row = conn.execute(statement).one()
    return row.count, row.window_start


def limit(
    conn: Connection, scope: str, key: str, now: datetime, *, per_window: int, window_s: int
) -> None:
    """Count this event; raise RateLimited past `per_window` events (0: no limit, no write)."""
    if per_window <= 0:
        return
    seen, started = count(conn, scope, key, now, window_s)
    if seen > per_window:
        wait = (started + timedelta(seconds=window_s) - now).total_seconds()
        raise RateLimited(f"too many requests from this address ({scope}); try again later", wait)


def login_wait(conn: Connection, key: str, now: datetime) -> float:
    """Seconds this address must still wait before its next admin log-in attempt (0: none)."""
    until = conn.execute(
        select(Throttle.blocked_until).where(
            Throttle.scope == "login", Throttle.key == key[:KEY_CHARS]
        )
    ).scalar()
    return 0.0 if until is None else max(0.0, (until - now).total_seconds())


def login_failed(conn: Connection, key: str, now: datetime) -> None:
    """Count a failed log-in; past the free ones, block the address for a doubling wait."""
    failures, _ = count(conn, "login", key, now, LOGIN_WINDOW_S)
    if failures >= LOGIN_FREE_FAILURES:
        wait = min(2 ** (failures - LOGIN_FREE_FAILURES), LOGIN_MAX_WAIT_S)
        conn.execute(
            Throttle.__table__.update()
            .where(Throttle.scope == "login", Throttle.key == key[:KEY_CHARS])
            .values(blocked_until=now + timedelta(seconds=wait))
        )


def login_succeeded(conn: Connection, key: str) -> None:
    conn.execute(delete(Throttle).where(Throttle.scope == "login", Throttle.key == key[:KEY_CHARS]))
