"""What one running app holds: its settings, its database engine and its clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import Engine

from hitserver.config import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServerState:
    settings: Settings
    engine: Engine
    clock: Callable[[], datetime] = utc_now


def state() -> ServerState:
    """The state of the app handling the current request."""
    return current_app.extensions["hitserver"]
