"""Worker-facing pages: entry (local id, Prolific), the task page, thank-you; MTurk pages; the
batch's images.

Local and Prolific workers keep their identity and current assignment in the signed session
cookie; each task page carries its assignment's token in the `hit-config` block and posts the
answer to the JSON API. MTurk pages are served without a config block: the page then posts to
MTurk itself (contracts 7) and `hitserver mturk sync` brings the answers in, so MTurk stays the
authority on what was submitted and a preview writes nothing.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    make_response,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from sqlalchemy import Connection, or_, select
from werkzeug.wrappers import Response as WerkzeugResponse

from hitserver.csrf import check_csrf
from hitserver.models import Assignment, Batch, Item
from hitserver.pages import fill
from hitserver.policy import PolicyError, find_worker
from hitserver.state import claim_for_client, state
from hitserver.stats import catch_record
from hitserver.throttle import RateLimited
from hitserver.validation import MTURK_ID_RE, PROLIFIC_ID_RE, WORKER_ID_RE

blueprint = Blueprint("worker", __name__)

PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"
MTURK_SUBMIT_HOSTS = ("https://www.mturk.com", "https://workersandbox.mturk.com")
PROLIFIC_COMPLETE = "https://app.prolific.com/submissions/complete"
BATCH_DIRS = ("images", "pages")

Reply = Response | WerkzeugResponse | tuple[str, int]


def message(title: str, text: str, status: int) -> tuple[str, int]:
    return render_template("message.html", title=title, text=text), status


def _batch_path(name: str) -> Path | None:
    with state().engine.connect() as conn:
        path = conn.execute(select(Batch.path).where(Batch.name == name)).scalar()
    return None if path is None else Path(path)


def _page(batch_dir: Path, relative: str, batch: str, config: dict[str, Any] | None) -> Response:
    html = (batch_dir / relative).read_text(encoding="utf-8")
    base = url_for("worker.batch_file", batch=batch, filename="pages/")
    response = make_response(fill(html, base, config))
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/")
def index() -> WerkzeugResponse:
    return redirect(url_for("worker.start"))


@blueprint.get("/work")
def start() -> Reply:
    batch = request.args.get("batch")
    if not state().settings.admits_local:
        return message("Closed", "This study admits participants through MTurk or Prolific.", 403)
    return render_template("start.html", batch=batch, worker=session.get("worker"))


@blueprint.post("/work/start")
def begin() -> Reply:
    check_csrf()
    if not state().settings.admits_local:
        return message("Closed", "This study admits participants through MTurk or Prolific.", 403)
    worker_id = request.form.get("worker_id", "").strip()
    if not worker_id:
        worker_id = "local-" + secrets.token_hex(6)
    if not WORKER_ID_RE.fullmatch(worker_id):
        return message(
            "Participant id", "Use 1 to 64 letters, digits or the characters _ . @ : -", 422
        )
    batch = request.form.get("batch") or None
    session.clear()
    session["worker"] = {"platform": "local", "id": worker_id, "batch": batch}
    return redirect(url_for("worker.next_task"))


@blueprint.get("/prolific")
def prolific() -> Reply:
    """Prolific's study URL:
    `/prolific?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}`
    """
    values = {k: request.args.get(k, "") for k in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")}
    for key, value in values.items():
        if not PROLIFIC_ID_RE.fullmatch(value):
            return message("Link incomplete", f"The study link lacks a valid {key}.", 400)
    session.clear()
    session["worker"] = {
        "platform": "prolific",
        "id": values["PROLIFIC_PID"],
        "session": values["SESSION_ID"],
        "study": values["STUDY_ID"],
        "batch": request.args.get("batch") or None,
    }
    return redirect(url_for("worker.next_task"))


def _open_assignment(assignment_id: str) -> Any:
    server = state()
    with server.engine.connect() as conn:
        return conn.execute(
            select(
                Assignment.status,
                Assignment.expires_at,
                Item.page,
                Batch.name,
                Batch.path,
            )
            .join(Item, Item.id == Assignment.item_id)
            .join(Batch, Batch.id == Assignment.batch_id)
            .where(Assignment.id == assignment_id)
        ).first()


@blueprint.get("/work/next")
def next_task() -> Reply:
    server = state()
    worker = session.get("worker")
    if not isinstance(worker, dict):
        return redirect(url_for("worker.start"))
    if worker["platform"] == "local" and not server.settings.admits_local:
        return message("Closed", "This study admits participants through MTurk or Prolific.", 403)
    current = session.get("current")
    if isinstance(current, dict):
        row = _open_assignment(current["id"])
        if (
            row is not None
            and row.status == "accepted"
            and (row.expires_at is None or row.expires_at > server.clock())
        ):
            return redirect(url_for("worker.task", assignment_id=current["id"]))
    try:
        new = claim_for_client(
            server, worker["platform"], worker["id"], worker.get("batch"), worker.get("session")
        )
    except PolicyError as exc:
        reply = make_response(message("Not available", exc.message, exc.status))
        if isinstance(exc, RateLimited):
            reply.headers["Retry-After"] = str(exc.retry_after_s)
        return reply
    if new is None:
        session.pop("current", None)
        # The one place that knows the server has nothing left for this worker: the thank-you
        # page (and its Prolific completion code) needs it.
        session["finished"] = True
        return redirect(url_for("worker.done"))
    session.pop("finished", None)
    session["current"] = {"id": new.assignment_id, "token": new.token, "progress": new.progress}
    return redirect(url_for("worker.task", assignment_id=new.assignment_id))


@blueprint.get("/work/a/<assignment_id>")
def task(assignment_id: str) -> Reply:
    current = session.get("current")
    if not isinstance(current, dict) or current.get("id") != assignment_id:
        return message("Not yours", "This task belongs to another session.", 403)
    row = _open_assignment(assignment_id)
    if row is None or row.status != "accepted":
        session.pop("current", None)
        return redirect(url_for("worker.next_task"))
    config = {
        "mode": "server",
        "submit_url": url_for("api.create_response", assignment_id=assignment_id),
        "token": current["token"],
        "assignment_id": assignment_id,
        "next_url": url_for("worker.next_task"),
        "progress": current["progress"],
    }
    return _page(Path(row.path), row.page, row.name, config)


@blueprint.get("/work/done")
def done() -> Reply:
    server = state()
    worker = session.get("worker")
    if not isinstance(worker, dict):
        return redirect(url_for("worker.start"))
    with server.engine.connect() as conn:
        found = find_worker(conn, worker["platform"], worker["id"])
        answered, passed, checks = (0, 0, 0) if found is None else catch_record(conn, found[0])
        has_open = found is not None and _has_open_assignment(conn, found[0], server.clock())
    # Finished: /work/next found nothing left for them (the flag in the signed cookie) and no
    # task of theirs is open, say in another tab. Anyone else, e.g. someone who opened this
    # URL straight after the Prolific link, is sent back to work, without a completion code.
    if session.get("finished") is not True or has_open:
        return render_template("done.html", finished=False, answered=answered)
    completion_url = None
    if worker["platform"] == "prolific" and answered > 0:
        failed = checks > 0 and (checks - passed) / checks > server.settings.catch_fail_fraction
        code = (
            server.settings.prolific_failed_code
            if failed
            else server.settings.prolific_completion_code
        )
        if code:
            completion_url = f"{PROLIFIC_COMPLETE}?{urlencode({'cc': code})}"
    return render_template(
        "done.html", finished=True, answered=answered, completion_url=completion_url
    )


def _has_open_assignment(conn: Connection, worker_id: int, now: datetime) -> bool:
    """Whether the worker holds an accepted assignment that has not expired."""
    return (
        conn.execute(
            select(Assignment.id)
            .where(
                Assignment.worker_id == worker_id,
                Assignment.status == "accepted",
                or_(Assignment.expires_at.is_(None), Assignment.expires_at > now),
            )
            .limit(1)
        ).first()
        is not None
    )


@blueprint.get("/b/<batch>/<path:filename>")
def batch_file(batch: str, filename: str) -> Reply:
    """The batch's images, and its pages as previews (no config). Never the manifest: it
    says which explanation is which."""
    batch_dir = _batch_path(batch)
    if batch_dir is None:
        abort(404)
    try:
        target = (batch_dir / filename).resolve()
        found = any(target.is_relative_to(batch_dir / d) for d in BATCH_DIRS) and target.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or otherwise unusable
        found = False
    if not found:
        abort(404)
    relative = target.relative_to(batch_dir).as_posix()
    if relative.startswith("pages/") and relative.endswith(".html"):
        # A preview page in MTurk mode posts the answer to its link's turkSubmitTo: only
        # MTurk's sites, as on /mturk/items (the CSP's form-action enforces it as well).
        refused = _wrong_submit_site()
        if refused is not None:
            return refused
        return _page(batch_dir, relative, batch, None)
    return send_from_directory(batch_dir, relative, max_age=3600)


def _wrong_submit_site() -> tuple[str, int] | None:
    """A 400 page when the link's turkSubmitTo is not one of MTurk's sites, else None."""
    submit_to = request.args.get("turkSubmitTo")
    if submit_to is not None and submit_to.rstrip("/") not in MTURK_SUBMIT_HOSTS:
        return message("Wrong link", "turkSubmitTo must be an MTurk site.", 400)
    return None


@blueprint.get("/mturk/items/<item_key>")
def mturk_item(item_key: str) -> Reply:
    """ExternalQuestion URL of an item. MTurk appends assignmentId, hitId, workerId,
    turkSubmitTo; in preview assignmentId is ASSIGNMENT_ID_NOT_AVAILABLE. Reads only."""
    refused = _wrong_submit_site()
    if refused is not None:
        return refused
    server = state()
    with server.engine.connect() as conn:
        row = conn.execute(
            select(Item.page, Batch.name, Batch.path)
            .join(Batch, Batch.id == Item.batch_id)
            .where(Item.key == item_key)
        ).first()
        worker_key = request.args.get("workerId", "")
        found = (
            find_worker(conn, "mturk", worker_key) if MTURK_ID_RE.fullmatch(worker_key) else None
        )
    if row is None:
        abort(404)
    if request.args.get("assignmentId") != PREVIEW and found is not None and found[1]:
        return message("Not available", "You are not eligible for this study.", 403)
    return _page(Path(row.path), row.page, row.name, None)
