"""The promotion backend contract: move a release (image digest + model digest) to a target, abort an
in-flight promotion and restore what served before, say what a target serves.

Implementations: `ArgoRolloutsBackend` (pipeline.promote.cluster: an Argo Rollouts canary in the
cluster), `GitopsBackend` (pipeline.promote.gitops: a commit pushed to the GitOps repository, and
optionally a wait for the Argo CD Application to be Synced and Healthy at it), `KServeBackend`
(pipeline.promote.kserve: an InferenceService's canaryTrafficPercent stepped through the plan).

Every outcome is a typed model carrying the events seen on the way, so the promote stage records what
happened without knowing which backend ran. A backend raises BadInput for a wrong target or object,
InfraError when the cluster or remote cannot be reached, and GateFailed only to refuse (a GitOps push
rejected because someone promoted first); a canary that fails its analysis is an outcome (`aborted`),
not an exception.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from pipeline.progress import NULL_REPORTER, Reporter

BackendName = Literal["argo-rollouts", "gitops", "kserve"]
Outcome = Literal["promoted", "aborted", "refused", "noop", "dry-run", "failed"]

# The annotations a backend leaves on the object it promotes, so `abort` can restore what served
# before without a store (the live object is the record).
PREVIOUS_IMAGE_ANNOTATION = "llmgate.dev/previous-image"
PREVIOUS_MODEL_ANNOTATION = "llmgate.dev/previous-model-digest"
MODEL_DIGEST_ANNOTATION = "llmgate.dev/model-digest"
MODEL_DIGEST_ENV = "LLMGATE_MODEL_DIGEST"

# Namespaces the shipped overlays deploy to; a target not listed deploys to a namespace of its name.
TARGET_NAMESPACES = {
    "canary": "llmgate-canary",
    "canary-tgi": "llmgate-canary-tgi",
    "canary-sglang": "llmgate-canary-sglang",
    "canary-llamacpp": "llmgate-canary-llamacpp",
    "production": "llmgate",
    "production-hpa": "llmgate",
    "deployment": "llmgate",
    "kserve": "llmgate-kserve",
}


def namespace_for(target: str, overrides: dict[str, str] | None = None) -> str:
    return (overrides or {}).get(target) or TARGET_NAMESPACES.get(target, target)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Evidence(_Model):
    """What the promotion carries: the run's evidence summary (commit messages, audit) and the measured
    load time the manifest gate needs (GitOps checks the overlay before committing)."""

    summary: str
    run_id: str | None = None
    load_time_s: float | None = None


class PromotionResult(_Model):
    backend: BackendName
    target: str
    outcome: Outcome
    image: str  # repository@sha256:…
    model_digest: str | None = None
    previous_image: str | None = None
    previous_model_digest: str | None = None
    reason: str = ""
    events: list[str] = Field(default_factory=list)
    # After an abort: True once what served before serves again; None when nothing was aborted.
    restored: bool | None = None
    # GitOps
    branch: str | None = None
    base_commit: str | None = None
    commit: str | None = None
    pushed_to: str | None = None  # remote ref the commit was pushed to
    diff: str = ""
    # Cluster backends: the changes sent to the API server, in order
    patches: list[Any] = Field(default_factory=list)
    revision: str | None = None  # KServe revision / Argo CD synced revision


class AbortResult(_Model):
    backend: BackendName
    target: str
    outcome: Literal["aborted", "noop"]
    reason: str = ""
    restored_image: str | None = None
    restored_model_digest: str | None = None
    restored: bool = False  # what served before serves again (healthy/ready/synced)
    events: list[str] = Field(default_factory=list)
    commit: str | None = None  # GitOps: the restoring commit


class TargetStatus(_Model):
    backend: BackendName
    target: str
    image: str | None = None
    model_digest: str | None = None
    phase: str = ""  # Healthy / Progressing / Degraded (Rollout); Ready (KServe); Synced/Healthy (Argo CD)
    in_flight: bool = False  # a canary is between start and full promotion
    message: str = ""
    revision: str | None = None
    observed: dict[str, Any] = Field(default_factory=dict)  # the backend's own status fields, shown as they are


class Backend(Protocol):
    name: BackendName

    def promote(self, target: str, image: str, model_digest: str | None, evidence: Evidence, *,
                dry_run: bool = False, reporter: Reporter = NULL_REPORTER) -> PromotionResult:
        """Move `image` (repository@sha256:…) and `model_digest` to `target`."""
        ...

    def abort(self, target: str, *, reporter: Reporter = NULL_REPORTER) -> AbortResult:
        """Stop an in-flight promotion of `target` and restore what served before it."""
        ...

    def status(self, target: str) -> TargetStatus: ...
