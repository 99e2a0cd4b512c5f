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

from sqlalchemy import Connection, Row, bindparam, case, func, insert, select, update

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


# The hot paths' statements, built once (building a statement costs as much as running it).
# FOR UPDATE renders on PostgreSQL only; SQLite already serialises writers.
_FIND_WORKER = select(Worker.id, Worker.blocked).where(
    Worker.platform == bindparam("platform"), Worker.platform_worker_id == bindparam("key")
)
_STALE = (
    select(Assignment.id)
    .where(Assignment.status == "accepted", Assignment.expires_at < bindparam("now"))
    .with_for_update(skip_locked=True)
)
_OPEN_BATCHES = select(Batch.id, Batch.name, Batch.item_count, Batch.max_items_per_worker).where(
    Batch.is_open
)
# Per batch: the cap slots this worker holds, and the items it answered.
_MINE = (
    select(
        Assignment.batch_id,
        func.count(Assignment.worker_slot).label("held"),
        func.count(case((Assignment.status.in_(ANSWERED), 1))).label("done"),
    )
    .where(Assignment.worker_id == bindparam("worker_id"))
    .group_by(Assignment.batch_id)
)
_HAD_ITEM = (
    select(Assignment.id)
    .where(Assignment.item_id == ItemSlot.item_id, Assignment.worker_id == bindparam("worker_id"))
    .exists()
)
_FREE_SLOT = (
    select(
        ItemSlot.item_id,
        ItemSlot.batch_id,
        ItemSlot.slot,
        Item.key,
        Item.page,
        Item.image,
        Item.class_name,
        Item.spec,
    )
    .join(Item, Item.id == ItemSlot.item_id)
    .where(ItemSlot.holder.is_(None), ~_HAD_ITEM)
    .order_by(ItemSlot.slot, ItemSlot.item_id)
    .limit(1)
)
# Concurrent claimers skip each other's candidate rows instead of queueing on them.
_FREE_SLOT_IN_BATCHES = _FREE_SLOT.where(
    ItemSlot.batch_id.in_(bindparam("batch_ids", expanding=True))
).with_for_update(skip_locked=True, of=ItemSlot)
_FREE_SLOT_OF_ITEM = _FREE_SLOT.where(ItemSlot.item_id == bindparam("item_id")).with_for_update(
    skip_locked=True, of=ItemSlot
)
_TAKE_SLOT = (
    update(ItemSlot)
    .where(
        ItemSlot.item_id == bindparam("item"),
        ItemSlot.slot == bindparam("slot_no"),
        ItemSlot.holder.is_(None),
    )
    .values(holder=bindparam("holder"))
)
_WORKER_SLOTS = select(Assignment.worker_slot).where(
    Assignment.worker_id == bindparam("worker_id"),
    Assignment.batch_id == bindparam("batch_id"),
    Assignment.worker_slot.is_not(None),
)
_INSERT_ASSIGNMENT = insert(Assignment)
_INSERT_RESPONSE = insert(Response)
_ASSIGNMENT_WITH_ANSWER = (
    select(
        Assignment.id,
        Assignment.token_sha256,
        Assignment.status,
        Assignment.item_id,
        Assignment.worker_id,
        Assignment.accepted_at,
        Assignment.expires_at,
        Assignment.submitted_at,
        Worker.blocked,
        Item.key.label("item_key"),
        Response.choice,
        Response.reason,
    )
    .join(Worker, Worker.id == Assignment.worker_id)
    .join(Item, Item.id == Assignment.item_id)
    .outerjoin(Response, Response.assignment_id == Assignment.id)
    .where(Assignment.id == bindparam("assignment_id"))
    # Two submits of one assignment queue here instead of both inserting.
    .with_for_update(of=Assignment)
)
_MARK_SUBMITTED = (
    update(Assignment)
    .where(Assignment.id == bindparam("assignment_id"))
    .values(status="submitted", submitted_at=bindparam("now"))
)


def find_worker(conn: Connection, platform: str, key: str) -> tuple[int, bool] | None:
    """(worker id, blocked) of a known worker, else None."""
    row = conn.execute(_FIND_WORKER, {"platform": platform, "key": key}).first()
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
    stale = list(conn.execute(_STALE, {"now": now}).scalars())
    release(conn, stale, "expired", now)
    return len(stale)


def take_slot(
    conn: Connection, assignment_id: str, item_id: int | None, batch_ids: list[int], worker_id: int
) -> Row[Any] | None:
    """Make `assignment_id` the holder of a free slot: of `item_id` if given, else of the first
    item (breadth first) in `batch_ids` that this worker has not had. Returns the slot with its
    item's fields (item_id, batch_id, slot, key, page, image, class_name, spec), or None when
    no slot is free."""
    if item_id is not None:
        query, params = _FREE_SLOT_OF_ITEM, {"item_id": item_id, "worker_id": worker_id}
    else:
        query, params = _FREE_SLOT_IN_BATCHES, {"batch_ids": batch_ids, "worker_id": worker_id}
    for _ in range(3):
        row = conn.execute(query, params).first()
        if row is None:
            return None
        taken = conn.execute(
            _TAKE_SLOT, {"item": row.item_id, "slot_no": row.slot, "holder": assignment_id}
        ).rowcount
        if taken == 1:
            return row
    raise Busy("lost the race for a free slot three times")


