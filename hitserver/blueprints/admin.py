"""Admin pages: dashboard per batch, workers with catch-trial pass rates, block/unblock,
open/close a batch, CSV exports.

Authentication: `Authorization: Bearer $HITSERVER_ADMIN_TOKEN` (constant-time compare), or a
login form checked against `HITSERVER_ADMIN_PASSWORD_HASH` that sets a signed session cookie.
Forms carry a CSRF token; bearer requests need none (a browser never adds that header by
itself). No credentials: 401; a wrong token: 403.

A log-in is also a row of `admin_sessions` (the cookie carries a random id, the table its
SHA-256): log-out deletes the row, so a copied cookie stops working, and a log-in expires after
ADMIN_SESSION_S whatever the cookie says. Failed log-ins are throttled per client address with
a doubling wait (hitserver.throttle), checked before the password hash is computed.
"""

from __future__ import annotations

import io
import secrets
from datetime import timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import Connection, Update, delete, insert, select, update
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response as WerkzeugResponse

from hitserver.csrf import check_csrf, csrf_token
from hitserver.export import FORMATS, export
from hitserver.models import AdminSession, Batch, Worker
from hitserver.quality import worker_quality
from hitserver.security import secret_equals, token_digest
from hitserver.state import client_address, state
from hitserver.stats import batch_summaries, recent_answers, worker_summaries
from hitserver.throttle import login_failed, login_succeeded, login_wait

blueprint = Blueprint("admin", __name__, url_prefix="/admin")
PUBLIC = ("admin.login", "admin.login_form")
# How long an admin log-in lasts (server-side; the signed cookie itself lasts 12 hours).
ADMIN_SESSION_S = 8 * 3600

Reply = Response | WerkzeugResponse | tuple[str, int]


