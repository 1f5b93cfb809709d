"""The evidence a promotion carries (commit message, rollout annotation): the release it moves, by
both digests, the signed verdict the guard accepted, the gates, the scan and the signatures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.models import RunRecord
from pipeline.schemas.attest import AttestDetails
from pipeline.schemas.sign import SignDetails

if TYPE_CHECKING:
    from pipeline.supplychain.guard import GuardResult


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def summary(run: RunRecord, guard: GuardResult | None = None) -> str:
    lines = [(f"Run: {run.run_id} (decision: {run.decision.value}"
             f"{': ' + run.decision_reason if run.decision_reason else ''})")]
    lines.append(f"Image: {run.image.by_digest}" + (f" (tag {run.image.tag})" if run.image.tag else ""))
    if run.model is not None:
        lines.append(f"Model: {run.model.digest} ({run.model.files} files, {run.model.bytes} bytes)")
    else:
        lines.append("Model: unknown (no weights digest recorded)")
    if run.ground_truth is not None:
        lines.append(f"Ground truth: {run.ground_truth.version} (sha256 {run.ground_truth.sha256})")
    if run.policy is not None:
        lines.append(f"Policy: {run.policy.name} (sha256 {run.policy.sha256})")
    if run.source_commit:
        lines.append(f"Source commit: {run.source_commit}")
    if guard is not None:
        v = guard.verdict
        lines.append(f"Signed verdict: run {v.run_id}, decision {v.decision.value}, created {v.created.isoformat()}"
                     f"{', policy ' + v.policy.name + ' (sha256 ' + v.policy.sha256 + ')' if v.policy else ''}")
        lines.append(f"  image signature: {guard.signature_reason}")
        lines.append(f"  verdict attestation: {guard.verdict_reason}")
    lines.append("Gates:")
    if not run.gates:
        lines.append("  (none recorded)")
    for g in run.gates:
        bound = "" if g.threshold is None else f" ({g.direction or 'vs'} {_fmt(g.threshold)})"
        lines.append(f"  {g.status.value:<7} {g.name}: {g.source} = {_fmt(g.value)}{bound}")
    scan = run.stage("scan")
    if scan is None:
        lines.append("Scan: not run")
    else:
        counts = " ".join(f"{k}={_fmt(scan.metrics.get(k))}" for k in ("critical", "high", "medium", "secrets",
                                                                      "blocking") if k in scan.metrics)
        lines.append(f"Scan: {scan.status.value} {counts}".rstrip())
    sign_res = run.stage("sign")
    sign = sign_res.payload(SignDetails) if sign_res is not None else None
    if sign_res is None:
        lines.append("Signature: not run")
    elif sign is None:
        lines.append(f"Signature: {sign_res.status.value}" + (f" ({sign_res.reason})" if sign_res.reason else ""))
    else:
        lines.append(f"Signature: {sign_res.status.value} verified={sign.verified} key {sign.key_id}"
                     + (f" {sign.signature_ref}" if sign.signature_ref else ""))
    att_res = run.stage("attest")
    att = att_res.payload(AttestDetails) if att_res is not None else None
    if att is not None:
        for a in att.attestations:
            lines.append(f"Attestation: {a.predicate_type} verified={a.verified}" + (f" {a.ref}" if a.ref else "")
                         + ("" if a.verified else f" ({a.reason})"))
    man = run.stage("manifests")
    if man is not None:
        lines.append(f"Manifests: {man.status.value} violations={_fmt(man.metrics.get('violations'))}")
    return "\n".join(lines)
