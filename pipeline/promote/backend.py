"""The promotion backend contract: move a release (image digest + model digest) to a target, abort an
in-flight promotion and restore what served before, say what a target serves.

Implementations: `ArgoRolloutsBackend` (pipeline.promote.cluster: an Argo Rollouts canary in the
cluster), `GitopsBackend` (pipeline.promote.gitops: a commit pushed to the GitOps repository, and
optionally a wait for the Argo CD Application to be Synced and Healthy at it), `KServeBackend`
(pipeline.promote.kserve: an InferenceService's canaryTrafficPercent stepped through the plan).

A backend is built from the target's configuration (`pipeline.promote.factory.create_backend`), which
says where the target is (its namespace, object, overlay); nothing maps a target's name to a place.

Every write is fenced: the caller passes the promotion lock it holds (`Fence`), and the backend calls
`fence.check()` before each write to the cluster or the repository, so a promoter whose lock was lost
(lease expired and taken over) stops before writing over its successor; the written object or commit
carries the fence number (`FENCE_ANNOTATION`, the `Llmgate-Fence` trailer), and where the API allows a
compare-and-set (a JSON patch's `test` op) a write made under an older fence than the object's fails.

`restore_plan` says, without writing, what an abort would put back, so the caller can send that
release through the same guard as any promotion before `abort` restores it.

Every outcome is a typed model carrying the events seen on the way, so the promote stage records what
happened without knowing which backend ran. A backend raises BadInput for a wrong target or object,
InfraError when the cluster or remote cannot be reached, and GateFailed only to refuse (a GitOps push
rejected because someone promoted first); a canary that fails its analysis is an outcome (`aborted`),
not an exception.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import GateFailed
from pipeline.progress import NULL_REPORTER, Reporter

BackendName = Literal["argo-rollouts", "gitops", "kserve"]
Outcome = Literal["promoted", "aborted", "refused", "noop", "dry-run", "failed"]

# The annotations a backend leaves on the object it promotes, so `abort` can restore what served
# before without a store (the live object is the record).
PREVIOUS_IMAGE_ANNOTATION = "llmgate.dev/previous-image"
PREVIOUS_MODEL_ANNOTATION = "llmgate.dev/previous-model-digest"
MODEL_DIGEST_ANNOTATION = "llmgate.dev/model-digest"
MODEL_DIGEST_ENV = "LLMGATE_MODEL_DIGEST"

FENCE_ANNOTATION = "llmgate.dev/promotion-fence"


def namespace_for(target: str, namespaces: dict[str, str]) -> str:
    """The namespace the target's configuration gives it; a target without one is bad input."""
    found = namespaces.get(target)
    if not found:
        from pipeline.errors import BadInput

        raise BadInput(f"no namespace configured for target {target!r}", where="targets.yaml",
                       hint="targets are configuration: declare the target with its namespace in targets.yaml")
    return found


class Fence(Protocol):
    """The promotion lock a write happens under: its number, and the test before each write."""

    @property
    def fence(self) -> int: ...

    def check(self) -> None:
        """Raise (a GateFailed) when the lock is no longer this promoter's."""
        ...


class Unfenced:
    """For a backend used outside a promotion (status reads, a dry run in a test): never refuses."""

    fence = 0

    def check(self) -> None:
        return None


UNFENCED = Unfenced()


class FenceRefused(GateFailed):
    """The object was written under a newer promotion lock than ours: this promoter stops."""


def check_object_fence(obj: dict[str, Any], fence: Fence, where: str) -> None:
    """Refuse to write `obj` when it carries a fence newer than ours (a later promoter wrote it)."""
    fence.check()
    current = ((obj.get("metadata") or {}).get("annotations") or {}).get(FENCE_ANNOTATION)
    try:
        newer = current is not None and fence.fence > 0 and int(current) > fence.fence
    except ValueError:
        newer = False
    if newer:
        raise FenceRefused(f"{where} was written under promotion fence {current}, newer than ours ({fence.fence}): "
                           "another promoter holds the target now; stopped before writing", where=where)


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


class RestorePlan(_Model):
    """What `abort` would do now, read without writing: whether a promotion is in flight and the release
    (image, model) it would put back (None: nothing recorded to restore)."""

    target: str
    in_flight: bool
    image: str | None = None
    model_digest: str | None = None
    reason: str = ""


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
                dry_run: bool = False, reporter: Reporter = NULL_REPORTER, fence: Fence = UNFENCED) -> PromotionResult:
        """Move `image` (repository@sha256:…) and `model_digest` to `target`."""
        ...

    def restore_plan(self, target: str) -> RestorePlan:
        """What `abort` would restore now (nothing is written)."""
        ...

    def abort(self, target: str, *, reporter: Reporter = NULL_REPORTER, fence: Fence = UNFENCED) -> AbortResult:
        """Stop an in-flight promotion of `target` and restore what served before it."""
        ...

    def status(self, target: str) -> TargetStatus: ...
