"""Promotion targets are configuration, not names: `targets.yaml` at the project root.

Each target declares where it deploys (the kubeconfig context it runs in and its namespace), how a
release gets there (`backend`: gitops, argo-rollouts or kserve, with that backend's settings) and which
verdicts it accepts:

- `production: true` makes a target production. It must pin the policy digests it accepts
  (`accepted_policies`, the sha256 of the effective policy that `llmgate policy check` and every verdict
  show), pin the signing keys it trusts (`keys`, key ids as `llmgate keys id` prints them; until one is
  pinned every promotion there is refused), and name a pinned policy floor; it never accepts a verdict
  made under a local policy or signed by an unpinned local key.
- A target that shares its (cluster, namespace) with a production target must be production too: two
  names for one place cannot have two trust levels (`production-hpa` deploys where `production` does).
- `floor: {policy: gates.yaml, sha256: …}`: the minimum policy. A verdict's policy must contain every
  locked gate and locked section of the floor, unrelaxed (see `pipeline.promote.floor`); the floor's own
  file must still have the pinned digest.
- `local_policies` (top level): policy files whose content digests mark a verdict as made under a local
  policy. "Local" is recognised by digest, so a byte copy under another file name is still local.

The file is committed with the code and read from the project root (the directory of `--config`, else
the current directory), never from the work dir: a file inside the work dir is refused, since stages and
anyone with the store's disk can write there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config import Seconds, describe_validation_error, load_yaml
from pipeline.errors import BadInput

TARGETS_FILE = "targets.yaml"
BackendKind = Literal["gitops", "argo-rollouts", "kserve"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
KeyId = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
TargetName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloorConfig(_Section):
    """The minimum policy any verdict's policy must contain to promote to the target."""

    policy: str = "gates.yaml"
    sha256: Sha256 | None = None  # the floor file's effective digest; required for production


class GitopsConfig(_Section):
    overlay: str | None = None  # default: manifests/overlays/<target>
    remote: str | None = None
    push_branch: str | None = None
    argocd_app: str | None = None  # wait for this Application to be Synced and Healthy
    argocd_namespace: str = "argocd"


class RolloutConfig(_Section):
    name: str = "llmgate-server"
    container: str = "server"


class KServeConfig(_Section):
    service: str = "llmgate-server"
    steps: list[int] = Field(default_factory=lambda: [10, 25, 50])
    prometheus_url: str | None = None  # canary analysis queries; none: readiness only, and the result says so
    analysis_checks: int = Field(default=3, ge=1)
    analysis_interval_s: Seconds = 60


class TargetConfig(_Section):
    backend: BackendKind
    cluster: str = ""  # the kubeconfig context the target runs in ("": the kubeconfig's current context)
    namespace: str
    production: bool = False
    accepted_policies: list[Sha256] = Field(default_factory=list)  # empty: any policy that meets the floor
    accept_local_policy: bool = False
    keys: list[KeyId] = Field(default_factory=list)  # pinned signing keys
    accept_local_key: bool = False  # trust the work dir's key pair (public half of sign.key), unpinned
    floor: FloorConfig | None = None
    timeout_s: Seconds = 3600  # the canary's whole rollout; the promotion lock is renewed meanwhile
    gitops: GitopsConfig = Field(default_factory=GitopsConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    kserve: KServeConfig = Field(default_factory=KServeConfig)

    @model_validator(mode="after")
    def _production_pins(self) -> TargetConfig:
        if not self.production:
            return self
        problems = []
        if not self.accepted_policies:
            problems.append("a production target must pin the policy digests it accepts (accepted_policies)")
        if self.floor is None or self.floor.sha256 is None:
            problems.append("a production target must name a policy floor with its pinned digest (floor.sha256)")
        if self.accept_local_policy:
            problems.append("a production target never accepts a local policy (accept_local_policy)")
        if self.accept_local_key:
            problems.append("a production target trusts pinned keys only (accept_local_key)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TargetsFile(_Section):
    version: Literal[1] = 1
    local_policies: list[str] = Field(default_factory=lambda: ["gates.local.yaml"])
    targets: dict[TargetName, TargetConfig]


@dataclass(frozen=True)
class Target:
    """One configured target, with the directory its file lives in (floor and local policies resolve there)."""

    name: str
    config: TargetConfig
    root: Path
    source: str  # "targets.yaml: targets.canary", for messages
    local_policies: tuple[str, ...] = ("gates.local.yaml",)  # files, relative to root, that are local policies

    @property
    def production(self) -> bool:
        return self.config.production

    @property
    def namespace(self) -> str:
        return self.config.namespace

    @property
    def backend(self) -> BackendKind:
        return self.config.backend

    @property
    def lock_key(self) -> str:
        """The promotion lock is per place, not per name: targets deploying to one namespace share it."""
        return f"{self.config.cluster}/{self.namespace}" if self.config.cluster else self.namespace

    @property
    def overlay(self) -> str:
        return self.config.gitops.overlay or f"manifests/overlays/{self.name}"

    def describe(self) -> str:
        where = f"namespace {self.namespace}" + (f" in cluster {self.config.cluster}" if self.config.cluster else "")
        return f"{self.name} ({'production' if self.production else 'non-production'}, {self.backend}, {where})"


@dataclass
class Targets:
    file: Path
    targets: dict[str, Target] = field(default_factory=dict)

    def get(self, name: str) -> Target:
        found = self.targets.get(name)
        if found is None:
            raise BadInput(f"no target {name!r} in {self.file}; configured: {', '.join(sorted(self.targets)) or 'none'}",
                           where="--target", hint=f"targets are configuration: declare it in {self.file}")
        return found


def _check_places(targets: dict[str, TargetConfig], where: str) -> None:
    """Targets that deploy to one (cluster, namespace) share its trust level."""
    production: dict[tuple[str, str], str] = {}
    for name, t in targets.items():
        if t.production:
            production.setdefault((t.cluster, t.namespace), name)
    for name, t in targets.items():
        prod = production.get((t.cluster, t.namespace))
        if prod is not None and not t.production:
            raise BadInput(f"target {name!r} deploys to namespace {t.namespace!r}"
                           + (f" of cluster {t.cluster!r}" if t.cluster else "")
                           + f", where production target {prod!r} runs: it must be `production: true` as well",
                           where=f"{where}: targets.{name}")


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def targets_path(config: Path | None = None) -> Path:
    """The project's targets file: next to `--config`, else in the current directory."""
    return (config.parent if config is not None else Path(".")) / TARGETS_FILE


def load_targets(path: Path | None = None, *, workdir: Path | None = None) -> Targets:
    """Load and validate `targets.yaml` (BadInput naming the file and field for every defect)."""
    path = path or targets_path()
    if workdir is not None and _inside(path, workdir):
        raise BadInput("the targets file is inside the work dir, which stages and the store's users can write; "
                       "it must be committed with the project", where=str(path))
    if not path.exists():
        raise BadInput("no targets file: every promotion target is declared there (backend, namespace, the "
                       "verdicts it accepts)", where=str(path), hint="see docs/TARGETS.md")
    raw = load_yaml(path, what="targets file")
    if not isinstance(raw, dict):
        raise BadInput("expected a mapping at the top level", where=str(path))
    try:
        doc = TargetsFile.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc), where=str(path)) from exc
    _check_places(doc.targets, str(path))
    root = path.parent
    return Targets(file=path, targets={n: Target(name=n, config=c, root=root, source=f"{path}: targets.{n}",
                                                 local_policies=tuple(doc.local_policies))
                                        for n, c in doc.targets.items()})
