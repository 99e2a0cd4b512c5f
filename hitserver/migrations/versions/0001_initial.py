"""Initial schema: batches, items, slots, workers, assignments, responses, MTurk HITs, `ratings`.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
HOLDING = "status IN ('accepted', 'submitted', 'approved')"
ANSWERED = "status IN ('submitted', 'approved', 'rejected')"

# The contract view (docs/contracts.md 8): exactly the tidy export's columns, in this order.
RATINGS_SELECT = """
SELECT b.name AS batch,
       i.key AS item_id,
       w.platform_worker_id AS worker_id,
       w.platform AS platform,
       a.id AS assignment_id,
       COALESCE(a.platform_assignment_id, '') AS platform_assignment_id,
       r.choice AS choice,
       r.reason AS reason,
       {accepted_at} AS accepted_at,
       {submitted_at} AS submitted_at,
       r.duration_s AS duration_s,
       a.status AS status,
       CASE WHEN w.simulated THEN 1 ELSE 0 END AS simulated
FROM responses r
JOIN assignments a ON a.id = r.assignment_id
JOIN items i ON i.id = r.item_id
JOIN batches b ON b.id = i.batch_id
JOIN workers w ON w.id = r.worker_id
"""


def _iso(column: str, dialect: str) -> str:
    """ISO 8601 UTC text with milliseconds, identical on both databases."""
    if dialect == "sqlite":
        return f"strftime('%Y-%m-%dT%H:%M:%fZ', {column})"
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("experiment", sa.String(40), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("assignments_per_item", sa.Integer, nullable=False),
        sa.Column("max_items_per_worker", sa.Integer),
        sa.Column("is_open", sa.Boolean, nullable=False),
        sa.Column("loaded_at", TS, nullable=False),
        sa.CheckConstraint("assignments_per_item >= 1", name="ck_batches_n"),
        sa.CheckConstraint(
            "max_items_per_worker IS NULL OR max_items_per_worker >= 1", name="ck_batches_cap"
        ),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("key", sa.String(250), nullable=False, unique=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("page", sa.Text, nullable=False),
        sa.Column("image", sa.Text, nullable=False),
        sa.Column("class_name", sa.Text, nullable=False),
        sa.Column("robot_a", sa.String(6), nullable=False),
        sa.Column("expected_choices", sa.String(20)),
        sa.Column("spec", sa.Text, nullable=False),
        sa.UniqueConstraint("id", "batch_id", name="uq_items_id_batch"),
        sa.UniqueConstraint("batch_id", "position", name="uq_items_position"),
        sa.CheckConstraint(
            "kind IN ('method-vs-method', 'model-vs-model', 'catch')", name="ck_items_kind"
        ),
        sa.CheckConstraint("robot_a IN ('first', 'second')", name="ck_items_robot_a"),
    )
    op.create_table(
        "item_slots",
        sa.Column("item_id", sa.Integer, primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("batch_id", sa.Integer, nullable=False),
        sa.Column("holder", sa.String(40)),
        sa.ForeignKeyConstraint(
            ["item_id", "batch_id"], ["items.id", "items.batch_id"], name="fk_item_slots_item"
        ),
        sa.UniqueConstraint("item_id", "slot", "holder", name="uq_item_slots_holder_key"),
        sa.UniqueConstraint("holder", name="uq_item_slots_holder"),
        sa.CheckConstraint("slot >= 0", name="ck_item_slots_slot"),
    )
    op.create_index(
        "ix_item_slots_free",
        "item_slots",
        ["slot", "item_id"],
        sqlite_where=sa.text("holder IS NULL"),
        postgresql_where=sa.text("holder IS NULL"),
    )
    op.create_table(
        "batch_worker_slots",
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("batches.id"), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.CheckConstraint("slot >= 0", name="ck_batch_worker_slots_slot"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("platform_worker_id", sa.String(200), nullable=False),
        sa.Column("simulated", sa.Boolean, nullable=False),
        sa.Column("blocked", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("platform", "platform_worker_id", name="uq_workers_platform_id"),
        sa.CheckConstraint(
            "platform IN ('local', 'mturk', 'prolific', 'simulated')", name="ck_workers_platform"
        ),
        sa.CheckConstraint("(platform = 'simulated') = simulated", name="ck_workers_simulated"),
    )
    op.create_table(
        "assignments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("item_id", sa.Integer, nullable=False),
        sa.Column("batch_id", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("slot", sa.Integer),
        sa.Column("worker_slot", sa.Integer),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("platform_assignment_id", sa.String(200)),
        sa.Column("accepted_at", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("submitted_at", TS),
        sa.Column("approved_at", TS),
        sa.Column("rejected_at", TS),
        sa.Column("returned_at", TS),
        sa.Column("expired_at", TS),
        sa.ForeignKeyConstraint(
            ["item_id", "batch_id"], ["items.id", "items.batch_id"], name="fk_assignments_item"
        ),
        sa.ForeignKeyConstraint(
            ["item_id", "slot", "id"],
            ["item_slots.item_id", "item_slots.slot", "item_slots.holder"],
            name="fk_assignments_item_slot",
        ),
        sa.ForeignKeyConstraint(
            ["batch_id", "worker_slot"],
            ["batch_worker_slots.batch_id", "batch_worker_slots.slot"],
            name="fk_assignments_worker_slot",
        ),
        sa.UniqueConstraint("item_id", "slot", name="uq_assignments_item_slot"),
        sa.UniqueConstraint("item_id", "worker_id", name="uq_assignments_item_worker"),
        sa.UniqueConstraint(
            "batch_id", "worker_id", "worker_slot", name="uq_assignments_worker_slot"
        ),
        sa.UniqueConstraint("item_id", "platform_assignment_id", name="uq_assignments_platform_id"),
        sa.UniqueConstraint("id", "item_id", "worker_id", name="uq_assignments_id_item_worker"),
        sa.CheckConstraint(
            "status IN ('accepted', 'submitted', 'approved', 'rejected', 'returned', 'expired')",
            name="ck_assignments_status",
        ),
        sa.CheckConstraint(f"({HOLDING}) = (slot IS NOT NULL)", name="ck_assignments_holds_slot"),
        sa.CheckConstraint(
            "worker_slot IS NULL OR slot IS NOT NULL", name="ck_assignments_worker_slot"
        ),
        sa.CheckConstraint(
            f"NOT ({ANSWERED}) OR submitted_at IS NOT NULL", name="ck_assignments_submitted_at"
        ),
        sa.CheckConstraint(
            "status <> 'approved' OR approved_at IS NOT NULL", name="ck_assignments_approved_at"
        ),
        sa.CheckConstraint(
            "status <> 'rejected' OR rejected_at IS NOT NULL", name="ck_assignments_rejected_at"
        ),
        sa.CheckConstraint(
            "status <> 'returned' OR returned_at IS NOT NULL", name="ck_assignments_returned_at"
        ),
        sa.CheckConstraint(
            "status <> 'expired' OR expired_at IS NOT NULL", name="ck_assignments_expired_at"
        ),
    )
    op.create_index("ix_assignments_status_expires", "assignments", ["status", "expires_at"])
    op.create_index("ix_assignments_worker", "assignments", ["worker_id", "batch_id"])
    op.create_table(
        "responses",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("assignment_id", sa.String(40), nullable=False),
        sa.Column("item_id", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.Integer, nullable=False),
        sa.Column("choice", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_id", "item_id", "worker_id"],
            ["assignments.id", "assignments.item_id", "assignments.worker_id"],
            name="fk_responses_assignment",
        ),
        sa.UniqueConstraint("assignment_id", name="uq_responses_assignment"),
        sa.UniqueConstraint("item_id", "worker_id", name="uq_responses_item_worker"),
        sa.CheckConstraint("choice BETWEEN 1 AND 5", name="ck_responses_choice"),
        sa.CheckConstraint("length(reason) >= 1", name="ck_responses_reason"),
        sa.CheckConstraint("duration_s >= 0", name="ck_responses_duration"),
        sa.CheckConstraint("source IN ('server', 'mturk')", name="ck_responses_source"),
    )
    op.create_table(
        "mturk_hits",
        sa.Column("hit_id", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False),
        sa.Column("production", sa.Boolean, nullable=False),
        sa.Column("hit_type_id", sa.String(64), nullable=False),
        sa.Column("question", sa.String(10), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("item_id", "production", name="uq_mturk_hits_item"),
    )
    dialect = op.get_bind().dialect.name
    select = RATINGS_SELECT.format(
        accepted_at=_iso("a.accepted_at", dialect), submitted_at=_iso("a.submitted_at", dialect)
    )
    op.execute(f"CREATE VIEW ratings AS {select}")


def downgrade() -> None:
    op.execute("DROP VIEW ratings")
    for table in (
        "mturk_hits",
        "responses",
        "assignments",
        "workers",
        "batch_worker_slots",
        "item_slots",
        "items",
        "batches",
    ):
        op.drop_table(table)
