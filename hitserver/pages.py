"""Fill a `hitgen` page's `<!-- hit-config -->` placeholder (docs/contracts.md 7)."""

from __future__ import annotations

import json
from typing import Any

from hitserver.manifest import PLACEHOLDER


class DamagedPage(Exception):
    """A page on disk no longer has exactly one placeholder (it changed after `load`)."""


def script_json(config: dict[str, Any]) -> str:
    """JSON that cannot end the surrounding <script> element or open a comment in it."""
    text = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def fill(html: str, base_href: str, config: dict[str, Any] | None) -> str:
    """Replace the placeholder by `<base href>` (where `../images/...` resolves) and, in server
    mode, the `hit-config` JSON block. Without a config the page keeps its own behaviour
    (a preview, or MTurk mode when `assignmentId` is in the URL)."""
    if html.count(PLACEHOLDER) != 1:
        raise DamagedPage("page must contain the hit-config placeholder exactly once")
    base = f'<base href="{_attr(base_href)}">'
    block = (
        ""
        if config is None
        else f'\n<script id="hit-config" type="application/json">{script_json(config)}</script>'
    )
    return html.replace(PLACEHOLDER, base + block)


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )
