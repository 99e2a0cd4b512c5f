"""CSRF protection for the HTML forms (admin and worker entry): a per-session secret that each
form carries in a hidden field. JSON routes authenticate with tokens instead of cookies."""

from __future__ import annotations

import secrets

from flask import abort, request, session

from hitserver.security import secret_equals


def csrf_token() -> str:
    """The session's CSRF token, made on first use (templates call this)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def check_csrf() -> None:
    """Abort with 400 unless the posted form carries the session's CSRF token."""
    given = request.form.get("csrf_token", "")
    expected = session.get("csrf")
    if not isinstance(expected, str) or not secret_equals(given, expected):
        abort(400, "the form's CSRF token is missing or stale; reload the page and try again")
