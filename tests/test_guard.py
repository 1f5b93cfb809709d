"""Attesting a release and the promotion guard, on the real local registry with real keys.

The guard trusts only signed facts from the registry: each forgery below leaves nothing it trusts,
and each refusal names the (image, model) pair and the reason."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.adapters.signer import PythonSigner
from pipeline.models import (
    Decision,
    GroundTruthRef,
    ImageRef,
    ModelRef,
    PolicyRef,
    RunRecord,
    Stage,
    StageResult,
    StageStatus,
    utcnow,
)
from pipeline.promote.evidence import summary
from pipeline.schemas.build import BuildDetails
from pipeline.schemas.gate import BaselineInfo, GateDetails, GateStatus, GateVerdict
from pipeline.stages.registry import STAGES
from pipeline.store import Store
from pipeline.supplychain import cosign_keys as ck
from pipeline.supplychain.evidence import check_run
from pipeline.supplychain.guard import PromotionRefused, TargetPolicy, check_promotable
from pipeline.supplychain.predicates import PROVENANCE_TYPE, SBOM_TYPE, VERDICT_TYPE, VerdictPredicate
from pipeline.supplychain.signing import attest_release, load_public_key, sign_image, verified_verdicts, verify_release
from pipeline.supplychain.verdict_log import VerdictLog
from pipeline.supplychain.verdicts import SignedVerdict, sign_verdict
from tests.stage_helpers import record_measured, record_verdicts
from tests.trust_images import trust_repo

GOOD_MODEL = "sha256:" + "1" * 64
BAD_MODEL = "sha256:" + "2" * 64
PROD_POLICY = PolicyRef(name="gates.yaml", files=["gates.yaml"], sha256="a" * 64)
LOCAL_POLICY = PolicyRef(name="gates.local.yaml", files=["gates.local.yaml", "gates.yaml"], sha256="b" * 64)
SBOM = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": []}


@pytest.fixture(scope="module")
def keys(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = fixtures_dir / "cosign"
    key = ck.load_private_key_file(d / "cosign_generated_encrypted_empty_private.key", b"")
    other_dir = tmp_path_factory.mktemp("forger")
    files = ck.write_key_pair(other_dir, b"")
    return (key, load_public_key(d / "cosign_generated_encrypted_empty_private.pub"),
            ck.load_private_key_file(files.private_key, b""), load_public_key(files.public_key))


@pytest.fixture
def env(local_stack, tmp_path: Path):  # type: ignore[no-untyped-def]
    signer = PythonSigner()
    with trust_repo() as repo:
        sbom = tmp_path / "sbom.json"
        sbom.write_text(json.dumps(SBOM))
        yield repo, signer, sbom, tmp_path
    signer.close()


def verdict_log(env, keys) -> VerdictLog:  # type: ignore[no-untyped-def]
    """The verdict log of the test's store, read with the configured public key."""
    _, _, _, tmp = env
    return VerdictLog(Store(tmp / "results.db"), keys[1].key, seen_dir=tmp / "seen")


def gate_verdict(run: RunRecord, key: ck.SigningKey, *, links: bool = True,
                 evidence_of: RunRecord | None = None) -> SignedVerdict:
    """The verdict a gate would sign for `run` (its gates and decision), dated now, naming the evidence link
    of its build result as the gate names the links it verified (`links=False`: a verdict signed by hand;
    `evidence_of`: naming the valid links of another run instead)."""
    assert run.policy is not None
    details = GateDetails(policy_name=run.policy.name, policy_files=list(run.policy.files),
                          policy_sha256=run.policy.sha256,
                          baseline=BaselineInfo(kind="first_release", reason="first release"),
                          verdicts=list(run.gates), decision=run.decision.value, reason=run.decision_reason)
    checks = []
    if links:
        measured = evidence_of or run
        record_measured(measured, measured.stages["build"].model_copy(), signing=key)
        checks = check_run(measured, key.public, STAGES.linked)
        assert checks and all(c.verified for c in checks), [c.line() for c in checks]
    return sign_verdict(run, details, checks, key, created=utcnow())


