"""Stage `leak`: prove no byte sequence of any build secret is in the pushed image.

Reads the digest the build stage recorded, fetches manifest, config (history included) and every
layer from the registry by digest, and counts findings in metric `leaks`; the gate (`leak.leaks`,
max 0) decides. Findings name secret id, needle label and location, never the value.
"""

from __future__ import annotations

import json

from pipeline.adapters.registry import split_repository
from pipeline.build_secrets import load_build_secrets
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.metrics import Metric
from pipeline.models import Artifact, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas import BuildDetails, LeakDetails
from pipeline.stages.context import StageContext, StageOptions
from pipeline.stages.spec import EVIDENCE, StageSpec
from pipeline.supplychain.leak import MAX_DECODED_BYTES, check_image


def leak_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    build = run.details_as(BuildDetails)
    digest = run.image.digest
    if digest is None:
        raise BadInput(f"run {run.run_id} has no image digest", where="run.image.digest")
    values = load_build_secrets(ctx.cfg.build)
    repository = run.image.repository
    host, _name = split_repository(repository)
    ctx.reporter.step(f"leak check of {repository}@{digest} for {len(values)} secret(s)")
    report = check_image(ctx.adapters.registry(host), repository, digest, values,
                         reference=build.base_image if build else None)
    path = ctx.ws.run_dir(run.run_id) / "leak.json"
    path.write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    result = StageResult(stage=Stage.LEAK, status=StageStatus.OK,
                         metrics={"leaks": float(report.leaks), "layers_scanned": float(report.layers_scanned)},
                         details=report,
                         artifacts=[Artifact(name="leak-report", path=str(path), media_type="application/json")])
    if report.findings:
        shown = "; ".join(f.describe() for f in report.findings[:5])
        more = f" (+{len(report.findings) - 5} more)" if len(report.findings) > 5 else ""
        result.reason = f"{report.leaks} secret byte sequence(s) found: {shown}{more}"
    else:
        result.reason = (f"no secret bytes in manifest, config ({report.history_entries} history entries) or "
                         f"{report.layers_scanned} layers ({report.files_scanned} files, "
                         f"{report.files_decompressed} of them also decompressed), as is or "
                         f"{', '.join(e for e in report.encodings if e != 'as is')}")
    if report.decode_limited:
        result.reason += (f"; {len(report.decode_limited)} compressed file(s) searched decompressed only up to "
                          f"{MAX_DECODED_BYTES >> 20} MiB: {_first_three(report.decode_limited)}")
    if report.nested_compressed:
        result.reason += (f"; {len(report.nested_compressed)} compressed file(s) hold another compressed stream, "
                          f"searched without undoing that second compression: "
                          f"{_first_three(report.nested_compressed)}")
    for f in report.findings:
        ctx.reporter.step(f"LEAK: {f.describe()}")
    return result


def _first_three(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (" ..." if len(paths) > 3 else "")


def reuse_key(run: RunRecord, cfg: PipelineConfig, _options: StageOptions) -> dict[str, object] | None:
    return {"image": run.release.image_digest, "secret_ids": sorted(cfg.build.secrets)}


# The help of `llmgate leak`.
HELP = (
    "Search the run's pushed image (manifest, config, history, every layer) for build secret "
    "bytes.\n"
    "\n"
    "Exit 0 none found, 1 a secret leaked, 2 bad input, 3 registry unreachable.\n"
    "\n"
    "Example: llmgate leak --run 3f2a9c1b7d4e"
)

SPEC = StageSpec(
    help=HELP,
    stage=Stage.LEAK, evidence=True, run=leak_stage, details=LeakDetails, needs=(Stage.BUILD,),
    metrics=(Metric("leaks", "count", "lower", description="secret byte sequences found in the image"),),
    credentials=("registry_password", *EVIDENCE), group="supply-chain", reuse_key=reuse_key,
    check=lambda r: r.metrics.get("leaks") == 0,
    doc="no byte of a build secret in any layer, the config or the history of the pushed image",
)