def free_worker_slot(
    conn: Connection, worker_id: int, batch_id: int, cap: int | None
) -> int | None:
    """The lowest of the batch's K per-worker slots this worker does not hold (None: no cap)."""
    if cap is None:
        return None
    used = set(
        conn.execute(_WORKER_SLOTS, {"worker_id": worker_id, "batch_id": batch_id}).scalars()
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
    query, params = _OPEN_BATCHES, {}
    if batch is not None:
        query, params = _OPEN_BATCHES.where(Batch.name == bindparam("batch")), {"batch": batch}
    batches = {b.id: b for b in conn.execute(query, params)}
    if batch is not None and not batches:
        raise Invalid(f"no open batch is named {batch!r}", "batch")

    assignment_id = new_assignment_id()
    # Stale assignments are expired only when nothing is free without them: most claims
    # find a slot at once and skip that work.
    for expired in (False, True):
        if expired and expire_stale(conn, now) == 0:
            return None
        mine = {row.batch_id: row for row in conn.execute(_MINE, {"worker_id": worker_id})}
        eligible = [
            b.id
            for b in batches.values()
            if b.max_items_per_worker is None
            or (mine[b.id].held if b.id in mine else 0) < b.max_items_per_worker
        ]
        slot = take_slot(conn, assignment_id, None, eligible, worker_id) if eligible else None
        if slot is not None:
            break
    else:
        return None
    token = new_token()
    cap = batches[slot.batch_id].max_items_per_worker
    conn.execute(
        _INSERT_ASSIGNMENT,
        {
            "id": assignment_id,
            "item_id": slot.item_id,
            "batch_id": slot.batch_id,
            "worker_id": worker_id,
            "slot": slot.slot,
            "worker_slot": free_worker_slot(conn, worker_id, slot.batch_id, cap),
            "token_sha256": token_digest(token),
            "status": "accepted",
            "platform_assignment_id": platform_assignment_id,
            "accepted_at": now,
            "expires_at": now + timedelta(seconds=timeout_s),
        },
    )
    done = sum(mine[b].done for b in batches if b in mine)
    total = sum(min(b.item_count, b.max_items_per_worker or b.item_count) for b in batches.values())
    return Claim(
        assignment_id=assignment_id,
        token=token,
        worker_id=worker_id,
        batch=batches[slot.batch_id].name,
        item_id=slot.item_id,
        item_key=slot.key,
        page=slot.page,
        image=slot.image,
        class_name=slot.class_name,
        spec=slot.spec,
        done=done,
        total=max(total, done + 1),
    )


def submit(
    conn: Connection, assignment_id: str, token: str, choice: int, reason: str, now: datetime
) -> Stored:
    """Store an answer once. An identical repeat returns the stored answer (`created` False);
    a different answer to an answered assignment, or an answer to an assignment that is no
    longer open, raises Conflict; a wrong token raises Forbidden."""
    row = conn.execute(_ASSIGNMENT_WITH_ANSWER, {"assignment_id": assignment_id}).first()
    if row is None:
        raise NotFound(f"no assignment {assignment_id!r}", "assignment_id")
    if not token_matches(token, row.token_sha256):
        raise Forbidden("wrong token for this assignment", "token")
    if row.choice is not None:
        if row.choice == choice and row.reason == reason:
            return Stored(False, assignment_id, row.item_key, choice, reason, row.submitted_at)
        raise Conflict("this assignment already has a different answer")
    if row.status != "accepted":
        raise Conflict(f"this assignment is {row.status}; ask for a new one")
    if row.expires_at is not None and row.expires_at < now:
        raise Conflict("this assignment expired; ask for a new one")
    if row.blocked:
        raise Forbidden("this worker is blocked from the study", "worker_id")
    conn.execute(
        _INSERT_RESPONSE,
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
    conn.execute(_MARK_SUBMITTED, {"assignment_id": assignment_id, "now": now})
    return Stored(True, assignment_id, row.item_key, choice, reason, now)


def give_back(conn: Connection, assignment_id: str, token: str, now: datetime) -> None:
    """The worker returns an open assignment; its slot goes to someone else."""
    row = conn.execute(_ASSIGNMENT_WITH_ANSWER, {"assignment_id": assignment_id}).first()
    if row is None:
        raise NotFound(f"no assignment {assignment_id!r}", "assignment_id")
    if not token_matches(token, row.token_sha256):
        raise Forbidden("wrong token for this assignment", "token")
    if row.status != "accepted":
        raise Conflict(f"this assignment is {row.status} and cannot be returned")
    release(conn, [assignment_id], "returned", now)
