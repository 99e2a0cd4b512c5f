"""The Flask app factory: `create_app()` for gunicorn, `create_app(settings)` for tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from flask import Flask, Request, Response, abort, jsonify, make_response, render_template, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from markupsafe import Markup
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from hitserver.bodies import BoundedBody
from hitserver.commits import writer_for
from hitserver.config import Settings, load_settings
from hitserver.csrf import csrf_token
from hitserver.database import Busy, make_engine, upgrade
from hitserver.pages import DamagedPage
from hitserver.state import ServerState, utc_now

MAX_REQUEST_BYTES = 64 * 1024
# The sites that show an ExternalQuestion page in their iframe: www.mturk.com, the sandbox's
# worker site, and worker.mturk.com, where workers do HITs today. A site missing here shows a
# blank frame instead of the task.
MTURK_FRAME_ANCESTORS = (
    "frame-ancestors https://www.mturk.com https://workersandbox.mturk.com https://worker.mturk.com"
)
DEFAULT_THREADS = 8
# Where a page may send a form: this server, and MTurk's two submit sites (an MTurk-mode page
# posts to turkSubmitTo/mturk/externalSubmit). A link with any other turkSubmitTo cannot make
# the page post answers elsewhere, whatever the page's script does.
FORM_ACTION = "form-action 'self' https://www.mturk.com https://workersandbox.mturk.com"
# A signed session cookie older than this is refused (Flask's default is 31 days). Admin
# log-ins also expire server-side, sooner (blueprints/admin.py).
SESSION_LIFETIME = timedelta(hours=12)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
    threads: int = DEFAULT_THREADS,
) -> Flask:
    """Build the app: check the secrets, open the database, migrate it, register blueprints.

    `threads` is how many requests this process serves at once: the connection pool keeps
    that many connections (plus the SQLite writer's) open instead of opening and closing
    PostgreSQL connections (a backend process each) under load.
    """
    settings = (settings or load_settings()).with_dev_secrets()
    settings.check_can_serve()
    engine = make_engine(
        settings.database_url, pool_size=threads + 1, lock_timeout_s=settings.db_lock_timeout_s
    )
    upgrade(engine)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        SESSION_COOKIE_NAME="hitserver_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.production,
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.session_interface = _CookieSessions()
    app.extensions["hitserver"] = ServerState(
        settings=settings, engine=engine, write=writer_for(engine), clock=clock
    )
    app.jinja_env.globals["csrf_token"] = csrf_token
    # Every value a template prints: bidi controls shown as [U+202E], not obeyed.
    app.jinja_env.finalize = inert_bidi
    if settings.proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=settings.proxies,
            x_proto=settings.proxies,
            x_host=settings.proxies,
            x_prefix=settings.proxies,
        )
    # Outermost: the body is read (bounded in size and time) before anything else runs.
    app.wsgi_app = BoundedBody(  # type: ignore[method-assign]
        app.wsgi_app, max_bytes=MAX_REQUEST_BYTES, timeout_s=settings.body_timeout_s
    )

    from hitserver.blueprints import admin, api, worker

    app.register_blueprint(api.blueprint)
    app.register_blueprint(worker.blueprint)
    app.register_blueprint(admin.blueprint)
    _register_errors(app)
    app.before_request(_refuse_nul)
    app.after_request(_security_headers)
    return app


class _CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building the signer for a request that carries
    no session cookie (every API call): an empty new session has nothing to verify."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def _refuse_nul() -> None:
    """NUL cannot be stored in PostgreSQL text nor used in a file name: refuse it at the door."""
    if "\x00" in request.path or any("\x00" in v for v in request.args.values()):
        abort(400, "NUL characters are not allowed in URLs")


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.endswith(".json")


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        if _wants_json():
            response = jsonify({"error": exc.description, "field": None})
            response.status_code = exc.code or 500
            return response
        return exc

    def unavailable(message: str) -> tuple[Response, int]:
        response = _reply(503, message)
        response.headers["Retry-After"] = "1"
        return response, 503

    @app.errorhandler(Busy)
    def busy(exc: Busy) -> tuple[Response, int]:
        # One line naming the last conflict: a constraint that refuses every retry is a bug.
        app.logger.warning("answered 503, the database stayed busy: %s", exc.reason)
        return unavailable("the database is busy; try again")

    @app.errorhandler(OperationalError)
    def db_down(_exc: OperationalError) -> tuple[Response, int]:
        app.logger.exception("database error")
        return unavailable("the database is unavailable; try again")

    @app.errorhandler(DataError)
    def bad_value(_exc: DataError) -> tuple[Response, int]:
        app.logger.warning("database refused a value from %s", request.path)
        return _reply(400, "a value in the request cannot be stored"), 400

    @app.errorhandler(IntegrityError)
    def refused(_exc: IntegrityError) -> tuple[Response, int]:
        # A constraint that no retry can satisfy (`in_transaction` retries lost races only):
        # the request conflicts with what is stored. Logged, as the checks before the write
        # should have answered it.
        app.logger.exception("the database refused a write from %s", request.path)
        return _reply(409, "the request conflicts with stored data"), 409

    @app.errorhandler(DamagedPage)
    def damaged(_exc: DamagedPage) -> tuple[Response, int]:
        app.logger.error("task page damaged on disk: %s", request.path)
        return unavailable("this task page is damaged on the server; the study admin is told")


# Characters that reorder the text around them: a reason with U+202E (right-to-left override)
# would show the admin page's text reversed and disguised. Shown as their code points instead.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def inert_bidi(value: object) -> object:
    """A template value with its bidi control characters written out as `[U+XXXX]`."""
    if not isinstance(value, str) or not any(c in BIDI_CONTROLS for c in value):
        return value
    shown = "".join(f"[U+{ord(c):04X}]" if c in BIDI_CONTROLS else c for c in value)
    return Markup(shown) if isinstance(value, Markup) else shown  # safe stays safe


def _reply(status: int, message: str) -> Response:
    """An error as JSON for the API, as a page for a browser (a worker on an HTML page must
    not get a JSON body)."""
    if _wants_json():
        return jsonify({"error": message, "field": None})
    title = "Try again" if status == 503 else "Not available"
    page = render_template("message.html", title=title, text=message)
    return make_response(page, status)


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/mturk/"):
        # MTurk shows ExternalQuestion pages in an iframe on its own sites.
        headers.setdefault("Content-Security-Policy", f"{MTURK_FRAME_ANCESTORS}; {FORM_ACTION}")
    elif request.path.startswith("/admin"):
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
            "form-action 'self'",
        )
        headers.setdefault("Cache-Control", "no-store")
    else:
        headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        headers.setdefault("Content-Security-Policy", FORM_ACTION)
    return response