CANARY = TargetPolicy.for_target("canary")
PRODUCTION = TargetPolicy.for_target("production", production=True, local_policy_sha256=[LOCAL_POLICY.sha256])


def make_run(image: str, model: str, decision: Decision, policy: PolicyRef = PROD_POLICY,
             target: str = "canary") -> RunRecord:
    run = RunRecord(image=ImageRef.parse(image), model=ModelRef(path="/m", digest=model, files=3, bytes=1234),
                    target=target,
                    policy=policy, ground_truth=GroundTruthRef(version="v1", sha256="c" * 64, n_items=10),
                    source_commit="0123456789ab", decision=decision,
                    decision_reason="" if decision is Decision.PASS else "fail correctness")
    record_verdicts(run, [GateVerdict(name="correctness", source="eval.correctness_mean",
                                      status=GateStatus.PASS if decision is Decision.PASS else GateStatus.FAIL,
                                      value=0.9 if decision is Decision.PASS else 0.3, threshold=0.6, direction="min")])
    run.add_stage(StageResult(stage=Stage.BUILD, status=StageStatus.OK, details=BuildDetails(
        dockerfile="dockerfiles/cpu.Dockerfile", context=".", base_image="127.0.0.1:5000/llmgate/base@sha256:" + "d" * 64,
        image=image.split("@")[0] + ":t", digest=image.split("@")[1], dockerfile_sha256="e" * 64,
        secret_ids=["ca_bundle", "pip_conf"], build_arg_names=["BASE_IMAGE"])))
    return run


def release(env, keys, model: str = GOOD_MODEL, decision: Decision = Decision.PASS,  # type: ignore[no-untyped-def]
            policy: PolicyRef = PROD_POLICY, image: str | None = None, key_index: int = 0,
            target: str = "canary", links: bool = True, evidence_of: RunRecord | None = None) -> RunRecord:
    repo, signer, sbom, tmp = env
    key, pub = keys[key_index], keys[key_index + 1]
    run = make_run(image or repo.image(), model, decision, policy, target)
    sign_image(run.image, key, pub, signer=signer)
    verdict = gate_verdict(run, key, links=links, evidence_of=evidence_of)
    if key_index == 0:  # the gate appends to the log it signs checkpoints of; a forger has no such log
        verdict_log(env, keys).append(run.image.repository, verdict.entry(), key)
    details = attest_release(run, verdict, key, pub, signer=signer, work_dir=tmp, sbom=sbom)
    assert [a.verified for a in details.attestations] == [True, True, True], details
    return run


def test_attest_release_and_verify_release(env, keys) -> None:  # type: ignore[no-untyped-def]
    _, signer, _, _ = env
    run = release(env, keys)
    v = verify_release(run.image, keys[1], signer=signer, log=verdict_log(env, keys))
    assert all(c.valid for c in v.checks), [c.reason for c in v.checks]
    assert v.evidence.reason == "1 evidence links verified (build)" and [c.stage for c in v.links] == ["build"]
    assert v.log.reason.startswith("entry #0 of 1 (checkpoint root ") and v.position.is_newest
    verdict = v.verdict.predicate
    assert isinstance(verdict, VerdictPredicate)
    assert (verdict.image.digest, verdict.model.digest, verdict.decision) == (run.image.digest, GOOD_MODEL, Decision.PASS)
    assert verdict.policy.name == "gates.yaml" and verdict.policy.sha256 == "a" * 64
    assert verdict.ground_truth.version == "v1" and [g.name for g in verdict.gates] == ["correctness"]
    assert v.sbom.predicate == SBOM
    prov = v.provenance.predicate
    assert prov["runDetails"]["builder"]["id"] == "https://llmgate.dev/builder/local"
    ext = prov["buildDefinition"]["externalParameters"]
    assert ext["dockerfile"] == {"path": "dockerfiles/cpu.Dockerfile", "sha256": "e" * 64}
    assert ext["secrets"] == ["ca_bundle", "pip_conf"] and ext["buildArgs"] == ["BASE_IMAGE"]
    assert {"uri": "oci://127.0.0.1:5000/llmgate/base", "digest": {"sha256": "d" * 64}} in \
        prov["buildDefinition"]["resolvedDependencies"]
    other = verify_release(run.image, keys[3], signer=signer)
    assert not any(c.valid for c in other.checks)


