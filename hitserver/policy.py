"""The assignment policy: which item a worker gets next, how slots come back, how answers land.

Every function runs inside one transaction that the caller opens with
`database.in_transaction`, which re-runs it when a concurrent request wins a race. The
constraints in `models` decide those races; this module only chooses what to try.

Order of work: free slots are handed out breadth first (slot 0 of every item before slot 1 of
any), items in load order, so partial data covers all items evenly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from hitserver.database import Busy
from hitserver.models import ANSWERED, Assignment, Batch, Item, ItemSlot, Response, Worker
from hitserver.security import new_assignment_id, new_token, token_digest, token_matches


class PolicyError(Exception):
    """A request the policy refuses; `status` is the HTTP status the API answers with."""

    status = 409

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(PolicyError):
    status = 404


class Forbidden(PolicyError):
    status = 403


class Conflict(PolicyError):
    status = 409


class Invalid(PolicyError):
    status = 422


@dataclass(frozen=True)
class Claim:
    """A new assignment: its id and token (shown once), the item, and the worker's progress."""

    assignment_id: str
    token: str
    worker_id: int
    batch: str
    item_id: int
    item_key: str
    page: str
    image: str
    class_name: str
    spec: str
    done: int
    total: int

    @property
    def progress(self) -> str:
        return f"item {self.done + 1} of {self.total}"


@dataclass(frozen=True)
class Stored:
    """An answer as stored; `created` is False for an identical repeat."""

    created: bool
    assignment_id: str
    item_key: str
    choice: int
    reason: str
    submitted_at: datetime


def find_worker(conn: Connection, platform: str, key: str) -> tuple[int, bool] | None:
    """(worker id, blocked) of a known worker, else None."""
    row = conn.execute(
        select(Worker.id, Worker.blocked).where(
            Worker.platform == platform, Worker.platform_worker_id == key
        )
    ).first()
    return None if row is None else (row.id, row.blocked)


def ensure_worker(conn: Connection, platform: str, key: str, now: datetime) -> tuple[int, bool]:
    """(worker id, blocked), creating the worker on first sight."""
    found = find_worker(conn, platform, key)
    if found is not None:
        return found
    worker_id = conn.execute(
        insert(Worker).returning(Worker.id),
        {
            "platform": platform,
            "platform_worker_id": key,
            "simulated": platform == "simulated",
            "blocked": False,
            "created_at": now,
        },
    ).scalar_one()
    return worker_id, False


def release(conn: Connection, assignment_ids: list[str], status: str, now: datetime) -> None:
    """Move assignments to `status` (expired, returned or rejected) and free their slots.

    The assignment lets go of its slot first: the database refuses to take a slot from an
    assignment that still holds it.
    """
    if not assignment_ids:
        return
    conn.execute(
        update(Assignment)
        .where(Assignment.id.in_(assignment_ids))
        .values({"status": status, "slot": None, "worker_slot": None, f"{status}_at": now})
    )
    conn.execute(update(ItemSlot).where(ItemSlot.holder.in_(assignment_ids)).values(holder=None))


