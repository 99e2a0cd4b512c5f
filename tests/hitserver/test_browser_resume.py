"""Resume, in a real headless Chromium against a live server, for a local and a Prolific
participant on hitgen's own task page: a reload or a second visit of the entry link gives the
same assignment back; an answer whose response is lost on the way back is stored, and
submitting it again stores it once; the page's telemetry arrives with the answer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from chromium_flags import CHROMIUM_ARGS
from sqlalchemy import Engine, text

from hitgen.render import Reason, Robot, render_page
from hitserver.database import make_engine, upgrade
from hitserver.loading import load_batch

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ITEMS = 3
CODE = "RESUME1"
ENTRIES = {
    "local": "/work",
    "prolific": "/prolific?PROLIFIC_PID=pp{n}&STUDY_ID=st1&SESSION_ID=se{n}",
}
PASTED = "Robot B names the water it highlights."
TASK_URL = re.compile(r"/work/a/(a[0-9a-f]{24})$")
# A paste event as the browser fires it; Chromium does not insert a synthetic event's text,
# so the test types the same text afterwards.
PASTE = """text => {
  const data = new DataTransfer();
  data.setData("text/plain", text);
  const event = new ClipboardEvent("paste", {clipboardData: data, bubbles: true});
  document.getElementById("reason").dispatchEvent(event);
}"""


def hitgen_pages(batch: Path) -> None:
    """Replace the fixture's pages with hitgen's real page (its script posts the telemetry)."""
    manifest = json.loads((batch / "manifest.json").read_text())
    for item in manifest["items"]:
        left = item[item["robot_a"]]
        right = item["second" if item["robot_a"] == "first" else "first"]

        def robot(key: str, side: dict[str, Any]) -> Robot:
            reasons = zip(side["concepts"], side["masks"], strict=False)
            return Robot(key, tuple(Reason(label, f"../{mask}") for label, mask in reasons))

        html = render_page(
            item["class_name"], f"../{item['image']}", (8, 8), robot("a", left), robot("b", right)
        )
        (batch / item["page"]).write_text(html, encoding="utf-8")


@pytest.fixture
def study(write_batch, tmp_path: Path) -> tuple[str, Engine]:
    db_url = f"sqlite:///{tmp_path / 'resume.sqlite'}"
    engine = make_engine(db_url)
    upgrade(engine)
    batch = write_batch(tmp_path, "rb", ITEMS)
    hitgen_pages(batch)
    load_batch(engine, batch, assignments_per_item=2)
    return db_url, engine


def enter(page: Any, base: str, platform: str, n: int) -> None:
    if platform == "local":
        page.goto(f"{base}/work")
        page.fill("input[name=worker_id]", f"local{n}")
        page.click("button[type=submit]")
    else:
        page.goto(base + ENTRIES["prolific"].format(n=n))
    page.wait_for_url(TASK_URL)


def assignment_of(page: Any) -> str:
    match = TASK_URL.search(page.url)
    assert match is not None, page.url
    return match.group(1)


def answer(page: Any, choice: int, reason: str) -> None:
    page.check(f"#choice-{choice}")
    page.fill("#reason", reason)


def lose_the_response(page: Any, assignment_id: str) -> list[int]:
    """Let the next answer reach the server, then drop its response as a broken connection
    would; returns the statuses the server answered."""
    seen: list[int] = []

    def handle(route: Any) -> None:
        response = route.fetch()  # the request reaches the server, which stores the answer
        seen.append(response.status)
        route.abort("connectionreset")  # ... and the page never hears back

    page.route(f"**/api/assignments/{assignment_id}/response", handle)
    return seen


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.mark.parametrize("platform", ["local", "prolific"])
def test_reload_and_a_lost_response_lose_nothing_and_store_once(
    chromium_path: str, study, tmp_path: Path, live, platform: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    db_url, engine = study
    env = {"HITSERVER_PROLIFIC_COMPLETION_CODE": CODE}
    with (
        live.running_server(db_url, tmp_path / "server.log", env=env) as server,
        sync_playwright() as pw,
    ):
        base = f"http://127.0.0.1:{server.port}"
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(20_000)
            page.route(re.compile(r"^(?!http://127\.0\.0\.1:).*"), lambda route: route.abort())
            enter(page, base, platform, 1)
            first = assignment_of(page)
            expect(page.locator("#progress")).to_have_text("item 1 of 3")

            # 1. Reload mid-task, half answered: the same assignment, the same item.
            answer(page, 4, "half typed")
            page.reload()
            assert assignment_of(page) == first
            expect(page.locator("#progress")).to_have_text("item 1 of 3")
            # ... and following the entry link again (a lost tab) gives it back too.
            enter(page, base, platform, 1)
            assert assignment_of(page) == first

            # 2. A paste into the reason box, then the answer's response is lost.
            page.check("#choice-4")
            page.evaluate(PASTE, PASTED)
            page.fill("#reason", PASTED)
            seen = lose_the_response(page, first)
            page.click("#submit-button")
            expect(page.locator("#form-status")).to_contain_text("Could not reach the server")
            assert seen == [201] and assignment_of(page) == first
            # The participant tries again; the server has it already (200) and moves on.
            page.unroute(f"**/api/assignments/{first}/response")
            with page.expect_response(f"**/api/assignments/{first}/response") as retried:
                page.click("#submit-button")
            assert retried.value.status == 200
            page.wait_for_url(lambda url: "/work/a/" in url and first not in url)
            second = assignment_of(page)
            expect(page.locator("#progress")).to_have_text("item 2 of 3")

            # 3. Lost again, and this time the participant reloads instead of resubmitting:
            # the answer is kept, and the page moves on to the next item.
            answer(page, 2, "Robot A fits the harbor.")
            seen = lose_the_response(page, second)
            page.click("#submit-button")
            expect(page.locator("#form-status")).to_contain_text("Could not reach the server")
            assert seen == [201]
            page.unroute(f"**/api/assignments/{second}/response")
            page.reload()
            page.wait_for_url(lambda url: "/work/a/" in url and second not in url)
            expect(page.locator("#progress")).to_have_text("item 3 of 3")

            answer(page, 3, "Both show the same.")
            page.click("#submit-button")
            page.wait_for_url(re.compile(r"/work/done$"))
            if platform == "prolific":
                expect(page.locator("body")).to_contain_text(CODE)
        finally:
            browser.close()

    worker = f"{'local' if platform == 'local' else 'pp'}1"
    stored = rows(
        engine,
        "SELECT assignment_id, choice, reason, paste_count, pasted_chars, reason_chars, "
        "visible_s FROM ratings WHERE worker_id = :w ORDER BY submitted_at",
        w=worker,
    )
    engine.dispose()
    assert [r[:3] for r in stored[:2]] == [
        (first, 4, PASTED),
        (second, 2, "Robot A fits the harbor."),
    ]
    assert len(stored) == ITEMS and len({r[0] for r in stored}) == ITEMS
    # The first post's telemetry is what was kept: one paste of the whole reason.
    assert stored[0][3:6] == (1, len(PASTED), len(PASTED))
    assert stored[1][3:6] == (0, 0, len("Robot A fits the harbor."))
    assert all(0 < r[6] < 120 for r in stored)
