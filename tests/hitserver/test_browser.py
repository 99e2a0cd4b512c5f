"""A real headless Chromium (Debian's) against a live server: a worker enters, picks an answer,
types a reason, submits, and the answer is in the database; MTurk preview is read-only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chromium_flags import CHROMIUM_ARGS
from sqlalchemy import text

from hitserver.database import make_engine, upgrade
from hitserver.loading import load_batch

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_worker_answers_in_chromium(chromium_path: str, write_batch, tmp_path: Path, live):
    from playwright.sync_api import expect, sync_playwright

    db_url = f"sqlite:///{tmp_path / 'browser.sqlite'}"
    engine = make_engine(db_url)
    upgrade(engine)
    load_batch(engine, write_batch(tmp_path, "tb", 2), assignments_per_item=1)

    with live.running_server(db_url, tmp_path / "server.log") as server, sync_playwright() as pw:
        base = f"http://127.0.0.1:{server.port}"
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            # Nothing but our server: any other request is a bug (and must not leave).
            page.route(re.compile(r"^(?!http://127\.0\.0\.1:).*"), lambda route: route.abort())

            page.goto(f"{base}/work")
            page.fill("input[name=worker_id]", "browser-1")
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r"/work/a/a[0-9a-f]{24}$"))
            first_task = page.url
            expect(page.locator("#progress")).to_have_text("item 1 of 2")
            assert page.evaluate("document.getElementById('photo').naturalWidth") == 8

            page.check("input[name=choice][value='4']")
            page.fill("textarea[name=reason]", "Robot B points at the boat <and> the water.")
            page.click("#submit-button")
            page.wait_for_url(lambda url: url != first_task and "/work/a/" in url)
            expect(page.locator("#progress")).to_have_text("item 2 of 2")

            page.check("input[name=choice][value='1']")
            page.fill("textarea[name=reason]", "A is better.")
            page.click("#submit-button")
            page.wait_for_url(re.compile(r"/work/done$"))
            expect(page.locator("body")).to_contain_text("You answered 2 tasks")

            # MTurk preview: the page is shown read-only.
            page.goto(f"{base}/mturk/items/tb-0001?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE")
            expect(page.locator("#submit-button")).to_be_disabled()
            # Accepted: the form will post to MTurk's externalSubmit with the assignment id.
            page.goto(
                f"{base}/mturk/items/tb-0001?assignmentId=3TESTASSIGN&hitId=3HIT&workerId=AW1"
                "&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com"
            )
            expect(page.locator("#submit-button")).to_be_enabled()
            form = page.locator("#task-form")
            assert form.evaluate("f => f.action") == (
                "https://workersandbox.mturk.com/mturk/externalSubmit"
            )
            assert form.evaluate("f => f.elements.assignmentId.value") == "3TESTASSIGN"
        finally:
            browser.close()

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT item_id, worker_id, choice, reason FROM ratings ORDER BY item_id")
        ).all()
        workers = conn.execute(text("SELECT count(*) FROM workers")).scalar()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("tb-0001", "browser-1", 4, "Robot B points at the boat <and> the water."),
        ("tb-0002", "browser-1", 1, "A is better."),
    ]
    assert workers == 1  # the MTurk visits wrote nothing
