"""Stage `attest`: publish the verdict the gate signed, the verdict log, and the SBOM and build
provenance as signed attestations on the image digest.

The verdict attestation is what promotion trusts: it names the image digest (its subject), the
weights digest, the ground truth, the policy, every gate verdict and the evidence links they were
judged on, signed by the gate with the release key and dated with the gate time. Attest signs no
verdict of its own: it attaches the gate's envelope unchanged, and only while it is the newest
verdict for its (image, model) pair, in the verdict log and among the verdicts already attested
(`check_fresh`, run before anything is recorded: a refusal leaves store and registry as they were).
A blocked verdict is attested too, so the newest signed word about a release is never an older pass.
The work is `pipeline.supplychain.signing.attest_release`; this stage loads the keys and the tools.
"""

from __future__ import annotations

from pipeline.adapters.trivy import Trivy
from pipeline.metrics import Metric
from pipeline.models import RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.attest import AttestDetails
from pipeline.stages.context import StageContext
from pipeline.stages.scan import trivy_options
from pipeline.stages.spec import EVIDENCE, StageSpec
from pipeline.supplychain.signing import (
    attest_release,
    load_signing_key,
    verdict_digest,
    verified_verdicts,
)
from pipeline.supplychain.verdict_log import LogView, VerdictLog, require_newest
from pipeline.supplychain.verdicts import SignedVerdict, VerdictRefused, verdict_of


def _newest(run: RunRecord, ctx: StageContext, signed: SignedVerdict, log: VerdictLog) -> LogView:
    """The log view in which `signed` is the newest verdict for its pair; refused when a newer one exists."""
    p = signed.predicate
    model = p.model.digest if p.model else None
    view = log.view(run.image.repository)
    require_newest(view, image=p.image.digest, model=model, target=p.target, verdict_sha=signed.sha256,
                   what=f"the verdict of run {run.run_id}")
    keys = ctx.release_keys()
    assert keys.public is not None
    attested, _ = verified_verdicts(run.image, keys.public, signer=ctx.signer())
    newer = [v for v in attested if (v.model.digest if v.model else None) == model and v.target == p.target
             and v.created > p.created and verdict_digest(v) != signed.sha256]
    if newer:
        v = newer[0]
        raise VerdictRefused(f"a newer verdict for this pair is attested already: run {v.run_id}, {v.decision.value}, "
                             f"gated {v.created.isoformat(timespec='seconds')} (this one was gated "
                             f"{p.created.isoformat(timespec='seconds')})", where=f"run {run.run_id}",
                             hint="gate the release again to judge it anew")
    return view


def check_fresh(run: RunRecord, ctx: StageContext) -> None:
    """The gate's verdict is signed, about this run's pair, and the newest for it (else refused, exit 1)."""
    signed = verdict_of(run, ctx.release_keys().public_key)
    _newest(run, ctx, signed, ctx.verdict_log(run.image.repository))


def attest_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    keys = ctx.release_keys()
    key = keys.signing or load_signing_key(ctx.cfg.sign)  # absent: the error names where the key should be
    assert keys.public is not None
    signed = verdict_of(run, keys.public_key)
    log = ctx.verdict_log(run.image.repository)
    view = _newest(run, ctx, signed, log)
    signer = ctx.signer()
    ctx.reporter.step(f"attest: verdict ({signed.predicate.decision.value}, gated "
                      f"{signed.predicate.created.isoformat(timespec='seconds')}), SBOM and provenance on "
                      f"{run.image.by_digest}")
    work = ctx.ws.run_dir(run.run_id) / "attest"
    work.mkdir(parents=True, exist_ok=True)
    details: AttestDetails = attest_release(run, signed, key, keys.public, signer=signer, work_dir=work,
                                            trivy=ctx.adapters.trivy or Trivy.discover(trivy_options(ctx.cfg.scan)))
    pushed = log.publish(run.image.repository, view)
    details.verdict_log = (f"{view.describe()}; published to the registry ({pushed})" if pushed
                           else f"{view.describe()}; the registry's copy is current")
    for a in details.attestations:
        ctx.reporter.step(f"attest: {a.predicate_type}: {'verified' if a.verified else 'NOT verified'} {a.reason}")
    ctx.reporter.step(f"attest: {details.verdict_log}")
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


SPEC = StageSpec(
    stage=Stage.ATTEST, run=attest_stage, details=AttestDetails, needs=(Stage.GATE,),
    metrics=(
        Metric("verdict_attested", "bool", "higher", description="the verdict is a signed attestation"),
        Metric("attested", "count", "higher", description="attestations signed and read back"),
    ),
    credentials=("registry_password", "store_url", *EVIDENCE), precheck=check_fresh, refuses=True,
    doc="publish the gate's signed verdict (refused when a newer one exists), the verdict log, and the SBOM "
        "and provenance as signed attestations on the digest",
)
