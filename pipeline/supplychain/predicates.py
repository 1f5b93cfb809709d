"""The predicates llmgate signs about an image digest, and their types.

- `VERDICT_TYPE` (`https://llmgate.dev/verdict/v1`, `VerdictPredicate`): the release the gate judged
  (image digest, weights digest, ground truth, policy) and every gate verdict and the decision.
  The promotion guard trusts this signed statement, never a record in the store or a file.
- `SBOM_TYPE` (`https://cyclonedx.org/bom`, what `cosign attest --type cyclonedx` writes): the
  CycloneDX document trivy makes of the image, unchanged.
- `PROVENANCE_TYPE` (`https://slsa.dev/provenance/v1`, `--type slsaprovenance1`): a SLSA v1
  provenance predicate of the build (builder id, base image digest, Dockerfile sha256, source
  commit, build secrets by id and build arguments by name only, never a value).

Each is verified with `cosign verify-attestation --type <type> --key cosign.pub …` as well as here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.models import DIGEST_RE, Decision, RunRecord
from pipeline.schemas.gate import GateDetails, GateVerdict

VERDICT_TYPE = "https://llmgate.dev/verdict/v1"
SBOM_TYPE = "https://cyclonedx.org/bom"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://llmgate.dev/build/docker/v1"
DEFAULT_BUILDER_ID = "https://llmgate.dev/builder/local"
LOCAL_POLICY_SUFFIX = ".local.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageSubject(_Strict):
    repository: str
    digest: str


class WeightsIdentity(_Strict):
    digest: str
    files: int
    bytes: int


class GroundTruthIdentity(_Strict):
    version: str
    sha256: str
    n_items: int | None = None


class PolicyIdentity(_Strict):
    """The policy a verdict was made under: name (its top file) and the sha256 of the effective policy."""

    name: str
    sha256: str
    files: list[str] = Field(default_factory=list)

    @property
    def is_local(self) -> bool:
        """Made under the embedded local default (gates.local.yaml, or any policy extending it)."""
        return any(f.rsplit("/", 1)[-1].endswith(LOCAL_POLICY_SUFFIX) for f in [self.name, *self.files])


class EvidenceRef(_Strict):
    """One evidence link the verdict was judged on: the stage, the digest of its result, the digest of
    its signed link statement and the link itself (a DSSE envelope), so the verdict can be audited
    from the registry alone."""

    stage: str
    result_sha256: str
    link_sha256: str
    key_id: str
    envelope: str


class VerdictPredicate(_Strict):
    run_id: str
    created: datetime
    image: ImageSubject
    model: WeightsIdentity | None
    ground_truth: GroundTruthIdentity | None
    policy: PolicyIdentity | None
    gates: list[GateVerdict]
    decision: Decision
    decision_reason: str = ""
    source_commit: str | None = None
    config_hash: str | None = None
    # The target the run was gated for and the run it was compared with: a verdict is for that target and
    # its baseline only (the guard refuses it anywhere else). None in verdicts from before this field.
    target: str | None = None
    baseline_run_id: str | None = None
    # The evidence links the gate verified before judging (empty in verdicts made before links existed).
    evidence: list[EvidenceRef] = Field(default_factory=list)


def verdict_for_gate(run: RunRecord, gate: GateDetails, *, created: datetime,
                     evidence: list[EvidenceRef]) -> VerdictPredicate:
    """The verdict the gate signs: what it judged (`gate`, before the record mirrors it), dated with
    the gate time and naming the evidence links it verified."""
    gt = run.ground_truth
    return VerdictPredicate(
        run_id=run.run_id,
        created=created,
        image=ImageSubject(repository=run.image.repository, digest=run.image.digest or ""),
        model=WeightsIdentity(digest=run.model.digest, files=run.model.files, bytes=run.model.bytes)
        if run.model else None,
        ground_truth=GroundTruthIdentity(version=gt.version, sha256=gt.sha256, n_items=gt.n_items) if gt else None,
        policy=PolicyIdentity(name=gate.policy_name, sha256=gate.policy_sha256, files=list(gate.policy_files)),
        gates=list(gate.verdicts),
        decision=Decision(gate.decision),
        decision_reason=gate.reason,
        source_commit=run.source_commit,
        config_hash=run.config_hash,
        target=run.target,
        baseline_run_id=gate.baseline.run_id,
        evidence=evidence,
    )


def provenance_predicate(
    *,
    builder_id: str = DEFAULT_BUILDER_ID,
    dockerfile: str,
    dockerfile_sha256: str | None,
    base_image: str | None,
    source_commit: str | None,
    secret_ids: list[str],
    build_arg_names: list[str],
    invocation_id: str,
    started: datetime | None = None,
    finished: datetime | None = None,
    source_uri: str = "git+local",
) -> dict[str, Any]:
    """SLSA v1 provenance (https://slsa.dev/spec/v1.0/provenance). Secrets by id, build args by name:
    never a value, since a predicate is readable by anyone who can pull the image."""
    deps: list[dict[str, Any]] = []
    if base_image and "@" in base_image:
        ref, _, digest = base_image.partition("@")
        if DIGEST_RE.match(digest):
            deps.append({"uri": f"oci://{ref}", "digest": {"sha256": digest.split(":", 1)[1]}})
    if source_commit:
        deps.append({"uri": source_uri, "digest": {"gitCommit": source_commit}})
    external: dict[str, Any] = {
        "dockerfile": {"path": dockerfile, **({"sha256": dockerfile_sha256} if dockerfile_sha256 else {})},
        "buildArgs": sorted(build_arg_names),
        "secrets": sorted(secret_ids),
    }
    if source_commit:
        external["source"] = {"uri": source_uri, "gitCommit": source_commit}
    metadata: dict[str, Any] = {"invocationId": invocation_id}
    if started:
        metadata["startedOn"] = started.isoformat()
    if finished:
        metadata["finishedOn"] = finished.isoformat()
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": {},
            "resolvedDependencies": deps,
        },
        "runDetails": {"builder": {"id": builder_id}, "metadata": metadata},
    }
