"""What one running app holds: its settings, its database engine and its clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import Connection, Engine

from hitserver.config import Settings


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
