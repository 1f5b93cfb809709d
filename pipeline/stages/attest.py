"""Stage `attest`: the verdict, the SBOM and the build provenance as signed attestations on the image
digest, after the gate.

The verdict attestation is what promotion trusts: it names the image digest (its subject), the
weights digest, the ground truth, the policy and every gate verdict, signed with the release key.
A blocked verdict is attested too, so the newest signed word about a release is never an older pass.
The work is `pipeline.supplychain.signing.attest_release`; this stage loads the keys and the tools.
"""

from __future__ import annotations

from pipeline.adapters.trivy import Trivy
from pipeline.models import RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.attest import AttestDetails
from pipeline.stages.context import StageContext
from pipeline.stages.scan import trivy_options
from pipeline.supplychain.signing import attest_release, default_signer, load_public_key, load_signing_key


def attest_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    sc = ctx.cfg.sign
    key = load_signing_key(sc)
    public_key = load_public_key(sc.public_key)
    signer = default_signer(timeout_s=ctx.cfg.sign.timeout_s)
    ctx.reporter.step(f"attest: verdict ({run.decision.value}), SBOM and provenance on {run.image.by_digest}")
    work = ctx.ws.run_dir(run.run_id) / "attest"
    work.mkdir(parents=True, exist_ok=True)
    details: AttestDetails = attest_release(run, key, public_key, signer=signer, work_dir=work,
                                            trivy=ctx.adapters.trivy or Trivy.discover(trivy_options(ctx.cfg.scan)))
    for a in details.attestations:
        ctx.reporter.step(f"attest: {a.predicate_type}: {'verified' if a.verified else 'NOT verified'} {a.reason}")
    verdict = details.attestations[0]
    missing = [a for a in details.attestations if not a.verified]
    return StageResult(
        stage=Stage.ATTEST,
        status=StageStatus.OK if verdict.verified else StageStatus.FAILED,
        reason="; ".join(f"{a.predicate_type}: {a.reason}" for a in missing) or None,
        metrics={"attested": float(sum(a.verified for a in details.attestations)),
                 "verdict_attested": 1.0 if verdict.verified else 0.0},
        details=details,
    )
