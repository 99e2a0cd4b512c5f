"""Settings: precedence, type errors naming the setting, and the production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitserver.app import create_app
from hitserver.config import load_settings
from hitserver.errors import UserError

GOOD_SECRET = "s" * 16 + "0123456789abcdef"


def test_defaults_follow_ibd_home(tmp_path: Path) -> None:
    settings = load_settings({"IBD_HOME": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'hitserver.sqlite'}"
    assert settings.env == "development"
    assert settings.assignment_timeout_s == 1800


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "hitserver.toml"
    config.write_text('assignment_timeout_s = 60\nlocal_entry = false\nenv = "development"\n')
    from_file = load_settings({}, config_file=config)
    assert (from_file.assignment_timeout_s, from_file.local_entry) == (60, False)
    env = {"HITSERVER_CONFIG": str(config), "HITSERVER_ASSIGNMENT_TIMEOUT_S": "90"}
    assert load_settings(env).assignment_timeout_s == 90
    assert load_settings(env, assignment_timeout_s=120).assignment_timeout_s == 120
    assert load_settings(env, database_url="sqlite:///x.db").database_url == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HITSERVER_ASSIGNMENT_TIMEOUT_S": "soon"}, "HITSERVER_ASSIGNMENT_TIMEOUT_S"),
        ({"HITSERVER_LOCAL_ENTRY": "maybe"}, "HITSERVER_LOCAL_ENTRY"),
        ({"HITSERVER_ENV": "staging"}, "HITSERVER_ENV must be one of"),
        ({"HITSERVER_REASON_MIN_CHARS": "0"}, "reason length limits"),
        ({"HITSERVER_CATCH_FAIL_FRACTION": "2"}, "catch_fail_fraction"),
        # A deadline past what datetime holds made every claim fail (OverflowError, a 500).
        (
            {"HITSERVER_ASSIGNMENT_TIMEOUT_S": str(10**14)},
            r"^assignment_timeout_s must be between 1 and 2592000 seconds \(30 days\)$",
        ),
        ({"HITSERVER_ASSIGNMENT_TIMEOUT_S": "0"}, "assignment_timeout_s must be between 1 and"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_settings(environ)


def test_config_file_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("colour = 'red'\n")
    with pytest.raises(UserError, match="unknown setting 'colour'"):
        load_settings({}, config_file=config)
    config.write_text("[[[")
    with pytest.raises(UserError, match="not valid TOML"):
        load_settings({}, config_file=config)
    with pytest.raises(UserError, match="config file .*missing.toml"):
        load_settings({}, config_file=tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "HITSERVER_SECRET_KEY is missing"),
        ({"HITSERVER_SECRET_KEY": "changeme"}, "default or shorter"),
        ({"HITSERVER_SECRET_KEY": "x" * 31}, "default or shorter"),
        ({"HITSERVER_SECRET_KEY": GOOD_SECRET}, "ADMIN_TOKEN or HITSERVER_ADMIN_PASSWORD_HASH"),
        (
            {"HITSERVER_SECRET_KEY": GOOD_SECRET, "HITSERVER_ADMIN_TOKEN": "secret"},
            "HITSERVER_ADMIN_TOKEN is a default",
        ),
    ],
)
def test_production_refuses_missing_or_weak_secrets(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    environ = {"HITSERVER_ENV": "production", "IBD_HOME": str(tmp_path), **environ}
    with pytest.raises(UserError, match=message):
        create_app(load_settings(environ))
    assert not (tmp_path / "hitserver.sqlite").exists()


def test_production_starts_with_strong_secrets(tmp_path: Path) -> None:
    environ = {
        "HITSERVER_ENV": "production",
        "HITSERVER_SECRET_KEY": GOOD_SECRET,
        "HITSERVER_ADMIN_TOKEN": "t" * 40,
        "HITSERVER_LOCAL_ENTRY": "false",  # production needs it said explicitly
        "IBD_HOME": str(tmp_path),
    }
    app = create_app(load_settings(environ))
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SECRET_KEY"] == GOOD_SECRET
    app.extensions["hitserver"].engine.dispose()


def test_development_makes_a_random_secret_per_process() -> None:
    first = load_settings({}).with_dev_secrets()
    second = load_settings({}).with_dev_secrets()
    assert first.secret_key and len(first.secret_key) == 64
    assert first.secret_key != second.secret_key
    fixed = load_settings({"HITSERVER_SECRET_KEY": GOOD_SECRET}).with_dev_secrets()
    assert fixed.secret_key == GOOD_SECRET
