"""Test helper: simulated Prolific participants (the stand-in starts their submission, they
answer on our server, and the completion code of the thank-you page goes back to the
stand-in). Not product code."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONFIG_RE = re.compile(r'<script id="hit-config" type="application/json">(.*?)</script>', re.S)
COMPLETE_RE = re.compile(r'url=(https://app\.prolific\.com/submissions/complete\?[^"]+)"')
MAX_TASKS = 50

# (method, path, json body) -> (status, Location header or "", body text)
Transport = Callable[[str, str, Any], tuple[int, str, str]]


def flask_transport(app: Any) -> Transport:
    client = app.test_client()

    def send(method: str, path: str, body: Any) -> tuple[int, str, str]:
        response = client.open(path, method=method, json=body)
        return (
            response.status_code,
            response.headers.get("Location", ""),
            response.get_data(as_text=True),
        )

    return send


def answer_all(
    send: Transport,
    entry_url: str,
    choice: int,
    reason: str,
    telemetry: dict[str, Any] | None = None,
) -> str:
    """Enter through the study URL, answer every task with `choice`; returns the `cc` code of
    the thank-you page's redirect to Prolific. `telemetry`: what the task page would measure."""
    parts = urlsplit(entry_url)
    status, location, _ = send("GET", f"{parts.path}?{parts.query}", None)
    assert status == 302 and location.endswith("/work/next"), (status, location)
    for _ in range(MAX_TASKS):
        status, location, _ = send("GET", "/work/next", None)
        assert status == 302, status
        if location.endswith("/work/done"):
            break
        status, _, html = send("GET", urlsplit(location).path, None)
        assert status == 200, status
        match = CONFIG_RE.search(html)
        assert match is not None
        config = json.loads(match.group(1))
        body = {"token": config["token"], "choice": choice, "reason": reason}
        if telemetry is not None:
            body["telemetry"] = telemetry
        status, _, _ = send("POST", config["submit_url"], body)
        assert status == 201, status
    status, _, thanks = send("GET", "/work/done", None)
    assert status == 200
    link = COMPLETE_RE.search(thanks)
    assert link is not None, thanks[-500:]
    return parse_qs(urlsplit(link.group(1).replace("&amp;", "&")).query)["cc"][0]