def _refuse(status: int, text: str) -> Response:
    response = make_response(render_template("message.html", title="Admin", text=text), status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="hitserver admin"'
    return response


@blueprint.before_request
def authenticate() -> Response | None:
    if request.endpoint in PUBLIC:
        return None
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, given = header.partition(" ")
        expected = state().settings.admin_token
        if scheme.lower() != "bearer" or not given.strip():
            return _refuse(401, "Send Authorization: Bearer <admin token>.")
        if not expected or not secret_equals(given.strip(), expected):
            return _refuse(403, "Wrong admin token.")
        g.admin_bearer = True
        return None
    if _logged_in():
        g.admin_bearer = False
        if request.method == "POST":
            check_csrf()
        return None
    return _refuse(401, "Log in at /admin/login or send a bearer token.")


def _logged_in() -> bool:
    """Whether the session cookie names an admin log-in that is still open server-side."""
    sid = session.get("admin_sid")
    if not isinstance(sid, str):
        return False
    server = state()
    with server.engine.connect() as conn:
        expires = conn.execute(
            select(AdminSession.expires_at).where(AdminSession.id == token_digest(sid))
        ).scalar()
    return expires is not None and expires > server.clock()


@blueprint.get("/login")
def login_form() -> Reply:
    enabled = state().settings.admin_password_hash is not None
    return render_template("admin_login.html", enabled=enabled, failed=False)


@blueprint.post("/login")
def login() -> Reply:
    check_csrf()
    server = state()
    password_hash = server.settings.admin_password_hash
    password = request.form.get("password", "")
    address = client_address()
    now = server.clock()
    # Before the hash: a throttled guess costs the server nothing.
    with server.engine.begin() as conn:
        wait = login_wait(conn, address, now)
    if wait > 0:
        response = _refuse(429, "Too many failed log-ins from this address; wait and try again.")
        response.headers["Retry-After"] = str(int(wait + 0.999))
        return response
    if not password_hash or not check_password_hash(password_hash, password):
        server.write(lambda conn: login_failed(conn, address, now))
        return render_template("admin_login.html", enabled=bool(password_hash), failed=True), 403
    sid = secrets.token_urlsafe(32)

    def open_session(conn: Connection) -> None:
        login_succeeded(conn, address)
        conn.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
        conn.execute(
            insert(AdminSession).values(
                id=token_digest(sid),
                created_at=now,
                expires_at=now + timedelta(seconds=ADMIN_SESSION_S),
            )
        )

    server.write(open_session)
    # A fresh session on login: a cookie planted before it is worth nothing afterwards.
    session.clear()
    session["admin_sid"] = sid
    csrf_token()
    return redirect(url_for("admin.dashboard"))


@blueprint.post("/logout")
def logout() -> WerkzeugResponse:
    sid = session.get("admin_sid")
    if isinstance(sid, str):
        # Server-side: the same cookie, copied or replayed, no longer logs anyone in.
        state().write(
            lambda conn: conn.execute(
                delete(AdminSession).where(AdminSession.id == token_digest(sid))
            )
        )
    session.clear()
    return redirect(url_for("admin.login_form"))


@blueprint.get("/")
def dashboard() -> Reply:
    with state().engine.connect() as conn:
        summaries = batch_summaries(conn)
    if request.accept_mimetypes.best == "application/json":
        return jsonify(
            [
                {
                    "batch": s.name,
                    "items": s.items,
                    "needed": s.needed,
                    "ratings": s.ratings,
                    "complete_items": s.complete_items,
                    "open_assignments": s.open_assignments,
                    "workers": s.workers,
                    "median_s": s.median_s,
                }
                for s in summaries
            ]
        )
    return render_template("admin_dashboard.html", batches=summaries)


@blueprint.get("/batches/<name>")
def batch(name: str) -> Reply:
    with state().engine.connect() as conn:
        summary = next((s for s in batch_summaries(conn) if s.name == name), None)
        if summary is None:
            abort(404)
        workers = worker_summaries(conn, summary.id)
        answers = recent_answers(conn, summary.id)
        quality = worker_quality(conn, summary.id, state().settings.catch_fail_fraction)
    return render_template(
        "admin_batch.html", batch=summary, workers=workers, answers=answers, quality=quality
    )


def _done(payload: dict[str, object], back: str) -> Reply:
    if g.admin_bearer:
        return jsonify(payload)
    return redirect(back)


def _update_one_or_404(statement: Update) -> None:
    """Run an UPDATE of one row named in the URL; 404 when there is no such row."""
    with state().engine.begin() as conn:
        if conn.execute(statement).rowcount == 0:
            abort(404)


# Worker ids are `Integer` columns: 32 bits on PostgreSQL. A larger number is no worker's id:
# 404, where PostgreSQL would refuse to compare it (400) and SQLite to bind it past 2**63 (500).
MAX_ID = 2**31 - 1


@blueprint.post(f"/workers/<int(max={MAX_ID}):worker_id>/<any(block, unblock):action>")
def block(worker_id: int, action: str) -> Reply:
    blocked = action == "block"
    _update_one_or_404(update(Worker).where(Worker.id == worker_id).values(blocked=blocked))
    back = request.form.get("batch")
    target = url_for("admin.batch", name=back) if back else url_for("admin.dashboard")
    return _done({"worker": worker_id, "blocked": blocked}, target)


@blueprint.post("/batches/<name>/<any(open, close):action>")
def open_close(name: str, action: str) -> Reply:
    is_open = action == "open"
    _update_one_or_404(update(Batch).where(Batch.name == name).values(is_open=is_open))
    return _done({"batch": name, "open": is_open}, url_for("admin.batch", name=name))


@blueprint.get("/export.csv")
def export_csv() -> Reply:
    fmt = request.args.get("format", "tidy")
    if fmt not in FORMATS:
        abort(400, f"format must be one of {', '.join(FORMATS)}")
    batch_name = request.args.get("batch") or None
    out = io.StringIO()
    with state().engine.connect() as conn:
        if batch_name is not None:
            known = conn.execute(select(Batch.id).where(Batch.name == batch_name)).scalar()
            if known is None:
                abort(404)
        export(conn, out, fmt, batch_name)
    response = make_response(out.getvalue())
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    filename = f"ratings-{batch_name or 'all'}-{fmt}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
