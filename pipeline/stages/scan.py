"""Stage `scan`: trivy on the built image digest, its findings typed, the scan policy applied.

Metrics (`scan.critical` … `scan.unknown` after ignores, `scan.secrets`, `scan.misconfigs`,
`scan.blocking`) feed the gate engine; a scanner that did not run leaves its metrics None so the
gate reads `not_run`, never zero. The stage status is `ok` whenever trivy ran, blocked or not: the
verdict in `details.verdict` and the `scan` gate decide.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pipeline.adapters.trivy import Trivy, TrivyOptions
from pipeline.config import PipelineConfig, ScanConfig
from pipeline.errors import BadInput, InfraError, names_its_limit
from pipeline.metrics import Metric
from pipeline.models import Artifact, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas import ScanDetails
from pipeline.stages.context import StageContext, StageOptions
from pipeline.stages.spec import EVIDENCE, StageSpec
from pipeline.supplychain.scan_policy import ScanPolicy, ScanVerdict, evaluate, load_ignores, load_policy
from pipeline.supplychain.trivy_report import TrivyReport, load_report

TRIVY_NOT_FOUND = "not run: trivy not found"


def trivy_options(sc: ScanConfig) -> TrivyOptions:
    return TrivyOptions(
        cache_dir=Path(sc.cache_dir),
        skip_db_update=sc.skip_db_update,
        offline_scan=sc.offline_scan,
        db_repository=list(sc.db_repository),
        java_db_repository=list(sc.java_db_repository),
        timeout_s=sc.timeout_s,
    )


def policy_for(cfg: PipelineConfig) -> ScanPolicy:
    gates = Path(cfg.gates_file)
    return load_policy(gates if gates.exists() else None)


def apply_policy(
    report: TrivyReport,
    policy: ScanPolicy,
    *,
    ignore_file: str | Path | None = None,
    not_run: dict[str, str] | None = None,
    today: date | None = None,
) -> ScanVerdict:
    return evaluate(report, policy, ignores=load_ignores(policy, ignore_file), today=today, not_run=not_run)


def _tarball(run: RunRecord, sc: ScanConfig) -> Path:
    if sc.tarball:
        return Path(sc.tarball)
    build = run.require_stage("build")
    for a in build.artifacts:
        if a.path.endswith((".tar", ".tar.gz", ".oci.tar")):
            return Path(a.path)
    raise BadInput("scan.source is tarball but neither scan.tarball nor a build tarball artifact exists",
                   where="scan.tarball")


def scan_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    sc = ctx.cfg.scan
    trivy = ctx.adapters.trivy or Trivy.discover(trivy_options(sc))
    if trivy is None:
        return StageResult(stage=Stage.SCAN, status=StageStatus.SKIPPED, reason=TRIVY_NOT_FOUND)
    section = ctx.policy.sections.get("scan") if ctx.policy is not None else None
    policy = section if isinstance(section, ScanPolicy) else policy_for(ctx.cfg)
    out_dir = ctx.ws.run_dir(run.run_id) / "scan"
    json_path = out_dir / "trivy.json"

    with names_its_limit("scan.timeout_s", sc.timeout_s):
        if sc.source == "tarball":
            target = _tarball(run, sc)
            ctx.reporter.step(f"scan: trivy image --input {target}")
            scan = trivy.scan_image(json_path, tarball=target, scanners=list(sc.scanners))
            target_name = str(target)
        else:
            ref = run.image.by_digest
            ctx.reporter.step(f"scan: trivy image {ref}")
            scan = trivy.scan_image(json_path, ref=ref, scanners=list(sc.scanners), insecure=sc.insecure_registry)
            target_name = ref
    for scanner, why in scan.not_run.items():
        ctx.reporter.step(f"scan: {scanner} scanner not run: {why}")

    report = load_report(scan.report)
    verdict = apply_policy(report, policy, not_run=scan.not_run)
    artifacts = [Artifact(name="trivy-report", path=str(json_path), media_type="application/json")]
    warnings = list(scan.warnings)
    if sc.sarif:
        # SARIF is a rendering for code-scanning tools; the verdict comes from the JSON report. trivy 0.76
        # cannot render some reports (an image reference with a registry port is not a URI to its SARIF
        # writer): that is a warning on the record, never a failed scan.
        try:
            sarif = trivy.convert(json_path, "sarif", out_dir / "trivy.sarif.json")
            artifacts.append(Artifact(name="trivy-sarif", path=str(sarif), media_type="application/sarif+json"))
        except InfraError as exc:
            warnings.append(f"no SARIF rendering: {exc.message}")
            ctx.reporter.step(f"scan: no SARIF rendering: {exc.message.splitlines()[0][:200]}")
    ctx.reporter.step(f"scan: {verdict.summary()}")
    return StageResult(
        stage=Stage.SCAN,
        status=StageStatus.OK,
        reason=None if verdict.passed else verdict.summary()[:2000],
        metrics=verdict.metrics(),
        artifacts=artifacts,
        details=ScanDetails(target=target_name, trivy_version=trivy.version(), scanners=list(scan.scanners),
                            not_run=dict(scan.not_run), verdict=verdict, report=report, warnings=warnings),
    )


def reuse_key(run: RunRecord, cfg: PipelineConfig, _options: StageOptions) -> dict[str, object] | None:
    return {"image": run.release.image_digest, "scan": cfg.scan.model_dump(mode="json"),
            "policy": run.release.policy_sha256}


SPEC = StageSpec(
    stage=Stage.SCAN, evidence=True, run=scan_stage, details=ScanDetails, credentials=("registry_password", *EVIDENCE),
    metrics=tuple(Metric(k, "count", "lower")
                  for k in ("critical", "high", "medium", "low", "unknown", "secrets", "misconfigs", "blocking")),
    group="supply-chain", reuse_key=reuse_key, check=lambda r: r.metrics.get("blocking") == 0,
    doc="trivy: vulnerabilities, secrets, misconfigurations; the scan policy",
)
