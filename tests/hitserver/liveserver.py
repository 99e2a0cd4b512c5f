"""Test helper: a real `hitserver run` (gunicorn) process on a free 127.0.0.1 port, and a
keep-alive JSON client for it. Not product code."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADMIN_TOKEN = "live-admin-token-0123456789abcdef0123"
START_TIMEOUT_S = 45.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Http:
    """One keep-alive connection to the server (use one per thread)."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        send = {"Content-Type": "application/json", **(headers or {})}
        try:
            self.conn.request(method, path, body=data, headers=send)
            response = self.conn.getresponse()
            raw = response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            raise
        if response.headers.get_content_type() == "application/json" and raw:
            return response.status, json.loads(raw)
        return response.status, raw

    def close(self) -> None:
        self.conn.close()


@dataclass
class LiveServer:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def kill_hard(self) -> None:
        """kill -9 the whole server (gunicorn master and workers share our process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        client = Http(port, timeout=2.0)
        status, _ = client.request("GET", "/api/health")
        client.close()
        return status == 200
    except (OSError, http.client.HTTPException):
        return False


@contextlib.contextmanager
def running_server(
    db_url: str,
    log: Path,
    *,
    workers: int = 2,
    threads: int = 8,
    env: dict[str, str] | None = None,
) -> Iterator[LiveServer]:
    port = free_port()
    environ = {
        **os.environ,
        "HITSERVER_SECRET_KEY": "live-secret-0123456789abcdef0123456789",
        "HITSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "hitserver.cli", "run",
        "--host", "127.0.0.1", "--port", str(port), "--db", db_url,
        "--workers", str(workers), "--threads", str(threads),
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=environ, start_new_session=True
        )
    server = LiveServer(port, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill_hard()
