"""Gate stage: judge a run against the policy and its baseline, and sign the verdict.

Before judging (`check_evidence`, run by the runner before it marks or records anything), every
measuring stage's result of the run and of its baseline must carry an evidence link that verifies
with the pinned public key against the result as stored and the run's release; anything else is
refused with the stage named (pipeline/supplychain/evidence.py). It reads only what is stored in the
run and the store, and every resample is seeded, so running it again on the same stored inputs gives
the same verdict. Its payload carries every verdict and the decision (which the record mirrors); its
artifacts are `verdict.json` and `junit.xml`.

With the signing key, the verdict is signed here, in the process that computed it and dated with the
gate time, naming the links it was judged on, and appended to the verdict log; the result carries
the envelope, which attest publishes unchanged. Without the key (a pull-request job) the verdict is an
unsigned preview, and says so: never attested, never promoted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from evals.calibration import trust_for
from pipeline.gates.baseline import Baseline, find_baseline
from pipeline.gates.outputs import write_junit, write_verdict_json
from pipeline.models import Artifact, RunRecord, Stage, StageResult, StageStatus, utcnow
from pipeline.schemas.gate import BaselineInfo, GateDetails
from pipeline.stages.context import StageContext
from pipeline.stages.evaluate import baseline_rescorer
from pipeline.stages.spec import EVIDENCE, StageSpec, decision_exit
from pipeline.supplychain import evidence
from pipeline.supplychain.gate_sections import SECTIONS
from pipeline.supplychain.verdicts import sign_verdict


def _artifact(name: str, path: Path, media_type: str) -> Artifact:
    return Artifact(name=name, path=str(path), media_type=media_type,
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def _baseline_info(run: RunRecord, baseline: Baseline) -> BaselineInfo:
    other = baseline.run.model if baseline.run is not None else None
    mine = run.model.digest if run.model else None
    other_weights = other is not None and mine is not None and other.digest != mine
    reason = baseline.reason
    if other_weights and other is not None:
        reason += f"; the baseline served other weights ({other.digest[:19]}…)"
    return BaselineInfo(kind=baseline.kind.value, run_id=baseline.run_id,
                        items_comparable=baseline.items_comparable and baseline.run is not None, reason=reason,
                        model_digest=other.digest if other else None, other_weights=other_weights)


def check_evidence(run: RunRecord, ctx: StageContext) -> None:
    """Every result the gate will judge, this run's and its baseline's, is proven (`EvidenceRefused`), and
    the verdict log it will append to is intact (`LogRefused`)."""
    keys = ctx.release_keys()
    signing = keys.signing is not None
    evidence.require_evidence(run, keys.public_key, ctx.linked_stages(), signing=signing)
    baseline = find_baseline(run, ctx.ws.store, rescore=None).run
    if baseline is not None:
        evidence.require_evidence(baseline, keys.public_key, ctx.linked_stages(), signing=signing, what=f"baseline run {baseline.run_id}")
    if signing and run.image.digest is not None:
        ctx.verdict_log(run.image.repository).view(run.image.repository)


def _sign(run: RunRecord, ctx: StageContext, details: GateDetails, checks: list[evidence.LinkCheck]) -> tuple[str, str]:
    """The verdict signed and logged: (its envelope, what to say about it)."""
    keys = ctx.release_keys()
    assert keys.signing is not None and keys.public_key is not None
    signed = sign_verdict(run, details, checks, keys.signing, created=utcnow())
    index, view = ctx.verdict_log(run.image.repository).append(run.image.repository, signed.entry(), keys.signing)
    return signed.envelope, (f"verdict signed at {signed.predicate.created.isoformat(timespec='seconds')} on "
                             f"{len(signed.predicate.evidence)} evidence links, verdict log entry #{index} of "
                             f"{view.size}")


def gate_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    keys = ctx.release_keys()
    checks = evidence.require_evidence(run, keys.public_key, ctx.linked_stages(), signing=keys.signing is not None)
    policy = ctx.require_policy()
    ctx.reporter.step(f"gate: policy {', '.join(policy.files)} ({len(policy.gates)} gates, "
                      f"{len(policy.sections)} sections)")
    baseline = find_baseline(run, ctx.ws.store, rescore=baseline_rescorer(ctx.cfg, ctx.ws))
    ctx.reporter.step(f"gate: baseline: {baseline.reason}")
    from pipeline.gates.engine import evaluate  # scipy: loaded when a gate judges, not with the plan

    evaluation = evaluate(policy, run, baseline, sections=SECTIONS, calibration=trust_for,
                          approval=run.first_release_approval)
    for v in evaluation.verdicts:
        ctx.reporter.step(f"gate {v.name}: {v.status.value}: {v.reason}")
    ctx.reporter.step(f"gate: {evaluation.reason}")
    out = ctx.ws.run_dir(run.run_id)
    verdict_path = write_verdict_json(evaluation, run, policy, out / "verdict.json")
    junit_path = write_junit(evaluation, run, out / "junit.xml")
    details = GateDetails(
        policy_name=Path(policy.files[0]).name,
        policy_files=list(policy.files),
        policy_sha256=policy.sha256,
        baseline=_baseline_info(run, evaluation.baseline),
        warnings=list(evaluation.warnings),
        verdicts=list(evaluation.verdicts),
        decision=evaluation.decision.value,
        reason=evaluation.reason,
        approval=evaluation.approval,
    )
    envelope = None
    if keys.signing is not None and run.image.digest is not None:
        envelope, said = _sign(run, ctx, details, checks)
    else:
        why = keys.unsigned if keys.signing is None else "the run names no image digest"
        said = f"UNSIGNED PREVIEW ({why}): this verdict is never attested and never promoted"
    ctx.reporter.step(f"gate: {said}")
    return StageResult(
        stage=Stage.GATE,
        status=StageStatus.OK,
        reason=f"{evaluation.reason}; {said}",
        artifacts=[
            _artifact("verdict.json", verdict_path, "application/json"),
            _artifact("junit.xml", junit_path, "application/xml"),
        ],
        details=details,
        evidence=envelope,
    )


SPEC = StageSpec(
    stage=Stage.GATE, run=gate_stage, details=GateDetails, digest=False, credentials=("store_url", *EVIDENCE),
    precheck=check_evidence, exit_check=decision_exit,
    doc="verify every evidence link, judge every gate of the policy against this run and the last promoted "
        "release, sign the verdict and append it to the verdict log",
)
