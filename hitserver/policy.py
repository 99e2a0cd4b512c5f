"""The assignment policy: which item a worker gets next, how slots come back, how answers land.

Every function runs inside one transaction that the caller opens with
`database.in_transaction`, which re-runs it when a concurrent request wins a race. The
constraints in `models` decide those races; this module only chooses what to try.

Order of work: free slots are handed out breadth first (slot 0 of every item before slot 1 of
any), items in load order, so partial data covers all items evenly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    ScalarSelect,
    Select,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Boolean

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


class _IsNull(FunctionElement[bool]):
    """`column IS NULL`, where `column` is `item_slots.holder`: the condition of the
    free-slot index.

    SQLite's planner would answer it through the unique index on `holder` and then sort every
    free slot on every claim, inside the one writer (benchmarks/RESULTS.md); `likelihood` tells it
    that most rows match, so it walks `ix_item_slots_free` in order and stops at the first.
    """

    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True  # a condition as it stands, not `... = 1` on SQLite


@compiles(_IsNull)
def _is_null_default(element: _IsNull, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.clauses, **kw)} IS NULL"


@compiles(_IsNull, "sqlite")
def _is_null_sqlite(element: _IsNull, compiler: SQLCompiler, **kw: Any) -> str:
    return f"likelihood({compiler.process(element.clauses, **kw)} IS NULL, 0.9)"


# The hot paths' statements, built once (building a statement costs as much as running it).
# A claim is three statements (who and where, take a slot, insert the assignment) and a
# submit two (mark submitted, insert the response): on PostgreSQL each is a round trip, and
# on SQLite each runs inside the one writer that every request waits for.
# FOR UPDATE renders on PostgreSQL only; SQLite already serialises writers.
_FIND_WORKER = select(Worker.id, Worker.blocked).where(
    Worker.platform == bindparam("platform"), Worker.platform_worker_id == bindparam("key")
)
# Not SKIP LOCKED: a claim that finds nothing free must wait for a concurrent claim expiring
# the same rows, then see the slots it freed (skipping them, it would answer "nothing left" and
# the worker would leave). In id order, so that two expiring claims cannot deadlock.
_STALE = (
    select(Assignment.id)
    .where(Assignment.status == "accepted", Assignment.expires_at < bindparam("now"))
    .order_by(Assignment.id)
    .with_for_update()
)


def _mine(condition: ColumnElement[bool]) -> ScalarSelect[int]:
    """How many of this batch's assignments of this worker meet `condition`."""
    return (
        select(func.count())
        .where(Assignment.worker_id == Worker.id, Assignment.batch_id == Batch.id, condition)
        .scalar_subquery()
    )


def _standing(named: bool) -> Select[Any]:
    """The worker (no row: unknown) and, one row per open batch (all of them, or the one
    named `batch`; batch_id NULL: none), the cap slots the worker holds and the items it
    answered there."""
    open_batch = Batch.is_open
    if named:
        open_batch = and_(open_batch, Batch.name == bindparam("batch"))
    return (
        select(
            Worker.id.label("worker_id"),
            Worker.blocked,
            Batch.id.label("batch_id"),
            Batch.name,
            Batch.item_count,
            Batch.max_items_per_worker,
            _mine(Assignment.worker_slot.is_not(None)).label("held"),
            # Constant statuses as literals: an expanding parameter is re-rendered per execution.
            _mine(Assignment.status.in_([literal_column(f"'{s}'") for s in ANSWERED])).label(
                "done"
            ),
            # The worker's open assignment, if any (at most one: `uq_assignments_one_open`).
            select(Assignment.id)
            .where(
                Assignment.worker_id == Worker.id, Assignment.status == literal_column("'accepted'")
            )
            .limit(1)
            .scalar_subquery()
            .label("open_id"),
        )
        .select_from(Worker.__table__.outerjoin(Batch.__table__, open_batch))
        .where(
            Worker.platform == bindparam("platform"),
            Worker.platform_worker_id == bindparam("key"),
        )
    )


_STANDING = _standing(named=False)
_STANDING_IN_BATCH = _standing(named=True)


def _batches_for_newcomer(named: bool) -> Select[Any]:
    """`_standing` for a worker with no row yet: the open batches, nothing held or done."""
    open_batch = Batch.is_open
    if named:
        open_batch = and_(open_batch, Batch.name == bindparam("batch"))
    return select(
        Batch.id.label("batch_id"),
        Batch.name,
        Batch.item_count,
        Batch.max_items_per_worker,
        literal(0).label("held"),
        literal(0).label("done"),
    ).where(open_batch)


