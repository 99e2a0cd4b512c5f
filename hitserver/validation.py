"""Checks on what clients send. Pure functions: a payload in, clean values or a FieldError out.

Status codes (docs/contracts.md 10): 400 when the request is malformed (not a JSON object, a
missing or unknown field, a field of the wrong type), 422 when a field has the right type but a
value outside its range. Both name the field.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from hitserver.manifest import NAME_RE

# \A ... \Z, used with fullmatch: `$` also matches before a trailing newline, so
# "alice\n" passed `^...$` with `re.match` and became a second worker that looks like "alice"
# (and a blocked Prolific participant could come back as "PID%0A").
ASSIGNMENT_ID_RE = re.compile(r"\Aa[0-9a-f]{24}\Z")
WORKER_ID_RE = re.compile(r"\A[A-Za-z0-9_.@:-]{1,64}\Z")
PROLIFIC_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
MTURK_ID_RE = re.compile(r"\A[A-Z0-9]{1,64}\Z")
# Characters that show nothing: a reason made only of these (and white space) is no reason.
# Format characters (Cf: zero-width space and joiners, bidi controls, BOM) are found by their
# category; these are letters and symbols that render blank.
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
API_PLATFORMS = ("local", "simulated")


class FieldError(Exception):
    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = f"{field}: {message}"


@dataclass(frozen=True)
class Answer:
    token: str
    choice: int
    reason: str


@dataclass(frozen=True)
class ClaimRequest:
    worker_id: str
    platform: str
    batch: str | None


def _object(payload: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise FieldError(400, "body", "must be a JSON object")
    for key in payload:
        if key not in allowed:
            raise FieldError(400, str(key)[:64], f"unknown field (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in payload:
            raise FieldError(400, key, "is required")
    return payload


def visible_chars(text: str) -> int:
    """How many characters of `text` show something (not white space, format characters,
    combining marks on their own, or blank-looking letters)."""
    return sum(
        1
        for c in text
        if not c.isspace()
        and unicodedata.category(c) not in ("Cf", "Cc", "Cs", "Zs", "Zl", "Zp", "Mn", "Me")
        and c not in BLANK_LOOKING
    )


def clean_reason(raw: Any, min_chars: int, max_chars: int) -> str:
    """The reason as stored: NFC-normalised, surrounding white space removed, control
    characters other than newline and tab refused, and at least `min_chars` characters that
    show something (zero-width and other invisible characters do not count)."""
    if not isinstance(raw, str):
        raise FieldError(400, "reason", "must be a string")
    text = unicodedata.normalize("NFC", raw.replace("\r\n", "\n")).strip()
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in text):
        raise FieldError(422, "reason", "must not contain control characters")
    if len(text) < min_chars or visible_chars(text) < min_chars:
        raise FieldError(422, "reason", f"is required (at least {min_chars} visible characters)")
    if len(text) > max_chars:
        raise FieldError(422, "reason", f"is longer than {max_chars} characters")
    return text


def clean_choice(raw: Any) -> int:
    """An integer 1..5 (contracts 9); the digit strings "1".."5" from HTML forms count too."""
    if isinstance(raw, bool):
        raise FieldError(400, "choice", "must be an integer 1..5")
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) == 1:
        raw = int(raw)
    if not isinstance(raw, int):
        raise FieldError(400, "choice", "must be an integer 1..5")
    if not 1 <= raw <= 5:
        raise FieldError(422, "choice", "must be between 1 and 5")
    return raw


def clean_token(raw: Any) -> str:
    """A token as the server issues them: URL-safe ASCII. Anything else cannot match, and a
    lone surrogate (a "\\ud800" JSON escape) could not even be hashed, so it is refused here."""
    if not isinstance(raw, str) or not raw or len(raw) > 200 or not raw.isascii():
        raise FieldError(400, "token", "must be the assignment's token string")
    return raw


def parse_answer(payload: Any, min_chars: int, max_chars: int) -> Answer:
    # `telemetry` (optional) is checked by hitserver.quality.parse_telemetry.
    body = _object(
        payload, ("token", "choice", "reason", "telemetry"), ("token", "choice", "reason")
    )
    return Answer(
        token=clean_token(body["token"]),
        choice=clean_choice(body["choice"]),
        reason=clean_reason(body["reason"], min_chars, max_chars),
    )


def parse_token(payload: Any) -> str:
    body = _object(payload, ("token",), ("token",))
    return clean_token(body["token"])


def clean_worker_id(raw: Any) -> str:
    if not isinstance(raw, str):
        raise FieldError(400, "worker_id", "must be a string")
    if not WORKER_ID_RE.fullmatch(raw):
        raise FieldError(422, "worker_id", "must be 1-64 letters, digits or _.@:-")
    return raw


def parse_claim(payload: Any) -> ClaimRequest:
    body = _object(payload, ("worker_id", "platform", "batch"), ("worker_id",))
    platform = body.get("platform", "local")
    if not isinstance(platform, str):
        raise FieldError(400, "platform", "must be a string")
    if platform not in API_PLATFORMS:
        raise FieldError(
            422,
            "platform",
            f"must be one of {', '.join(API_PLATFORMS)} (MTurk and Prolific workers enter "
            "through /mturk and /prolific)",
        )
    batch = body.get("batch")
    if batch is not None and (not isinstance(batch, str) or not NAME_RE.fullmatch(batch)):
        raise FieldError(400, "batch", "must be a batch name")
    return ClaimRequest(clean_worker_id(body["worker_id"]), platform, batch)
