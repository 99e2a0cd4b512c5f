"""Test helper: a stand-in for Prolific's REST API, a real HTTP server on 127.0.0.1.

It implements the endpoints `hitserver prolific` uses, with the field names and types of
Prolific's API reference, and answers like Prolific: 401 without the right `Authorization:
Token ...`, 400 with field errors for a missing, unknown or mistyped field, 404 for an unknown
id. It keeps state (studies: UNPUBLISHED, ACTIVE, PAUSED, AWAITING REVIEW, COMPLETED;
submissions; bulk bonus payments, each pay call paying again, as the real one does) and can
inject faults: an HTTP status (429 with Retry-After, 500), a delay (a client timeout), or a
dropped answer after the request was carried out (a lost response).

Participants do what Prolific's own site does for them: `enter()` starts a submission and
gives the study URL with its placeholders filled in; `complete()` is the redirect to
`https://app.prolific.com/submissions/complete?cc=CODE`. Not product code.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "standin-token-0123456789"

CODE_TYPES = {
    "COMPLETED", "FAILED_ATTENTION_CHECK", "FOLLOW_UP_STUDY", "GIVE_BONUS",
    "INCOMPATIBLE_DEVICE", "NO_CONSENT", "OTHER", "FIXED_SCREENOUT",
}  # fmt: skip
CODE_ACTIONS = {"AUTOMATICALLY_APPROVE", "MANUALLY_REVIEW", "REQUEST_RETURN"}
DEVICES = {"desktop", "tablet", "mobile"}
REJECTION_CATEGORIES = {
    "TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL", "FAILED_CHECK",
    "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE", "NO_DATA", "UNSUPP_DEVICE", "OTHER",
}  # fmt: skip
PLACEHOLDERS = ("{{%PROLIFIC_PID%}}", "{{%STUDY_ID%}}", "{{%SESSION_ID%}}")
STUDY_TRANSITIONS = {
    "PUBLISH": ({"UNPUBLISHED"}, "ACTIVE"),
    "PAUSE": ({"ACTIVE"}, "PAUSED"),
    "START": ({"PAUSED"}, "ACTIVE"),
    "STOP": ({"ACTIVE", "PAUSED"}, "AWAITING REVIEW"),  # COMPLETED once all are reviewed
}

# (type, required). Types: "str", "int", or a callable check returning an error or None.
Spec = dict[str, tuple[Any, bool]]


def _new_id() -> str:
    return secrets.token_hex(12)  # 24 hex characters, like Prolific's ids


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class BadRequest(Exception):
    def __init__(self, detail: Any) -> None:
        super().__init__(str(detail))
        self.detail = detail


def _type_error(value: Any, kind: Any) -> str | None:
    if kind == "str":
        return None if isinstance(value, str) and value.strip() else "Must be a non-empty string."
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "Must be a positive integer."
    return kind(value)


def validate(body: Any, spec: Spec) -> dict[str, Any]:
    """Prolific-style validation: every unknown, missing or mistyped field is reported."""
    if not isinstance(body, dict):
        raise BadRequest({"non_field_errors": ["Expected a JSON object."]})
    errors: dict[str, list[str]] = {}
    for name in body:
        if name not in spec:
            errors[name] = ["Unknown field."]
    for name, (kind, required) in spec.items():
        if name not in body:
            if required:
                errors[name] = ["This field is required."]
            continue
        problem = _type_error(body[name], kind)
        if problem:
            errors[name] = [problem]
    if errors:
        raise BadRequest(errors)
    return body


def _completion_codes(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "Must be a non-empty list of completion codes."
    seen = set()
    for code in value:
        try:
            validate(
                code,
                {"code": ("str", True), "code_type": (_enum(CODE_TYPES), True),
                 "actions": (_actions, True)},
            )  # fmt: skip
        except BadRequest as exc:
            return f"Invalid completion code: {json.dumps(exc.detail)}"
        if code["code"] in seen:
            return "Each code must be unique within a study."
        seen.add(code["code"])
    return None


def _actions(value: Any) -> str | None:
    if not isinstance(value, list):
        return "Must be a list."
    for action in value:
        try:
            validate(action, {"action": (_enum(CODE_ACTIONS), True)})
        except BadRequest as exc:
            return f"Invalid action: {json.dumps(exc.detail)}"
    return None


def _enum(values: set[str]) -> Any:
    def check(value: Any) -> str | None:
        return None if value in values else f"Must be one of {sorted(values)}."

    return check


def _devices(value: Any) -> str | None:
    if not isinstance(value, list) or not value or any(v not in DEVICES for v in value):
        return f"Must be a non-empty list of {sorted(DEVICES)}."
    return None


def _filters(value: Any) -> str | None:
    if not isinstance(value, list):
        return "Must be a list."
    for item in value:
        ok = (
            isinstance(item, dict)
            and set(item) == {"filter_id", "selected_values"}
            and isinstance(item["filter_id"], str)
            and isinstance(item["selected_values"], list)
            and all(isinstance(v, str) for v in item["selected_values"])
        )
        if not ok:
            return "Each filter is {filter_id: string, selected_values: [string]}."
    return None


def _study_url(value: Any) -> str | None:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        return "Enter a valid URL."
    return None


CREATE_STUDY: Spec = {
    "name": ("str", True),
    "internal_name": ("str", False),
    "description": ("str", True),
    "external_study_url": (_study_url, True),
    "prolific_id_option": (_enum({"question", "url_parameters", "not_required"}), True),
    "completion_codes": (_completion_codes, True),
    "total_available_places": ("int", True),
    "estimated_completion_time": ("int", True),
    "reward": ("int", True),
    "device_compatibility": (_devices, False),
    "filters": (_filters, False),
}
STUDY_TRANSITION: Spec = {"action": (_enum(set(STUDY_TRANSITIONS)), True)}
SUBMISSION_TRANSITION: Spec = {
    "action": (_enum({"APPROVE", "REJECT"}), True),
    "message": ("str", False),
    "rejection_category": (_enum(REJECTION_CATEGORIES), False),
}
CREATE_BONUS: Spec = {"study_id": ("str", True), "csv_bonuses": ("str", True)}


@dataclass
class Fault:
    """Applies to the next `count` requests whose method and path match."""

    method: str
    path: str  # regular expression, matched from the start of the path
    count: int = 1
    status: int | None = None  # answer this status instead
    retry_after: str | None = None
    delay_s: float = 0.0  # wait this long before answering
    drop: bool = False  # carry the request out, then close the connection without answering


@dataclass
class State:
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    bonuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: list[tuple[str, str, int]] = field(default_factory=list)  # (bulk id, sub, cents)
    requests: list[tuple[str, str]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


class Standin:
    def __init__(self, page_size: int = 2) -> None:
        self.state = State()
        self.lock = threading.RLock()
        self.page_size = page_size
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # --- test controls -------------------------------------------------------------------

    def inject(self, method: str, path: str, **kwargs: Any) -> None:
        with self.lock:
            self.state.faults.append(Fault(method, path, **kwargs))

    def calls(self, method: str, pattern: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.state.requests if m == method and re.match(pattern, p))

    def enter(self, study_id: str, participant_id: str) -> tuple[str, str]:
        """A participant starts the study: a new ACTIVE submission, and the study URL."""
        with self.lock:
            study = self.state.studies[study_id]
            if study["status"] != "ACTIVE":
                raise RuntimeError(f"study {study_id} is {study['status']}, not ACTIVE")
            submission_id = _new_id()
            self.state.submissions[submission_id] = {
                "id": submission_id,
                "study_id": study_id,
                "participant_id": participant_id,
                "status": "ACTIVE",
                "started_at": _now(),
                "completed_at": None,
                "study_code": None,
                "bonus_payments": [],
            }
            study["places_taken"] += 1
            url = study["external_study_url"]
            for placeholder, value in zip(
                PLACEHOLDERS, (participant_id, study_id, submission_id), strict=True
            ):
                url = url.replace(placeholder, value)
            return submission_id, url

    def complete(self, submission_id: str, code: str) -> str:
        """The participant arrives at Prolific's completion URL with `cc=code`."""
        with self.lock:
            submission = self.state.submissions[submission_id]
            study = self.state.studies[submission["study_id"]]
            submission["study_code"] = code
            submission["completed_at"] = _now()
            actions = next(
                (
                    [a["action"] for a in c["actions"]]
                    for c in study["completion_codes"]
                    if c["code"] == code
                ),
                ["MANUALLY_REVIEW"],  # an unknown code: the researcher reviews it
            )
            if "AUTOMATICALLY_APPROVE" in actions:
                submission["status"] = "APPROVED"
            elif "REQUEST_RETURN" in actions:
                submission["status"] = "RETURNED"
            else:
                submission["status"] = "AWAITING REVIEW"
            return str(submission["status"])

    # --- serving -------------------------------------------------------------------------

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            self.state.requests.append((method, path))
            for fault in self.state.faults:
                if fault.count > 0 and fault.method == method and re.match(fault.path, path):
                    fault.count -= 1
                    return fault
        return None

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        """(status, JSON body) for one API request; raises BadRequest / LookupError."""
        with self.lock:
            return _route(self, method, path, query, body)


