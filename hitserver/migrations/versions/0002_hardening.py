"""Hardening (issue 28): one open assignment per worker, per-address throttles shared by all
server processes, revocable admin sessions, and the Prolific session id scoped per worker.

- `uq_assignments_one_open`: a partial unique index on `assignments(worker_id)` over accepted
  assignments, so no worker holds two open tasks at once (slot hoarding), whatever the code does.
- `throttles`: counters per (scope, client address) for claims, new workers and admin log-in
  failures; in the database so that every gunicorn process sees the same counts.
- `admin_sessions`: the server side of an admin log-in; log-out deletes the row, so a copied
  cookie stops working.
- `uq_assignments_platform_id` (item_id, platform_assignment_id) goes: a Prolific SESSION_ID
  that two participants share made the second one collide on every claim. An MTurk assignment
  belongs to one worker, so UNIQUE(item_id, worker_id) still keeps it to one row; a plain index
  keeps `mturk sync`'s look-up fast.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
OPEN = "status = 'accepted'"


def upgrade() -> None:
    op.create_table(
        "throttles",
        sa.Column("scope", sa.String(20), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("blocked_until", TS),
        sa.CheckConstraint("count >= 0", name="ck_throttles_count"),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_drop_platform_id_unique()
    else:
        op.drop_constraint("uq_assignments_platform_id", "assignments", type_="unique")
    op.create_index(
        "ix_assignments_platform_id", "assignments", ["item_id", "platform_assignment_id"]
    )
    op.create_index(
        "uq_assignments_one_open",
        "assignments",
        ["worker_id"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )


def _sqlite_drop_platform_id_unique() -> None:
    """SQLite cannot drop a table constraint: rebuild `assignments` without it.

    The migration runs inside one transaction with foreign keys on (they cannot be switched
    off inside a transaction), so the rows of `responses`, the only table referencing
    `assignments`, wait in a copy while the table is swapped, and the views that read it are
    dropped and made again from their own stored SQL.
    """
    conn = op.get_bind()
    views = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'view'"
    ).fetchall()
    indexes = (
        conn.exec_driver_sql(
            "SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'assignments' "
            "AND sql IS NOT NULL"
        )
        .scalars()
        .all()
    )
    table_sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'assignments'"
    ).scalar_one()
    new_sql, found = re.subn(
        r",\s*CONSTRAINT uq_assignments_platform_id UNIQUE \(item_id, platform_assignment_id\)",
        "",
        table_sql,
    )
    if found != 1:
        raise RuntimeError("assignments: uq_assignments_platform_id not found where expected")
    new_sql = new_sql.replace("CREATE TABLE assignments", "CREATE TABLE assignments_new", 1)
    for name, _sql in views:
        conn.exec_driver_sql(f'DROP VIEW "{name}"')
    conn.exec_driver_sql("CREATE TEMP TABLE responses_copy AS SELECT * FROM responses")
    conn.exec_driver_sql("DELETE FROM responses")
    conn.exec_driver_sql(new_sql)
    conn.exec_driver_sql("INSERT INTO assignments_new SELECT * FROM assignments")
    conn.exec_driver_sql("DROP TABLE assignments")
    conn.exec_driver_sql("ALTER TABLE assignments_new RENAME TO assignments")
    for sql in indexes:
        conn.exec_driver_sql(sql)
    conn.exec_driver_sql("INSERT INTO responses SELECT * FROM responses_copy")
    conn.exec_driver_sql("DROP TABLE responses_copy")
    for _name, sql in views:
        conn.exec_driver_sql(sql)


def downgrade() -> None:
    op.drop_index("uq_assignments_one_open", "assignments")
    op.drop_index("ix_assignments_platform_id", "assignments")
    if op.get_bind().dialect.name != "sqlite":
        op.create_unique_constraint(
            "uq_assignments_platform_id", "assignments", ["item_id", "platform_assignment_id"]
        )
    op.drop_table("admin_sessions")
    op.drop_table("throttles")
