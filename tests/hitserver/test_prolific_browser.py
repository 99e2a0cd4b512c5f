"""A Prolific participant in a real headless Chromium: the stand-in's study URL, answering on
a live `hitserver run`, a reload that keeps the same task, and the redirect to Prolific's
completion URL with the code the stand-in then records; `sync` and `approve` agree."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import prolific_standin as standin_module
import pytest
from chromium_flags import CHROMIUM_ARGS

from hitserver.cli import main

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
OK, FAIL = "BROWSER-OK-3", "BROWSER-FAIL-3"


def test_a_prolific_participant_in_chromium(
    chromium_path: str,
    write_batch: Any,
    tmp_path: Path,
    live: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    from playwright.sync_api import Route, expect, sync_playwright

    db = f"sqlite:///{tmp_path / 'browser.sqlite'}"
    codes = {"HITSERVER_PROLIFIC_COMPLETION_CODE": OK, "HITSERVER_PROLIFIC_FAILED_CODE": FAIL}
    for name, value in codes.items():
        monkeypatch.setenv(name, value)
    batch = write_batch(tmp_path, "bb", 2, catch={1: [1, 2]})
    assert main(["load", str(batch), "--assignments", "1", "--db", db]) == 0

    with (
        standin_module.running_standin() as standin,
        live.running_server(db, tmp_path / "server.log", env=codes) as server,
        sync_playwright() as pw,
    ):
        monkeypatch.setenv("PROLIFIC_API_TOKEN", standin_module.TOKEN)
        monkeypatch.setenv("PROLIFIC_API_URL", standin.url)
        assert main(["prolific", "publish", "bb", "--reward-cents", "100",
                     "--estimated-minutes", "3", "--places", "1",
                     "--url", "https://study.example.org", "--db", db]) == 0  # fmt: skip
        [study] = standin.state.studies.values()
        sid, url = standin.enter(study["id"], "5f0c1a2b3c4d5e6f7a8b9c0d")
        base = f"http://127.0.0.1:{server.port}"
        completed: list[str] = []

        def prolific_site(route: Route) -> None:
            # What Prolific does when the participant lands on its completion URL.
            code = parse_qs(urlsplit(route.request.url).query)["cc"][0]
            completed.append(standin.complete(sid, code))
            route.fulfill(status=200, content_type="text/html", body="<p>Submission complete</p>")

        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.route(re.compile(r"^(?!http://127\.0\.0\.1:).*"), lambda route: route.abort())
            page.route(re.compile(r"^https://app\.prolific\.com/submissions/complete\?"),
                       prolific_site)  # fmt: skip
            parts = urlsplit(url)
            assert (parts.scheme, parts.netloc, parts.path) == (
                "https", "study.example.org", "/prolific"
            )  # fmt: skip
            page.goto(f"{base}{parts.path}?{parts.query}")  # as if behind the study's proxy
            page.wait_for_url(re.compile(r"/work/a/a[0-9a-f]{24}$"))
            first = page.url
            page.reload()  # a reload gives the same task back
            assert page.url == first
            expect(page.locator("#progress")).to_have_text("item 1 of 2")
            for number, reason in ((1, "Robot A names the boat."), (2, "Same pictures.")):
                expect(page.locator("#progress")).to_have_text(f"item {number} of 2")
                current = page.url
                page.check("input[name=choice][value='1']")
                page.fill("textarea[name=reason]", reason)
                page.click("#submit-button")
                page.wait_for_url(lambda u, current=current: u != current)
            page.wait_for_url(re.compile(r"^https://app\.prolific\.com/submissions/complete"))
            assert parse_qs(urlsplit(page.url).query) == {"cc": [OK]}
            expect(page.locator("body")).to_contain_text("Submission complete")
        finally:
            browser.close()
        assert completed == ["AWAITING REVIEW"]
        capsys.readouterr()
        assert main(["prolific", "approve", "bb", "--send", "--db", db]) == 0
        out = capsys.readouterr().out
        assert "0 mismatches" in out and out.strip().endswith("1 sent, 0 failed")
    assert standin.state.submissions[sid]["status"] == "APPROVED"
    assert standin.state.submissions[sid]["study_code"] == OK