def test_verify_release_reports_each_way_the_log_refuses_a_verdict_as_its_check(env, keys) -> None:  # type: ignore[no-untyped-def]
    """`verify` shows the log check refused, with its reason, never an exception: the verdict is not the
    newest entry for its pair, the log is another store's (the verdict is not in it), the remembered
    checkpoint does not verify, no log is given, or there is no verdict to look up; the other checks stand."""
    repo, signer, _, tmp = env
    run = release(env, keys)
    newer = make_run(run.image.by_digest, GOOD_MODEL, Decision.BLOCKED)
    verdict_log(env, keys).append(run.image.repository, gate_verdict(newer, keys[0]).entry(), keys[0])

    v = verify_release(run.image, keys[1], signer=signer, log=verdict_log(env, keys))
    assert [c.name for c in v.checks if not c.valid] == ["log"] and not v.valid
    assert v.log.reason.startswith(f"entry #0 of 2, but not the newest for its pair: entry #1 (run {newer.run_id}, "
                                   "blocked")
    assert v.position is not None and (v.position.index, v.position.size) == (0, 2)
    assert v.position.newest is not None and v.position.newest[0] == 1 and not v.position.is_newest

    elsewhere = VerdictLog(Store(tmp / "other.db"), keys[1].key, seen_dir=None)
    v = verify_release(run.image, keys[1], signer=signer, log=elsewhere)
    assert not v.log.valid and v.log.reason.startswith(f"the verdict of run {run.run_id} is not in the verdict log (")
    assert v.position is not None and v.position.index is None and v.position.newest is None

    seen = list((tmp / "seen").iterdir())
    assert seen
    for f in seen:
        f.write_text("not a checkpoint\n")
    v = verify_release(run.image, keys[1], signer=signer, log=verdict_log(env, keys))
    assert not v.log.valid and v.position is None
    assert v.log.reason.startswith("the checkpoint this verifier remembers (") and "does not verify" in v.log.reason
    assert v.signature.valid and v.verdict.valid and v.evidence.valid

    v = verify_release(run.image, keys[1], signer=signer)
    assert (v.log.valid, v.log.reason, v.position) == (False, "no verdict log to check against", None)
    bare = verify_release(repo.image(), keys[1], signer=signer, log=verdict_log(env, keys))
    assert (bare.log.valid, bare.log.reason, bare.position) == (False, "no verdict to find in the verdict log", None)


def test_guard_passes_the_signed_pair_and_evidence_names_both_digests(env, keys) -> None:  # type: ignore[no-untyped-def]
    _, signer, _, _ = env
    run = release(env, keys, target="production")
    res = check_promotable(run.image, GOOD_MODEL, PRODUCTION, keys[1], signer=signer, log=verdict_log(env, keys))
    assert res.verdict.run_id == run.run_id and res.model_digest == GOOD_MODEL
    text = summary(run, res)
    assert f"Image: {run.image.by_digest}" in text and f"Model: {GOOD_MODEL}" in text
    assert f"Signed verdict: run {run.run_id}, decision pass" in text
    assert "target production, baseline none (first release)" in text
    # What the guard vouched for cannot be edited on its way into the evidence.
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.model_digest = BAD_MODEL  # type: ignore[misc]


def test_evidence_quotes_the_signed_verdict_not_the_store(env, keys) -> None:  # type: ignore[no-untyped-def]
    """#22 repro 9: the commit message's gate lines come from the signed statement; a store record edited
    afterwards (correctness 0.97, decision pass) changes nothing in it."""
    _, signer, _, _ = env
    run = release(env, keys, model=BAD_MODEL, decision=Decision.BLOCKED)
    res = _refused(signer, run.image.by_digest, BAD_MODEL, CANARY, keys[1], verdict_log(env, keys))
    assert "blocked" in res.message
    good = release(env, keys, image=run.image.by_digest)
    checked = check_promotable(good.image, GOOD_MODEL, CANARY, keys[1], signer=signer, log=verdict_log(env, keys))
    edited = good.model_copy(deep=True)
    stored = edited.details_as(GateDetails)
    assert stored is not None
    stored.verdicts[0] = stored.verdicts[0].model_copy(update={"value": 0.97})
    assert edited.gates[0].value == 0.97
    text = summary(edited, checked)
    assert "correctness: eval.correctness_mean = 0.9 (min 0.6)" in text and "0.97" not in text
    assert "Gates (signed):" in text


def _refused(signer, image, model, target, pub, log) -> PromotionRefused:  # type: ignore[no-untyped-def]
    with pytest.raises(PromotionRefused) as ei:
        check_promotable(image, model, target, pub, signer=signer, log=log)
    assert ei.value.exit_code == 1
    assert ei.value.where == f"(image {ImageRef.parse(image).by_digest}, model {model or 'unknown'})"
    return ei.value


def test_degraded_weights_on_the_same_image_are_refused(env, keys) -> None:  # type: ignore[no-untyped-def]
    _, signer, _, _ = env
    good = release(env, keys)
    # The degraded model's run: same image digest, other weights, blocked.
    release(env, keys, model=BAD_MODEL, decision=Decision.BLOCKED, image=good.image.by_digest)
    err = _refused(signer, good.image.by_digest, BAD_MODEL, CANARY, keys[1], verdict_log(env, keys))
    assert "is blocked: fail correctness" in err.message
    # Weights swapped after the verdict: a digest no verdict names.
    swapped = "sha256:" + "3" * 64
    err = _refused(signer, good.image.by_digest, swapped, CANARY, keys[1], verdict_log(env, keys))
    assert f"judged model {GOOD_MODEL}, not {swapped}" in err.message
    assert check_promotable(good.image, GOOD_MODEL, CANARY, keys[1], signer=signer, log=verdict_log(env, keys)).verdict.run_id == good.run_id


def test_verify_release_for_given_weights_shows_the_newest_verdict_about_them(env, keys) -> None:  # type: ignore[no-untyped-def]
    """`verify --model`: one image serves several weights; the verdict shown is the newest about the weights
    asked for, and weights no verdict names are refused as such."""
    _, signer, _, _ = env
    good = release(env, keys)
    bad = release(env, keys, model=BAD_MODEL, decision=Decision.BLOCKED, image=good.image.by_digest)
    for model, run in ((GOOD_MODEL, good), (BAD_MODEL, bad), (None, bad)):
        v = verify_release(good.image, keys[1], signer=signer, log=verdict_log(env, keys), model_digest=model)
        assert v.verdict.valid and v.verdict.predicate.run_id == run.run_id, model
    swapped = "sha256:" + "3" * 64
    v = verify_release(good.image, keys[1], signer=signer, log=verdict_log(env, keys), model_digest=swapped)
    assert not v.verdict.valid and v.verdict.predicate is None
    assert v.verdict.reason.startswith(f"2 attestation(s) of {VERDICT_TYPE} verified with key sha256:")
    assert v.verdict.reason.endswith(f", but none about model {swapped}"), v.verdict.reason


def test_a_verdict_is_for_the_target_it_was_gated_for(env, keys) -> None:  # type: ignore[no-untyped-def]
    """#26 B: gated for `default` (compared with that target's baseline), the pass is refused for canary."""
    _, signer, _, _ = env
    run = release(env, keys, target="default")
    err = _refused(signer, run.image.by_digest, GOOD_MODEL, CANARY, keys[1], verdict_log(env, keys))
    assert f"run {run.run_id}: gated for target default (compared with that target's baseline), not for canary" \
        in err.message
    assert check_promotable(run.image, GOOD_MODEL, TargetPolicy.for_target("default"), keys[1],
                            signer=signer, log=verdict_log(env, keys)).verdict.run_id == run.run_id


def test_a_target_with_a_floor_refuses_a_policy_that_misses_it(env, keys) -> None:  # type: ignore[no-untyped-def]
    _, signer, _, _ = env
    run = release(env, keys)
    seen = []

    def floor(policy):  # type: ignore[no-untyped-def]
        seen.append(policy.sha256)
        return "policy gates.yaml misses the floor: gate signature (locked in the floor) is missing"

    floored = TargetPolicy(target="canary", floor=floor)
    err = _refused(signer, run.image.by_digest, GOOD_MODEL, floored, keys[1], verdict_log(env, keys))
    assert "gate signature (locked in the floor) is missing" in err.message and seen == [PROD_POLICY.sha256]


def test_local_policy_verdict_is_never_promotable_to_production(env, keys) -> None:  # type: ignore[no-untyped-def]
    _, signer, _, _ = env
    run = release(env, keys, policy=LOCAL_POLICY, target="production")
    prod_as_canary = TargetPolicy.for_target("production")  # the same name, not production by configuration
    assert check_promotable(run.image, GOOD_MODEL, prod_as_canary, keys[1], signer=signer, log=verdict_log(env, keys)).verdict.run_id == run.run_id
    err = _refused(signer, run.image.by_digest, GOOD_MODEL, PRODUCTION, keys[1], verdict_log(env, keys))
    assert "made under the local policy gates.local.yaml (sha256 bbbbbbbbbbbb), which target production" in err.message
    # Fail closed: a target built without saying it accepts local policies does not.
    unsaid = TargetPolicy(target="production", local_policy_sha256=frozenset([LOCAL_POLICY.sha256]))
    err = _refused(signer, run.image.by_digest, GOOD_MODEL, unsaid, keys[1], verdict_log(env, keys))
    assert "made under the local policy" in err.message
    with pytest.raises(dataclasses.FrozenInstanceError):  # a shared target policy cannot be loosened in place
        PRODUCTION.allow_local_policy = True  # type: ignore[misc]
    only = TargetPolicy.for_target("production", accepted_policy_sha256=["f" * 64])
    err = _refused(signer, run.image.by_digest, GOOD_MODEL, only, keys[1], verdict_log(env, keys))
    assert "made under policy gates.local.yaml (sha256 bbbbbbbbbbbb), not one target production accepts" in err.message


def test_a_local_policy_is_recognised_by_digest_under_any_name(env, keys) -> None:  # type: ignore[no-untyped-def]
    """#22 repro 4: a byte copy of gates.local.yaml saved as gates.prod.yaml has the local policy's digest."""
    _, signer, _, _ = env
    renamed = PolicyRef(name="gates.prod.yaml", files=["gates.prod.yaml", "gates.yaml"], sha256=LOCAL_POLICY.sha256)
    run = release(env, keys, policy=renamed, target="production")
    err = _refused(signer, run.image.by_digest, GOOD_MODEL, PRODUCTION, keys[1], verdict_log(env, keys))
    assert "made under the local policy gates.prod.yaml" in err.message


