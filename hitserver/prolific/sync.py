"""`hitserver prolific sync`: Prolific's submissions of the batch's study, beside our answers.

The answers themselves are already here (participants post them to our server); Prolific knows
who finished and how each submission was reviewed. Sync pulls every submission of the study
(paginated) into `prolific_submissions`, carries Prolific's review over to our assignments
(APPROVED: approved here; REJECTED: rejected here, freeing the slots for other workers), and
reports mismatches both ways: a submission Prolific shows as finished for which we hold no
answers, and answers we hold for a session Prolific does not show as submitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from tqdm import tqdm

from hitserver.errors import UserError
from hitserver.models import Assignment, Item, ProlificStudy, ProlificSubmission, Response, Worker
from hitserver.policy import release
from hitserver.prolific.client import ProlificClient
from hitserver.prolific.studies import STUDIES, study_row
from hitserver.stats import passes

FINISHED = ("AWAITING REVIEW", "APPROVED", "REJECTED")
HELD = ("submitted", "approved")


@dataclass
class Held:
    """What we hold for one participant in one Prolific session (= submission id). Prolific
    gives each submission its own session id, but a participant can enter our server with a
    copied one, so answers are kept apart by (session, participant)."""

    session_id: str
    participant_id: str
    assignment_ids: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    catch_passed: int = 0
    catch_total: int = 0
    # (paste_count, pasted_chars, reason length) of each answer the page sent telemetry with
    pastes: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def answers(self) -> int:
        return len(self.assignment_ids)


@dataclass
class SyncReport:
    fetched: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    approved_here: int = 0
    rejected_here: int = 0
    problems: list[str] = field(default_factory=list)


Key = tuple[str, str]  # (session id, participant id)


def held_sessions(conn: Connection, batch_id: int) -> dict[Key, Held]:
    """Every (Prolific session, participant) with answers in the batch (any answered status)."""
    columns = [
        Assignment.id,
        Assignment.platform_assignment_id,
        Assignment.status,
        Worker.platform_worker_id,
        Response.choice,
        Response.duration_s,
        Item.expected_choices,
        Response.reason,
        Response.paste_count,
        Response.pasted_chars,
    ]
    rows = conn.execute(
        select(*columns)
        .join(Response, Response.assignment_id == Assignment.id)
        .join(Worker, Worker.id == Assignment.worker_id)
        .join(Item, Item.id == Assignment.item_id)
        .where(Assignment.batch_id == batch_id, Worker.platform == "prolific")
        .order_by(Assignment.submitted_at)
    ).all()
    held: dict[Key, Held] = {}
    for row in rows:
        key = (row.platform_assignment_id or "", row.platform_worker_id)
        entry = held.setdefault(key, Held(*key))
        entry.assignment_ids.append(row.id)
        entry.statuses.append(row.status)
        entry.durations.append(row.duration_s)
        check = passes(row.choice, row.expected_choices)
        if check is not None:
            entry.catch_total += 1
            entry.catch_passed += int(check)
        if row.paste_count is not None:
            entry.pastes.append((row.paste_count, row.pasted_chars or 0, len(row.reason)))
    return held


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Our columns from a submission as the list endpoint returns it."""
    return {
        "participant_id": str(raw.get("participant_id") or raw.get("participant") or ""),
        "status": str(raw.get("status", "")),
        "study_code": raw.get("study_code") or raw.get("entered_code"),
        "started_at": _time(raw.get("started_at")),
        "completed_at": _time(raw.get("completed_at")),
    }


