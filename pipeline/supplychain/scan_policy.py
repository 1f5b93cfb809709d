"""The scan gate: a policy model (the `scan:` section of a gate policy) and its evaluator.

The gate engine reaches it through `SCAN_SECTION` (a `SectionPlugin`); the scan stage calls `evaluate`
itself to fill `scan.blocking`; `scan --report FILE` calls `check_report`.

```yaml
scan:
  max: {critical: 0, high: 0}          # per severity, after ignores; absent/null = no limit
  ignore_unfixed: true                 # do not count vulnerabilities without a fixed version
  ignore_file: .trivyignore.yaml       # entries need id, reason and expiry; expired => fail
  misconfig_max: {critical: 0, high: 0}
  require_scanners: [vuln, secret, misconfig]   # a scanner that did not run fails the gate
```
Any secret finding fails; that is not configurable.

A trivy report does not say which scanners made it, and trivy leaves out every result without a
finding, so a report read from a file proves only the scanners whose findings it holds. Checked on
its own (`check_report`), a report fails closed: each required scanner it cannot prove is a blocking
problem, unless the caller states which scanners ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from pipeline.config import describe_validation_error
from pipeline.errors import BadInput
from pipeline.gates.sections import ENGINE_SECTION_KEYS, SectionContext, SectionPlugin
from pipeline.models import GateStatus, GateVerdict, RunRecord, Stage, StageStatus
from pipeline.schemas.gate import VerdictDetails
from pipeline.schemas.scan import (  # noqa: F401  (re-exported: the policy's types)
    BlockingFinding,
    IgnoredFinding,
    ScanDetails,
    Scanner,
    ScanPolicy,
    ScanVerdict,
    SeverityLimits,
)
from pipeline.supplychain.ignore_file import IgnoreEntry, load_ignore_file
from pipeline.supplychain.trivy_report import (
    SEVERITIES,
    Misconfiguration,
    SecretFinding,
    TrivyReport,
    Vulnerability,
    count_by_severity,
)


def policy_from_gates(data: dict[str, Any] | None, *, where: str = "gates.yaml") -> ScanPolicy:
    """The `scan:` section of a parsed gates.yaml (absent section => the strict default policy)."""
    section = (data or {}).get("scan")
    if section is None:
        return ScanPolicy()
    if not isinstance(section, dict):
        raise BadInput("the scan section must be a mapping", where=f"{where}: scan")
    # required/key/reason/locked/relaxable describe the gate, not the scan rules (the gate engine reads them)
    rules = {k: v for k, v in section.items() if k not in ENGINE_SECTION_KEYS}
    try:
        return ScanPolicy.model_validate(rules)
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc), where=f"{where}: scan") from exc


def _all_sections() -> tuple[SectionPlugin, ...]:
    # imported here, not at the top: gate_sections builds its list from SCAN_SECTION in this module
    from pipeline.supplychain.gate_sections import SECTIONS

    return SECTIONS


def load_policy(path: str | Path | None, *, sections: Sequence[SectionPlugin] | None = None) -> ScanPolicy:
    """The scan rules of the gate policy at `path` (through the gate policy loader, so `extends:` and
    locks resolve exactly as the engine sees them); no path or a missing file means the default rules.
    `sections`: every section plug-in the policy may hold (default: the supply-chain ones)."""
    if path is None:
        return ScanPolicy()
    p = Path(path)
    if not p.exists():
        return ScanPolicy()
    from pipeline.gates.policy import load_policy as load_gate_policy

    section = load_gate_policy(p, sections=sections or _all_sections()).sections.get("scan")
    return section if isinstance(section, ScanPolicy) else ScanPolicy()


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
    ran: Sequence[str] | None = None,
) -> ScanVerdict:
    """Apply the policy. `not_run` maps a scanner that did not run to why (e.g. no vulnerability DB):
    its counts are None, never zero, and a required scanner that did not run blocks. `ran` are the
    scanners known to have run (None: not known); none at all, or a policy that requires none, blocks:
    a report no scanner made proves nothing."""
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
    if not policy.require_scanners:
        problems.append("the scan policy requires no scanner: a report is evidence only of the scanners that made it")
    if ran is not None and not [s for s in ran if s not in not_run]:
        problems.append("no scanner ran: the report proves nothing about the image")

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
    res = run.stage(Stage.SCAN.value)
    base = {"name": "scan", "source": "scan.blocking", "threshold": 0.0, "direction": "max", "required": True}
    details = None if res is None else res.details_as(ScanDetails)
    if res is None or res.status is not StageStatus.OK or details is None:
        why = "no scan stage result" if res is None else f"scan stage {res.status.value}: {res.reason or ''}"
        return GateVerdict(status=GateStatus.NOT_RUN, reason=why, **base)
    verdict = evaluate(details.report, policy, ignores=ignores, today=today, not_run=details.not_run,
                       ran=list(details.scanners))
    return GateVerdict(
        status=GateStatus.PASS if verdict.passed else GateStatus.FAIL,
        value=float(verdict.blocking_count),
        reason=verdict.summary(),
        details=VerdictDetails(blocking=[b.render() for b in verdict.blocking], problems=list(verdict.problems)),
        **base,
    )


# -- a report read from a file: fail closed ------------------------------------------------------

SCANNERS: tuple[str, ...] = get_args(Scanner)


def parse_scanners(items: Sequence[str], *, where: str = "--scanners") -> list[str]:
    """`["vuln", "secret"]` checked against trivy's scanner names; BadInput names the bad one."""
    out: list[str] = []
    for raw in items:
        name = raw.strip()
        if name not in SCANNERS:
            raise BadInput(f"unknown scanner {name!r}; known: {', '.join(SCANNERS)}", where=where)
        if name not in out:
            out.append(name)
    if not out:
        raise BadInput(f"name at least one scanner ({', '.join(SCANNERS)})", where=where)
    return out