def test_forgeries_are_refused(env, keys) -> None:  # type: ignore[no-untyped-def]
    repo, signer, _, _ = env
    # A verdict signed by another key: nothing verifies with the configured key.
    forged = release(env, keys, key_index=2)
    err = _refused(signer, forged.image.by_digest, GOOD_MODEL, CANARY, keys[1], verdict_log(env, keys))
    assert err.message.startswith("image signature: signature does not verify with key")
    # Signed image, but no verdict at all.
    key, pub = keys[0], keys[1]
    bare = repo.image()
    sign_image(bare, key, pub, signer=signer)
    err = _refused(signer, bare, GOOD_MODEL, CANARY, pub, verdict_log(env, keys))
    assert err.message.startswith("no signed verdict: no attestation: nothing is tagged")
    # No model digest, and a tag instead of a digest.
    assert "without a model digest" in _refused(signer, bare, None, CANARY, pub, verdict_log(env, keys)).message
    with pytest.raises(PromotionRefused, match="given by tag"):
        check_promotable(f"{repo.repository}:v1", GOOD_MODEL, CANARY, pub, signer=signer, log=verdict_log(env, keys))


def test_a_pass_not_signed_by_a_gate_that_verified_its_evidence_is_refused(env, keys) -> None:  # type: ignore[no-untyped-def]
    """A pass signed with the release key but naming no evidence links (signed by hand, or before links
    existed), or naming the valid link of another release's result, is not promoted: its signature,
    decision, pair and log entry all check out, its evidence does not."""
    _, signer, _, _ = env
    by_hand = release(env, keys, links=False)
    err = _refused(signer, by_hand.image.by_digest, GOOD_MODEL, CANARY, keys[1], verdict_log(env, keys))
    assert err.message == f"the signed pass of run {by_hand.run_id} names no evidence links: it was not signed " \
                          "by a gate that verified the results it judged"
    other = make_run(by_hand.image.by_digest, BAD_MODEL, Decision.BLOCKED)
    borrowed = release(env, keys, evidence_of=other)
    err = _refused(signer, borrowed.image.by_digest, GOOD_MODEL, CANARY, keys[1], verdict_log(env, keys))
    assert err.message.startswith(f"the signed pass of run {borrowed.run_id} names evidence that does not verify: "
                                  "stage build: "), err.message
    assert verify_release(borrowed.image, keys[1], signer=signer, log=verdict_log(env, keys)).evidence.valid is False


def test_attest_release_without_sbom_or_build_says_why(env, keys) -> None:  # type: ignore[no-untyped-def]
    repo, signer, _, tmp = env
    run = make_run(repo.image(), GOOD_MODEL, Decision.PASS)
    del run.stages["build"]
    details = attest_release(run, gate_verdict(run, keys[0], links=False), keys[0], keys[1], signer=signer,
                             work_dir=tmp, trivy=None, sbom=None)
    by_type = {a.predicate_type: a for a in details.attestations}
    assert by_type[VERDICT_TYPE].verified
    assert not by_type[SBOM_TYPE].verified and by_type[SBOM_TYPE].reason == "no SBOM: trivy not found"
    assert by_type[PROVENANCE_TYPE].reason == "no provenance: this run has no build stage"


