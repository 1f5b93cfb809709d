"""Typed findings from a trivy report (JSON SchemaVersion 2, or trivy's SARIF 2.1.0 rendering).

Only what a policy or a person needs is kept. A secret finding keeps its rule, severity, file and
line but never the matched text or the surrounding code: trivy masks the match itself, yet its
context lines can hold other credentials verbatim (the real `secrets.json` fixture carries a GitHub
token in a context line), and this model is dumped into the run record.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import BadInput

SUPPORTED_SCHEMA = 2


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    UNKNOWN = "UNKNOWN"


SEVERITIES: tuple[Severity, ...] = tuple(Severity)


class _Finding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Vulnerability(_Finding):
    kind: Literal["vulnerability"] = "vulnerability"
    id: str
    pkg: str
    installed: str
    fixed: str | None = None
    severity: Severity
    status: str | None = None  # trivy: fixed, affected, will_not_fix, fix_deferred, end_of_life, ...
    target: str = ""
    pkg_path: str | None = None
    purl: str | None = None
    title: str | None = None

    @property
    def has_fix(self) -> bool:
        # trivy's --ignore-unfixed keeps only status "fixed"; reports without Status use FixedVersion.
        if self.status:
            return self.status == "fixed"
        return bool(self.fixed)


class SecretFinding(_Finding):
    kind: Literal["secret"] = "secret"
    rule: str
    category: str | None = None
    severity: Severity
    title: str | None = None
    target: str
    line: int | None = None
    end_line: int | None = None


class Misconfiguration(_Finding):
    kind: Literal["misconfig"] = "misconfig"
    id: str
    avd_id: str | None = None
    severity: Severity
    title: str | None = None
    message: str = ""
    target: str
    type: str | None = None
    resolution: str | None = None
    start_line: int | None = None
    end_line: int | None = None
    cause_lines: list[int] = Field(default_factory=list)


class TrivyReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str  # file the report was read from
    format: Literal["json", "sarif"]
    schema_version: int | None = None
    artifact_name: str | None = None
    artifact_type: str | None = None
    trivy_version: str | None = None
    vulnerabilities: list[Vulnerability] = Field(default_factory=list)
    secrets: list[SecretFinding] = Field(default_factory=list)
    misconfigs: list[Misconfiguration] = Field(default_factory=list)

    def vuln_counts(self) -> dict[Severity, int]:
        return count_by_severity(self.vulnerabilities)


def count_by_severity(findings: list[Vulnerability] | list[Misconfiguration] | list[SecretFinding]) -> dict[Severity, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        counts[f.severity] += 1
    return counts


# --- trivy's JSON, as written by `trivy --format json` (fields we read; the rest is ignored) ----------
class _Raw(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _RawVuln(_Raw):
    VulnerabilityID: str
    PkgName: str
    PkgPath: str | None = None
    InstalledVersion: str
    FixedVersion: str | None = None
    Status: str | None = None
    Severity: Severity
    Title: str | None = None
    PkgIdentifier: dict[str, Any] | None = None


class _RawSecret(_Raw):
    RuleID: str
    Category: str | None = None
    Severity: Severity
    Title: str | None = None
    StartLine: int | None = None
    EndLine: int | None = None


class _RawCodeLine(_Raw):
    Number: int
    IsCause: bool = False


class _RawCode(_Raw):
    Lines: list[_RawCodeLine] | None = None


class _RawCause(_Raw):
    StartLine: int | None = None
    EndLine: int | None = None
    Code: _RawCode | None = None


class _RawMisconf(_Raw):
    ID: str
    AVDID: str | None = None
    Type: str | None = None
    Title: str | None = None
    Message: str | None = None
    Resolution: str | None = None
    Severity: Severity
    Status: str | None = None
    CauseMetadata: _RawCause | None = None


class _RawResult(_Raw):
    Target: str
    Class: str | None = None
    Type: str | None = None
    Vulnerabilities: list[_RawVuln] | None = None
    Secrets: list[_RawSecret] | None = None
    Misconfigurations: list[_RawMisconf] | None = None


class _RawTrivy(_Raw):
    Version: str | None = None


class _RawReport(_Raw):
    SchemaVersion: int
    ArtifactName: str | None = None
    ArtifactType: str | None = None
    Trivy: _RawTrivy | None = None
    Results: list[_RawResult] | None = None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _bad_fields(exc: ValidationError, source: str) -> BadInput:
    errs = exc.errors()
    first = errs[0]
    field = _loc(tuple(first["loc"]))
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return BadInput(f"not a valid trivy report: {field}: {first['msg']}{more}", where=f"{source}: {field}")


def load_report(path: str | Path) -> TrivyReport:
    """Read a trivy JSON or SARIF report; any defect is a BadInput naming the file and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BadInput("report not found", where=str(p)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read report: {exc}", where=str(p)) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"not valid JSON (truncated or corrupt): {exc.msg} at line {exc.lineno} column {exc.colno}",
            where=f"{p}:{exc.lineno}",
        ) from exc
    return parse_report(data, source=str(p))


