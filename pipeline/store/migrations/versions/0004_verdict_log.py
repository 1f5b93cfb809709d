"""The verdict log: append-only entries and the signed checkpoints over them, one log per origin.

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verdict_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(512), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("leaf", sa.Text, nullable=False),
        sa.UniqueConstraint("origin", "idx", name="uq_verdict_log_origin_idx"),
    )
    op.create_table(
        "verdict_log_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(512), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.UniqueConstraint("origin", "size", name="uq_verdict_log_checkpoints_origin_size"),
    )


def downgrade() -> None:
    op.drop_table("verdict_log_checkpoints")
    op.drop_table("verdict_log")
