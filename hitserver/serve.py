"""`hitserver run`: the app under gunicorn (threaded workers), in-process, no config files.

The same app runs under a gunicorn you start yourself:
`gunicorn -k gthread -w 2 --threads 8 -b 127.0.0.1:8000 'hitserver.app:create_app()'`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from hitserver.app import create_app
from hitserver.config import Settings


class StudyServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with options from arguments; every worker process builds its own app (and so
    its own database connections) after the fork."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.settings, threads=self.options["threads"])


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    access_log: bool,
) -> None:
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "proc_name": "hitserver",
        "accesslog": "-" if access_log else None,
        # gunicorn's control socket has one default path per user: two servers would clash.
        "control_socket_disable": True,
    }
    StudyServer(settings, options).run()
