"""Fixtures shared by every package's tests: the external servers that scripts/test-services.sh
installs and starts (PostgreSQL, Chromium). Locally a test needing one skips when it is missing;
in CI (CI=true) it fails instead, so a broken install step cannot hide behind a green run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _services_env() -> dict[str, str]:
    env_file = ROOT / ".services.env"
    values: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


def _require(name: str, what: str) -> str:
    value = os.environ.get(name) or _services_env().get(name)
    if value:
        return value
    message = f"{what} is not available ({name} unset; run scripts/test-services.sh as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a real PostgreSQL database for tests (tests must clean up their tables)."""
    return _require("HITSERVER_TEST_PG_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of Debian's chromium binary, for Playwright's `executable_path`."""
    return _require("CHROMIUM_PATH", "Chromium")
