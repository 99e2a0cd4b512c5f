"""Tables of the HIT server. The assignment policy lives in the constraints, not only in code.

Invariants the database enforces (on SQLite and PostgreSQL alike):

- an item has `assignments_per_item` slots (rows of `item_slots`); an assignment that holds a
  slot (status accepted, submitted or approved) names one of them and is its `holder`, and
  UNIQUE(item_id, slot) lets no two assignments hold the same one: an item never gets more
  than N workers;
- UNIQUE(item_id, worker_id) on assignments and on responses: a worker answers an item once;
- with a per-worker cap K, a holding assignment also names one of the batch's K
  `batch_worker_slots`, unique per worker: nobody holds more than K items of a batch;
- an assignment that stops holding (expired, returned, rejected) gives both slots back (NULL),
  which is what lets an abandoned slot be reissued;
- one response per assignment, `choice` in 1..5, a non-empty reason;
- at most one open (accepted) assignment per worker.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

PLATFORMS = ("local", "mturk", "prolific", "simulated")
STATUSES = ("accepted", "submitted", "approved", "rejected", "returned", "expired")
HOLDING = ("accepted", "submitted", "approved")
ANSWERED = ("submitted", "approved", "rejected")
KINDS = ("method-vs-method", "model-vs-model", "catch")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; `timestamptz` on PostgreSQL, naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Batch(Base):
    """One loaded `hitgen` batch (its manifest is kept verbatim)."""

    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint("assignments_per_item >= 1", name="ck_batches_n"),
        CheckConstraint(
            "max_items_per_worker IS NULL OR max_items_per_worker >= 1", name="ck_batches_cap"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    experiment: Mapped[str] = mapped_column(String(40))
    path: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[str] = mapped_column(Text)
    item_count: Mapped[int] = mapped_column(Integer)
    assignments_per_item: Mapped[int] = mapped_column(Integer)
    max_items_per_worker: Mapped[int | None] = mapped_column(Integer)
    is_open: Mapped[bool] = mapped_column(Boolean, default=True)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Item(Base):
    """One task of a batch: what the admin side needs; workers only ever see the page."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("id", "batch_id", name="uq_items_id_batch"),
        UniqueConstraint("batch_id", "position", name="uq_items_position"),
        CheckConstraint(_in("kind", KINDS), name="ck_items_kind"),
        CheckConstraint(_in("robot_a", ("first", "second")), name="ck_items_robot_a"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    key: Mapped[str] = mapped_column(String(250), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    page: Mapped[str] = mapped_column(Text)
    image: Mapped[str] = mapped_column(Text)
    class_name: Mapped[str] = mapped_column(Text)
    robot_a: Mapped[str] = mapped_column(String(6))
    expected_choices: Mapped[str | None] = mapped_column(String(20))
    spec: Mapped[str] = mapped_column(Text)


class ItemSlot(Base):
    """Slot k of an item, k in 0..N-1: the N places that N distinct workers can take.

    `holder` names the assignment holding the slot, so free slots are found through a partial
    index instead of a scan. The foreign key from assignments (item_id, slot, id) to
    (item_id, slot, holder) makes every holding assignment be the slot's holder, and the
    slot cannot be taken from it while it holds.
    """

    __tablename__ = "item_slots"
    __table_args__ = (
        ForeignKeyConstraint(
            ["item_id", "batch_id"], ["items.id", "items.batch_id"], name="fk_item_slots_item"
        ),
        UniqueConstraint("item_id", "slot", "holder", name="uq_item_slots_holder_key"),
        UniqueConstraint("holder", name="uq_item_slots_holder"),
        CheckConstraint("slot >= 0", name="ck_item_slots_slot"),
        Index(
            "ix_item_slots_free",
            "slot",
            "item_id",
            sqlite_where=text("holder IS NULL"),
            postgresql_where=text("holder IS NULL"),
        ),
    )

    item_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str | None] = mapped_column(String(40))


class WorkerSlot(Base):
    """Slot k of a batch's per-worker cap, k in 0..K-1 (no rows when the batch has no cap)."""

    __tablename__ = "batch_worker_slots"
    __table_args__ = (CheckConstraint("slot >= 0", name="ck_batch_worker_slots_slot"),)

    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)


