"""Stage `build`: BuildKit build with secrets, push, and the digest the registry reports.

From here on the run is identified by `repository@sha256:…`; the tag is only a label. The digest is
read back from the registry and checked against the image id the build produced (the config
digest), so a tag moved by someone else between push and read cannot slip a different image in.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.adapters.docker_build import BuildSpec, DockerBuilder
from pipeline.adapters.registry import RegistryClient, split_repository
from pipeline.baselock import require_lock
from pipeline.build_secrets import load_build_secrets, secret_files
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput, InfraError
from pipeline.models import DIGEST_RE, Artifact, RunRecord, StageResult, StageStatus
from pipeline.progress import NullReporter, Reporter
from pipeline.stack import engine_version
from pipeline.workspace import Workspace

WHEEL_DIR = ".whl"


class BuildDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dockerfile: str
    context: str
    base_image: str | None = None  # the digest-pinned base the Dockerfile was built FROM
    image: str  # repository:tag as built
    image_id: str | None = None
    digest: str | None = None
    cli: str = ""
    cli_mode: str = ""
    build_s: float = 0.0
    push_s: float = 0.0
    secret_ids: list[str] = Field(default_factory=list)
    build_arg_names: list[str] = Field(default_factory=list)
    staged_wheels: list[str] = Field(default_factory=list)


def default_tag(context: Path) -> str:
    try:
        r = subprocess.run(["git", "-C", str(context), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                           text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "dev"
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "dev"


def build_args_for(cfg: PipelineConfig) -> dict[str, str]:
    """The build args a build of `cfg` passes: BASE_IMAGE from the base lock, then the configured ones.

    The Dockerfile policy takes these to resolve `FROM ${BASE_IMAGE}`."""
    args: dict[str, str] = {}
    lock_path = Path(cfg.stack.lock_file)
    if lock_path.exists() or "BASE_IMAGE" not in cfg.build.build_args:
        args["BASE_IMAGE"] = require_lock(lock_path).ref
    args.update(cfg.build.build_args)
    base = args.get("BASE_IMAGE", "")
    if "@" in base and not DIGEST_RE.match(base.rsplit("@", 1)[1]):
        raise BadInput(f"BASE_IMAGE must be pinned by digest (…@sha256:<64 hex>), got {base!r}",
                       where="build.build_args.BASE_IMAGE")
    if base and "@" not in base:
        raise BadInput(f"BASE_IMAGE must be pinned by digest (…@sha256:<64 hex>), got {base!r}",
                       where="build.build_args.BASE_IMAGE")
    return args


def stage_wheels(cfg: PipelineConfig, context: Path) -> list[str]:
    """Mirror the selected wheels into `<context>/.whl/` (hard links where possible).

    The directory always exists afterwards, since the Dockerfile bind-mounts it."""
    dest = context / WHEEL_DIR
    dest.mkdir(exist_ok=True)
    wanted: dict[str, Path] = {}
    src_dir = Path(cfg.build.wheelhouse) if cfg.build.wheelhouse else None
    if src_dir is not None and src_dir.is_dir():
        for p in sorted(src_dir.iterdir()):
            if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in cfg.build.wheels):
                wanted[p.name] = p
    for p in dest.iterdir():
        if p.name not in wanted:
            p.unlink()
    for name, src in wanted.items():
        target = dest / name
        if target.exists() and target.stat().st_size == src.stat().st_size:
            continue
        target.unlink(missing_ok=True)
        try:
            os.link(src, target)
        except OSError:  # another filesystem
            shutil.copy2(src, target)
    return sorted(wanted)


def _image_bytes(reg: RegistryClient, name: str, digest: str) -> tuple[int, str]:
    m = reg.image_manifest(name, digest)
    return m.total_bytes, m.config_descriptor.get("digest", "")


def build_stage(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    builder: DockerBuilder | None = None,
    registry: RegistryClient | None = None,
) -> StageResult:
    result = StageResult(stage="build", status=StageStatus.OK)
    bc = cfg.build
    dockerfile, context = Path(bc.dockerfile), Path(bc.context)
    if not dockerfile.is_file():
        raise BadInput("Dockerfile not found", where=f"build.dockerfile: {dockerfile}")
    if not context.is_dir():
        raise BadInput("build context is not a directory", where=f"build.context: {context}")
    host, name = split_repository(bc.repository)
    engine_version()  # a missing engine is an exact hint now, not a CLI error after staging
    build_args = build_args_for(cfg)
    secrets = load_build_secrets(bc)
    for key, value in build_args.items():
        for sid, secret in secrets.items():
            if value and (value.encode() in secret or secret.strip() in value.encode()):
                raise BadInput(f"build arg {key} carries the value of secret '{sid}'; build args are baked into "
                               "the image history, pass it with --secret instead", where=f"build.build_args.{key}")
    builder = builder or DockerBuilder()
    tag = bc.tag or run.image.tag or default_tag(context)
    image = f"{bc.repository}:{tag}"
    staged = stage_wheels(cfg, context)
    details = BuildDetails(dockerfile=str(dockerfile), context=str(context), base_image=build_args.get("BASE_IMAGE"),
                           image=image, cli=builder.cli.path, cli_mode=builder.cli.mode, secret_ids=sorted(secrets),
                           build_arg_names=sorted(build_args), staged_wheels=staged)
    reporter.step(f"build {image} from {dockerfile} ({builder.cli.mode} BuildKit via {builder.cli.path})")
    with secret_files(bc, secrets) as files:
        spec = BuildSpec(dockerfile=dockerfile, context=context, image=image, build_args=build_args,
                         secret_files=files, network=bc.network, target=bc.target, timeout_s=bc.timeout_s,
                         labels={"org.opencontainers.image.revision": default_tag(context)})
        outcome = builder.build(spec, reporter.step)
    run_dir = ws.run_dir(run.run_id)
    log_path = run_dir / "build.log"
    log_path.write_text("\n".join(outcome.log) + "\n")
    result.artifacts.append(Artifact(name="build-log", path=str(log_path), media_type="text/plain",
                                     sha256=hashlib.sha256(log_path.read_bytes()).hexdigest()))
    details.build_s = round(outcome.duration_s, 3)
    details.image_id = outcome.image_id
    result.metrics["build_s"] = details.build_s
    if not outcome.ok:
        result.status = StageStatus.FAILED
        result.reason = f"docker build failed (exit {outcome.returncode}): {outcome.error}"
        result.details = details.model_dump(mode="json")
        return result.finish()

    reporter.step(f"push {image}")
    t0 = time.monotonic()
    builder.push(image, reporter.step, timeout_s=bc.push_timeout_s)
    details.push_s = round(time.monotonic() - t0, 3)
    reg = registry or RegistryClient(host)
    try:
        digest = reg.resolve(name, tag)
        if digest is None:
            raise InfraError("pushed, but the registry does not list the tag", where=f"{bc.repository}:{tag}")
        size, config_digest = _image_bytes(reg, name, digest)
    finally:
        if registry is None:
            reg.close()
    if outcome.image_id and outcome.image_id.startswith("sha256:") and config_digest != outcome.image_id:
        raise InfraError(f"registry's {tag} points at config {config_digest}, not the image just built "
                         f"({outcome.image_id}); the tag moved under us", where=f"{bc.repository}:{tag}")
    details.digest = digest
    run.image.repository = bc.repository
    run.image.tag = tag
    run.image.digest = digest
    result.metrics["image_bytes"] = float(size)
    result.metrics["push_s"] = details.push_s
    result.details = details.model_dump(mode="json")
    reporter.step(f"built {bc.repository}@{digest} ({size / 1e6:.0f} MB compressed)")
    return result.finish()
