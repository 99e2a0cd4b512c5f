"""Fixtures for the hitserver tests: a database per test (SQLite file, or a fresh PostgreSQL
schema), a controllable clock, an app factory, and the batch writer."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hitserver.app import create_app
from hitserver.config import load_settings

HERE = Path(__file__).resolve().parent
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"


def _load(name: str) -> ModuleType:
    """Import a helper module beside this file (tests run with --import-mode=importlib)."""
    module_name = f"hitserver_tests_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


batchfixture = _load("batchfixture")
liveserver = _load("liveserver")


@pytest.fixture
def write_batch() -> Callable[..., Path]:
    return batchfixture.write_batch


@pytest.fixture
def live() -> ModuleType:
    """The live-server helpers (`running_server`, `Http`)."""
    return liveserver


def schema_url(base: str, schema: str) -> str:
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a fresh schema, dropped afterwards."""
    schema = f"hs_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield schema_url(postgres_url, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hitserver.sqlite'}"
    return request.getfixturevalue("pg_schema_url")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_app(db_url: str, clock: Clock) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        values: dict[str, Any] = {
            "database_url": db_url,
            "admin_token": ADMIN_TOKEN,
            "secret_key": "x" * 40,
        }
        values.update(overrides)
        app = create_app(load_settings({}, **values), clock=clock)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["hitserver"].engine.dispose()
