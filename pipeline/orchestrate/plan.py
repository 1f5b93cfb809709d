"""The plans: every stage a run goes through, in order, defined once.

`llmgate run`, `llmgate stage NAME`, the Dagger module's `run` and `llmgate policy check --plan` all
read these objects, so a stage added here is run, wired and checked everywhere at once. A plan says
for each step what must have run before it, whether it talks to the booted server, which credentials
it reads (the Dagger module turns each into a secret), and which steps may run side by side.

Two plans, one set of stage functions:
- `local`: the embedded default. `build` builds and pushes with the local engine, `boot` starts the
  image and measures cold starts.
- `dagger`: CI. Dagger's BuildKit builds and publishes the image, and starts it as a GPU service; the
  `build` step records what was published and `boot` measures the service it is attached to.

This module imports nothing heavy: the Dagger module runs with llmgate's core only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.errors import BadInput
from pipeline.models import Stage

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

    def credentials(self) -> list[Credential]:
        names = dict.fromkeys(c for s in self.steps for c in s.credentials)
        return [CREDENTIALS[n] for n in names]


# A measuring stage signs its own result where it is measured (pipeline/supplychain/evidence.py); the
# gate verifies those links and signs its verdict. Without the key they are unsigned previews.
EVIDENCE = ("cosign_key", "cosign_password", "cosign_public_key")


def _steps(build_doc: str, boot_doc: str, build_produces: tuple[str, ...] | None = None) -> tuple[Step, ...]:
    return (
        Step(stage=Stage.BUILD, digest=False, credentials=("registry_password", *EVIDENCE), produces=build_produces,
             doc=build_doc),
        Step(stage=Stage.LEAK, needs=(Stage.BUILD,), credentials=("registry_password", *EVIDENCE),
             group="supply-chain",
             doc="no byte of a build secret in any layer, the config or the history of the pushed image"),
        Step(stage=Stage.SCAN, credentials=("registry_password", *EVIDENCE), group="supply-chain",
             doc="trivy: vulnerabilities, secrets, misconfigurations; the scan policy"),
        Step(stage=Stage.SIGN,
             credentials=("registry_password", *EVIDENCE),
             group="supply-chain", doc="sign the image digest and verify the signature"),
        Step(stage=Stage.BOOT, credentials=EVIDENCE, doc=boot_doc),
        Step(stage=Stage.BENCH, needs=(Stage.BOOT,), server=True, credentials=EVIDENCE,
             doc="TTFT, TPOT, ITL, throughput, errors and goodput under load"),
        Step(stage=Stage.EVAL, needs=(Stage.BOOT,), server=True, credentials=("judge_api_key", *EVIDENCE),
             doc="the versioned ground truth, scored per quality dimension"),
        Step(stage=Stage.MANIFESTS, reads=(Stage.BOOT,), credentials=EVIDENCE,
             doc="the deployment overlay rendered with both digests, validated against its schemas"),
        Step(stage=Stage.GATE, digest=False, credentials=("store_url", *EVIDENCE),
             doc="verify every evidence link, judge every gate of the policy against this run and the last "
                 "promoted release, sign the verdict and append it to the verdict log"),
        Step(stage=Stage.ATTEST, needs=(Stage.GATE,),
             credentials=("registry_password", "store_url", *EVIDENCE),
             doc="publish the gate's signed verdict (refused when a newer one exists), the verdict log, and the "
                 "SBOM and provenance as signed attestations on the digest"),
        Step(stage=Stage.PROMOTE, on_request=True, event="promoted",
             credentials=("cosign_public_key", "kubeconfig", "store_url"),
             doc="the digest pair into the canary rollout, only on a signed passing verdict that is the newest "
                 "for the pair in the verdict log"),
    )


LOCAL = Plan(
    name="local",
    steps=_steps(
        "BuildKit build with secrets on the local engine, push, digest from the registry",
        "start the image with the weights mounted, cold starts timed to the first completion",
    ),
    doc="the embedded default: local Docker Engine and registry",
)

DAGGER = Plan(
    name="dagger",
    steps=_steps(
        "record the image Dagger built and published (digest, size, base image, Dockerfile)",
        "measure the GPU service Dagger started: port, readiness and first completion",
        build_produces=("image_bytes",),  # Dagger's BuildKit does not report build and push times
    ),
    doc="CI: `dagger call run`; Dagger builds, publishes and serves, the tool image runs every stage",
)

PLANS: dict[str, Plan] = {LOCAL.name: LOCAL, DAGGER.name: DAGGER}


def get_plan(name: str) -> Plan:
    try:
        return PLANS[name]
    except KeyError:
        raise BadInput(f"unknown plan {name!r}; known: {', '.join(PLANS)}", where="--plan") from None