def _route(s: Standin, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
    routes: list[tuple[str, str, Any]] = [
        ("GET", r"/api/v1/studies/$", _list_studies),
        ("POST", r"/api/v1/studies/$", _create_study),
        ("GET", r"/api/v1/studies/(?P<id>\w+)/$", _get_study),
        ("POST", r"/api/v1/studies/(?P<id>\w+)/transition/$", _transition_study),
        ("GET", r"/api/v1/studies/(?P<id>\w+)/submissions/$", _list_submissions),
        ("GET", r"/api/v1/submissions/(?P<id>\w+)/$", _get_submission),
        ("POST", r"/api/v1/submissions/(?P<id>\w+)/transition/$", _transition_submission),
        ("POST", r"/api/v1/submissions/bonus-payments/$", _create_bonus),
        ("POST", r"/api/v1/bulk-bonus-payments/(?P<id>\w+)/pay/$", _pay_bonus),
    ]
    for verb, pattern, handler in routes:
        match = re.match(pattern, path)
        if match and verb == method:
            return handler(s, match.groupdict().get("id"), query, body)
    raise LookupError(path)


def _study(s: Standin, study_id: str | None) -> dict[str, Any]:
    study = s.state.studies.get(study_id or "")
    if study is None:
        raise LookupError(study_id)
    return study


def _list_studies(s: Standin, _id: Any, query: dict[str, list[str]], _body: Any) -> Any:
    return 200, {"results": [dict(study) for study in s.state.studies.values()]}


def _create_study(s: Standin, _id: Any, _query: Any, body: Any) -> Any:
    study = dict(validate(body, CREATE_STUDY))
    study_id = _new_id()
    study.update(id=study_id, status="UNPUBLISHED", places_taken=0, date_created=_now())
    study.setdefault("internal_name", study["name"])
    s.state.studies[study_id] = study
    return 201, dict(study)


def _get_study(s: Standin, study_id: str | None, _query: Any, _body: Any) -> Any:
    return 200, dict(_study(s, study_id))


def _transition_study(s: Standin, study_id: str | None, _query: Any, body: Any) -> Any:
    study = _study(s, study_id)
    action = validate(body, STUDY_TRANSITION)["action"]
    allowed, target = STUDY_TRANSITIONS[action]
    if study["status"] not in allowed:
        raise BadRequest(f"Cannot {action} a study that is {study['status']}.")
    study["status"] = target
    _settle(s, study)
    return 200, dict(study)


def _settle(s: Standin, study: dict[str, Any]) -> None:
    """A stopped study whose every submission has been reviewed is COMPLETED."""
    open_states = {"ACTIVE", "AWAITING REVIEW"}
    if study["status"] == "AWAITING REVIEW" and not any(
        x["status"] in open_states
        for x in s.state.submissions.values()
        if x["study_id"] == study["id"]
    ):
        study["status"] = "COMPLETED"


def _list_submissions(
    s: Standin, study_id: str | None, query: dict[str, list[str]], _b: Any
) -> Any:
    _study(s, study_id)
    rows = [dict(x) for x in s.state.submissions.values() if x["study_id"] == study_id]
    page = int(query.get("page", ["1"])[0])
    chunk = rows[(page - 1) * s.page_size : page * s.page_size]
    more = page * s.page_size < len(rows)
    base = f"{s.url}/api/v1/studies/{study_id}/submissions/"
    return 200, {
        "results": chunk,
        "_links": {
            "self": {"href": f"{base}?page={page}"},
            "next": {"href": f"{base}?page={page + 1}" if more else None},
        },
        "meta": {"count": len(rows)},
    }


def _get_submission(s: Standin, submission_id: str | None, _query: Any, _body: Any) -> Any:
    submission = s.state.submissions.get(submission_id or "")
    if submission is None:
        raise LookupError(submission_id)
    return 200, dict(submission)


def _transition_submission(s: Standin, submission_id: str | None, _q: Any, body: Any) -> Any:
    submission = s.state.submissions.get(submission_id or "")
    if submission is None:
        raise LookupError(submission_id)
    request = validate(body, SUBMISSION_TRANSITION)
    target = "APPROVED" if request["action"] == "APPROVE" else "REJECTED"
    if request["action"] == "REJECT":
        errors = {}
        if len(request.get("message", "")) < 100:
            errors["message"] = ["Required to reject; at least 100 characters."]
        if "rejection_category" not in request:
            errors["rejection_category"] = ["Required to reject."]
        if errors:
            raise BadRequest(errors)
    elif set(request) != {"action"}:
        raise BadRequest({"message": ["Only for a rejection."]})
    if submission["status"] == target:
        return 200, dict(submission)  # idempotent: the same request again is ignored
    if submission["status"] != "AWAITING REVIEW":
        raise BadRequest(f"Cannot {request['action']} a submission that is {submission['status']}.")
    submission["status"] = target
    if target == "REJECTED":
        submission["rejection_category"] = request["rejection_category"]
        submission["message"] = request["message"]
    _settle(s, _study(s, submission["study_id"]))
    return 200, dict(submission)


def _create_bonus(s: Standin, _id: Any, _query: Any, body: Any) -> Any:
    request = validate(body, CREATE_BONUS)
    _study(s, request["study_id"])
    lines: list[tuple[str, int]] = []
    errors = []
    for number, line in enumerate(request["csv_bonuses"].strip().splitlines(), 1):
        parts = line.split(",")
        try:
            amount = Decimal(parts[1]) if len(parts) == 2 else Decimal("nan")
            cents = int(amount * 100) if amount == amount.quantize(Decimal("0.01")) else 0
        except (InvalidOperation, ValueError):
            cents = 0
        submission = s.state.submissions.get(parts[0].strip())
        if submission is None or submission["study_id"] != request["study_id"]:
            submission = next(
                (
                    x
                    for x in s.state.submissions.values()
                    if x["participant_id"] == parts[0].strip()
                    and x["study_id"] == request["study_id"]
                ),
                None,
            )
        if submission is None or cents <= 0:
            errors.append(
                f"line {number}: {line!r} is not '<submission or participant id>,<amount>'"
            )
            continue
        lines.append((submission["id"], cents))
    if errors:
        raise BadRequest({"csv_bonuses": errors})
    bulk_id = _new_id()
    amount = sum(c for _, c in lines)
    s.state.bonuses[bulk_id] = {"id": bulk_id, "study": request["study_id"], "lines": lines}
    return 201, {
        "id": bulk_id,
        "study": request["study_id"],
        "amount": amount,
        "fees": amount // 3,
        "total_amount": amount + amount // 3,
    }


def _pay_bonus(s: Standin, bulk_id: str | None, _query: Any, body: Any) -> Any:
    bonus = s.state.bonuses.get(bulk_id or "")
    if bonus is None:
        raise LookupError(bulk_id)
    if body not in (None, {}):
        raise BadRequest({"non_field_errors": ["No body expected."]})
    for submission_id, cents in bonus["lines"]:  # not idempotent: every call pays again
        s.state.payments.append((bonus["id"], submission_id, cents))
        s.state.submissions[submission_id]["bonus_payments"].append(cents)
    return 202, None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if raw:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, title: str, detail: Any, **headers: str) -> None:
        body = {"error": {"status": status, "error_code": status * 100, "title": title,
                          "detail": detail}}  # fmt: skip
        self._answer(status, body, headers)

    def _serve(self, method: str) -> None:
        standin = self.server.standin
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fault = standin.take_fault(method, split.path)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and fault.status is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._error(fault.status, "Injected", "injected fault", **extra)
            return
        if self.headers.get("Authorization") != f"Token {TOKEN}":
            self._error(401, "Unauthorized", "Invalid token.")
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._error(400, "Bad request", "Malformed JSON.")
            return
        try:
            status, answer = standin.handle(method, split.path, parse_qs(split.query), body)
        except BadRequest as exc:
            self._error(400, "Bad request", exc.detail)
            return
        except LookupError:
            self._error(404, "Not found", "Not found.")
            return
        if fault is not None and fault.drop:
            self.close_connection = True  # carried out; the answer is lost
            return
        self._answer(status, answer)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: Standin


@contextmanager
def running_standin(page_size: int = 2) -> Iterator[Standin]:
    standin = Standin(page_size)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.standin = standin
    standin.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