def test_cli_verify_prints_each_check_and_exits_by_outcome(env, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A verdict signed outside a gate (no evidence links) is shown with every check and refused; the
    passing case, with links from the real stages, is tests/test_evidence.py's."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    run = release(env, keys, links=False)
    pub = Path(keys[1].source)
    workdir = ["--workdir", str(tmp_path), "--store", str(tmp_path / "results.db")]
    shown = CliRunner().invoke(app, [*workdir, "verify", run.image.by_digest, "--key", str(pub)])
    assert shown.exit_code == 1, shown.output
    for name in ("signature", "verdict", "log", "sbom", "provenance"):
        assert f"  {name:<10} valid:" in shown.output
    assert f"  evidence   REFUSED: the verdict of run {run.run_id} names no evidence links" in shown.output
    assert f"decision pass, model {GOOD_MODEL}, policy gates.yaml" in shown.output
    assert "entry #0 of 1" in shown.output and "newest for the pair: yes" in shown.output
    refused = CliRunner().invoke(app, [*workdir, "verify", run.image.by_digest, "--key", keys[3].source])
    assert refused.exit_code == 1 and refused.output.count("REFUSED") == 6
    garbled = tmp_path / "garbled.pub"
    garbled.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n")
    bad = CliRunner().invoke(app, [*workdir, "verify", run.image.by_digest, "--key", str(garbled)])
    assert bad.exit_code == 2 and "truncated PEM" in " ".join(bad.output.split())


def test_the_newest_verdict_about_the_pair_decides(env, keys) -> None:  # type: ignore[no-untyped-def]
    """A pass followed by a blocked re-run of the same pair: the blocked one is newest, so it decides."""
    _, signer, _, _ = env
    first = release(env, keys)
    second = release(env, keys, decision=Decision.BLOCKED, image=first.image.by_digest)
    v = verify_release(first.image, keys[1], signer=signer)
    assert v.verdict.valid and v.verdict.reason.endswith(f"newest: run {second.run_id}, decision blocked")
    assert v.verdict.predicate.run_id == second.run_id
    err = _refused(signer, first.image.by_digest, GOOD_MODEL, CANARY, keys[1], verdict_log(env, keys))
    assert f"the newest signed verdict for this pair (run {second.run_id}) is blocked" in err.message
    # SBOM and provenance: the last one attached is the one shown
    newer = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 2, "components": []}
    signer.attest(first.image.by_digest, SBOM_TYPE, newer, keys[0])
    signer.attest(first.image.by_digest, PROVENANCE_TYPE, {"buildType": "newest"}, keys[0])
    v = verify_release(first.image, keys[1], signer=signer)
    assert v.sbom.predicate == newer and v.provenance.predicate == {"buildType": "newest"}


def test_signed_statements_that_are_no_verdict_about_the_image_are_not_verdicts(env, keys) -> None:  # type: ignore[no-untyped-def]
    repo, signer, _, _ = env
    key, pub = keys[0], keys[1]
    run = release(env, keys)
    about_other = verify_release(run.image, pub, signer=signer).verdict.predicate.model_dump(mode="json")
    image = repo.image()
    digest = image.split("@")[1]
    sign_image(image, key, pub, signer=signer)
    # validly signed under the verdict type: one is no verdict at all, one is a verdict about another image
    signer.attest(image, VERDICT_TYPE, {"decision": "pass"}, key)
    signer.attest(image, VERDICT_TYPE, about_other, key)
    verdicts, reason = verified_verdicts(image, pub, signer=signer)
    assert verdicts == [] and reason.startswith("2 attestation(s) of ") and \
        reason.endswith(f", but none is a verdict about {digest}")
    err = _refused(signer, image, GOOD_MODEL, CANARY, pub, verdict_log(env, keys))
    assert err.message.startswith("no signed verdict: 2 attestation(s)") and "none is a verdict about" in err.message
    # Junk signed before a real verdict does not hide it.
    real = release(env, keys, image=image)
    assert [v.run_id for v in verified_verdicts(image, pub, signer=signer)[0]] == [real.run_id]
    assert check_promotable(image, GOOD_MODEL, CANARY, pub, signer=signer,
                            log=verdict_log(env, keys)).verdict.run_id == real.run_id


def test_a_newer_logged_verdict_hidden_from_the_registry_refuses_the_pass(env, keys) -> None:  # type: ignore[no-untyped-def]
    """A registry writer can drop the attestation layer of a newer blocked verdict, not its log entry: the
    guard refuses with the log's reason, as a promotion refusal naming the pair (exit 1)."""
    _, signer, _, _ = env
    run = release(env, keys)
    newer = make_run(run.image.by_digest, GOOD_MODEL, Decision.BLOCKED)
    verdict_log(env, keys).append(run.image.repository, gate_verdict(newer, keys[0]).entry(), keys[0])
    err = _refused(signer, run.image.by_digest, GOOD_MODEL, CANARY, keys[1], verdict_log(env, keys))
    assert err.message.startswith("verdict log: ") and f"run {run.run_id}" in err.message
