"""`hitserver mturk approve|reject|expire|balance`: act on MTurk, then record it locally."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Engine, select, update

from hitserver.errors import UserError
from hitserver.export import require_batch
from hitserver.models import Assignment, Batch, Item, MturkHit, Worker
from hitserver.policy import release
from hitserver.stats import catch_record

# update_expiration_for_hit with a time in the past expires a HIT at once.
PAST = datetime(2015, 1, 1, tzinfo=UTC)


@dataclass
class ReviewReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def approve(
    engine: Engine,
    client: Any,
    batch_name: str,
    *,
    feedback: str | None = None,
    skip_failed_catch: float | None = None,
) -> ReviewReport:
    """Approve every submitted MTurk assignment of the batch (after `sync`). With
    `skip_failed_catch` = f, workers who failed more than a fraction f of their catch trials
    are left for manual review."""
    report = ReviewReport()
    with engine.connect() as conn:
        require_batch(conn, batch_name)  # a misspelt name would approve nothing, "successfully"
        rows = conn.execute(
            select(Assignment.id, Assignment.platform_assignment_id, Assignment.worker_id)
            .join(Worker, Worker.id == Assignment.worker_id)
            .join(Batch, Batch.id == Assignment.batch_id)
            .where(
                Batch.name == batch_name,
                Worker.platform == "mturk",
                Assignment.status == "submitted",
            )
            .order_by(Assignment.submitted_at)
        ).all()
        failing: set[int] = set()
        if skip_failed_catch is not None:
            for worker_id in {row.worker_id for row in rows}:
                _, passed, checks = catch_record(conn, worker_id)
                if checks and (checks - passed) / checks > skip_failed_catch:
                    failing.add(worker_id)
    for row in rows:
        if row.worker_id in failing:
            report.skipped.append(row.platform_assignment_id)
            continue
        kwargs: dict[str, Any] = {"AssignmentId": row.platform_assignment_id}
        if feedback:
            kwargs["RequesterFeedback"] = feedback
        try:
            client.approve_assignment(**kwargs)
        except ClientError as exc:
            report.failed.append(f"{row.platform_assignment_id}: {exc}")
            continue
        with engine.begin() as conn:
            conn.execute(
                update(Assignment)
                .where(Assignment.id == row.id, Assignment.status == "submitted")
                .values(status="approved", approved_at=datetime.now(UTC))
            )
        report.done.append(row.platform_assignment_id)
    return report


def reject(engine: Engine, client: Any, mturk_assignment_id: str, feedback: str) -> None:
    """Reject one MTurk assignment (MTurk requires feedback); its slot is freed locally."""
    if not feedback.strip():
        raise UserError("--feedback is required: MTurk shows it to the worker")
    with engine.connect() as conn:
        row = conn.execute(
            select(Assignment.id, Assignment.status)
            .join(Worker, Worker.id == Assignment.worker_id)
            .where(
                Assignment.platform_assignment_id == mturk_assignment_id,
                Worker.platform == "mturk",
            )
        ).first()
    if row is None:
        raise UserError(f"no MTurk assignment {mturk_assignment_id} here (run mturk sync first)")
    if row.status != "submitted":
        raise UserError(f"assignment {mturk_assignment_id} is {row.status}, not submitted")
    try:
        client.reject_assignment(AssignmentId=mturk_assignment_id, RequesterFeedback=feedback)
    except ClientError as exc:
        raise UserError(f"MTurk refused to reject {mturk_assignment_id}: {exc}") from exc
    with engine.begin() as conn:
        release(conn, [row.id], "rejected", datetime.now(UTC))


def expire(engine: Engine, client: Any, batch_name: str, *, production: bool) -> ReviewReport:
    """Expire every HIT of the batch now (workers can no longer accept it)."""
    report = ReviewReport()
    with engine.connect() as conn:
        hit_ids = (
            conn.execute(
                select(MturkHit.hit_id)
                .join(Item, Item.id == MturkHit.item_id)
                .join(Batch, Batch.id == Item.batch_id)
                .where(Batch.name == batch_name, MturkHit.production == production)
                .order_by(Item.position)
            )
            .scalars()
            .all()
        )
    if not hit_ids:
        raise UserError(f"batch {batch_name!r} has no HITs on this marketplace")
    for hit_id in hit_ids:
        try:
            client.update_expiration_for_hit(HITId=hit_id, ExpireAt=PAST)
        except ClientError as exc:
            report.failed.append(f"{hit_id}: {exc}")
            continue
        report.done.append(hit_id)
    return report


def balance(client: Any) -> str:
    """The account's available balance (the sandbox always shows $10,000.00)."""
    return str(client.get_account_balance()["AvailableBalance"])
