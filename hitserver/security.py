"""Unguessable identifiers and constant-time checks (guessable participant ids and plain-text
secrets are complaints against earlier HIT servers; see docs/hitserver.md, "Security choices")."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_assignment_id() -> str:
    """Our assignment id: 96 random bits, also safe in URLs."""
    return "a" + secrets.token_hex(12)


def new_token() -> str:
    """The per-assignment token a worker's page must send with its answer (256 random bits)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """SHA-256 of a token: the database stores only this, so a copy of it submits nothing."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(token_digest(token), digest)


def secret_equals(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (compared as SHA-256 so lengths do not leak)."""
    return hmac.compare_digest(token_digest(given), token_digest(expected))
