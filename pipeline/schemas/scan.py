"""Details of the scan stage and the scan policy's typed parts (the `scan:` section of a gate policy,
the verdict it gives a report). The evaluator lives in `pipeline.supplychain.scan_policy`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.schemas.base import Details
from pipeline.schemas.trivy import Severity, TrivyReport

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

    @field_validator("require_scanners")
    @classmethod
    def _some_scanner(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one scanner: a scan gate that requires none passes a report that "
                             "proves no scanner ran")
        return v


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


class ScanDetails(Details):
    """What the scan stage ran and concluded. `not_run` names each scanner that did not run and why:
    its metrics stay None so the gate reads `not_run`, never zero."""

    stage: Literal["scan"] = "scan"
    target: str
    trivy_version: str | None = None
    scanners: list[str] = Field(default_factory=list)
    not_run: dict[str, str] = Field(default_factory=dict)
    verdict: ScanVerdict
    report: TrivyReport
    warnings: list[str] = Field(default_factory=list)