_NEWCOMER = _batches_for_newcomer(named=False)
_NEWCOMER_IN_BATCH = _batches_for_newcomer(named=True)
# No worker has this id: a newcomer has had no item yet.
NO_WORKER = -1
# The worker's open assignment (at most one: `uq_assignments_one_open`), with what a Claim
# shows. The status is a literal so that SQLite can use that partial index.
_OPEN_OF_WORKER = (
    select(
        Assignment.id,
        Assignment.expires_at,
        Assignment.item_id,
        Assignment.batch_id,
        Item.key,
        Item.page,
        Item.image,
        Item.class_name,
        Item.spec,
        Batch.name,
    )
    .join(Item, Item.id == Assignment.item_id)
    .join(Batch, Batch.id == Assignment.batch_id)
    .where(
        Assignment.worker_id == bindparam("worker_id"),
        Assignment.status == literal_column("'accepted'"),
    )
    .with_for_update(of=Assignment)
)


def _take_free_slot(of_item: bool) -> Update:
    """Make `holder` the holder of the first free slot (breadth first) that the worker has not
    had, of one item or in some batches; returns the slot and its item's fields.

    Concurrent claimers skip each other's candidate rows instead of queueing on them, and the
    constraints (one holder per slot, one assignment per worker and item) decide any race.

    The search is a row subquery compared with `=`, which PostgreSQL runs once per statement
    (an InitPlan). Under `IN` the planner may rescan it once per outer row, and each rescan
    skips the row this statement has just taken and finds the next one: one claim would then
    take several slots (test_hot_path forces that plan).
    """
    free = aliased(ItemSlot, name="free")
    had_item = (
        select(Assignment.id)
        .where(Assignment.item_id == free.item_id, Assignment.worker_id == bindparam("worker_id"))
        .exists()
    )
    where = (
        free.item_id == bindparam("one_item")
        if of_item
        else free.batch_id.in_(bindparam("batch_ids", expanding=True))
    )
    candidate = (
        select(free.item_id, free.slot)
        .where(_IsNull(free.holder), ~had_item, where)
        .order_by(free.slot, free.item_id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )

    def item_field(column: Any) -> Any:
        # SQLite prints RETURNING without table names, `WHERE id = item_id`: still the slot's
        # item, as `items` has no `item_id` column (test_hot_path checks the fields).
        return select(column).where(Item.id == ItemSlot.item_id).scalar_subquery()

    return (
        update(ItemSlot)
        .where(tuple_(ItemSlot.item_id, ItemSlot.slot) == candidate, ItemSlot.holder.is_(None))
        .values(holder=bindparam("holder"))
        .returning(
            ItemSlot.item_id,
            ItemSlot.batch_id,
            ItemSlot.slot,
            item_field(Item.key).label("key"),
            item_field(Item.page).label("page"),
            item_field(Item.image).label("image"),
            item_field(Item.class_name).label("class_name"),
            item_field(Item.spec).label("spec"),
        )
    )


_TAKE_SLOT_IN_BATCHES = _take_free_slot(of_item=False)
_TAKE_SLOT_OF_ITEM = _take_free_slot(of_item=True)
_WORKER_SLOTS = select(Assignment.worker_slot).where(
    Assignment.worker_id == bindparam("worker_id"),
    Assignment.batch_id == bindparam("batch_id"),
    Assignment.worker_slot.is_not(None),
)
# Inline: nobody reads the new rows' generated keys, so none are fetched (RETURNING id).
_INSERT_ASSIGNMENT = insert(Assignment).inline()
_INSERT_RESPONSE = insert(Response).inline()
# An open assignment with this token, of a worker not blocked, becomes submitted. Comparing
# SHA-256 digests in SQL leaks nothing about the token itself; every refusal is decided
# again, field by field with a constant-time compare, by `_ASSIGNMENT_WITH_ANSWER`.
_SUBMIT_OPEN = (
    update(Assignment)
    .where(
        Assignment.id == bindparam("assignment_id"),
        Assignment.token_sha256 == bindparam("digest"),
        Assignment.status == "accepted",
        or_(Assignment.expires_at.is_(None), Assignment.expires_at >= bindparam("now")),
        ~select(Worker.id).where(Worker.id == Assignment.worker_id, Worker.blocked).exists(),
    )
    .values(status="submitted", submitted_at=bindparam("now"))
    .returning(
        Assignment.item_id,
        Assignment.worker_id,
        Assignment.accepted_at,
        select(Item.key).where(Item.id == Assignment.item_id).scalar_subquery().label("item_key"),
    )
)
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


def reinstate(
    conn: Connection, assignment_id: str, item_id: int, status: str, now: datetime
) -> bool:
    """The reverse of `release`: an assignment that let go of its slot (a rejection that MTurk
    later overturned) takes the first free slot of its item again and moves to `status`, one
    of the holding statuses. Returns False, changing nothing, when every slot is held.

    Not `take_slot`: that one skips items the worker already had, and this worker had this
    item through this very assignment. UNIQUE(item_id, worker_id) still holds, as the
    assignment stays the worker's only one of the item.
    """
    first_free = (
        select(ItemSlot.slot)
        .where(ItemSlot.item_id == item_id, ItemSlot.holder.is_(None))
        .order_by(ItemSlot.slot)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    # The slot names its holder first: the assignment may only name a slot that it holds.
    slot = conn.execute(
        update(ItemSlot)
        .where(ItemSlot.item_id == item_id, ItemSlot.slot == first_free, ItemSlot.holder.is_(None))
        .values(holder=assignment_id)
        .returning(ItemSlot.slot)
    ).scalar()
    if slot is None:
        return False
    conn.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id)
        .values({"status": status, "slot": slot, f"{status}_at": now})
    )
    return True