def proven_scanners(report: TrivyReport) -> set[str]:
    """The scanners a report proves ran: those with at least one finding in it. A clean scanner's
    results are left out of trivy's output, so nothing else can be told from the file."""
    proven = set()
    if report.vulnerabilities:
        proven.add("vuln")
    if report.secrets:
        proven.add("secret")
    if report.misconfigs:
        proven.add("misconfig")
    return proven


def unproven_scanners(report: TrivyReport, policy: ScanPolicy, *, stated: Sequence[str] | None) -> dict[str, str]:
    """The `not_run` map for a report from a file: each required scanner neither proven by the
    report nor stated by the caller, with why."""
    stated_set = set(parse_scanners(stated)) if stated is not None else set()
    proven = proven_scanners(report)
    out: dict[str, str] = {}
    for scanner in policy.require_scanners:
        if scanner in proven or scanner in stated_set:
            continue
        if stated is not None:
            out[scanner] = f"not among the scanners stated to have run ({', '.join(sorted(stated_set))})"
        else:
            out[scanner] = (
                f"not proven: {report.source} holds no {scanner} finding and a trivy report does not say which "
                "scanners made it; state them with --scanners if it ran"
            )
    return out


def check_report(
    report: str | Path | TrivyReport,
    policy: str | Path | ScanPolicy | None,
    *,
    scanners: Sequence[str] | None,
    ignore_file: str | Path | None = None,
    today: date | None = None,
) -> ScanVerdict:
    """`scan --report`: apply a gate policy's scan rules to a trivy report read from a file, failing
    closed on every required scanner the report cannot prove and `scanners` does not state."""
    from pipeline.supplychain.trivy_report import load_report

    rep = report if isinstance(report, TrivyReport) else load_report(report)
    pol = policy if isinstance(policy, ScanPolicy) else load_policy(policy)
    base = Path(policy).parent if isinstance(policy, str | Path) else None
    ignores = load_ignores(pol, ignore_file, base=base)
    return evaluate(rep, pol, ignores=ignores, today=today, not_run=unproven_scanners(rep, pol, stated=scanners))


# -- the gate engine's view ------------------------------------------------------------------------


def relaxations(parent: BaseModel, child: BaseModel) -> list[tuple[str, str]]:
    """(field, how) for every way the `child` rules accept more than the `parent`'s."""
    assert isinstance(parent, ScanPolicy) and isinstance(child, ScanPolicy)
    out: list[tuple[str, str]] = []
    for fld in ("max", "misconfig_max"):
        p, c = getattr(parent, fld), getattr(child, fld)
        for sev in SEVERITIES:
            lp, lc = p.limit(sev), c.limit(sev)
            if lp is not None and (lc is None or lc > lp):
                out.append((fld, f"{fld}.{sev.value.lower()} may only get stricter ({lp} -> {lc})"))
    if child.ignore_unfixed and not parent.ignore_unfixed:
        out.append(("ignore_unfixed", "ignore_unfixed cannot be turned on (unfixed vulnerabilities would stop counting)"))
    if child.ignore_file != parent.ignore_file:
        out.append(("ignore_file", f"ignore_file cannot change ({parent.ignore_file!r} -> {child.ignore_file!r})"))
    dropped = [s for s in parent.require_scanners if s not in child.require_scanners]
    if dropped:
        out.append(("require_scanners", f"require_scanners cannot drop {', '.join(dropped)}"))
    return out


def _validate(raw: dict[str, Any] | None, where: str) -> BaseModel:
    return policy_from_gates({"scan": raw} if raw is not None else {}, where=where.rsplit(": scan", 1)[0])


def _evaluate(section: BaseModel, run: RunRecord, ctx: SectionContext) -> list[GateVerdict]:
    assert isinstance(section, ScanPolicy)
    return [scan_gate_verdict(run, section, ignores=load_ignores(section, base=ctx.policy_dir))]


SCAN_SECTION = SectionPlugin(
    name="scan",
    stage=Stage.SCAN,
    reads="report",
    validate=_validate,
    evaluate=_evaluate,
    relaxations=relaxations,
)
