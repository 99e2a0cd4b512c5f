"""Issue 28, items 4 and 9 against a real gunicorn (`hitserver run`, 2 workers x 8 threads):
clients that announce a body and never send it no longer freeze the server, and a chunked body
over the limit is a 413 like any other."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time

import pytest

from hitserver.database import make_engine, upgrade
from hitserver.loading import load_batch

pytestmark = pytest.mark.slow  # a live server

SLOW_CLIENTS = 32  # twice the server's 2 x 8 threads


# conftest.py loads these helpers; one server serves the whole module.
live = sys.modules["hitserver_tests_liveserver"]
batchfixture = sys.modules["hitserver_tests_batchfixture"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("serving")
    db_url = f"sqlite:///{tmp_path / 'serving.sqlite'}"
    engine = make_engine(db_url)
    upgrade(engine)
    load_batch(engine, batchfixture.write_batch(tmp_path, "tb", 2), assignments_per_item=2)
    engine.dispose()
    env = {"HITSERVER_BODY_TIMEOUT_S": "1"}
    with live.running_server(db_url, tmp_path / "server.log", env=env) as running:
        yield running


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        part = sock.recv(4096)
        if not part:
            return 0  # closed without an answer
        head += part
    return int(head.split(b" ", 2)[1])


def test_clients_that_never_send_their_body_do_not_freeze_the_server(server) -> None:
    slow = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = _connect(server.port)
            sock.sendall(
                b"POST /api/assignments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"worker_id"'
            )
            slow.append(sock)
        time.sleep(0.2)  # every thread now waits on one of them
        started = time.monotonic()
        health = live.Http(server.port, timeout=10.0)
        status, body = health.request("GET", "/api/health")
        waited = time.monotonic() - started
        health.close()
        assert (status, body) == (200, {"status": "ok"})
        # Two rounds of the 1 s body deadline for 32 clients on 16 threads, and some slack.
        assert waited < 5.0, waited
        # Each slow client was answered 408 (and closed), not left hanging.
        statuses = [_status(sock) for sock in slow]
        assert statuses == [408] * SLOW_CLIENTS
    finally:
        for sock in slow:
            sock.close()
    # The server still serves whole requests.
    client = live.Http(server.port)
    status, _ = client.request("POST", "/api/assignments", {"worker_id": "after"})
    assert status == 201
    client.close()


def test_a_body_that_trickles_in_within_the_deadline_is_read(server) -> None:
    body = json.dumps({"worker_id": "trickle"}).encode()
    with contextlib.closing(_connect(server.port)) as sock:
        sock.sendall(
            b"POST /api/assignments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        for i in range(0, len(body), 8):
            sock.sendall(body[i : i + 8])
            time.sleep(0.05)
        assert _status(sock) == 201


@pytest.mark.parametrize("size", [64 * 1024 + 1, 200 * 1024])
def test_a_chunked_body_over_the_limit_is_413(server, size: int) -> None:
    payload = b'{"worker_id": "' + b"x" * size + b'"}'
    chunks = b"".join(
        f"{len(payload[i : i + 8192]):x}\r\n".encode() + payload[i : i + 8192] + b"\r\n"
        for i in range(0, len(payload), 8192)
    )
    with contextlib.closing(_connect(server.port)) as sock:
        sock.sendall(
            b"POST /api/assignments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):  # the server may answer and close mid-upload
            sock.sendall(chunks + b"0\r\n\r\n")
        assert _status(sock) == 413


def test_a_chunked_body_under_the_limit_is_served(server) -> None:
    payload = json.dumps({"worker_id": "chunky"}).encode()
    with contextlib.closing(_connect(server.port)) as sock:
        sock.sendall(
            b"POST /api/assignments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + f"{len(payload):x}\r\n".encode()
            + payload
            + b"\r\n0\r\n\r\n"
        )
        assert _status(sock) == 201
