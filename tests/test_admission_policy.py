"""The admission policy shipped in manifests/admission: a Kyverno ClusterPolicy that admits a serving pod only
with an image signed by the release key and signed verdicts that pass for the pod's weights. It is rendered
with kustomize and validated against Kyverno's own ClusterPolicy schema (vendored, see
pipeline/data/CRD_SCHEMAS.md); what it checks is held to the names the pipeline writes (the verdict type and
fields, the model-digest annotation and env var) and to every target's namespace."""

from __future__ import annotations

import copy
import fnmatch
from pathlib import Path
from typing import Any

import pytest

from pipeline.manifests.render import render
from pipeline.manifests.validate import validate_object, validate_objects
from pipeline.models import utcnow
from pipeline.promote.backend import MODEL_DIGEST_ANNOTATION, MODEL_DIGEST_ENV
from pipeline.promote.targets import load_targets
from pipeline.schemas.gate import BaselineInfo, GateDetails
from pipeline.supplychain.predicates import VERDICT_TYPE, verdict_for_gate
from tests.promote_helpers import REPOSITORY, make_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    (obj,) = render(REPO / "manifests" / "admission")
    assert (obj["apiVersion"], obj["kind"]) == ("kyverno.io/v1", "ClusterPolicy")
    return obj


def _rule(policy: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in policy["spec"]["rules"] if r["name"] == name)


def test_the_policy_is_valid_against_kyvernos_schema(policy: dict[str, Any]) -> None:
    assert validate_objects([policy]) == []


@pytest.mark.parametrize(("edit", "path", "needle"), [
    (lambda p: p["spec"]["rules"][2]["verifyImages"][0].update(failureAction="Block"),
     "spec.rules[2].verifyImages[0].failureAction", "'Block' is not one of"),
    (lambda p: p["spec"]["rules"][2]["verifyImages"][0].update(attestation=[]),
     "spec.rules[2].verifyImages[0]", "'attestation' was unexpected"),
    (lambda p: p["spec"]["rules"][2]["verifyImages"][0]["attestations"][0]["conditions"][0]["any"][1].update(
        operator="Equal"), "spec.rules[2].verifyImages[0].attestations[0].conditions[0].any[1].operator",
     "'Equal' is not one of"),
    (lambda p: p["spec"].update(failurePolicy="Open"), "spec.failurePolicy", "'Open' is not one of"),
])
def test_the_schema_catches_a_broken_policy(policy: dict[str, Any], edit, path: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    broken = copy.deepcopy(policy)
    edit(broken)
    found = validate_object(broken)
    assert any(f.path == path and needle in f.message for f in found), [(f.path, f.message) for f in found]


def test_the_image_must_be_signed_by_the_key_held_in_the_cluster(policy: dict[str, Any]) -> None:
    verify = _rule(policy, "signed-release-with-passing-verdicts-for-these-weights")["verifyImages"][0]
    assert (verify["type"], verify["failureAction"], verify["required"], verify["verifyDigest"]) == (
        "Cosign", "Enforce", True, True)
    assert policy["spec"]["failurePolicy"] == "Fail" and policy["spec"]["background"] is False
    assert any(fnmatch.fnmatch(f"{REPOSITORY}@sha256:{'a' * 64}", ref) for ref in verify["imageReferences"])
    for attestors in (verify["attestors"], verify["attestations"][0]["attestors"]):
        (entry,) = attestors[0]["entries"]
        assert entry["keys"]["secret"] == {"name": "llmgate-release-key", "namespace": "kyverno"}
        assert "publicKeys" not in entry["keys"]  # the key is the cluster's, never shipped with the workload


def test_every_signed_verdict_for_the_pods_weights_must_pass(policy: dict[str, Any]) -> None:
    """The conditions name the verdict's own fields (a renamed predicate field breaks this test) and bind
    them to the weights the pod declares."""
    att = _rule(policy, "signed-release-with-passing-verdicts-for-these-weights")["verifyImages"][0]["attestations"][0]
    assert att["type"] == VERDICT_TYPE
    (cond,) = att["conditions"]
    other_weights, passes = cond["any"]
    assert other_weights["key"] == "{{ model.digest || 'none' }}" and other_weights["operator"] == "NotEquals"
    assert other_weights["value"] == f'{{{{ request.object.metadata.annotations."{MODEL_DIGEST_ANNOTATION}" }}}}'
    assert (passes["key"], passes["operator"], passes["value"]) == ("{{ decision }}", "Equals", "pass")
    run = make_run(model_seed="w")
    gate = GateDetails(policy_name="gates.yaml", policy_files=["gates.yaml"], policy_sha256="a" * 64,
                       baseline=BaselineInfo(kind="first_release"), decision="pass", reason="",
                       verdicts=list(run.gates))
    verdict = verdict_for_gate(run, gate, created=utcnow(), evidence=[]).model_dump(mode="json")
    assert verdict["decision"] == "pass" and verdict["model"]["digest"].startswith("sha256:")


def test_a_pod_must_declare_the_weights_its_readiness_helper_checks(policy: dict[str, Any]) -> None:
    named = _rule(policy, "pod-names-its-weights")["validate"]
    assert named["failureAction"] == "Enforce"
    assert named["pattern"] == {"metadata": {"annotations": {MODEL_DIGEST_ANNOTATION: "sha256:?*"}}}
    (deny,) = _rule(policy, "readiness-checks-the-declared-weights")["validate"]["deny"]["conditions"]["any"]
    assert f"env[?name=='{MODEL_DIGEST_ENV}'].value" in deny["key"] and deny["operator"] == "NotEquals"
    assert MODEL_DIGEST_ANNOTATION in deny["value"]


def test_every_target_namespace_is_covered(policy: dict[str, Any]) -> None:
    namespaces = {t.namespace for t in load_targets(REPO / "targets.yaml").targets.values()}
    for rule in policy["spec"]["rules"]:
        for match in rule["match"]["any"]:
            assert set(match["resources"]["namespaces"]) == namespaces, rule["name"]
