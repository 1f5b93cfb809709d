"""Promotions name the release pair and the verdict that authorised them; the promotion lock carries a
fencing token.

- `promotions.model_digest`: a release is (image digest, model digest), so a weights-only promotion is
  a release of its own (rollback and status key on the pair). Filled from the audit row's detail
  ("model sha256:…; …"), which is where earlier versions wrote it.
- `promotions.verdict_run_id`, `promotions.verdict_at`: the signed verdict the guard accepted (its run
  and gate time), so status and history name what authorised a target's release. Unknown for rows
  written before: left empty, never guessed.
- `promotion_locks.fence`: a number that grows by one every time the lock changes hands; a backend
  checks it before each write, so a promoter that lost its lease cannot write after the next one
  started. The row of a target now stays after a release (token emptied) so the number keeps growing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_MODEL_IN_DETAIL = re.compile(r"\bmodel (sha256:[0-9a-f]{64})")


def upgrade() -> None:
    with op.batch_alter_table("promotions") as batch:
        batch.add_column(sa.Column("model_digest", sa.String(80), nullable=True))
        batch.add_column(sa.Column("verdict_run_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("verdict_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("promotion_locks") as batch:
        batch.add_column(sa.Column("fence", sa.Integer, nullable=False, server_default="0"))
    bind = op.get_bind()
    promotions = sa.table("promotions", sa.column("id", sa.Integer), sa.column("detail", sa.Text),
                          sa.column("model_digest", sa.String))
    for row_id, detail in bind.execute(sa.select(promotions.c.id, promotions.c.detail)).all():
        found = _MODEL_IN_DETAIL.search(detail or "")
        if found:
            bind.execute(sa.update(promotions).where(promotions.c.id == row_id).values(model_digest=found.group(1)))


def downgrade() -> None:
    with op.batch_alter_table("promotion_locks") as batch:
        batch.drop_column("fence")
    with op.batch_alter_table("promotions") as batch:
        batch.drop_column("verdict_at")
        batch.drop_column("verdict_run_id")
        batch.drop_column("model_digest")
