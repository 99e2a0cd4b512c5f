"""What one running app holds: its settings, its database engine and its clock; and a claim
as every entry point makes it (throttled per client address)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app, request
from sqlalchemy import Connection, Engine

from hitserver.config import Settings
from hitserver.policy import Claim, claim
from hitserver.throttle import limit

CLAIM_WINDOW_S = 60
NEW_WORKER_WINDOW_S = 3600


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServerState:
    """`write` runs a unit of work in a committed transaction (see `commits.writer_for`)."""

    settings: Settings
    engine: Engine
    write: Callable[[Callable[[Connection], Any]], Any]
    clock: Callable[[], datetime] = utc_now


def state() -> ServerState:
    """The state of the app handling the current request."""
    return current_app.extensions["hitserver"]


def client_address() -> str:
    """The client's address (the proxy's `X-Forwarded-For` when `proxies` trusts it)."""
    return request.remote_addr or "unknown"


def claim_for_client(
    server: ServerState,
    platform: str,
    worker_key: str,
    batch: str | None,
    platform_assignment_id: str | None,
) -> Claim | None:
    """`policy.claim` for the current request, counted against its client address: claims
    per minute, and newcomers per hour that get a slot (inventing worker ids is how one client
    would hoard every item's slots). Over a limit: `RateLimited` (429)."""
    settings = server.settings
    address = client_address()
    now = server.clock()

    def newcomer(conn: Connection) -> None:
        limit(
            conn,
            "new-worker",
            address,
            now,
            per_window=settings.new_worker_limit,
            window_s=NEW_WORKER_WINDOW_S,
        )

    def work(conn: Connection) -> Claim | None:
        limit(
            conn,
            "claim",
            address,
            now,
            per_window=settings.claim_limit,
            window_s=CLAIM_WINDOW_S,
        )
        return claim(
            conn,
            platform=platform,
            worker_key=worker_key,
            now=now,
            timeout_s=settings.assignment_timeout_s,
            batch=batch,
            platform_assignment_id=platform_assignment_id,
            on_new_worker=newcomer,
        )

    result: Claim | None = server.write(work)
    return result
