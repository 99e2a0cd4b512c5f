"""JSON API (docs/contracts.md 10). The HTML pages post here too."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, url_for

from hitserver.policy import Claim, PolicyError, Stored, give_back, submit
from hitserver.quality import parse_telemetry, store_telemetry
from hitserver.state import claim_for_client, state
from hitserver.throttle import RateLimited
from hitserver.validation import (
    ASSIGNMENT_ID_RE,
    FieldError,
    parse_answer,
    parse_claim,
    parse_token,
)

blueprint = Blueprint("api", __name__, url_prefix="/api")


def read_json() -> Any:
    """The request body as JSON (any content type), or a 400 naming the body."""
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FieldError(400, "body", "must be a JSON document") from exc


def error(status: int, message: str, field: str | None) -> tuple[Response, int]:
    return jsonify({"error": message, "field": field}), status


@blueprint.errorhandler(FieldError)
def field_error(exc: FieldError) -> tuple[Response, int]:
    return error(exc.status, exc.message, exc.field)


@blueprint.errorhandler(PolicyError)
def policy_error(exc: PolicyError) -> tuple[Response, int]:
    response, status = error(exc.status, exc.message, exc.field)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response, status


def task_payload(new: Claim) -> dict[str, Any]:
    """What a client needs to show the task; model and method names stay hidden (contracts 10)."""
    # Batch names and manifest paths are URL-safe ([A-Za-z0-9_.-] and '/'), checked at load.
    prefix = url_for("worker.batch_file", batch=new.batch, filename="x")[:-1]

    def batch_file_url(relative: str) -> str:
        return prefix + quote(relative)

    spec = json.loads(new.spec)
    sides = {"first": spec.get("first") or {}, "second": spec.get("second") or {}}
    left = spec.get("robot_a", "first")
    right = "second" if left == "first" else "first"

    def side(name: str) -> dict[str, Any]:
        shown = sides[name]
        return {
            "concepts": list(shown.get("concepts", [])),
            "masks": [batch_file_url(m) for m in shown.get("masks", [])],
        }

    return {
        "page_url": batch_file_url(new.page),
        "image_url": batch_file_url(new.image),
        "class_name": new.class_name,
        "robot_a": side(left),
        "robot_b": side(right),
        "progress": new.progress,
    }


def stored_payload(stored: Stored) -> dict[str, Any]:
    return {
        "assignment_id": stored.assignment_id,
        "item_id": stored.item_key,
        "choice": stored.choice,
        "reason": stored.reason,
        "submitted_at": stored.submitted_at.isoformat().replace("+00:00", "Z"),
    }


@blueprint.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})


@blueprint.post("/assignments")
def create_assignment() -> tuple[Response, int] | Response:
    server = state()
    request_ = parse_claim(read_json())
    if not server.settings.admits_local:
        return error(403, "this study admits workers only through MTurk or Prolific", "platform")
    new = claim_for_client(server, request_.platform, request_.worker_id, request_.batch, None)
    if new is None:
        return Response(status=204)
    body = {
        "assignment_id": new.assignment_id,
        "item_id": new.item_key,
        "token": new.token,
        "task": task_payload(new),
    }
    return jsonify(body), 201


@blueprint.post("/assignments/<assignment_id>/response")
def create_response(assignment_id: str) -> tuple[Response, int]:
    server = state()
    if not ASSIGNMENT_ID_RE.fullmatch(assignment_id):
        return error(404, "no such assignment", "assignment_id")
    payload = read_json()
    answer = parse_answer(
        payload, server.settings.reason_min_chars, server.settings.reason_max_chars
    )
    telemetry = parse_telemetry(payload.get("telemetry"))
    now = server.clock()
    stored = server.write(
        lambda conn: store_telemetry(
            conn,
            submit(conn, assignment_id, answer.token, answer.choice, answer.reason, now),
            telemetry,
        )
    )
    return jsonify(stored_payload(stored)), 201 if stored.created else 200


@blueprint.post("/assignments/<assignment_id>/return")
def return_assignment(assignment_id: str) -> tuple[Response, int]:
    server = state()
    if not ASSIGNMENT_ID_RE.fullmatch(assignment_id):
        return error(404, "no such assignment", "assignment_id")
    token = parse_token(read_json())
    now = server.clock()
    server.write(lambda conn: give_back(conn, assignment_id, token, now))
    return jsonify({"assignment_id": assignment_id, "status": "returned"}), 200
