"""Baseline: the schema as the store created it before it had migrations.

Stores made then have these tables (promotion_locks only once a lock was taken) and no
alembic_version table; each table is created only when absent, so such a store upgrades in place
and a new one starts from the same point.

Revision ID: 0001
Revises:
Create Date: 2025-03-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "runs" not in present:
        op.create_table(
            "runs",
            sa.Column("run_id", sa.String(64), primary_key=True),
            sa.Column("repository", sa.String(512), nullable=False),
            sa.Column("tag", sa.String(256)),
            sa.Column("digest", sa.String(80)),
            sa.Column("target", sa.String(128), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("decision", sa.String(16), nullable=False),
            sa.Column("promoted", sa.Boolean, nullable=False),
            sa.Column("ground_truth_version", sa.String(32)),
            sa.Column("record_json", sa.Text, nullable=False),
        )
        for col in ("tag", "digest", "target", "promoted", "created_at"):
            op.create_index(f"ix_runs_{col}", "runs", [col])
    if "promotions" not in present:
        op.create_table(
            "promotions",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("run_id", sa.String(64)),
            sa.Column("target", sa.String(128), nullable=False),
            sa.Column("digest", sa.String(80), nullable=False),
            sa.Column("mode", sa.String(16), nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("who", sa.String(128), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("detail", sa.Text, nullable=False),
            sa.Column("previous_digest", sa.String(80)),
        )
        for col in ("at", "run_id", "target"):
            op.create_index(f"ix_promotions_{col}", "promotions", [col])
    if "gate_verdicts" not in present:
        op.create_table(
            "gate_verdicts",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("value", sa.Float),
            sa.Column("threshold", sa.Float),
            sa.Column("baseline", sa.Float),
        )
        op.create_index("ix_gate_verdicts_run_id", "gate_verdicts", ["run_id"])
    if "promotion_locks" not in present:
        op.create_table(
            "promotion_locks",
            sa.Column("target", sa.String(128), primary_key=True),
            sa.Column("token", sa.String(64), nullable=False),
            sa.Column("holder", sa.String(256), nullable=False),
            sa.Column("host", sa.String(256), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    for table in ("promotion_locks", "gate_verdicts", "promotions", "runs"):
        op.drop_table(table)