def parse_report(data: Any, *, source: str = "<report>") -> TrivyReport:
    if not isinstance(data, dict):
        raise BadInput(f"expected a JSON object at the top level, got {type(data).__name__}", where=source)
    if "runs" in data and "SchemaVersion" not in data:
        return _parse_sarif(data, source)
    if "SchemaVersion" not in data:
        raise BadInput("not a trivy report: no SchemaVersion field", where=f"{source}: SchemaVersion")
    version = data["SchemaVersion"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadInput(f"SchemaVersion must be an integer, got {version!r}", where=f"{source}: SchemaVersion")
    if version != SUPPORTED_SCHEMA:
        raise BadInput(
            f"unsupported trivy SchemaVersion {version} (this parser reads {SUPPORTED_SCHEMA})",
            where=f"{source}: SchemaVersion",
        )
    try:
        raw = _RawReport.model_validate(data)
    except ValidationError as exc:
        raise _bad_fields(exc, source) from exc

    report = TrivyReport(
        source=source,
        format="json",
        schema_version=raw.SchemaVersion,
        artifact_name=raw.ArtifactName,
        artifact_type=raw.ArtifactType,
        trivy_version=raw.Trivy.Version if raw.Trivy else None,
    )
    for res in raw.Results or []:
        for v in res.Vulnerabilities or []:
            report.vulnerabilities.append(
                Vulnerability(
                    id=v.VulnerabilityID,
                    pkg=v.PkgName,
                    installed=v.InstalledVersion,
                    fixed=v.FixedVersion or None,
                    severity=v.Severity,
                    status=v.Status,
                    target=res.Target,
                    pkg_path=v.PkgPath,
                    purl=(v.PkgIdentifier or {}).get("PURL"),
                    title=v.Title,
                )
            )
        for s in res.Secrets or []:
            report.secrets.append(
                SecretFinding(
                    rule=s.RuleID,
                    category=s.Category,
                    severity=s.Severity,
                    title=s.Title,
                    target=res.Target,
                    line=s.StartLine,
                    end_line=s.EndLine,
                )
            )
        for m in res.Misconfigurations or []:
            if m.Status and m.Status != "FAIL":  # PASS/EXCEPTION entries appear with --include-non-failures
                continue
            cause = m.CauseMetadata or _RawCause()
            lines = [ln.Number for ln in (cause.Code.Lines or []) if ln.IsCause] if cause.Code else []
            report.misconfigs.append(
                Misconfiguration(
                    id=m.ID,
                    avd_id=m.AVDID,
                    severity=m.Severity,
                    title=m.Title,
                    message=m.Message or "",
                    target=res.Target,
                    type=m.Type or res.Type,
                    resolution=m.Resolution,
                    start_line=cause.StartLine,
                    end_line=cause.EndLine,
                    cause_lines=lines,
                )
            )
    return report


# --- SARIF (trivy --format sarif): findings are in `results`, their facts in the message text -------
_FIELD_RE = re.compile(r"^(?P<key>[A-Za-z ]+):\s*(?P<value>.*)$")


def _message_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _FIELD_RE.match(line.strip())
        if m:
            out[m.group("key").strip().lower()] = m.group("value").strip()
    return out


def _parse_sarif(data: dict[str, Any], source: str) -> TrivyReport:
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise BadInput("SARIF report has no runs", where=f"{source}: runs")
    report = TrivyReport(source=source, format="sarif")
    for ri, run in enumerate(runs):
        if not isinstance(run, dict):
            raise BadInput("expected an object", where=f"{source}: runs[{ri}]")
        driver = (run.get("tool") or {}).get("driver") or {}
        if driver.get("name") != "Trivy":
            raise BadInput(f"SARIF from {driver.get('name')!r}, not Trivy", where=f"{source}: runs[{ri}].tool.driver.name")
        report.trivy_version = driver.get("version")
        props = run.get("properties") or {}
        report.artifact_name = props.get("imageName") or report.artifact_name
        rules = {r.get("id"): r for r in driver.get("rules") or [] if isinstance(r, dict)}
        results = run.get("results")
        if not isinstance(results, list):
            raise BadInput("expected a list", where=f"{source}: runs[{ri}].results")
        for i, res in enumerate(results):
            where = f"{source}: runs[{ri}].results[{i}]"
            if not isinstance(res, dict) or not isinstance(res.get("ruleId"), str):
                raise BadInput("result without a ruleId", where=where)
            text = ((res.get("message") or {}).get("text")) or ""
            fields = _message_fields(text)
            rule = rules.get(res["ruleId"], {})
            tags = [str(t) for t in (rule.get("properties") or {}).get("tags", [])]
            sev_text = fields.get("severity") or next((t for t in tags if t.upper() in Severity.__members__), "")
            try:
                severity = Severity(sev_text.upper())
            except ValueError as exc:
                raise BadInput(f"unknown severity {sev_text!r}", where=f"{where}.message") from exc
            loc = ((res.get("locations") or [{}])[0]).get("physicalLocation") or {}
            target = (loc.get("artifactLocation") or {}).get("uri", "")
            region = loc.get("region") or {}
            if "vulnerability" in tags and "package" in fields:
                report.vulnerabilities.append(
                    Vulnerability(
                        id=res["ruleId"],
                        pkg=fields["package"],
                        installed=fields.get("installed version", ""),
                        fixed=fields.get("fixed version") or None,
                        severity=severity,
                        target=target,
                    )
                )
            elif "secret" in tags:
                report.secrets.append(
                    SecretFinding(
                        rule=res["ruleId"], severity=severity, target=target, line=region.get("startLine"),
                        end_line=region.get("endLine"),
                    )
                )
            elif "misconfiguration" in tags:
                report.misconfigs.append(
                    Misconfiguration(
                        id=res["ruleId"], severity=severity, message=fields.get("message", ""), target=target,
                        start_line=region.get("startLine"), end_line=region.get("endLine"),
                    )
                )
            else:
                raise BadInput(f"cannot tell the finding kind of rule {res['ruleId']!r} (tags {tags})", where=where)
    return report