def _store(conn: Connection, study_row_id: int, raw: dict[str, Any], now: datetime) -> str:
    values = _fields(raw)
    old = conn.execute(
        select(ProlificSubmission).where(ProlificSubmission.submission_id == str(raw["id"]))
    ).first()
    if old is None:
        conn.execute(
            insert(ProlificSubmission),
            {"submission_id": str(raw["id"]), "prolific_study_id": study_row_id,
             "synced_at": now, **values},
        )  # fmt: skip
        return "added"
    changed = any(getattr(old, key) != value for key, value in values.items())
    conn.execute(
        update(ProlificSubmission)
        .where(ProlificSubmission.submission_id == str(raw["id"]))
        .values(synced_at=now, **values)
    )
    return "updated" if changed else "unchanged"


def carry_review(conn: Connection, held: Held | None, status: str, now: datetime) -> str | None:
    """Bring Prolific's review of a session to our assignments; returns what changed."""
    if held is None:
        return None
    if status == "APPROVED":
        todo = [
            a for a, s in zip(held.assignment_ids, held.statuses, strict=True) if s == "submitted"
        ]
        if todo:
            conn.execute(
                update(Assignment)
                .where(Assignment.id.in_(todo), Assignment.status == "submitted")
                .values(status="approved", approved_at=now)
            )
            return "approved"
    if status == "REJECTED":
        todo = [a for a, s in zip(held.assignment_ids, held.statuses, strict=True) if s in HELD]
        if todo:
            release(conn, todo, "rejected", now)
            return "rejected"
    return None


def mismatches(submissions: dict[str, dict[str, Any]], held: dict[Key, Held]) -> list[str]:
    """Both ways: finished on Prolific without answers here; answers here not submitted there
    (including answers under a session Prolific gave to another participant)."""
    problems = []
    for sid, values in sorted(submissions.items()):
        ours = held.get((sid, values["participant_id"]))
        if values["status"] in FINISHED and (ours is None or ours.answers == 0):
            problems.append(
                f"Prolific submission {sid} (participant {values['participant_id']}, "
                f"{values['status']}) has no answers here"
            )
    for (sid, pid), ours in sorted(held.items()):
        if not any(s in HELD for s in ours.statuses):
            continue
        theirs = submissions.get(sid, {})
        if theirs and theirs["participant_id"] != pid:
            shown = f"lists that session for participant {theirs['participant_id']}"
        elif theirs.get("status") not in FINISHED:
            shown = f"shows it as {theirs['status']}" if theirs else "does not list it"
        else:
            continue
        problems.append(
            f"participant {pid} (session {sid or '(none)'}): {ours.answers} answers here, "
            f"but Prolific {shown}"
        )
    return problems


def sync(
    engine: Engine, client: ProlificClient, batch_name: str, *, show_progress: bool = True
) -> SyncReport:
    with engine.connect() as conn:
        row = study_row(conn, batch_name)
    raws = [
        raw
        for raw in tqdm(
            client.pages(f"{STUDIES}{row.study_id}/submissions/"),
            desc=f"syncing {batch_name}",
            unit="submission",
            disable=not show_progress,
        )
        if isinstance(raw, dict) and raw.get("id")
    ]
    report = SyncReport(fetched=len(raws))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        held = held_sessions(conn, row.batch_id)
        submissions = {}
        for raw in raws:
            outcome = _store(conn, row.id, raw, now)
            setattr(report, outcome, getattr(report, outcome) + 1)
            values = _fields(raw)
            submissions[str(raw["id"])] = values
            own = held.get((str(raw["id"]), values["participant_id"]))
            changed = carry_review(conn, own, values["status"], now)
            if changed == "approved":
                report.approved_here += 1
            elif changed == "rejected":
                report.rejected_here += 1
        conn.execute(update(ProlificStudy).where(ProlificStudy.id == row.id).values(synced_at=now))
        held = held_sessions(conn, row.batch_id)
    report.problems = mismatches(submissions, held)
    return report


def require_synced(conn: Connection, study_row_id: int) -> None:
    synced = conn.execute(
        select(ProlificStudy.synced_at).where(ProlificStudy.id == study_row_id)
    ).scalar()
    if synced is None:
        raise UserError("run hitserver prolific sync first")
