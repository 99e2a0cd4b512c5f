"""Participant quality: what the task page measured, per answer, and in the `ratings` view.

Five nullable columns on `responses` (NULL where the client sent no telemetry: old pages, the
JSON API, MTurk) and the `ratings` view again with them appended after the contract's columns,
which keep their names and order (docs/contracts.md 8).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TELEMETRY = (
    ("visible_s", sa.Float),
    ("blur_count", sa.Integer),
    ("paste_count", sa.Integer),
    ("pasted_chars", sa.Integer),
    ("reason_chars", sa.Integer),
)
CHECK = (
    "visible_s >= 0 AND blur_count >= 0 AND paste_count >= 0 AND pasted_chars >= 0 "
    "AND reason_chars >= 0"
)

# The contract view (docs/contracts.md 8), then the quality columns.
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
       CASE WHEN w.simulated THEN 1 ELSE 0 END AS simulated{extra}
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


def _create_view(with_telemetry: bool) -> None:
    dialect = op.get_bind().dialect.name
    extra = "".join(f",\n       r.{name} AS {name}" for name, _ in TELEMETRY)
    select = RATINGS_SELECT.format(
        accepted_at=_iso("a.accepted_at", dialect),
        submitted_at=_iso("a.submitted_at", dialect),
        extra=extra if with_telemetry else "",
    )
    op.execute(f"CREATE VIEW ratings AS {select}")


def upgrade() -> None:
    # SQLite rebuilds the table to add the CHECK; the view must not point at it meanwhile.
    op.execute("DROP VIEW ratings")
    with op.batch_alter_table("responses") as batch:
        for name, kind in TELEMETRY:
            batch.add_column(sa.Column(name, kind, nullable=True))
        batch.create_check_constraint("ck_responses_telemetry", CHECK)
    _create_view(with_telemetry=True)


def downgrade() -> None:
    op.execute("DROP VIEW ratings")
    with op.batch_alter_table("responses") as batch:
        batch.drop_constraint("ck_responses_telemetry", type_="check")
        for name, _ in reversed(TELEMETRY):
            batch.drop_column(name)
    _create_view(with_telemetry=False)