def expire_stale(conn: Connection, now: datetime) -> None:
    """Expire every accepted assignment past its deadline; their slots become free again."""
    release(conn, list(conn.execute(_STALE, {"now": now}).scalars()), "expired", now)


def take_slot(
    conn: Connection, assignment_id: str, item_id: int | None, batch_ids: list[int], worker_id: int
) -> Row[Any] | None:
    """Make `assignment_id` the holder of a free slot: of `item_id` if given, else of the first
    item (breadth first) in `batch_ids` that this worker has not had. Returns the slot with its
    item's fields (item_id, batch_id, slot, key, page, image, class_name, spec), or None when
    no slot is free."""
    params: dict[str, Any] = {"holder": assignment_id, "worker_id": worker_id}
    if item_id is not None:
        return conn.execute(_TAKE_SLOT_OF_ITEM, {**params, "one_item": item_id}).first()
    if not batch_ids:
        return None
    return conn.execute(_TAKE_SLOT_IN_BATCHES, {**params, "batch_ids": batch_ids}).first()


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


def _standing_rows(
    conn: Connection, platform: str, worker_key: str, batch: str | None
) -> list[Row[Any]]:
    params = {"platform": platform, "key": worker_key}
    if batch is None:
        return list(conn.execute(_STANDING, params))
    return list(conn.execute(_STANDING_IN_BATCH, {**params, "batch": batch}))


def _open_batches(standing: list[Row[Any]]) -> dict[int, Row[Any]]:
    """The worker's standing rows by batch id (a worker with no open batch has none)."""
    return {b.batch_id: b for b in standing if b.batch_id is not None}


def _eligible(batches: dict[int, Row[Any]]) -> list[int]:
    """The open batches where the worker is below the cap of items per worker."""
    return [
        b.batch_id
        for b in batches.values()
        if b.max_items_per_worker is None or b.held < b.max_items_per_worker
    ]


@dataclass(frozen=True)
class _Standing:
    worker_id: int | None  # None: a newcomer, no row yet
    open_id: str | None  # the worker's open assignment
    batches: dict[int, Row[Any]]  # the worker's standing in each open batch


def _batches_of(conn: Connection, platform: str, worker_key: str, batch: str | None) -> _Standing:
    standing = _standing_rows(conn, platform, worker_key, batch)
    if standing:
        if standing[0].blocked:
            raise Forbidden("this worker is blocked from the study", "worker_id")
        return _Standing(standing[0].worker_id, standing[0].open_id, _open_batches(standing))
    if batch is None:
        rows = conn.execute(_NEWCOMER)
    else:
        rows = conn.execute(_NEWCOMER_IN_BATCH, {"batch": batch})
    return _Standing(None, None, {b.batch_id: b for b in rows})


def _reissue_open(
    conn: Connection, worker_id: int, batches: dict[int, Row[Any]], now: datetime
) -> Claim | None:
    """The worker's open assignment again, under a new token (the old one stops working), or
    None when they hold none. One that expired is released; one outside the batches asked
    for now (another batch, or a batch closed since) is returned, so the worker can move on.

    A worker holds at most one open assignment: asking again (a lost cookie, a second tab)
    gives back the same task, so claiming cannot hoard slots under one id. The deadline
    stays: asking again does not extend it.
    """
    row = conn.execute(_OPEN_OF_WORKER, {"worker_id": worker_id}).first()
    if row is None:
        return None
    if row.expires_at is not None and row.expires_at < now:
        release(conn, [row.id], "expired", now)
        return None
    if row.batch_id not in batches:
        release(conn, [row.id], "returned", now)
        return None
    token = new_token()
    conn.execute(
        update(Assignment).where(Assignment.id == row.id).values(token_sha256=token_digest(token))
    )
    return _claim_of(row.id, token, worker_id, row, batches, row.name)


