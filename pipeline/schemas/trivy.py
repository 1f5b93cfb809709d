"""Typed findings of a trivy report (JSON SchemaVersion 2 or its SARIF rendering), as the scan stage
records them.

Only what a policy or a person needs is kept. A secret finding keeps its rule, severity, file and
line but never the matched text or the surrounding code: trivy masks the match itself, yet its
context lines can hold other credentials verbatim (the real `secrets.json` fixture carries a GitHub
token in a context line), and this model is part of the run record.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
