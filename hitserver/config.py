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
# Longer than any one request should wait, and under the 60 s the writer queue allows.
MAX_LOCK_TIMEOUT_S = 55.0
# One participant claims a task every few seconds at most; a class behind one NAT address,
# a few a second. Inventing 100 ids an hour is no honest use of one address.
PRODUCTION_CLAIMS_PER_MINUTE = 600
PRODUCTION_NEW_WORKERS_PER_HOUR = 100


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
    # None: not set. Development then admits local workers; production refuses to start
    # until the config says yes or no (anyone can invent local worker ids).
    local_entry: bool | None = None
    prolific_completion_code: str | None = None
    prolific_failed_code: str | None = None
    catch_fail_fraction: float = 0.5
    proxies: int = 0
    # How long a transaction waits for a database lock before the request answers 503.
    db_lock_timeout_s: float = 30.0
    # Per client address (0: no limit): claims per minute, and new worker ids per hour that
    # get a slot (inventing ids is how one client could hoard every item's slots). Not set:
    # the production defaults below in production, no limit in development, where the demo,
    # `hitserver simulate` and the benchmarks send every worker from 127.0.0.1.
    claims_per_minute: int | None = None
    new_workers_per_hour: int | None = None
    # A request body must arrive within this many seconds (slow-body clients hold threads).
    body_timeout_s: float = 10.0

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def claim_limit(self) -> int:
        """Claims per client address per minute (0: no limit)."""
        if self.claims_per_minute is not None:
            return self.claims_per_minute
        return PRODUCTION_CLAIMS_PER_MINUTE if self.production else 0

    @property
    def new_worker_limit(self) -> int:
        """New worker ids per client address per hour (0: no limit)."""
        if self.new_workers_per_hour is not None:
            return self.new_workers_per_hour
        return PRODUCTION_NEW_WORKERS_PER_HOUR if self.production else 0

    @property
    def admits_local(self) -> bool:
        """Whether `/work` and `POST /api/assignments` admit local and simulated workers."""
        return self.local_entry is not False

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
        if self.local_entry is None:
            raise UserError(
                "production needs HITSERVER_LOCAL_ENTRY set explicitly: false for an "
                "MTurk/Prolific-only study, true to let anyone who finds /work enter an id"
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


def _to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError


def _to_int(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError
    return int(str(raw))


_CONVERTERS = {"int": _to_int, "float": lambda raw: float(str(raw)), "bool": _to_bool}


def _convert(name: str, kind: object, raw: object) -> object:
    """Turn a file or environment value into the field's type, naming the setting on failure."""
    try:
        if kind in ("str", "str | None"):
            value = str(raw)
            return value if value != "" or kind == "str" else None
        optional = str(kind).endswith(" | None")
        if optional and str(raw) == "":
            return None
        converter = _CONVERTERS.get(str(kind).removesuffix(" | None"))
        if converter is not None:
            return converter(raw)
    except ValueError:
        pass
    raise UserError(f"setting {name}: {raw!r} is not a valid {kind}")


def _from_file(path: str | Path, kinds: Mapping[str, str]) -> dict[str, object]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path}: not valid TOML ({exc})") from exc
    values: dict[str, object] = {}
    for key, raw in data.items():
        if key not in kinds:
            raise UserError(f"config file {path}: unknown setting {key!r}")
        values[key] = _convert(key, kinds[key], raw)
    return values


def _check_ranges(settings: Settings) -> None:
    """Refuse values outside their range, one line naming the setting."""
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
    if not 0.05 <= settings.db_lock_timeout_s <= MAX_LOCK_TIMEOUT_S:
        raise UserError(f"db_lock_timeout_s must be between 0.05 and {MAX_LOCK_TIMEOUT_S}")
    if not 0.1 <= settings.body_timeout_s <= 300:
        raise UserError("body_timeout_s must be between 0.1 and 300")
    if settings.claim_limit < 0 or settings.new_worker_limit < 0:
        raise UserError("claims_per_minute and new_workers_per_hour must be >= 0 (0: no limit)")


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
        values.update(_from_file(path, kinds))
    for key, kind in kinds.items():
        env_name = "HITSERVER_" + key.upper()
        if env_name in environ:
            values[key] = _convert(env_name, kind, environ[env_name])
    for key, raw in overrides.items():
        if raw is not None:
            values[key] = _convert(key, kinds[key], raw)

    settings = Settings(**values)  # type: ignore[arg-type]
    _check_ranges(settings)
    return settings