class Worker(Base):
    """A participant, identified by the platform's id (or the id entered in local mode)."""

    __tablename__ = "workers"
    __table_args__ = (
        UniqueConstraint("platform", "platform_worker_id", name="uq_workers_platform_id"),
        CheckConstraint(_in("platform", PLATFORMS), name="ck_workers_platform"),
        CheckConstraint("(platform = 'simulated') = simulated", name="ck_workers_simulated"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(20))
    platform_worker_id: Mapped[str] = mapped_column(String(200))
    simulated: Mapped[bool] = mapped_column(Boolean)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Assignment(Base):
    """A worker's claim on one item, with the time of every status transition."""

    __tablename__ = "assignments"
    __table_args__ = (
        ForeignKeyConstraint(
            ["item_id", "batch_id"], ["items.id", "items.batch_id"], name="fk_assignments_item"
        ),
        ForeignKeyConstraint(
            ["item_id", "slot", "id"],
            ["item_slots.item_id", "item_slots.slot", "item_slots.holder"],
            name="fk_assignments_item_slot",
        ),
        ForeignKeyConstraint(
            ["batch_id", "worker_slot"],
            ["batch_worker_slots.batch_id", "batch_worker_slots.slot"],
            name="fk_assignments_worker_slot",
        ),
        UniqueConstraint("item_id", "slot", name="uq_assignments_item_slot"),
        UniqueConstraint("item_id", "worker_id", name="uq_assignments_item_worker"),
        UniqueConstraint("batch_id", "worker_id", "worker_slot", name="uq_assignments_worker_slot"),
        UniqueConstraint("id", "item_id", "worker_id", name="uq_assignments_id_item_worker"),
        CheckConstraint(_in("status", STATUSES), name="ck_assignments_status"),
        CheckConstraint(
            f"({_in('status', HOLDING)}) = (slot IS NOT NULL)", name="ck_assignments_holds_slot"
        ),
        CheckConstraint(
            "worker_slot IS NULL OR slot IS NOT NULL", name="ck_assignments_worker_slot"
        ),
        CheckConstraint(
            f"NOT ({_in('status', ANSWERED)}) OR submitted_at IS NOT NULL",
            name="ck_assignments_submitted_at",
        ),
        CheckConstraint(
            "status <> 'approved' OR approved_at IS NOT NULL", name="ck_assignments_approved_at"
        ),
        CheckConstraint(
            "status <> 'rejected' OR rejected_at IS NOT NULL", name="ck_assignments_rejected_at"
        ),
        CheckConstraint(
            "status <> 'returned' OR returned_at IS NOT NULL", name="ck_assignments_returned_at"
        ),
        CheckConstraint(
            "status <> 'expired' OR expired_at IS NOT NULL", name="ck_assignments_expired_at"
        ),
        Index("ix_assignments_status_expires", "status", "expires_at"),
        Index("ix_assignments_worker", "worker_id", "batch_id"),
        # `mturk sync` finds an MTurk assignment by it. Not unique: a Prolific SESSION_ID that
        # two participants share must not lock the second out (migration 0002); an MTurk
        # assignment has one worker, so UNIQUE(item_id, worker_id) keeps it to one row.
        Index("ix_assignments_platform_id", "item_id", "platform_assignment_id"),
        # At most one open assignment per worker: inventing ids is then the only way to hold
        # more slots, and new ids are throttled per client address (hardening, issue 28).
        Index(
            "uq_assignments_one_open",
            "worker_id",
            unique=True,
            sqlite_where=text("status = 'accepted'"),
            postgresql_where=text("status = 'accepted'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    slot: Mapped[int | None] = mapped_column(Integer)
    worker_slot: Mapped[int | None] = mapped_column(Integer)
    token_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12))
    platform_assignment_id: Mapped[str | None] = mapped_column(String(200))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Response(Base):
    """The answer of one assignment: a Likert choice (contracts 9) and the worker's reason."""

    __tablename__ = "responses"
    __table_args__ = (
        ForeignKeyConstraint(
            ["assignment_id", "item_id", "worker_id"],
            ["assignments.id", "assignments.item_id", "assignments.worker_id"],
            name="fk_responses_assignment",
        ),
        UniqueConstraint("assignment_id", name="uq_responses_assignment"),
        UniqueConstraint("item_id", "worker_id", name="uq_responses_item_worker"),
        CheckConstraint("choice BETWEEN 1 AND 5", name="ck_responses_choice"),
        CheckConstraint("length(reason) >= 1", name="ck_responses_reason"),
        CheckConstraint("duration_s >= 0", name="ck_responses_duration"),
        CheckConstraint(_in("source", ("server", "mturk")), name="ck_responses_source"),
        CheckConstraint(
            "visible_s >= 0 AND blur_count >= 0 AND paste_count >= 0 AND pasted_chars >= 0 "
            "AND reason_chars >= 0",
            name="ck_responses_telemetry",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[str] = mapped_column(String(40))
    item_id: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[int] = mapped_column(Integer)
    choice: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    duration_s: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(10))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # What the task page measured (hitserver.quality; NULL when the client sent none).
    visible_s: Mapped[float | None] = mapped_column(Float)
    blur_count: Mapped[int | None] = mapped_column(Integer)
    paste_count: Mapped[int | None] = mapped_column(Integer)
    pasted_chars: Mapped[int | None] = mapped_column(Integer)
    reason_chars: Mapped[int | None] = mapped_column(Integer)


class MturkHit(Base):
    """The MTurk HIT published for an item, per marketplace (sandbox or production)."""

    __tablename__ = "mturk_hits"
    __table_args__ = (UniqueConstraint("item_id", "production", name="uq_mturk_hits_item"),)

    hit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    production: Mapped[bool] = mapped_column(Boolean)
    hit_type_id: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProlificStudy(Base):
    """The Prolific study of a batch (one per batch). The row, with its deterministic
    `internal_name` and the create request's body, is written before the study is created on
    Prolific, so a crash between the two is recovered by finding the draft by that name."""

    __tablename__ = "prolific_studies"
    __table_args__ = (
        UniqueConstraint("batch_id", name="uq_prolific_studies_batch"),
        UniqueConstraint("internal_name", name="uq_prolific_studies_internal_name"),
        UniqueConstraint("study_id", name="uq_prolific_studies_study_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    internal_name: Mapped[str] = mapped_column(String(200))
    study_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(40))
    request: Mapped[str] = mapped_column(Text)
    completion_code: Mapped[str] = mapped_column(String(100))
    failed_code: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProlificSubmission(Base):
    """A Prolific submission of a study as last synced, and the decision sent for it. Its id is
    the SESSION_ID of the study URL, i.e. `assignments.platform_assignment_id`."""

    __tablename__ = "prolific_submissions"
    __table_args__ = (
        CheckConstraint(
            "decision IS NULL OR decision IN ('APPROVE', 'REJECT')",
            name="ck_prolific_submissions_decision",
        ),
        CheckConstraint(
            "decision IS NULL OR decided_at IS NOT NULL", name="ck_prolific_submissions_decided"
        ),
        Index("ix_prolific_submissions_study", "prolific_study_id"),
    )

    submission_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    prolific_study_id: Mapped[int] = mapped_column(ForeignKey("prolific_studies.id"))
    participant_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(40))
    study_code: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decision: Mapped[str | None] = mapped_column(String(10))
    rejection_category: Mapped[str | None] = mapped_column(String(40))
    message: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProlificBonus(Base):
    """One bulk bonus payment. The pay call is not idempotent, so `pay_requested_at` is
    committed before it is made, and a bonus with it set is never paid again."""

    __tablename__ = "prolific_bonuses"
    __table_args__ = (
        UniqueConstraint("bulk_id", name="uq_prolific_bonuses_bulk_id"),
        CheckConstraint("amount_cents > 0", name="ck_prolific_bonuses_amount"),
        CheckConstraint(
            "paid_at IS NULL OR pay_requested_at IS NOT NULL", name="ck_prolific_bonuses_paid"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prolific_study_id: Mapped[int] = mapped_column(ForeignKey("prolific_studies.id"))
    bulk_id: Mapped[str | None] = mapped_column(String(64))
    csv_bonuses: Mapped[str] = mapped_column(Text)
    amount_cents: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    pay_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProlificBonusLine(Base):
    """A submission's share of a bulk bonus; the primary key allows one bonus per submission."""

    __tablename__ = "prolific_bonus_lines"
    __table_args__ = (CheckConstraint("amount_cents > 0", name="ck_prolific_bonus_lines_amount"),)

    submission_id: Mapped[str] = mapped_column(
        ForeignKey("prolific_submissions.submission_id"), primary_key=True
    )
    bonus_id: Mapped[int] = mapped_column(ForeignKey("prolific_bonuses.id"))
    amount_cents: Mapped[int] = mapped_column(Integer)


class Throttle(Base):
    """A counter per (scope, client address): claims, new workers, failed admin log-ins.

    In the database, not in process memory, so that every gunicorn process counts the same
    requests. `count` counts events since `window_start`; `blocked_until` is a back-off.
    """

    __tablename__ = "throttles"
    __table_args__ = (CheckConstraint("count >= 0", name="ck_throttles_count"),)

    scope: Mapped[str] = mapped_column(String(20), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AdminSession(Base):
    """The server side of an admin log-in: the cookie holds a random id whose SHA-256 is `id`.
    Log-out deletes the row, so a copied cookie is worth nothing afterwards."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
