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
    _per_origin("verdict_log", "idx", "leaf")
    _per_origin("verdict_log_checkpoints", "size", "note")


def _per_origin(table: str, position: str, text: str) -> None:
    """A table of rows per log origin, unique by (origin, `position`), each carrying `text`."""
    op.create_table(
        table,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(512), nullable=False),
        sa.Column(position, sa.Integer, nullable=False),
        sa.Column(text, sa.Text, nullable=False),
        sa.UniqueConstraint("origin", position, name=f"uq_{table}_origin_{position}"),
    )


def downgrade() -> None:
    op.drop_table("verdict_log_checkpoints")
    op.drop_table("verdict_log")
