"""Stage `leak`: prove no byte sequence of any build secret is in the pushed image.

Reads the digest the build stage recorded, fetches manifest, config (history included) and every
layer from the registry by digest, and counts findings in metric `leaks`; the gate (`leak.leaks`,
max 0) decides. Findings name secret id, needle and location, never the value.
"""

from __future__ import annotations

import json

from pipeline.adapters.registry import RegistryClient, split_repository
from pipeline.build_secrets import load_build_secrets
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.models import Artifact, RunRecord, StageResult, StageStatus
from pipeline.progress import NullReporter, Reporter
from pipeline.supplychain.leak import check_image
from pipeline.workspace import Workspace


def leak_stage(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    registry: RegistryClient | None = None,
    secrets: dict[str, bytes] | None = None,
) -> StageResult:
    build = run.require_stage("build")
    repository = run.image.repository
    digest = run.image.digest
    if digest is None:
        raise BadInput(f"run {run.run_id} has no image digest", where="run.image.digest")
    values = secrets if secrets is not None else load_build_secrets(cfg.build)
    reference = build.details.get("base_image")
    host, _name = split_repository(repository)
    reporter.step(f"leak check of {repository}@{digest} for {len(values)} secret(s)")
    reg = registry or RegistryClient(host, timeout=120)
    try:
        report = check_image(reg, repository, digest, values, reference=reference)
    finally:
        if registry is None:
            reg.close()
    path = ws.run_dir(run.run_id) / "leak.json"
    path.write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    result = StageResult(stage="leak", status=StageStatus.OK, metrics={"leaks": float(report.leaks)},
                         details=report.model_dump(mode="json"),
                         artifacts=[Artifact(name="leak-report", path=str(path), media_type="application/json")])
    result.metrics["layers_scanned"] = float(report.layers_scanned)
    if report.findings:
        shown = "; ".join(f.describe() for f in report.findings[:5])
        more = f" (+{len(report.findings) - 5} more)" if len(report.findings) > 5 else ""
        result.reason = f"{report.leaks} secret byte sequence(s) found: {shown}{more}"
    else:
        result.reason = (f"no secret bytes in manifest, config ({report.history_entries} history entries) or "
                         f"{report.layers_scanned} layers ({report.files_scanned} files)")
    for f in report.findings:
        reporter.step(f"LEAK: {f.describe()}")
    reporter.step(result.reason)
    return result.finish()
