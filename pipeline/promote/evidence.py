"""The evidence a promotion carries (commit message, audit): the release it moves, by both digests, and
the signed verdict the guard accepted, quoted from the signed statement itself: its run, gate time,
target and baseline, policy, every gate with its value and the decision. Nothing here is read from the
store: a store row edited after the verdict cannot change what a commit message says was checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.models import RunRecord

if TYPE_CHECKING:
    from pipeline.supplychain.guard import GuardResult


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def summary(run: RunRecord, guard: GuardResult, *, key: str | None = None) -> str:
    """`run` names only what is being moved (its id, tag and digests); everything judged comes from
    `guard.verdict`, the signed statement."""
    v = guard.verdict
    lines = [f"Run: {run.run_id}"]
    lines.append(f"Image: {guard.image}" + (f" (tag {run.image.tag})" if run.image.tag else ""))
    if v.model is not None:
        lines.append(f"Model: {v.model.digest} ({v.model.files} files, {v.model.bytes} bytes)")
    lines.append(f"Signed verdict: run {v.run_id}, decision {v.decision.value}, created {v.created.isoformat()}"
                 f"{', policy ' + v.policy.name + ' (sha256 ' + v.policy.sha256 + ')' if v.policy else ''}")
    lines.append(f"  target {v.target or 'not named'}, baseline "
                 + (f"run {v.baseline_run_id}" if v.baseline_run_id else "none (first release)"))
    if v.ground_truth is not None:
        lines.append(f"  ground truth {v.ground_truth.version} (sha256 {v.ground_truth.sha256})")
    if v.source_commit:
        lines.append(f"  source commit {v.source_commit}")
    lines.append(f"  image signature: {guard.signature_reason}")
    lines.append(f"  verdict attestation: {guard.verdict_reason}")
    if key:
        lines.append(f"  key: {key}")
    lines.append("Gates (signed):")
    if not v.gates:
        lines.append("  (none)")
    for g in v.gates:
        bound = "" if g.threshold is None else f" ({g.direction or 'vs'} {_fmt(g.threshold)})"
        lines.append(f"  {g.status.value:<7} {g.name}: {g.source} = {_fmt(g.value)}{bound}")
    return "\n".join(lines)
