"""A rendered page in headless Chromium, in each of its three hosts (contracts section 7):
opened as a file, inside MTurk (preview and accepted), and hosted by a server that inserts the
hit-config block. The server here is a real HTTP server that records what the page sends."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from chromium_flags import CHROMIUM_ARGS

from hitgen.cli import main

pytestmark = pytest.mark.browser


class Host(ThreadingHTTPServer):
    """Serves the batch and records the answers posted to it."""

    batch: Path
    page: str  # the item's page, relative to the batch
    posts: list[tuple[str, str, str]]  # (path, content type, body)


class Handler(BaseHTTPRequestHandler):
    server: Host

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: bytes, kind: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/task":
            origin = f"http://127.0.0.1:{self.server.server_port}"
            config = {
                "mode": "server",
                "submit_url": "/api/assignments/A1/response",
                "token": "tok-1",
                "assignment_id": "A1",
                "next_url": "/next",
                "progress": "item 3 of 10",
            }
            block = (
                f'<base href="{origin}/batch/pages/">'
                f'<script id="hit-config" type="application/json">{json.dumps(config)}</script>'
            )
            html = (self.server.batch / self.server.page).read_text()
            self._send(200, html.replace("<!-- hit-config -->", block).encode())
        elif path == "/next":
            self._send(200, b"<!DOCTYPE html><title>next</title><p id='done'>next task</p>")
        elif path.startswith("/batch/") and ".." not in path:
            file = self.server.batch / path.removeprefix("/batch/")
            if file.is_file():
                kind = "image/png" if file.suffix == ".png" else "text/html; charset=utf-8"
                self._send(200, file.read_bytes(), kind)
            else:
                self._send(404, b"not found")
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        path = urlsplit(self.path).path
        self.server.posts.append((path, self.headers.get("Content-Type", ""), body))
        if path == "/api/assignments/A1/response":
            if "conflict" in body:
                answer = {"error": "a different answer was already submitted"}
                self._send(409, json.dumps(answer).encode(), "application/json")
            else:
                self._send(201, b'{"status": "stored"}', "application/json")
        elif path == "/mturk/externalSubmit":
            self._send(200, b"<!DOCTYPE html><title>done</title><p id='done'>submitted</p>")
        else:
            self._send(404, b"not found")


@pytest.fixture(scope="module")
def batch(shared_world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "batch"
    assert main(["build", "--pair", "ibd,cam", "--model", "ref", "--n", "2", "--jobs", "1",
                 "--catch-rate", "0", "--explanations", str(shared_world.dir("ref", "ibd")),
                 str(shared_world.dir("ref", "cam")), "--out", str(out)]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def page_path(batch: Path) -> str:
    return json.loads((batch / "manifest.json").read_text())["items"][0]["page"]


@pytest.fixture
def host(batch: Path, page_path: str) -> Iterator[Host]:
    server = Host(("127.0.0.1", 0), Handler)
    server.batch, server.page, server.posts = batch, page_path, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def tab(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def images_loaded(tab) -> bool:
    return tab.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")


def test_opened_as_a_file_is_a_preview(tab, batch: Path, page_path: str) -> None:
    tab.goto((batch / page_path).as_uri())
    assert tab.get_attribute("body", "data-mode") == "file"
    assert tab.is_disabled("#submit-button")
    assert tab.is_visible("#mode-notice") and "Preview" in tab.inner_text("#mode-notice")
    assert tab.is_enabled("#choice-3")  # the question can still be tried
    assert images_loaded(tab)
    assert tab.evaluate("document.images.length") == 1 + 4 + 1  # photo, IBD masks, CAM mask


def test_mturk_preview_is_read_only(tab, batch: Path, page_path: str) -> None:
    tab.goto((batch / page_path).as_uri() + "?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H1")
    assert tab.get_attribute("body", "data-mode") == "mturk-preview"
    for selector in ["#choice-1", "#choice-5", "#reason", "#submit-button"]:
        assert tab.is_disabled(selector), selector
    assert "accept this HIT" in tab.inner_text("#mode-notice")


def test_mturk_page_refuses_a_submit_site_that_is_not_mturk(
    tab, batch: Path, page_path: str
) -> None:
    # Anyone can put a turkSubmitTo in a link (issue 28): the page posts only to MTurk's sites.
    for site in (
        "https://evil.example",
        "https://www.mturk.com.evil.example",
        "http://www.mturk.com",
    ):
        tab.goto((batch / page_path).as_uri() + f"?assignmentId=ASG9&hitId=H1&turkSubmitTo={site}")
        assert tab.get_attribute("body", "data-mode") == "broken", site
        assert tab.is_disabled("#submit-button")
        assert "not MTurk" in tab.inner_text("#mode-notice")
    tab.goto(
        (batch / page_path).as_uri()
        + "?assignmentId=ASG9&hitId=H1&turkSubmitTo=https://workersandbox.mturk.com"
    )
    assert tab.get_attribute("body", "data-mode") == "mturk"
    assert tab.get_attribute("#hit-form", "action").startswith("https://workersandbox.mturk.com/")


def test_mturk_assignment_posts_the_form_to_turk_submit_to(tab, host: Host) -> None:
    origin = f"http://127.0.0.1:{host.server_port}"
    query = f"?assignmentId=ASG9&hitId=H1&workerId=W1&turkSubmitTo={origin}"
    tab.goto(f"{origin}/batch/{host.page}{query}")
    assert tab.get_attribute("body", "data-mode") == "mturk"
    tab.click("#submit-button")  # nothing chosen: the browser's validation stops it
    assert host.posts == []
    # keyboard only: focus the scale, move down to the fourth answer, type, press Enter
    tab.focus("#choice-1")
    tab.keyboard.press("Space")
    for _ in range(3):
        tab.keyboard.press("ArrowDown")
    assert tab.is_checked("#choice-4")
    tab.keyboard.press("Tab")
    tab.keyboard.type("Robot B names the boat it highlights.")
    tab.keyboard.press("Tab")
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    assert tab.inner_text("#done") == "submitted"
    ((path, kind, body),) = host.posts
    assert path == "/mturk/externalSubmit" and kind == "application/x-www-form-urlencoded"
    assert parse_qs(body) == {
        "assignmentId": ["ASG9"],
        "choice": ["4"],
        "reason": ["Robot B names the boat it highlights."],
    }


def test_hosted_page_posts_json_and_moves_on(tab, host: Host) -> None:
    tab.goto(f"http://127.0.0.1:{host.server_port}/task")
    assert tab.get_attribute("body", "data-mode") == "server"
    assert tab.inner_text("#progress") == "item 3 of 10"
    assert not tab.is_visible("#mode-notice")
    assert images_loaded(tab)  # ../images/... resolved through the inserted <base>
    tab.check("#choice-2")
    tab.fill("#reason", "   ")
    tab.click("#submit-button")  # a blank reason is refused
    assert host.posts == []
    tab.fill("#reason", "A's regions match its words.")
    with tab.expect_navigation(url="**/next"):
        tab.click("#submit-button")
    ((path, kind, body),) = host.posts
    assert path == "/api/assignments/A1/response" and kind.startswith("application/json")
    sent = json.loads(body)
    telemetry = sent.pop("telemetry")
    assert sent == {"token": "tok-1", "choice": 2, "reason": "A's regions match its words."}
    # What the page measured: no focus lost, nothing pasted, the reason's 28 characters.
    visible = telemetry.pop("visible_s")
    assert isinstance(visible, int | float) and 0 < visible < 60
    assert telemetry == {"blur_count": 0, "paste_count": 0, "pasted_chars": 0, "reason_chars": 28}


def test_hosted_page_shows_a_refused_answer_and_allows_retry(tab, host: Host) -> None:
    tab.goto(f"http://127.0.0.1:{host.server_port}/task")
    tab.check("#choice-5")
    tab.fill("#reason", "conflict")
    tab.click("#submit-button")
    tab.wait_for_function(
        "document.getElementById('form-status').textContent.includes('not saved')"
    )
    assert "a different answer was already submitted" in tab.inner_text("#form-status")
    assert tab.is_enabled("#submit-button") and tab.url.endswith("/task")


def test_phone_layout_stacks_the_robots(browser, batch: Path, page_path: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    tab = context.new_page()
    tab.goto((batch / page_path).as_uri())
    a = tab.locator(".robot-a").bounding_box()
    b = tab.locator(".robot-b").bounding_box()
    assert a is not None and b is not None
    assert b["y"] >= a["y"] + a["height"]  # one above the other
    assert tab.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    context.close()