def _claim_of(
    assignment_id: str,
    token: str,
    worker_id: int,
    item: Row[Any],
    batches: dict[int, Row[Any]],
    batch_name: str,
) -> Claim:
    done = sum(b.done for b in batches.values())
    total = sum(min(b.item_count, b.max_items_per_worker or b.item_count) for b in batches.values())
    return Claim(
        assignment_id=assignment_id,
        token=token,
        worker_id=worker_id,
        batch=batch_name,
        item_id=item.item_id,
        item_key=item.key,
        page=item.page,
        image=item.image,
        class_name=item.class_name,
        spec=item.spec,
        done=done,
        total=max(total, done + 1),
    )


def claim(
    conn: Connection,
    *,
    platform: str,
    worker_key: str,
    now: datetime,
    timeout_s: int,
    batch: str | None = None,
    platform_assignment_id: str | None = None,
    on_new_worker: Callable[[Connection], None] | None = None,
) -> Claim | None:
    """Give the worker an assignment, or None when nothing is left for them.

    A worker who already holds an open assignment gets it again under a new token (one open
    assignment per worker). A worker row is made only when a newcomer gets a slot, after
    `on_new_worker` (a throttle that may raise) agrees: "nothing left" writes nothing.
    Raises Forbidden for a blocked worker and Invalid for an unknown batch name.
    """
    standing = _batches_of(conn, platform, worker_key, batch)
    worker_id, batches = standing.worker_id, standing.batches
    if batch is not None and not batches:
        raise Invalid(f"no open batch is named {batch!r}", "batch")
    if worker_id is not None and standing.open_id is not None:
        again = _reissue_open(conn, worker_id, batches, now)
        if again is not None:
            return again

    assignment_id = new_assignment_id()
    had = NO_WORKER if worker_id is None else worker_id
    slot = take_slot(conn, assignment_id, None, _eligible(batches), had)
    if slot is None:
        # Stale assignments are expired only when nothing is free without them: most claims
        # find a slot at once and skip that work. Look again even when this claim expired
        # nothing: it may have waited for a concurrent claim that did, and (READ COMMITTED)
        # the next statement sees the slots that one freed.
        expire_stale(conn, now)
        standing = _batches_of(conn, platform, worker_key, batch)
        worker_id, batches = standing.worker_id, standing.batches
        had = NO_WORKER if worker_id is None else worker_id
        slot = take_slot(conn, assignment_id, None, _eligible(batches), had)
        if slot is None:
            return None
    if worker_id is None:
        if on_new_worker is not None:
            on_new_worker(conn)
        # A concurrent claim may have made this worker meanwhile: the constraints (one open
        # assignment, one per item and worker) then refuse one of the two and it runs again.
        worker_id, _ = ensure_worker(conn, platform, worker_key, now)
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
    return _claim_of(assignment_id, token, worker_id, slot, batches, batches[slot.batch_id].name)


def submit(
    conn: Connection, assignment_id: str, token: str, choice: int, reason: str, now: datetime
) -> Stored:
    """Store an answer once. An identical repeat returns the stored answer (`created` False);
    a different answer to an answered assignment, or an answer to an assignment that is no
    longer open, raises Conflict; a wrong token raises Forbidden."""
    opened = conn.execute(
        _SUBMIT_OPEN, {"assignment_id": assignment_id, "digest": token_digest(token), "now": now}
    ).first()
    if opened is None:  # not an open assignment with this token: say why, or repeat
        return _submit_checked(conn, assignment_id, token, choice, reason, now)
    _insert_response(conn, assignment_id, opened, choice, reason, now)
    return Stored(True, assignment_id, opened.item_key, choice, reason, now)


def _insert_response(
    conn: Connection, assignment_id: str, row: Row[Any], choice: int, reason: str, now: datetime
) -> None:
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


def _submit_checked(
    conn: Connection, assignment_id: str, token: str, choice: int, reason: str, now: datetime
) -> Stored:
    """`submit` when the assignment is not simply open: each check in turn."""
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
    _insert_response(conn, assignment_id, row, choice, reason, now)
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
