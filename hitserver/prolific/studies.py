"""`hitserver prolific publish|status|pause|start|stop`: the study of a batch.

Publishing is safe to repeat. The study's row (with a deterministic `internal_name` and the
body of the create call) is committed before Prolific is asked to create the draft, and the
study id is committed as soon as it is known. A run interrupted in between, or a create call
whose answer was lost, finds the draft again by its internal name instead of creating a second
study. Transitions are checked against the study's status first, so repeating one is a no-op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from hitserver.errors import UserError
from hitserver.models import Batch, ProlificBonus, ProlificStudy, ProlificSubmission
from hitserver.prolific.client import ProlificClient, ProlificError, Unsure

STUDIES = "/api/v1/studies/"
CODE_ACTIONS = ("MANUALLY_REVIEW", "AUTOMATICALLY_APPROVE", "REQUEST_RETURN")
DEVICES = ("desktop", "tablet", "mobile")
# Study status after each transition, and the statuses it may start from.
TRANSITIONS = {
    "PUBLISH": ("ACTIVE", ("UNPUBLISHED",)),
    "PAUSE": ("PAUSED", ("ACTIVE",)),
    "START": ("ACTIVE", ("PAUSED",)),
    "STOP": ("AWAITING REVIEW", ("ACTIVE", "PAUSED")),
}
STOPPED = ("AWAITING REVIEW", "COMPLETED")
CREATE_ATTEMPTS = 3


@dataclass(frozen=True)
class StudySettings:
    """What participants see on Prolific and what the study costs."""

    url: str  # the public base URL of `hitserver run`
    reward_cents: int
    estimated_minutes: int
    places: int
    completion_code: str
    failed_code: str
    title: str = "Which robot's explanation is more reasonable?"
    description: str = (
        "Look at pictures and two robots' explanations of what they see, and say which "
        "explanation is more reasonable and why."
    )
    devices: tuple[str, ...] = ("desktop",)
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    completed_action: str = "MANUALLY_REVIEW"
    failed_action: str = "MANUALLY_REVIEW"


@dataclass
class PublishReport:
    study_id: str
    status: str
    created: bool
    found_again: bool = False
    notes: list[str] = field(default_factory=list)


def study_url(base_url: str, batch_name: str) -> str:
    """The study URL with Prolific's placeholders, restricted to the batch."""
    return (
        f"{base_url.rstrip('/')}/prolific?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}"
        f"&STUDY_ID={{{{%STUDY_ID%}}}}&SESSION_ID={{{{%SESSION_ID%}}}}&batch={batch_name}"
    )


def create_body(settings: StudySettings, batch_name: str, internal_name: str) -> dict[str, Any]:
    """The body of `POST /api/v1/studies/` (field names as in Prolific's API reference)."""
    if not settings.url.startswith("https://"):
        raise UserError("--url must be the public https:// address of your hitserver")
    if settings.completion_code == settings.failed_code:
        raise UserError("the completion code and the failed-check code must differ")
    body: dict[str, Any] = {
        "name": settings.title,
        "internal_name": internal_name,
        "description": settings.description,
        "external_study_url": study_url(settings.url, batch_name),
        "prolific_id_option": "url_parameters",
        "completion_codes": [
            {
                "code": settings.completion_code,
                "code_type": "COMPLETED",
                "actions": [{"action": settings.completed_action}],
            },
            {
                "code": settings.failed_code,
                "code_type": "FAILED_ATTENTION_CHECK",
                "actions": [{"action": settings.failed_action}],
            },
        ],
        "total_available_places": settings.places,
        "estimated_completion_time": settings.estimated_minutes,
        "reward": settings.reward_cents,
        "device_compatibility": list(settings.devices),
    }
    if settings.filters:
        body["filters"] = [
            {"filter_id": name, "selected_values": list(values)}
            for name, values in settings.filters
        ]
    return body


def study_row(conn: Connection, batch_name: str) -> Any:
    """The batch's study row (raises a one-line error when there is none)."""
    batch_id = conn.execute(select(Batch.id).where(Batch.name == batch_name)).scalar()
    if batch_id is None:
        raise UserError(f"no batch {batch_name!r} is loaded (hitserver load BATCH first)")
    row = conn.execute(select(ProlificStudy).where(ProlificStudy.batch_id == batch_id)).first()
    if row is None or row.study_id is None:
        raise UserError(f"batch {batch_name!r} has no Prolific study (hitserver prolific publish)")
    return row


def _find_by_internal_name(client: ProlificClient, internal_name: str) -> dict[str, Any] | None:
    for study in client.pages(STUDIES):
        if isinstance(study, dict) and study.get("internal_name") == internal_name:
            return study
    return None


