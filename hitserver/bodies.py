"""Request bodies read whole, bounded in size and in time, before the app sees them.

Under gunicorn's threaded workers each request holds a thread while its body arrives, and the
socket has no read timeout: 32 clients that announce a body and never send it would hold every
thread and freeze the server (issue 28). This middleware reads the body itself with a deadline
(the socket's timeout is set to what is left of it before every read) and answers 408 when the
deadline passes, 413 when the body passes the size limit (also for `Transfer-Encoding:
chunked`, which has no length to check up front). The app then reads a buffered copy.

It bounds the body only: a client that sends its headers slowly still holds a thread until
gunicorn's own limits. Production puts a buffering reverse proxy in front (docs/hitserver.md,
Security model), which holds slow clients itself and hands over complete requests.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CHUNK = 16 * 1024


class BodyTooSlow(Exception):
    pass


class BodyTooLarge(Exception):
    pass


class BoundedBody:
    """WSGI middleware: buffer each request body, at most `max_bytes`, within `timeout_s`."""

    def __init__(self, app: WSGIApp, *, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # werkzeug treats it as no body; so do we
        if not chunked and (length <= 0 or length > self.max_bytes):
            # Nothing to read, or refused by its declared length (413) before any is read.
            return self.app(environ, start_response)
        try:
            body = self._read(environ, None if chunked else length)
        except BodyTooSlow:
            return _refuse(start_response, "408 Request Timeout", "the request body was too slow")
        except BodyTooLarge:
            return _refuse(
                start_response,
                "413 Request Entity Too Large",
                f"the request body is larger than {self.max_bytes} bytes",
            )
        except Exception:  # the client went away or sent broken chunks
            # (gunicorn's parse errors are no OSError); nothing a client sends is a 500.
            return _refuse(start_response, "400 Bad Request", "the request body is incomplete")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = False
        return self.app(environ, start_response)

    def _read(self, environ: dict[str, Any], length: int | None) -> bytes:
        stream = environ["wsgi.input"]
        sock = environ.get("gunicorn.socket")
        before = sock.gettimeout() if sock is not None else None
        deadline = time.monotonic() + self.timeout_s
        want = self.max_bytes + 1 if length is None else length
        parts: list[bytes] = []
        got = 0
        try:
            while got < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BodyTooSlow
                if sock is not None:
                    sock.settimeout(left)
                try:
                    part = stream.read(min(CHUNK, want - got))
                except TimeoutError as exc:  # socket.timeout is TimeoutError
                    raise BodyTooSlow from exc
                if not part:
                    break
                parts.append(part)
                got += len(part)
        finally:
            if sock is not None:
                sock.settimeout(before)
        if length is None and got > self.max_bytes:
            raise BodyTooLarge
        if length is not None and got < length:
            raise ValueError("body shorter than its Content-Length")
        return b"".join(parts)


def _refuse(start_response: Callable[..., Any], status: str, message: str) -> list[bytes]:
    body = json.dumps({"error": f"body: {message}", "field": "body"}).encode()
    # Close: the unread rest of the body would otherwise be parsed as the next request.
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ],
    )
    return [body]
