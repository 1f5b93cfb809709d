"""The plans: every stage a run goes through, in order, defined once.

`llmgate run`, `llmgate stage NAME`, the Dagger module's `run` and `llmgate policy check --plan` all
read these objects, so a stage added here is run, wired and checked everywhere at once. A plan's steps
are read from the stage registry (pipeline/stages/registry.py): each stage's spec says what must have
run before it, whether it talks to the booted server, which credentials it reads (the Dagger module
turns each into a secret), and which steps may run side by side.

Two plans, one set of stage functions:
- `local`: the embedded default. `build` builds and pushes with the local engine, `boot` starts the
  image and measures cold starts.
- `dagger`: CI. Dagger's BuildKit builds and publishes the image, and starts it as a GPU service; the
  `build` step records what was published and `boot` measures the service it is attached to.

It imports no optional extra (torch, ragas) and not the docker SDK: the Dagger module runs with
llmgate's core only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, InstanceOf

from pipeline.errors import BadInput
from pipeline.metrics import Catalogue
from pipeline.models import Stage
from pipeline.stages.registry import STAGES, Registry
from pipeline.stages.spec import StageSpec

PlanName = Literal["local", "dagger"]


class Credential(BaseModel):
    """A secret a stage reads, and where the tool container finds it (an env var or a mounted file)."""

    model_config = ConfigDict(frozen=True)

    name: str
    env: str | None = None
    file: str | None = None
    doc: str = ""


# Every credential any stage reads. The Dagger module passes each as a `dagger.Secret` (an env secret
# variable or a mounted secret file), never as a plain value or an argument.
CREDENTIALS: dict[str, Credential] = {
    c.name: c
    for c in (
        Credential(name="registry_password", env="LLMGATE_REGISTRY_PASSWORD", doc="registry password or token"),
        Credential(name="cosign_key", env="COSIGN_PRIVATE_KEY", doc="signing key, cosign's encrypted PEM"),
        Credential(name="cosign_password", env="COSIGN_PASSWORD", doc="password of the signing key"),
        Credential(name="cosign_public_key", file="/run/secrets/llmgate/cosign.pub", doc="public key to verify with"),
        Credential(name="judge_api_key", env="LLMGATE_JUDGE_API_KEY", doc="API key of the LLM judge"),
        Credential(name="kubeconfig", file="/run/secrets/llmgate/kubeconfig", doc="kubeconfig for promotion"),
        Credential(name="store_url", file="/run/secrets/llmgate/store-url", doc="results store URL (PostgreSQL)"),
    )
}


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: Stage
    needs: tuple[Stage, ...] = ()  # stages whose results this one reads
    reads: tuple[Stage, ...] = ()  # stages whose results it also reads when they are there (not required)
    digest: bool = True  # works on the image by digest, so the run must name one
    server: bool = False  # talks to the server the boot step started (or attached to)
    credentials: tuple[str, ...] = ()
    group: str | None = None  # steps of one group may run side by side
    on_request: bool = False  # runs only when asked for (promotion needs a target)
    # An event about a target rather than a fact about the release: the run records it only when this
    # metric says it happened (a refused or dry-run promotion is in the audit trail, or nowhere, and
    # leaves the run record as it was).
    event: str | None = None
    # Metrics (and sample series) this step records; None: every one the registry lists for its stage.
    produces: tuple[str, ...] | None = None
    doc: str = ""
    spec: InstanceOf[StageSpec] = Field(exclude=True, repr=False)  # what runs it (pipeline/stages/<x>.py)


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: PlanName
    steps: tuple[Step, ...]
    doc: str = ""

    @property
    def stages(self) -> list[Stage]:
        return [s.stage for s in self.steps]

    def step(self, stage: Stage | str) -> Step:
        for s in self.steps:
            if s.stage == stage:
                return s
        raise BadInput(f"the {self.name} plan has no stage {str(stage)!r}; it has {', '.join(self.stages)}",
                       where="stage")

    @property
    def catalogue(self) -> Catalogue:
        """The metrics this plan's stages declare: what its gates may read."""
        return Catalogue.of(s.spec for s in self.steps)

    @property
    def linked(self) -> tuple[Stage, ...]:
        """The stages of this plan whose results carry evidence links (`StageSpec.evidence`)."""
        return tuple(s.stage for s in self.steps if s.spec.evidence)

    def credentials(self) -> list[Credential]:
        names = dict.fromkeys(c for s in self.steps for c in s.credentials)
        return [CREDENTIALS[n] for n in names]


def steps_of(registry: Registry, plan: str) -> tuple[Step, ...]:
    """The plan's steps, one per registered stage, in the registry's order."""
    steps = []
    for spec in registry:
        variant = spec.plans.get(plan)
        steps.append(Step(
            stage=spec.stage, needs=spec.needs, reads=spec.reads, digest=spec.digest, server=spec.server,
            credentials=spec.credentials, group=spec.group, on_request=spec.on_request, event=spec.event,
            produces=variant.produces if variant is not None and variant.produces is not None else spec.produces,
            doc=variant.doc if variant is not None and variant.doc is not None else spec.doc, spec=spec,
        ))
    return tuple(steps)


LOCAL = Plan(
    name="local",
    steps=steps_of(STAGES, "local"),
    doc="the embedded default: local Docker Engine and registry",
)

DAGGER = Plan(
    name="dagger",
    steps=steps_of(STAGES, "dagger"),
    doc="CI: `dagger call run`; Dagger builds, publishes and serves, the tool image runs every stage",
)

PLANS: dict[str, Plan] = {LOCAL.name: LOCAL, DAGGER.name: DAGGER}


def get_plan(name: str) -> Plan:
    try:
        return PLANS[name]
    except KeyError:
        raise BadInput(f"unknown plan {name!r}; known: {', '.join(PLANS)}", where="--plan") from None
