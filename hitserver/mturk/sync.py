"""`hitserver mturk sync`: bring MTurk's assignments into the database.

MTurk is the authority on what was submitted (a server that marks work done that the platform
never received is a complaint against psiTurk): every Submitted/Approved/Rejected assignment
of every HIT of the batch is fetched (paginated `list_assignments_for_hit`), its
QuestionFormAnswers parsed, and stored or updated. A new answer takes one of its item's slots,
so the database's "N workers per item" holds for MTurk answers too, and so does a rejection
that a requester overturns on MTurk (the answer takes a slot again). Answers that cannot be
stored (malformed, no free slot, refused by the database) are reported, never silently
dropped, and the other assignments still sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import DBAPIError
from tqdm import tqdm

from hitserver.database import Busy, in_transaction
from hitserver.errors import UserError
from hitserver.models import Assignment, Batch, Item, MturkHit, Response
from hitserver.mturk.questions import parse_answers
from hitserver.policy import ensure_worker, reinstate, release, take_slot
from hitserver.security import new_assignment_id, new_token, token_digest
from hitserver.validation import FieldError, clean_choice, clean_reason

STATUSES = {"Submitted": "submitted", "Approved": "approved", "Rejected": "rejected"}
PAGE_SIZE = 100
MAX_PAGES = 1000
# MTurk stores what workers typed; keep all of it (the server's own limit is for its form).
MAX_REASON_CHARS = 100_000


@dataclass
class SyncReport:
    fetched: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)


def fetch_assignments(client: Any, hit_id: str) -> list[dict[str, Any]]:
    """Every submitted, approved or rejected assignment of a HIT, following NextToken."""
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "HITId": hit_id,
        "MaxResults": PAGE_SIZE,
        "AssignmentStatuses": list(STATUSES),
    }
    for _ in range(MAX_PAGES):
        page = client.list_assignments_for_hit(**kwargs)
        found.extend(page.get("Assignments", []))
        token = page.get("NextToken")
        if not token:
            return found
        kwargs["NextToken"] = token
    raise UserError(f"HIT {hit_id}: more than {MAX_PAGES} pages of assignments")


def _answer(raw: dict[str, Any]) -> tuple[int, str]:
    answers = parse_answers(raw.get("Answer", ""))
    return (
        clean_choice(answers.get("choice")),
        clean_reason(answers.get("reason"), 1, MAX_REASON_CHARS),
    )


def _change_status(
    conn: Connection,
    assignment_id: str,
    old: str,
    status: str,
    item_id: int,
    raw: dict[str, Any],
    now: datetime,
) -> None:
    """Move a stored assignment to the status MTurk shows (raises ValueError when it cannot)."""
    mturk_id = raw["AssignmentId"]
    approved_at = raw.get("ApprovalTime") or now
    if status == "approved" and old == "rejected":
        # A requester may overturn a rejection on MTurk. The rejection gave the slot back,
        # and an approved answer must hold one again (ck_assignments_holds_slot).
        if not reinstate(conn, assignment_id, item_id, "approved", approved_at):
            raise ValueError(
                f"assignment {mturk_id}: approved on MTurk after it was rejected here, but "
                "every slot of its item is taken now; it stays rejected here"
            )
    elif status == "approved":
        conn.execute(
            update(Assignment)
            .where(Assignment.id == assignment_id)
            .values(status="approved", approved_at=approved_at)
        )
    elif status == "rejected":
        release(conn, [assignment_id], "rejected", raw.get("RejectionTime") or now)
    else:
        raise ValueError(f"assignment {mturk_id}: is {old} here but Submitted on MTurk")


def reconcile(
    conn: Connection, item_id: int, batch_id: int, raw: dict[str, Any], now: datetime
) -> str:
    """Store or update one MTurk assignment; returns added | updated | unchanged, or raises
    ValueError with what is wrong."""
    mturk_id = raw["AssignmentId"]
    status = STATUSES[raw["AssignmentStatus"]]
    try:
        choice, reason = _answer(raw)
    except (FieldError, ValueError) as exc:
        raise ValueError(f"assignment {mturk_id}: unusable answer ({exc})") from exc
    accepted_at: datetime = raw["AcceptTime"]
    submitted_at: datetime = raw["SubmitTime"]
    existing = conn.execute(
        select(Assignment.id, Assignment.status, Response.choice, Response.reason)
        .join(Response, Response.assignment_id == Assignment.id)
        .where(Assignment.item_id == item_id, Assignment.platform_assignment_id == mturk_id)
    ).first()

    if existing is None:
        worker_id, _ = ensure_worker(conn, "mturk", raw["WorkerId"], now)
        assignment_id = new_assignment_id()
        slot = None
        if status != "rejected":
            taken = take_slot(conn, assignment_id, item_id, [], worker_id)
            if taken is None:
                raise ValueError(
                    f"assignment {mturk_id}: the item has no free slot (or this worker "
                    "answered it already); not stored"
                )
            slot = taken.slot
        conn.execute(
            insert(Assignment),
            {
                "id": assignment_id,
                "item_id": item_id,
                "batch_id": batch_id,
                "worker_id": worker_id,
                "slot": slot,
                "worker_slot": None,
                "token_sha256": token_digest(new_token()),
                "status": status,
                "platform_assignment_id": mturk_id,
                "accepted_at": accepted_at,
                "expires_at": None,
                "submitted_at": submitted_at,
                "approved_at": (raw.get("ApprovalTime") or now) if status == "approved" else None,
                "rejected_at": (raw.get("RejectionTime") or now) if status == "rejected" else None,
            },
        )
        conn.execute(
            insert(Response),
            {
                "assignment_id": assignment_id,
                "item_id": item_id,
                "worker_id": worker_id,
                "choice": choice,
                "reason": reason,
                "duration_s": max(0.0, (submitted_at - accepted_at).total_seconds()),
                "source": "mturk",
                "received_at": now,
            },
        )
        return "added"

    changed = False
    if (existing.choice, existing.reason) != (choice, reason):
        conn.execute(
            update(Response)
            .where(Response.assignment_id == existing.id)
            .values(choice=choice, reason=reason)
        )
        changed = True
    if existing.status != status:
        _change_status(conn, existing.id, existing.status, status, item_id, raw, now)
        changed = True
    return "updated" if changed else "unchanged"


def sync(
    engine: Engine,
    client: Any,
    batch_name: str,
    *,
    production: bool,
    show_progress: bool = True,
) -> SyncReport:
    with engine.connect() as conn:
        hits = conn.execute(
            select(MturkHit.hit_id, MturkHit.item_id, Item.batch_id)
            .join(Item, Item.id == MturkHit.item_id)
            .join(Batch, Batch.id == Item.batch_id)
            .where(Batch.name == batch_name, MturkHit.production == production)
            .order_by(Item.position)
        ).all()
    if not hits:
        market = "production" if production else "sandbox"
        raise UserError(f"batch {batch_name!r} has no {market} HITs (hitserver mturk publish)")
    report = SyncReport()
    for hit in tqdm(hits, desc=f"syncing {batch_name}", unit="HIT", disable=not show_progress):
        for raw in fetch_assignments(client, hit.hit_id):
            report.fetched += 1
            now = datetime.now(UTC)
            try:
                outcome = in_transaction(
                    engine,
                    lambda conn, raw=raw, hit=hit, now=now: reconcile(
                        conn, hit.item_id, hit.batch_id, raw, now
                    ),
                )
            except ValueError as exc:
                report.problems.append(f"HIT {hit.hit_id}: {exc}")
                continue
            except (DBAPIError, Busy) as exc:
                # One assignment the database refuses must not stop the others from syncing.
                reason = exc.orig if isinstance(exc, DBAPIError) else exc
                report.problems.append(
                    f"HIT {hit.hit_id}: assignment {raw.get('AssignmentId')}: the database "
                    f"refused it ({reason}); not stored"
                )
                continue
            setattr(report, outcome, getattr(report, outcome) + 1)
    return report
