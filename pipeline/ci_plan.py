"""What the Dagger module runs, decided here so that the module stays a thin shell.

The module only wires containers, secrets and services together; every decision (which secret ids a
Dockerfile wants, which tool image and flags, which `llmgate` command runs a stage inside the tool
container, whether a reference is a digest) is a plain function here, tested without an engine.
This module imports nothing heavy: the Dagger runtime installs `llmgate` without its extras.
"""

from __future__ import annotations

import re
import shlex

from pipeline.errors import BadInput
from pipeline.models import ImageRef

# Tool images pinned by digest: the same bytes on every CI run, bumped deliberately.
# The tool image (dockerfiles/llmgate.Dockerfile) copies trivy and cosign out of these pinned images.
TRIVY_IMAGE = "aquasec/trivy:0.69.3@sha256:bcc376de8d77cfe086a917230e818dc9f8528e3c852f7b1aff648949b6258d1c"
COSIGN_IMAGE = (
    "gcr.io/projectsigstore/cosign:v3.0.6@sha256:de9c65609e6bde17e6b48de485ee788407c9502fa08b8f4459f595b21f56cd00"
)
TOOL_DOCKERFILE = "dockerfiles/llmgate.Dockerfile"
SERVER_DOCKERFILE = "dockerfiles/vllm.cuda.Dockerfile"
SERVER_PORT = 8000
SERVER_ALIAS = "llm"
TRIVY_CACHE_VOLUME = "llmgate-trivy-db"
WORK = "/work"  # where the tool container keeps the run record and reports
RUN_FILE = f"{WORK}/run.json"
TRIVY_CACHE_DIR = f"{WORK}/.llmgate/cache/trivy"

# Secret ids the module accepts for builds, mapped from the module's argument names.
BUILD_SECRET_IDS = ("pip_credentials", "ca_bundle", "pip_conf")

_SECRET_MOUNT = re.compile(r"--mount=[^\s]*type=secret[^\s]*")
_ID = re.compile(r"(?:^|,)id=([A-Za-z0-9_.\-]+)")
_REQUIRED = re.compile(r"(?:^|,)required(?:=true)?(?:,|$)")


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
    """The provided secrets the Dockerfile uses, keyed by its ids; a required one missing is an error.

    BuildKit mounts a Dagger secret under its *name*, so the module names each secret after the id the
    Dockerfile asks for (`dag.set_secret(id, …)`); a secret the Dockerfile never mounts is not passed.
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
    image = ImageRef.parse(ref)
    if not image.digest:
        raise BadInput(f"{ref!r} is not pinned by digest (repo@sha256:…)", where=where)
    return image.by_digest


def new_run_command(image: str, *, tag: str = "", target: str = "default") -> list[str]:
    """Start a run record for an image built elsewhere (by Dagger's BuildKit), identified by digest."""
    argv = ["llmgate", "--workdir", f"{WORK}/.llmgate", "new-run", "--image", require_digest(image), "--out", RUN_FILE]
    return argv + (["--tag", tag] if tag else []) + ["--target", target]


def stage_command(stage: str, *, run: str = RUN_FILE, url: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The `llmgate` command that runs one stage inside the tool container (it rewrites `run` in place)."""
    argv = ["llmgate", "--workdir", f"{WORK}/.llmgate", stage, "--run", run]
    if url is not None:
        argv += ["--url", url]
    return argv + list(extra or [])


def server_url() -> str:
    return f"http://{SERVER_ALIAS}:{SERVER_PORT}"


def describe(argv: list[str]) -> str:
    return shlex.join(argv)