def _create(client: ProlificClient, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the draft; after an unsure failure look for it before trying again.
    Returns the study and whether it was found (rather than created by this call)."""
    for _ in range(CREATE_ATTEMPTS):
        try:
            return client.request("POST", STUDIES, body, safe=False), False
        except Unsure:
            found = _find_by_internal_name(client, body["internal_name"])
            if found is not None:
                return found, True
    raise ProlificError(f"Prolific: could not create the study after {CREATE_ATTEMPTS} tries")


def _pending_row(engine: Engine, batch_name: str, settings: StudySettings) -> Any:
    """The batch's study row, written (as PENDING, with the create body) when missing."""
    try:
        return _write_pending(engine, batch_name, settings)
    except IntegrityError:  # a publish running beside this one wrote it first
        return _write_pending(engine, batch_name, settings)


def _write_pending(engine: Engine, batch_name: str, settings: StudySettings) -> Any:
    with engine.begin() as conn:
        batch = conn.execute(
            select(Batch.id, Batch.manifest_sha256).where(Batch.name == batch_name)
        ).first()
        if batch is None:
            raise UserError(f"no batch {batch_name!r} is loaded (hitserver load BATCH first)")
        row = conn.execute(select(ProlificStudy).where(ProlificStudy.batch_id == batch.id)).first()
        if row is not None:
            return row
        internal_name = f"hitserver {batch_name} {batch.manifest_sha256[:12]}"
        body = create_body(settings, batch_name, internal_name)
        conn.execute(
            insert(ProlificStudy),
            {
                "batch_id": batch.id,
                "internal_name": internal_name,
                "study_id": None,
                "status": "PENDING",
                "request": json.dumps(body, sort_keys=True),
                "completion_code": settings.completion_code,
                "failed_code": settings.failed_code,
                "created_at": datetime.now(UTC),
            },
        )
        return conn.execute(select(ProlificStudy).where(ProlificStudy.batch_id == batch.id)).one()


def _record(engine: Engine, row_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(ProlificStudy).where(ProlificStudy.id == row_id).values(**values))


def transition(client: ProlificClient, study_id: str, action: str) -> str:
    """Move the study by `action` unless it is there already; returns its status."""
    target, sources = TRANSITIONS[action]
    status = str(client.get(f"{STUDIES}{study_id}/")["status"])
    if status == target or (action == "STOP" and status in STOPPED):
        return status
    if status not in sources:
        raise UserError(f"study {study_id} is {status}; it cannot {action.lower()}")
    try:
        answer = client.request("POST", f"{STUDIES}{study_id}/transition/", {"action": action})
    except ProlificError:
        # A lost answer to a transition that was carried out: the retry was then refused.
        status = str(client.get(f"{STUDIES}{study_id}/")["status"])
        if status == target or (action == "STOP" and status in STOPPED):
            return status
        raise
    return str(answer.get("status", target)) if isinstance(answer, dict) else target


def publish(
    engine: Engine,
    client: ProlificClient,
    batch_name: str,
    settings: StudySettings,
    *,
    draft: bool = False,
) -> PublishReport:
    row = _pending_row(engine, batch_name, settings)
    report = PublishReport(row.study_id or "", row.status, created=False)
    if row.study_id is not None and json.loads(row.request) != create_body(
        settings, batch_name, row.internal_name
    ):
        report.notes.append(
            "the study exists already: the settings it was created with are kept "
            "(change them on Prolific)"
        )
    if row.study_id is None:
        body = json.loads(row.request)
        found = _find_by_internal_name(client, row.internal_name)
        report.found_again = found is not None
        if found is None:
            found, report.found_again = _create(client, body)
            report.created = not report.found_again
        report.study_id = str(found["id"])
        report.status = str(found.get("status", "UNPUBLISHED"))
        _record(engine, row.id, study_id=report.study_id, status=report.status)
    if not draft:
        report.status = transition(client, report.study_id, "PUBLISH")
        _record(engine, row.id, status=report.status, published_at=datetime.now(UTC))
    return report


def change(engine: Engine, client: ProlificClient, batch_name: str, action: str) -> str:
    """pause / start / stop the batch's study; returns the new status."""
    with engine.connect() as conn:
        row = study_row(conn, batch_name)
    status = transition(client, row.study_id, action)
    _record(engine, row.id, status=status)
    return status


@dataclass(frozen=True)
class StudyStatus:
    study_id: str
    status: str
    places_taken: int | None
    places: int | None
    internal_name: str
    submissions: dict[str, int] = field(default_factory=dict)  # as of the last sync
    bonuses_paid_cents: int = 0


def status(engine: Engine, client: ProlificClient, batch_name: str) -> StudyStatus:
    with engine.connect() as conn:
        row = study_row(conn, batch_name)
    study = client.get(f"{STUDIES}{row.study_id}/")
    _record(engine, row.id, status=str(study.get("status")))
    with engine.connect() as conn:
        counts = conn.execute(
            select(ProlificSubmission.status, func.count())
            .where(ProlificSubmission.prolific_study_id == row.id)
            .group_by(ProlificSubmission.status)
            .order_by(ProlificSubmission.status)
        ).all()
        paid = conn.execute(
            select(func.coalesce(func.sum(ProlificBonus.amount_cents), 0)).where(
                ProlificBonus.prolific_study_id == row.id, ProlificBonus.paid_at.is_not(None)
            )
        ).scalar_one()
    return StudyStatus(
        row.study_id,
        str(study.get("status")),
        study.get("places_taken"),
        study.get("total_available_places"),
        row.internal_name,
        {status: count for status, count in counts},
        int(paid),
    )