def expire_stale(conn: Connection, now: datetime) -> int:
    """Expire every accepted assignment past its deadline; their slots become free again."""
    query = select(Assignment.id).where(
        Assignment.status == "accepted", Assignment.expires_at < now
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    stale = list(conn.execute(query).scalars())
    release(conn, stale, "expired", now)
    return len(stale)


def take_slot(
    conn: Connection, assignment_id: str, item_id: int | None, batch_ids: list[int], worker_id: int
) -> tuple[int, int, int] | None:
    """Make `assignment_id` the holder of a free slot: of `item_id` if given, else of the first
    item (breadth first) in `batch_ids` that this worker has not had. Returns
    (item_id, batch_id, slot), or None when no slot is free."""
    had = (
        select(Assignment.id)
        .where(Assignment.item_id == ItemSlot.item_id, Assignment.worker_id == worker_id)
        .exists()
    )
    query = select(ItemSlot.item_id, ItemSlot.batch_id, ItemSlot.slot).where(
        ItemSlot.holder.is_(None), ~had
    )
    if item_id is not None:
        query = query.where(ItemSlot.item_id == item_id)
    else:
        query = query.where(ItemSlot.batch_id.in_(batch_ids))
    query = query.order_by(ItemSlot.slot, ItemSlot.item_id).limit(1)
    if conn.dialect.name == "postgresql":
        # Concurrent claimers skip each other's candidate rows instead of queueing on them.
        query = query.with_for_update(skip_locked=True)
    for _ in range(3):
        row = conn.execute(query).first()
        if row is None:
            return None
        taken = conn.execute(
            update(ItemSlot)
            .where(
                ItemSlot.item_id == row.item_id,
                ItemSlot.slot == row.slot,
                ItemSlot.holder.is_(None),
            )
            .values(holder=assignment_id)
        ).rowcount
        if taken == 1:
            return row.item_id, row.batch_id, row.slot
    raise Busy("lost the race for a free slot three times")


def free_worker_slot(
    conn: Connection, worker_id: int, batch_id: int, cap: int | None
) -> int | None:
    """The lowest of the batch's K per-worker slots this worker does not hold (None: no cap)."""
    if cap is None:
        return None
    used = set(
        conn.execute(
            select(Assignment.worker_slot).where(
                Assignment.worker_id == worker_id,
                Assignment.batch_id == batch_id,
                Assignment.worker_slot.is_not(None),
            )
        ).scalars()
    )
    free = [k for k in range(cap) if k not in used]
    if not free:
        raise Conflict("this worker has reached the batch's cap")
    return free[0]


def claim(
    conn: Connection,
    *,
    platform: str,
    worker_key: str,
    now: datetime,
    timeout_s: int,
    batch: str | None = None,
    platform_assignment_id: str | None = None,
) -> Claim | None:
    """Give the worker a new assignment, or None when nothing is left for them.

    Raises Forbidden for a blocked worker and Invalid for an unknown batch name.
    """
    worker_id, blocked = ensure_worker(conn, platform, worker_key, now)
    if blocked:
        raise Forbidden("this worker is blocked from the study", "worker_id")
    expire_stale(conn, now)

    query = select(Batch.id, Batch.max_items_per_worker, Batch.name).where(Batch.is_open)
    if batch is not None:
        query = query.where(Batch.name == batch)
    batches = conn.execute(query).all()
    if batch is not None and not batches:
        raise Invalid(f"no open batch is named {batch!r}", "batch")
    batch_ids = [b.id for b in batches]
    sizes = dict(
        conn.execute(
            select(Item.batch_id, func.count())
            .where(Item.batch_id.in_(batch_ids))
            .group_by(Item.batch_id)
        ).all()
    )
    held = dict(
        conn.execute(
            select(Assignment.batch_id, func.count())
            .where(Assignment.worker_id == worker_id, Assignment.worker_slot.is_not(None))
            .group_by(Assignment.batch_id)
        ).all()
    )
    caps = {b.id: b.max_items_per_worker for b in batches}
    eligible = [b for b in batch_ids if caps[b] is None or held.get(b, 0) < caps[b]]
    if not eligible:
        return None

    assignment_id = new_assignment_id()
    taken = take_slot(conn, assignment_id, None, eligible, worker_id)
    if taken is None:
        return None
    item_id, batch_id, slot = taken
    token = new_token()
    conn.execute(
        insert(Assignment),
        {
            "id": assignment_id,
            "item_id": item_id,
            "batch_id": batch_id,
            "worker_id": worker_id,
            "slot": slot,
            "worker_slot": free_worker_slot(conn, worker_id, batch_id, caps[batch_id]),
            "token_sha256": token_digest(token),
            "status": "accepted",
            "platform_assignment_id": platform_assignment_id,
            "accepted_at": now,
            "expires_at": now + timedelta(seconds=timeout_s),
        },
    )
    done = conn.execute(
        select(func.count())
        .select_from(Assignment)
        .where(
            Assignment.worker_id == worker_id,
            Assignment.batch_id.in_(batch_ids),
            Assignment.status.in_(ANSWERED),
        )
    ).scalar_one()
    total = sum(min(sizes.get(b, 0), caps[b] or sizes.get(b, 0)) for b in batch_ids)
    item = conn.execute(
        select(Item.key, Item.page, Item.image, Item.class_name, Item.spec).where(
            Item.id == item_id
        )
    ).one()
    names = {b.id: b.name for b in batches}
    return Claim(
        assignment_id=assignment_id,
        token=token,
        worker_id=worker_id,
        batch=names[batch_id],
        item_id=item_id,
        item_key=item.key,
        page=item.page,
        image=item.image,
        class_name=item.class_name,
        spec=item.spec,
        done=done,
        total=max(total, done + 1),
    )


def _locked_assignment(conn: Connection, assignment_id: str) -> Row[Any] | None:
    query = (
        select(
            Assignment.id,
            Assignment.token_sha256,
            Assignment.status,
            Assignment.item_id,
            Assignment.worker_id,
            Assignment.accepted_at,
            Assignment.expires_at,
            Worker.blocked,
            Item.key.label("item_key"),
        )
        .join(Worker, Worker.id == Assignment.worker_id)
        .join(Item, Item.id == Assignment.item_id)
        .where(Assignment.id == assignment_id)
    )
    if conn.dialect.name == "postgresql":
        # Two submits of one assignment queue here instead of both inserting.
        query = query.with_for_update(of=Assignment)
    return conn.execute(query).first()


def submit(
    conn: Connection, assignment_id: str, token: str, choice: int, reason: str, now: datetime
) -> Stored:
    """Store an answer once. An identical repeat returns the stored answer (`created` False);
    a different answer to an answered assignment, or an answer to an assignment that is no
    longer open, raises Conflict; a wrong token raises Forbidden."""
    row = _locked_assignment(conn, assignment_id)
    if row is None:
        raise NotFound(f"no assignment {assignment_id!r}", "assignment_id")
    if not token_matches(token, row.token_sha256):
        raise Forbidden("wrong token for this assignment", "token")
    stored = conn.execute(
        select(Response.choice, Response.reason, Assignment.submitted_at)
        .join(Assignment, Assignment.id == Response.assignment_id)
        .where(Response.assignment_id == assignment_id)
    ).first()
    if stored is not None:
        if stored.choice == choice and stored.reason == reason:
            return Stored(False, assignment_id, row.item_key, choice, reason, stored.submitted_at)
        raise Conflict("this assignment already has a different answer")
    if row.status != "accepted":
        raise Conflict(f"this assignment is {row.status}; ask for a new one")
    if row.expires_at is not None and row.expires_at < now:
        raise Conflict("this assignment expired; ask for a new one")
    if row.blocked:
        raise Forbidden("this worker is blocked from the study", "worker_id")
    conn.execute(
        insert(Response),
        {
            "assignment_id": assignment_id,
            "item_id": row.item_id,
            "worker_id": row.worker_id,
            "choice": choice,
            "reason": reason,
            "duration_s": max(0.0, (now - row.accepted_at).total_seconds()),
            "source": "server",
            "received_at": now,
        },
    )
    conn.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id)
        .values(status="submitted", submitted_at=now)
    )
    return Stored(True, assignment_id, row.item_key, choice, reason, now)


def give_back(conn: Connection, assignment_id: str, token: str, now: datetime) -> None:
    """The worker returns an open assignment; its slot goes to someone else."""
    row = _locked_assignment(conn, assignment_id)
    if row is None:
        raise NotFound(f"no assignment {assignment_id!r}", "assignment_id")
    if not token_matches(token, row.token_sha256):
        raise Forbidden("wrong token for this assignment", "token")
    if row.status != "accepted":
        raise Conflict(f"this assignment is {row.status} and cannot be returned")
    release(conn, [assignment_id], "returned", now)
