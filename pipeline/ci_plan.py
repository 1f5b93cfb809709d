"""What the Dagger module runs, decided here so that the module stays a thin shell.

The module only builds, publishes, starts the server as a service and wires containers and secrets.
The steps run through the Runner's own step loop inside the tool container (`llmgate run --run ID
--only …`), the same loop `llmgate run` uses, so parallel groups, stop-on-failure, reuse and
checkpoints are the CLI's; which segments of the one plan (`pipeline.orchestrate.plan.DAGGER`) the
module runs, which command runs each, where each credential reaches the tool container, which secret
ids a Dockerfile mounts and whether a reference is a digest are plain functions here, tested without
an engine. This module imports nothing heavy: the Dagger runtime installs `llmgate` without its extras.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from pipeline.errors import BadInput, InfraError
from pipeline.models import ImageRef, RunRecord, Stage, check_run_id
from pipeline.orchestrate.plan import CREDENTIALS, DAGGER, Credential, Step

TOOL_DOCKERFILE = "dockerfiles/llmgate.Dockerfile"
SERVER_DOCKERFILE = "dockerfiles/vllm.cuda.Dockerfile"
# The tool image's base outside this machine (CI with a registry): Debian bookworm with Python 3.11,
# pinned by digest. Locally the seeded base from dockerfiles/base.lock.json is used instead.
TOOL_BASE_IMAGE = (
    "python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b"
)
TOOL_UID = "10001"  # the tool image's non-root user (dockerfiles/llmgate.Dockerfile)
# Directories the Dockerfile bind-mounts from the build context; they must exist, even empty.
STAGED_CONTEXT_DIRS = (".whl", ".tools")

SERVER_PORT = 8000
SERVER_ALIAS = "llm"
MODELS = "/models"  # the weights, read-only, in the server and in the tool container

# Inside the tool container.
SOURCE = "/work/src"  # the project (gates.yaml, ground_truth/, manifests/), the working directory
STATE = "/work/state"  # llmgate --workdir: the run's store (unless a shared one is given) and artifacts
OUT = "/work/out"  # what `llmgate export` writes and the module returns
TRIVY_CACHE_DIR = f"{SOURCE}/.llmgate/cache/trivy"  # the scan stage's default cache_dir, from SOURCE
TRIVY_CACHE_VOLUME = "llmgate-trivy-db"

# The files `llmgate export` writes at the root of OUT; .github/workflows/llmgate.yml reads these. The gate
# step writes verdict.json and junit.xml: a run the Runner stopped before its gates has the other three.
EXPORT_FILES = ("run.json", "verdict.json", "junit.xml", "summary.md", "report.html")
VERDICT_FILES = ("verdict.json", "junit.xml")

# Every command of a run reads and writes the run's record, so the store URL reaches all of them,
# not only the steps the plan names it for.
RUN_WIDE_CREDENTIALS = ("store_url",)
STORE_URL_FILE_ENV = "LLMGATE_STORE_URL_FILE"  # names the mounted file that holds the store URL
REGISTRY_USERNAME_ENV = "LLMGATE_REGISTRY_USERNAME"  # a name, not a secret; beside the password
INVOCATION_ENV = "LLMGATE_CI_INVOCATION"  # differs per call, so `new-run` is never a cached exec

# GPUs. The dagger CLI starts the GPU variant of its engine (`--gpus all`) only when this variable is set
# (cmd/dagger/engine.go); an engine started without it refuses every container that asks for GPUs with
# ENGINE_NO_GPU_SUPPORT (core/container_exec.go, engine v0.21.x).
GPU_SUPPORT_ENV = "_EXPERIMENTAL_DAGGER_GPU_SUPPORT"
ENGINE_NO_GPU_SUPPORT = "GPU support is not enabled, set _EXPERIMENTAL_DAGGER_GPU_SUPPORT"


def no_gpus(engine_message: str) -> InfraError:
    """The error `dagger call run` ends with when it asked for GPUs and the engine has none to give."""
    first = (engine_message.strip().splitlines() or ["no reason given"])[0][:500]
    if ENGINE_NO_GPU_SUPPORT in engine_message:
        why = f"the Dagger engine was started without GPU support ({first})"
    else:
        why = f"the Dagger engine could not give a container the runner's GPUs ({first})"
    return InfraError(why, where="--gpus",
                      hint=f"on a GPU runner, set {GPU_SUPPORT_ENV}=1 for the dagger CLI (it then starts its GPU "
                           "engine); on a CPU runner, call `dagger call run --gpus=false …`")


# Secret ids the module accepts for image builds: the ids the Dockerfiles mount.
BUILD_SECRET_IDS = ("ca_bundle", "pip_conf")

_SECRET_MOUNT = re.compile(r"--mount=[^\s]*type=secret[^\s]*")
_ID = re.compile(r"(?:^|,)id=([A-Za-z0-9_.\-]+)")
_REQUIRED = re.compile(r"(?:^|,)required(?:=true)?(?:,|$)")


# -- the plan, in the pieces the module runs it in -----------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """Consecutive steps of the dagger plan that one `llmgate` command runs through the Runner's step loop.

    The plan is cut only where the server must come up or go down: boot measures the load time from its
    own start, so the GPU service is started right before the segment that boots it, not minutes earlier
    while the supply-chain checks run, and it is stopped once the steps that talk to it are done.
    Promotion, when asked for, is `llmgate promote` (the Runner's promote step with its backend).
    """

    steps: tuple[Step, ...]
    server: bool = False  # the GPU service is started for it and bound as SERVER_ALIAS
    promote: bool = False

    @property
    def stages(self) -> list[str]:
        return [str(s.stage) for s in self.steps]

    @property
    def name(self) -> str:
        return "promote" if self.promote else "run " + ",".join(self.stages)


def segments(*, promote: bool) -> list[Segment]:
    """The dagger plan's steps in order, in segments; a step run only on request (promotion) only when asked."""
    out: list[Segment] = []
    for step in DAGGER.steps:
        if step.on_request:
            if promote:
                out.append(Segment(steps=(step,), promote=True))
            continue
        server = uses_server(step)
        last = out[-1] if out else None
        if last is not None and not last.promote and last.server == server:
            out[-1] = Segment(steps=(*last.steps, step), server=server)
        else:
            out.append(Segment(steps=(step,), server=server))
    for seg in out:  # a group the Runner runs side by side is never split between two commands
        for other in out:
            if other is not seg and {s.group for s in seg.steps if s.group} & {s.group for s in other.steps if s.group}:
                raise ValueError(f"the dagger plan's group is split between {seg.name} and {other.name}")
    return out


def uses_server(step: Step) -> bool:
    """Boot measures the server and the steps marked `server` talk to it: they get the binding."""
    return step.server or step.stage == Stage.BOOT


def credentials() -> list[Credential]:
    """Every credential the dagger plan reads: each is a `dagger.Secret` argument of the module."""
    return DAGGER.credentials()


def segment_credentials(segment: Segment) -> list[Credential]:
    """The credentials one segment's command gets: what its steps read (run-wide ones are wired once
    for every command)."""
    names = dict.fromkeys(n for s in segment.steps for n in s.credentials if n not in RUN_WIDE_CREDENTIALS)
    return [CREDENTIALS[n] for n in names]


def run_wide_credentials() -> list[Credential]:
    return [CREDENTIALS[n] for n in RUN_WIDE_CREDENTIALS]


def continues(exit_code: int) -> bool:
    """Whether the run goes on after a segment exited with `exit_code`: only after 0. The Runner stopped
    the segment at a failed step (3) or refused its input (2); a blocked gate (1) ends the run too, and
    promotion never follows it."""
    return exit_code == 0


# -- commands inside the tool container ---------------------------------------------------------------
def _llmgate() -> list[str]:
    return ["llmgate", "--workdir", STATE]


def new_run_command(image: str, *, tag: str = "", target: str = "") -> list[str]:
    """Start the run for the published digest; `llmgate new-run` prints the run id (last line)."""
    argv = [*_llmgate(), "new-run", "--image", require_digest(image), "--model-dir", MODELS]
    if tag:
        argv += ["--tag", tag]
    if target:
        argv += ["--target", target]
    return argv + ["--plan", DAGGER.name]


def segment_command(segment: Segment, run_id: str, *, target: str = "") -> list[str]:
    """`llmgate run --run ID --only …` (the Runner's step loop over the segment's steps), or `llmgate
    promote` for the promotion step."""
    run_id = check_run_id(run_id, where="llmgate new-run")
    if segment.promote:
        if not target:
            raise BadInput("promotion needs a target", where="--target")
        kubeconfig = CREDENTIALS["kubeconfig"].file
        assert kubeconfig is not None
        return [*_llmgate(), "promote", "--run", run_id, "--target", target, "--kubeconfig", kubeconfig]
    argv = [*_llmgate(), "run", "--run", run_id]
    for stage in segment.stages:
        argv += ["--only", stage]
    return argv + (["--server-url", server_url()] if segment.server else [])


def export_command(run_id: str) -> list[str]:
    return [*_llmgate(), "export", "--run", check_run_id(run_id, where="llmgate new-run"), "--out", OUT]


def expected_export_files(run_json: str | None) -> tuple[str, ...]:
    """What the export of this run must hold: every file once its gates judged it, else the record and the
    pages that say why it stopped. No run.json at all: everything is expected (and missing)."""
    if run_json is None:
        return EXPORT_FILES
    try:
        run = RunRecord.model_validate_json(run_json)
    except ValueError as exc:
        raise InfraError(f"`llmgate export` wrote a run.json that is not a run record: {exc}", where=OUT) from None
    return EXPORT_FILES if run.gates else tuple(f for f in EXPORT_FILES if f not in VERDICT_FILES)


def missing_export_files(entries: list[str], expected: tuple[str, ...] = EXPORT_FILES) -> list[str]:
    """The expected export files `llmgate export` did not write at the root of OUT."""
    present = {e.rstrip("/") for e in entries}
    return [f for f in expected if f not in present]


def parse_run_id(stdout: str) -> str:
    """The run id `llmgate new-run` printed: its last non-empty line."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        raise BadInput("`llmgate new-run` printed no run id", where="llmgate new-run")
    return check_run_id(lines[-1], where="llmgate new-run")


MODEL_DIGEST_ENV = "LLMGATE_MODEL_DIGEST"
_MODEL_LINE = re.compile(r"model (sha256:[0-9a-f]{64})")


def parse_model_digest(stdout: str) -> str:
    """The weights digest `llmgate new-run` printed (`model sha256:…`): the serving container is given it, and
    its entrypoint checks the mounted weights against it before the server starts."""
    for line in stdout.splitlines():
        found = _MODEL_LINE.fullmatch(line.strip())
        if found:
            return found.group(1)
    raise BadInput("`llmgate new-run` printed no model digest", where="llmgate new-run")


def server_url() -> str:
    return f"http://{SERVER_ALIAS}:{SERVER_PORT}"


def describe(argv: list[str]) -> str:
    """A command line as a shell would show it (for messages)."""
    return shlex.join(argv)


# -- images -------------------------------------------------------------------------------------------
def dockerfile_secret_ids(text: str) -> dict[str, bool]:
    """Secret ids a Dockerfile mounts, with whether the mount says `required`."""
    ids: dict[str, bool] = {}
    for mount in _SECRET_MOUNT.findall(text):
        spec = mount.removeprefix("--mount=")
        m = _ID.search(spec)
        if m:
            ids[m.group(1)] = ids.get(m.group(1), False) or bool(_REQUIRED.search(spec))
    return ids


def match_build_secrets(dockerfile_name: str, text: str, provided: dict[str, object | None]) -> dict[str, object]:
    """The provided secrets the Dockerfile mounts, keyed by its ids; a required one missing is an error.

    BuildKit mounts a Dagger secret under its *name*, so the module names each secret after the id the
    Dockerfile asks for; a secret the Dockerfile never mounts is not passed.
    """
    wanted = dockerfile_secret_ids(text)
    unknown = set(provided) - set(BUILD_SECRET_IDS)
    if unknown:
        raise BadInput(f"unknown build secret(s) {sorted(unknown)}; known: {list(BUILD_SECRET_IDS)}")
    for sid, required in wanted.items():
        if required and provided.get(sid) is None:
            raise BadInput(f"Dockerfile requires secret id '{sid}' but it was not given", where=dockerfile_name)
    return {sid: s for sid, s in provided.items() if s is not None and sid in wanted}


def parse_build_args(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"build arg must be KEY=VALUE, got {item!r}", where="--build-arg")
        if re.search(r"(?i)(pass|secret|token|key|cred)", key):
            raise BadInput(f"build arg {key!r} looks like a credential: pass it as a secret", where="--build-arg")
        out[key] = value
    return out


def require_digest(ref: str, *, where: str = "image") -> str:
    """`repo@sha256:…`; a tag is refused so that nothing downstream trusts a mutable name."""
    try:
        image = ImageRef.parse(ref)
    except ValueError as exc:  # a malformed digest
        raise BadInput(f"{ref!r} is not an image reference: {exc}", where=where) from None
    if not image.digest:
        raise BadInput(f"{ref!r} is not pinned by digest (repo@sha256:…)", where=where)
    return image.by_digest


def pinned(ref: str, *, where: str) -> str:
    """`ref` unchanged (its tag kept as a label) if it is pinned by digest, else BadInput."""
    require_digest(ref, where=where)
    return ref


def image_tag(address: str) -> str:
    """The tag of `repo[:tag]` (empty when there is none), kept on the run as a label."""
    return ImageRef.parse(address).tag or ""
