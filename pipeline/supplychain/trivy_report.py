"""Reading a trivy report (JSON SchemaVersion 2, or trivy's SARIF 2.1.0 rendering) into the typed
findings of `pipeline.schemas.trivy`; any defect is a BadInput naming the file and field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import BadInput
from pipeline.regular_files import read_regular
from pipeline.schemas.trivy import (  # noqa: F401  (re-exported: the parser's output types)
    SEVERITIES,
    Misconfiguration,
    SecretFinding,
    Severity,
    TrivyReport,
    Vulnerability,
    count_by_severity,
)

SUPPORTED_SCHEMA = 2
MAX_REPORT_BYTES = 512 << 20  # trivy reports of large images run to tens of MB


# --- trivy's JSON, as written by `trivy --format json` (fields we read; the rest is ignored) ----------
class _Raw(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _RawPkgId(_Raw):
    PURL: str | None = None


class _RawVuln(_Raw):
    VulnerabilityID: str
    PkgName: str
    PkgPath: str | None = None
    InstalledVersion: str
    FixedVersion: str | None = None
    Status: str | None = None
    Severity: Severity
    Title: str | None = None
    PkgIdentifier: _RawPkgId | None = None


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
        raw = read_regular(p, what="trivy report", limit=MAX_REPORT_BYTES, not_found="report not found")
    except BadInput as exc:
        raise BadInput(exc.message if exc.message == "report not found" else f"cannot read report: {exc.message}",
                       where=str(p)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"cannot read report: {exc}", where=str(p)) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"not valid JSON (truncated or corrupt): {exc.msg} at line {exc.lineno} column {exc.colno}",
            where=f"{p}:{exc.lineno}",
        ) from exc
    except RecursionError as exc:
        raise BadInput("not a trivy report: JSON nested too deeply", where=str(p)) from exc
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
                    purl=v.PkgIdentifier.PURL if v.PkgIdentifier else None,
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


class _SarifText(_Raw):
    text: str = ""


class _SarifRegion(_Raw):
    startLine: int | None = None
    endLine: int | None = None


class _SarifArtifact(_Raw):
    uri: str = ""


class _SarifPhysical(_Raw):
    artifactLocation: _SarifArtifact | None = None
    region: _SarifRegion | None = None


class _SarifLocation(_Raw):
    physicalLocation: _SarifPhysical | None = None


class _SarifResult(_Raw):
    ruleId: str
    message: _SarifText | None = None
    locations: list[_SarifLocation] | None = None


class _SarifRuleProps(_Raw):
    tags: list[str] = []


class _SarifRule(_Raw):
    id: str | None = None
    properties: _SarifRuleProps | None = None


class _SarifDriver(_Raw):
    name: str | None = None
    version: str | None = None
    rules: list[_SarifRule] | None = None


class _SarifTool(_Raw):
    driver: _SarifDriver | None = None


class _SarifRunProps(_Raw):
    imageName: str | None = None


class _SarifRun(_Raw):
    """The part of a SARIF 2.1.0 run trivy writes and this parser reads, typed so that a field of the
    wrong shape is a BadInput naming it, never an AttributeError later."""

    tool: _SarifTool | None = None
    properties: _SarifRunProps | None = None
    results: list[Any]


def _parse_sarif(data: dict[str, Any], source: str) -> TrivyReport:
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise BadInput("SARIF report has no runs", where=f"{source}: runs")
    report = TrivyReport(source=source, format="sarif")
    for ri, raw_run in enumerate(runs):
        if not isinstance(raw_run, dict):
            raise BadInput("expected an object", where=f"{source}: runs[{ri}]")
        tool = raw_run.get("tool")
        driver_raw = tool.get("driver") if isinstance(tool, dict) else None
        name = driver_raw.get("name") if isinstance(driver_raw, dict) else None
        if name != "Trivy":
            raise BadInput(f"SARIF from {name!r}, not Trivy", where=f"{source}: runs[{ri}].tool.driver.name")
        if not isinstance(raw_run.get("results"), list):
            raise BadInput("expected a list", where=f"{source}: runs[{ri}].results")
        try:
            run = _SarifRun.model_validate(raw_run)
        except ValidationError as exc:
            raise _bad_fields(exc, f"{source}: runs[{ri}]") from exc
        driver = run.tool.driver if run.tool and run.tool.driver else _SarifDriver()
        report.trivy_version = driver.version
        report.artifact_name = (run.properties.imageName if run.properties else None) or report.artifact_name
        rules = {r.id: r for r in driver.rules or [] if r.id is not None}
        for i, raw_res in enumerate(run.results):
            where = f"{source}: runs[{ri}].results[{i}]"
            if not isinstance(raw_res, dict) or not isinstance(raw_res.get("ruleId"), str):
                raise BadInput("result without a ruleId", where=where)
            try:
                res = _SarifResult.model_validate(raw_res)
            except ValidationError as exc:
                raise _bad_fields(exc, where) from exc
            fields = _message_fields(res.message.text if res.message else "")
            rule = rules.get(res.ruleId)
            tags = list(rule.properties.tags) if rule and rule.properties else []
            sev_text = fields.get("severity") or next((t for t in tags if t.upper() in Severity.__members__), "")
            try:
                severity = Severity(sev_text.upper())
            except ValueError as exc:
                raise BadInput(f"unknown severity {sev_text!r}", where=f"{where}.message") from exc
            loc = (res.locations[0].physicalLocation if res.locations else None) or _SarifPhysical()
            target = loc.artifactLocation.uri if loc.artifactLocation else ""
            region = loc.region or _SarifRegion()
            if "vulnerability" in tags and "package" in fields:
                report.vulnerabilities.append(
                    Vulnerability(
                        id=res.ruleId,
                        pkg=fields["package"],
                        installed=fields.get("installed version", ""),
                        fixed=fields.get("fixed version") or None,
                        severity=severity,
                        target=target,
                    )
                )
            elif "secret" in tags:
                report.secrets.append(
                    SecretFinding(rule=res.ruleId, severity=severity, target=target, line=region.startLine,
                                  end_line=region.endLine)
                )
            elif "misconfiguration" in tags:
                report.misconfigs.append(
                    Misconfiguration(
                        id=res.ruleId, severity=severity, message=fields.get("message", ""), target=target,
                        start_line=region.startLine, end_line=region.endLine,
                    )
                )
            else:
                raise BadInput(f"cannot tell the finding kind of rule {res.ruleId!r} (tags {tags})", where=where)
    return report
