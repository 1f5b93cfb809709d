"""What the store's queries return besides whole records: small typed rows read from the
denormalised columns, for listings, dashboards, status and locks."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from pipeline.models import PromotionRecord


def aware(dt: datetime) -> datetime:
    """SQLite hands datetimes back naive; the store writes UTC only."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class GateCell(_View):
    name: str
    status: str
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None


class RunSummary(_View):
    """One run as the listings show it: identity, decision and gate verdicts, without the record."""

    run_id: str
    created_at: datetime
    updated_at: datetime
    target: str
    repository: str
    tag: str | None
    digest: str | None
    model_digest: str | None
    policy_name: str | None
    policy_sha256: str | None
    ground_truth_version: str | None
    ground_truth_sha256: str | None
    decision: str
    decision_reason: str | None
    interrupted_stage: str | None
    promoted: bool
    gates: list[GateCell] = []


class LockInfo(_View):
    """Who holds (or held) a target's promotion lock, and until when the lease runs."""

    target: str
    holder: str
    host: str
    pid: int
    acquired_at: datetime
    expires_at: datetime
    fence: int = 0  # grows by one each time the lock changes hands

    def describe(self) -> str:
        return (f"{self.holder or '?'} pid {self.pid} on {self.host} since {self.acquired_at.isoformat()} "
                f"(lease until {self.expires_at.isoformat()})")


class TargetStatus(_View):
    """What is promoted to a target: the digest, since when, by which run and whom.

    `digest` is None when promotions were attempted but none succeeded. `last_attempt` is the newest
    audit row of any outcome (a refusal after the current promotion shows there), `lock` the promotion
    in progress, if any."""

    target: str
    digest: str | None = None
    model_digest: str | None = None
    run_id: str | None = None  # the run whose promotion put the release there
    tag: str | None = None
    since: datetime | None = None
    who: str | None = None
    mode: str | None = None
    verdict_run_id: str | None = None  # the signed verdict that authorised it: its run and gate time
    verdict_at: datetime | None = None
    previous_digest: str | None = None
    previous_model_digest: str | None = None
    last_attempt: PromotionRecord | None = None
    last_attempt_run_id: str | None = None
    lock: LockInfo | None = None


class StoredLog(_View):
    """A verdict log as the store holds it: (index, entry) pairs and the newest checkpoint note."""

    origin: str
    entries: list[tuple[int, str]]
    checkpoint: str | None
