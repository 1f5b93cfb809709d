"""Release identity and outcome on runs; one row per stage of a run (`stage_runs`).

New columns are filled from each stored record, so listings and baselines see existing runs too.
Records written before the record carried a model or a policy leave those columns empty.

Revision ID: 0002
Revises: 0001
Create Date: 2025-03-05
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_RUN_COLUMNS = {
    "model_digest": sa.String(80),
    "policy_name": sa.String(256),
    "policy_sha256": sa.String(64),
    "ground_truth_sha256": sa.String(64),
    "decision_reason": sa.String(512),
    "interrupted_stage": sa.String(32),
}


def upgrade() -> None:
    for name, type_ in _RUN_COLUMNS.items():
        op.add_column("runs", sa.Column(name, type_, nullable=True))
    op.create_index("ix_runs_model_digest", "runs", ["model_digest"])
    op.create_index("ix_runs_decision", "runs", ["decision"])
    op.create_table(
        "stage_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input_key", sa.String(64)),
        sa.Column("reused_from", sa.String(64)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_s", sa.Float),
    )
    op.create_index("ix_stage_runs_run_id", "stage_runs", ["run_id"])
    op.create_index("ix_stage_runs_stage_input_key", "stage_runs", ["stage", "input_key"])
    _backfill()


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def _text(value: Any, width: int) -> str | None:
    return value[:width] if isinstance(value, str) and value else None


def _backfill() -> None:
    bind = op.get_bind()
    runs = sa.table("runs", sa.column("run_id", sa.String), sa.column("record_json", sa.Text),
                    *(sa.column(n, t) for n, t in _RUN_COLUMNS.items()))
    stage_runs = sa.table(
        "stage_runs", sa.column("run_id", sa.String), sa.column("stage", sa.String), sa.column("status", sa.String),
        sa.column("input_key", sa.String), sa.column("reused_from", sa.String),
        sa.column("started_at", sa.DateTime(timezone=True)), sa.column("finished_at", sa.DateTime(timezone=True)),
        sa.column("duration_s", sa.Float),
    )
    for run_id, raw in bind.execute(sa.select(runs.c.run_id, runs.c.record_json)).all():
        try:
            rec = json.loads(raw)
        except ValueError:
            continue  # not readable as a record: leave its columns empty rather than guess
        model, policy, gt = rec.get("model") or {}, rec.get("policy") or {}, rec.get("ground_truth") or {}
        bind.execute(sa.update(runs).where(runs.c.run_id == run_id).values(
            model_digest=_text(model.get("digest"), 80),
            policy_name=_text(policy.get("name"), 256),
            policy_sha256=_text(policy.get("sha256"), 64),
            ground_truth_sha256=_text(gt.get("sha256"), 64),
            decision_reason=_text(rec.get("decision_reason"), 512),
            interrupted_stage=_text(rec.get("interrupted_stage"), 32),
        ))
        rows = []
        for name, res in (rec.get("stages") or {}).items():
            started = _when(res.get("started_at")) if isinstance(res, dict) else None
            if started is None:
                continue
            duration = res.get("duration_s")
            rows.append({
                "run_id": run_id, "stage": str(name)[:32], "status": str(res.get("status"))[:16],
                "input_key": _text(res.get("input_key"), 64), "reused_from": _text(res.get("reused_from"), 64),
                "started_at": started, "finished_at": _when(res.get("finished_at")),
                "duration_s": float(duration) if isinstance(duration, int | float) else None,
            })
        if rows:
            bind.execute(sa.insert(stage_runs), rows)


def downgrade() -> None:
    op.drop_table("stage_runs")
    op.drop_index("ix_runs_decision", "runs")
    op.drop_index("ix_runs_model_digest", "runs")
    with op.batch_alter_table("runs") as batch:
        for name in _RUN_COLUMNS:
            batch.drop_column(name)
