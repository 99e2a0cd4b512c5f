"""Server settings: defaults, then an optional TOML file, then `HITSERVER_*` environment variables.

Every setting has one environment variable (`HITSERVER_` + the upper-case name) and one key in
the optional config file (the lower-case name). The file is named by `--config` or
`$HITSERVER_CONFIG`. Outside development the server refuses to start with a missing, short or
well-known secret key (hard-coded secret keys are a complaint against psiTurk and Turkle).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from hitserver.errors import UserError

ENVIRONMENTS = ("development", "production")
# Values people paste from tutorials; a server outside development refuses them.
WELL_KNOWN_SECRETS = frozenset(
    {"dev", "development", "secret", "changeme", "change-me", "default", "password", "test", "key"}
)
MIN_SECRET_CHARS = 32
# 30 days: longer than any study keeps a task open, and far from the largest timedelta
# (a timeout near it made every claim fail computing the deadline).
MAX_ASSIGNMENT_TIMEOUT_S = 30 * 24 * 3600


def default_database_url(environ: Mapping[str, str]) -> str:
    """`sqlite:///$IBD_HOME/hitserver.sqlite` (IBD_HOME defaults to ./ibd-data), see contracts 0."""
    home = Path(environ.get("IBD_HOME") or "ibd-data").resolve()
    return f"sqlite:///{home / 'hitserver.sqlite'}"


@dataclass(frozen=True)
class Settings:
    """Everything the server and the command line read from the outside world."""

    database_url: str
    env: str = "development"
    secret_key: str | None = None
    admin_token: str | None = None
    admin_password_hash: str | None = None
    assignment_timeout_s: int = 1800
    reason_min_chars: int = 1
    reason_max_chars: int = 2000
    local_entry: bool = True
    prolific_completion_code: str | None = None
    prolific_failed_code: str | None = None
    catch_fail_fraction: float = 0.5
    proxies: int = 0

    @property
    def production(self) -> bool:
        return self.env == "production"

    def with_dev_secrets(self) -> Settings:
        """In development, a missing secret key becomes a random one for this process tree."""
        if self.secret_key or self.production:
            return self
        return dataclasses.replace(self, secret_key=secrets.token_hex(32))

    def check_can_serve(self) -> None:
        """Refuse to serve outside development with missing or weak credentials."""
        if not self.production:
            return
        _check_secret("HITSERVER_SECRET_KEY", self.secret_key, required=True)
        _check_secret("HITSERVER_ADMIN_TOKEN", self.admin_token, required=False)
        if not self.admin_token and not self.admin_password_hash:
            raise UserError(
                "production needs HITSERVER_ADMIN_TOKEN or HITSERVER_ADMIN_PASSWORD_HASH "
                "(create a hash with `hitserver hash-password`)"
            )


def _check_secret(name: str, value: str | None, *, required: bool) -> None:
    if not value:
        if required:
            raise UserError(f"{name} is missing; production refuses to start without it")
        return
    if value.strip().lower() in WELL_KNOWN_SECRETS or len(value) < MIN_SECRET_CHARS:
        raise UserError(
            f"{name} is a default or shorter than {MIN_SECRET_CHARS} characters; "
            'generate one with: python -c "import secrets; print(secrets.token_hex(32))"'
        )


def _convert(name: str, kind: object, raw: object) -> object:
    """Turn a file or environment value into the field's type, naming the setting on failure."""
    text_kinds = {"str", "str | None"}
    try:
        if kind in text_kinds:
            value = str(raw)
            return value if value != "" or kind == "str" else None
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            return int(str(raw))
        if kind == "float":
            return float(str(raw))
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError
    except ValueError:
        pass
    raise UserError(f"setting {name}: {raw!r} is not a valid {kind}")


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    **overrides: object,
) -> Settings:
    """Build settings: defaults < config file < environment < explicit overrides (CLI flags)."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {"database_url": default_database_url(environ)}
    kinds = {f.name: str(f.type) for f in fields(Settings)}

    path = config_file or environ.get("HITSERVER_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path}: not valid TOML ({exc})") from exc
        for key, raw in data.items():
            if key not in kinds:
                raise UserError(f"config file {path}: unknown setting {key!r}")
            values[key] = _convert(key, kinds[key], raw)

    for key, kind in kinds.items():
        env_name = "HITSERVER_" + key.upper()
        if env_name in environ:
            values[key] = _convert(env_name, kind, environ[env_name])

    for key, raw in overrides.items():
        if raw is not None:
            values[key] = _convert(key, kinds[key], raw)

    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.env not in ENVIRONMENTS:
        raise UserError(
            f"HITSERVER_ENV must be one of {', '.join(ENVIRONMENTS)}, not {settings.env!r}"
        )
    if not 1 <= settings.reason_min_chars <= settings.reason_max_chars:
        raise UserError("reason length limits need 1 <= reason_min_chars <= reason_max_chars")
    if not 1 <= settings.assignment_timeout_s <= MAX_ASSIGNMENT_TIMEOUT_S:
        raise UserError(
            f"assignment_timeout_s must be between 1 and {MAX_ASSIGNMENT_TIMEOUT_S} seconds "
            "(30 days)"
        )
    if not 0.0 <= settings.catch_fail_fraction <= 1.0:
        raise UserError("catch_fail_fraction must be between 0 and 1")
    return settings
