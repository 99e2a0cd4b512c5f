"""A small client for Prolific's REST API (https://docs.prolific.com/api-reference).

Authentication is the header `Authorization: Token <token>`; the token comes from
`PROLIFIC_API_TOKEN` and the base URL from `PROLIFIC_API_URL` (default Prolific's), so the
tests run the same code against a local stand-in.

Retries: 429 (rate limited: the request was not processed) is always retried, after the
`Retry-After` seconds when the answer gives them; 5xx, timeouts and dropped connections are
retried with exponential back-off only for requests that are safe to repeat. For the others
(creating a study, paying a bonus) the caller gets `Unsure` and decides: the request may or may
not have been carried out. Every other failure is one line: 401 (token), 400 with Prolific's
field errors, 404, or the retries exhausted.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hitserver.errors import UserError

DEFAULT_URL = "https://api.prolific.com"
TOKEN_ENV = "PROLIFIC_API_TOKEN"
URL_ENV = "PROLIFIC_API_URL"
MAX_PAGES = 1000
NETWORK_ERRORS = (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError)


class ProlificError(UserError):
    """Prolific refused the request, or could not be reached; nothing was done."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unsure(ProlificError):
    """A request that is not safe to repeat failed in a way that leaves open whether Prolific
    carried it out (a timeout, a dropped connection, a 5xx)."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _field_errors(detail: Any) -> str:
    """Prolific's `detail`: a string, or field -> [messages] (nested for list items)."""
    if isinstance(detail, dict):
        parts = []
        for name, problems in detail.items():
            if isinstance(problems, list) and all(isinstance(p, str) for p in problems):
                text = " ".join(problems)
            else:
                text = _field_errors(problems)
            parts.append(f"{name}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return "; ".join(_field_errors(d) for d in detail if d)
    return str(detail)


def explain(body: Any) -> str:
    """The readable part of an error answer: `{"error": {"title", "detail"}}` or `{"detail"}`."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            detail = error.get("detail") or error.get("title")
            if detail:
                return _field_errors(detail)
        return _field_errors(body)
    return str(body)[:300]


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ProlificClient:
    token: str
    base_url: str = DEFAULT_URL
    timeout_s: float = 30.0
    attempts: int = 5
    backoff_s: float = 1.0
    max_wait_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise UserError(f"set {TOKEN_ENV} to your Prolific API token")
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise UserError(f"{URL_ENV} must be an https:// URL, not {self.base_url!r}")
        if parsed.scheme == "http" and not _loopback(parsed.hostname):
            raise UserError(f"{URL_ENV} must use https:// (the token would travel in clear)")
        self.base_url = self.base_url.rstrip("/")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **kwargs: Any) -> ProlificClient:
        env = os.environ if environ is None else environ
        return cls(env.get(TOKEN_ENV, ""), env.get(URL_ENV) or DEFAULT_URL, **kwargs)

    # --- one HTTP exchange ---------------------------------------------------------------

    def _send(self, method: str, url: str, body: Any) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return Answer(response.status, _json(response.read()), dict(response.headers))
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(exc.code, _json(exc.read()), dict(exc.headers))

    def _wait(self, attempt: int, answer: Answer | None) -> float:
        retry_after = answer.headers.get("Retry-After") if answer is not None else None
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_wait_s)
            except ValueError:
                pass
        return min(self.backoff_s * 2**attempt, self.max_wait_s)

    def _attempt(self, method: str, url: str, body: Any, safe: bool) -> tuple[Answer | None, str]:
        """One try: the answer (None when none came) and what went wrong, if anything."""
        what = f"{method} {urllib.parse.urlsplit(url).path}"
        try:
            answer = self._send(method, url, body)
        except NETWORK_ERRORS as exc:
            last = f"no answer ({getattr(exc, 'reason', None) or exc or type(exc).__name__})"
            if not safe:
                raise Unsure(f"Prolific: {what}: {last}; it may or may not have been done") from exc
            return None, last
        if answer.status < 400:
            return answer, ""
        if answer.status == 429:
            return answer, "HTTP 429 (rate limited)"
        if answer.status >= 500:
            if not safe:
                raise Unsure(
                    f"Prolific: {what}: HTTP {answer.status}; it may or may not have been done",
                    answer.status,
                )
            return answer, f"HTTP {answer.status}"
        raise _refusal(what, answer)

    def request(self, method: str, path: str, body: Any = None, *, safe: bool = True) -> Any:
        """Send one request and return the decoded JSON answer (None when empty).

        `safe`: the request may be repeated (GETs, idempotent transitions). Unsafe ones are
        retried only after a 429, and raise `Unsure` after a timeout or a 5xx."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        last = "no answer"
        for attempt in range(self.attempts):
            answer, last = self._attempt(method, url, body, safe)
            if answer is not None and answer.status < 400:
                return answer.body
            if attempt + 1 < self.attempts:
                self.sleep(self._wait(attempt, answer))
        what = f"{method} {urllib.parse.urlsplit(url).path}"
        raise ProlificError(f"Prolific: {what}: gave up after {self.attempts} attempts ({last})")

    # --- helpers -------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def pages(self, path: str) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list (`results`, following `_links.next.href`)."""
        url: str | None = path
        for _ in range(MAX_PAGES):
            if url is None:
                return
            page = self.get(url)
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise ProlificError(f"Prolific: GET {path}: unexpected answer (no results list)")
            yield from page["results"]
            next_link = (page.get("_links") or {}).get("next") or {}
            url = next_link.get("href") if isinstance(next_link, dict) else None
        raise ProlificError(f"Prolific: GET {path}: more than {MAX_PAGES} pages")


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _refusal(what: str, answer: Answer) -> ProlificError:
    if answer.status == 401:
        return ProlificError(
            f"Prolific refused the API token (401) for {what}: check {TOKEN_ENV}", 401
        )
    if answer.status == 404:
        return ProlificError(f"Prolific: {what}: not found (404)", 404)
    return ProlificError(
        f"Prolific refused {what} ({answer.status}): {explain(answer.body)}", answer.status
    )
