"""Prolific: the study of each batch, its submissions as synced, bulk bonus payments.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "prolific_studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("internal_name", sa.String(200), nullable=False),
        sa.Column("study_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("completion_code", sa.String(100), nullable=False),
        sa.Column("failed_code", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("synced_at", TS, nullable=True),
        sa.UniqueConstraint("batch_id", name="uq_prolific_studies_batch"),
        sa.UniqueConstraint("internal_name", name="uq_prolific_studies_internal_name"),
        sa.UniqueConstraint("study_id", name="uq_prolific_studies_study_id"),
    )
    op.create_table(
        "prolific_submissions",
        sa.Column("submission_id", sa.String(64), primary_key=True),
        sa.Column(
            "prolific_study_id",
            sa.Integer,
            sa.ForeignKey("prolific_studies.id"),
            nullable=False,
        ),
        sa.Column("participant_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("study_code", sa.String(100), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("synced_at", TS, nullable=False),
        sa.Column("decision", sa.String(10), nullable=True),
        sa.Column("rejection_category", sa.String(40), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN ('APPROVE', 'REJECT')",
            name="ck_prolific_submissions_decision",
        ),
        sa.CheckConstraint(
            "decision IS NULL OR decided_at IS NOT NULL", name="ck_prolific_submissions_decided"
        ),
    )
    op.create_index("ix_prolific_submissions_study", "prolific_submissions", ["prolific_study_id"])
    op.create_table(
        "prolific_bonuses",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "prolific_study_id",
            sa.Integer,
            sa.ForeignKey("prolific_studies.id"),
            nullable=False,
        ),
        sa.Column("bulk_id", sa.String(64), nullable=True),
        sa.Column("csv_bonuses", sa.Text, nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("pay_requested_at", TS, nullable=True),
        sa.Column("paid_at", TS, nullable=True),
        sa.Column("confirmed_at", TS, nullable=True),
        sa.UniqueConstraint("bulk_id", name="uq_prolific_bonuses_bulk_id"),
        sa.CheckConstraint("amount_cents > 0", name="ck_prolific_bonuses_amount"),
        sa.CheckConstraint(
            "paid_at IS NULL OR pay_requested_at IS NOT NULL", name="ck_prolific_bonuses_paid"
        ),
    )
    op.create_table(
        "prolific_bonus_lines",
        sa.Column(
            "submission_id",
            sa.String(64),
            sa.ForeignKey("prolific_submissions.submission_id"),
            primary_key=True,
        ),
        sa.Column("bonus_id", sa.Integer, sa.ForeignKey("prolific_bonuses.id"), nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.CheckConstraint("amount_cents > 0", name="ck_prolific_bonus_lines_amount"),
    )


def downgrade() -> None:
    op.drop_table("prolific_bonus_lines")
    op.drop_table("prolific_bonuses")
    op.drop_index("ix_prolific_submissions_study", table_name="prolific_submissions")
    op.drop_table("prolific_submissions")
    op.drop_table("prolific_studies")
