"""The scan gate: a policy model (the `scan:` section of gates.yaml) and its evaluator.

Self-contained so that the gate engine only has to call `policy_from_gates(data)` and
`scan_gate_verdict(run, policy)`; the scan stage calls `evaluate` itself to fill `scan.blocking`.

```yaml
scan:
  max: {critical: 0, high: 0}          # per severity, after ignores; absent/null = no limit
  ignore_unfixed: true                 # do not count vulnerabilities without a fixed version
  ignore_file: .trivyignore.yaml       # entries need id, reason and expiry; expired => fail
  misconfig_max: {critical: 0, high: 0}
  require_scanners: [vuln, secret, misconfig]   # a scanner that did not run fails the gate
```
Any secret finding fails; that is not configurable.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import describe_validation_error
from pipeline.errors import BadInput
from pipeline.models import GateStatus, GateVerdict, RunRecord, StageStatus
from pipeline.supplychain.ignore_file import IgnoreEntry, load_ignore_file
from pipeline.supplychain.trivy_report import (
    SEVERITIES,
    Misconfiguration,
    SecretFinding,
    Severity,
    TrivyReport,
    Vulnerability,
    count_by_severity,
)

Scanner = Literal["vuln", "secret", "misconfig"]


class SeverityLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    critical: int | None = Field(default=None, ge=0)
    high: int | None = Field(default=None, ge=0)
    medium: int | None = Field(default=None, ge=0)
    low: int | None = Field(default=None, ge=0)
    unknown: int | None = Field(default=None, ge=0)

    def limit(self, sev: Severity) -> int | None:
        return getattr(self, sev.value.lower())


class ScanPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max: SeverityLimits = Field(default_factory=lambda: SeverityLimits(critical=0, high=0))
    ignore_unfixed: bool = False
    ignore_file: str | None = ".trivyignore.yaml"
    misconfig_max: SeverityLimits = Field(default_factory=lambda: SeverityLimits(critical=0, high=0))
    require_scanners: list[Scanner] = Field(default_factory=lambda: ["vuln", "secret", "misconfig"])


def policy_from_gates(data: dict[str, Any] | None, *, where: str = "gates.yaml") -> ScanPolicy:
    """The `scan:` section of a parsed gates.yaml (absent section => the strict default policy)."""
    section = (data or {}).get("scan")
    if section is None:
        return ScanPolicy()
    if not isinstance(section, dict):
        raise BadInput("the scan section must be a mapping", where=f"{where}: scan")
    # required/key/reason describe the gate, not the scan rules (the gate engine reads them)
    rules = {k: v for k, v in section.items() if k not in ("required", "key", "reason")}
    try:
        return ScanPolicy.model_validate(rules)
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc), where=f"{where}: scan") from exc


def load_policy(path: str | Path | None) -> ScanPolicy:
    """Policy from a gates.yaml path; a missing default file means the default policy."""
    if path is None:
        return ScanPolicy()
    p = Path(path)
    if not p.exists():
        return ScanPolicy()
    # Through the gate policy loader, so that `extends:` resolves exactly as the gate engine sees it.
    from pipeline.gates.policy import load_policy as load_gate_policy

    section = load_gate_policy(p).sections.get("scan")
    return section if isinstance(section, ScanPolicy) else ScanPolicy()


class BlockingFinding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["vulnerability", "secret", "misconfig"]
    id: str
    severity: Severity
    target: str = ""
    pkg: str | None = None
    installed: str | None = None
    fixed: str | None = None
    line: int | None = None
    rule: str  # why it blocks

    def render(self) -> str:
        if self.kind == "vulnerability":
            fix = f"fixed in {self.fixed}" if self.fixed else "no fix available"
            return f"{self.severity.value} {self.id} in {self.pkg} {self.installed} ({fix}) [{self.target}]: {self.rule}"
        loc = f"{self.target}:{self.line}" if self.line else self.target
        return f"{self.severity.value} {self.kind} {self.id} at {loc}: {self.rule}"


class IgnoredFinding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    pkg: str | None = None
    target: str = ""
    by: str  # "ignore-unfixed" or the ignore entry's source


class ScanVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool
    vuln_scanned: bool
    counts: dict[str, int | None]  # per severity (lower case) after ignores; None when vuln did not run
    raw_counts: dict[str, int | None]
    secrets: int | None
    misconfigs: int | None  # failing misconfigurations after ignores
    blocking: list[BlockingFinding] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)  # blockers that are not findings (expired entry, scanner not run)
    ignored: list[IgnoredFinding] = Field(default_factory=list)
    unused_ignores: list[str] = Field(default_factory=list)

    @property
    def blocking_count(self) -> int:
        return len(self.blocking) + len(self.problems)

    def metrics(self) -> dict[str, float | None]:
        m: dict[str, float | None] = {k: (None if v is None else float(v)) for k, v in self.counts.items()}
        m["secrets"] = None if self.secrets is None else float(self.secrets)
        m["misconfigs"] = None if self.misconfigs is None else float(self.misconfigs)
        m["blocking"] = float(self.blocking_count)
        return m

    def summary(self) -> str:
        if self.passed:
            return "scan policy passed"
        parts = list(self.problems) + [b.render() for b in self.blocking]
        return f"scan policy blocked ({self.blocking_count}): " + "; ".join(parts)


def _active(entries: list[IgnoreEntry], finding: Vulnerability | Misconfiguration, today: date) -> IgnoreEntry | None:
    for e in entries:
        if not e.expired(today) and e.matches(finding):
            return e
    return None


def evaluate(
    report: TrivyReport,
    policy: ScanPolicy,
    *,
    ignores: list[IgnoreEntry] | None = None,
    today: date | None = None,
    not_run: dict[str, str] | None = None,
) -> ScanVerdict:
    """Apply the policy. `not_run` maps a scanner that did not run to why (e.g. no vulnerability DB):
    its counts are None, never zero, and a required scanner that did not run blocks."""
    today = today or date.today()
    entries = ignores or []
    not_run = not_run or {}
    problems: list[str] = []
    blocking: list[BlockingFinding] = []
    ignored: list[IgnoredFinding] = []
    used: set[str] = set()

    for e in entries:
        if e.expired(today):
            problems.append(
                f"ignore entry {e.id} ({e.source}) expired on {e.expires.isoformat()} (reason was: {e.reason})"
            )
    for scanner in policy.require_scanners:
        if scanner in not_run:
            problems.append(f"{scanner} scanner not run: {not_run[scanner]}")

    vuln_scanned = "vuln" not in not_run
    counted: list[Vulnerability] = []
    for v in report.vulnerabilities:
        hit = _active(entries, v, today)
        if hit is not None:
            used.add(hit.source)
            ignored.append(IgnoredFinding(id=v.id, pkg=v.pkg, target=v.target, by=hit.source))
        elif policy.ignore_unfixed and not v.has_fix:
            ignored.append(IgnoredFinding(id=v.id, pkg=v.pkg, target=v.target, by="ignore-unfixed"))
        else:
            counted.append(v)
    counts = count_by_severity(counted)
    for sev in SEVERITIES:
        limit = policy.max.limit(sev)
        if vuln_scanned and limit is not None and counts[sev] > limit:
            for v in counted:
                if v.severity is sev:
                    blocking.append(
                        BlockingFinding(
                            kind="vulnerability", id=v.id, severity=sev, target=v.target, pkg=v.pkg,
                            installed=v.installed, fixed=v.fixed,
                            rule=f"{counts[sev]} {sev.value} vulnerabilities > max {limit}",
                        )
                    )

    secrets: list[SecretFinding] = list(report.secrets)
    for s in secrets:
        blocking.append(
            BlockingFinding(
                kind="secret", id=s.rule, severity=s.severity, target=s.target, line=s.line,
                rule="any secret finding fails",
            )
        )

    mis_counted: list[Misconfiguration] = []
    for m in report.misconfigs:
        hit = _active(entries, m, today)
        if hit is not None:
            used.add(hit.source)
            ignored.append(IgnoredFinding(id=m.id, target=m.target, by=hit.source))
        else:
            mis_counted.append(m)
    mis_counts = count_by_severity(mis_counted)
    for sev in SEVERITIES:
        limit = policy.misconfig_max.limit(sev)
        if "misconfig" not in not_run and limit is not None and mis_counts[sev] > limit:
            for m in mis_counted:
                if m.severity is sev:
                    blocking.append(
                        BlockingFinding(
                            kind="misconfig", id=m.id, severity=sev, target=m.target, line=m.start_line,
                            rule=f"{mis_counts[sev]} {sev.value} misconfigurations > max {limit}: {m.message}",
                        )
                    )

    raw = count_by_severity(report.vulnerabilities)
    return ScanVerdict(
        passed=not blocking and not problems,
        vuln_scanned=vuln_scanned,
        counts={s.value.lower(): (counts[s] if vuln_scanned else None) for s in SEVERITIES},
        raw_counts={s.value.lower(): (raw[s] if vuln_scanned else None) for s in SEVERITIES},
        secrets=None if "secret" in not_run else len(secrets),
        misconfigs=None if "misconfig" in not_run else len(mis_counted),
        blocking=blocking,
        problems=problems,
        ignored=ignored,
        unused_ignores=[e.source for e in entries if e.source not in used and not e.expired(today)],
    )


def load_ignores(policy: ScanPolicy, override: str | Path | None = None, *, base: Path | None = None) -> list[IgnoreEntry]:
    """The ignore entries in force: an explicit file must exist; the policy's default may be absent."""
    if override is not None:
        return load_ignore_file(override)
    if not policy.ignore_file:
        return []
    p = Path(policy.ignore_file)
    if base is not None and not p.is_absolute():
        p = base / p
    return load_ignore_file(p) if p.exists() else []


def scan_gate_verdict(
    run: RunRecord,
    policy: ScanPolicy,
    *,
    ignores: list[IgnoreEntry] | None = None,
    today: date | None = None,
) -> GateVerdict:
    """One `scan` gate for the gate engine, re-evaluated from the findings the scan stage recorded."""
    res = run.stage("scan")
    base = {"name": "scan", "source": "scan.blocking", "threshold": 0.0, "direction": "max", "required": True}
    if res is None or res.status is not StageStatus.OK or "report" not in res.details:
        why = "no scan stage result" if res is None else f"scan stage {res.status.value}: {res.reason or ''}"
        return GateVerdict(status=GateStatus.NOT_RUN, reason=why, **base)
    report = TrivyReport.model_validate(res.details["report"])
    verdict = evaluate(report, policy, ignores=ignores, today=today, not_run=res.details.get("not_run") or {})
    return GateVerdict(
        status=GateStatus.PASS if verdict.passed else GateStatus.FAIL,
        value=float(verdict.blocking_count),
        reason=verdict.summary(),
        details={"blocking": [b.render() for b in verdict.blocking], "problems": verdict.problems},
        **base,
    )
