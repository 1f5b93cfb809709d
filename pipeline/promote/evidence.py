"""The evidence a promotion carries: the run, its gates, its scan and its signature, in a few lines."""

from __future__ import annotations

from pipeline.models import RunRecord


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def summary(run: RunRecord) -> str:
    lines = [f"Run: {run.run_id} (decision: {run.decision.value}{': ' + run.decision_reason if run.decision_reason else ''})"]
    lines.append(f"Image: {run.image.by_digest}" + (f" (tag {run.image.tag})" if run.image.tag else ""))
    if run.source_commit:
        lines.append(f"Source commit: {run.source_commit}")
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
    sign = run.stage("sign")
    if sign is None:
        lines.append("Signature: not run")
    else:
        ref = sign.details.get("signature_ref") or sign.details.get("signature") or ""
        lines.append(f"Signature: {sign.status.value} verified={_fmt(sign.metrics.get('verified'))}"
                     + (f" {ref}" if ref else ""))
    man = run.stage("manifests")
    if man is not None:
        lines.append(f"Manifests: {man.status.value} violations={_fmt(man.metrics.get('violations'))}")
    return "\n".join(lines)
