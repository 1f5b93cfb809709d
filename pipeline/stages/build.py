"""Stage `build`: BuildKit build with secrets, push, and the digest the registry reports.

From here on the run is identified by `repository@sha256:…`; the tag is only a label. The digest is
read back from the registry and checked against the image id the build produced (the config
digest), so a tag moved by someone else between push and read cannot slip a different image in.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from pipeline.adapters.docker_build import BuildSpec
from pipeline.adapters.git import source_tree
from pipeline.adapters.registry import OciRegistry, split_repository
from pipeline.baselock import require_lock
from pipeline.build_secrets import load_build_secrets, secret_files
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput, InfraError, LlmgateError, names_its_limit
from pipeline.metrics import Metric
from pipeline.models import DIGEST_RE, Artifact, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas import BuildDetails
from pipeline.stack import engine_version
from pipeline.stages.context import StageContext, StageOptions
from pipeline.stages.spec import EVIDENCE, StageSpec, Variant, file_sha

WHEEL_DIR = ".whl"


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


def _image_bytes(reg: OciRegistry, name: str, digest: str) -> tuple[int, str]:
    m = reg.image_manifest(name, digest)
    return m.total_bytes, m.config_descriptor.get("digest", "")


_MIN_SECRET_PART = 8  # shorter strings occur by chance in any large secret file (a CA bundle holds "1")


def _check_build_args(build_args: dict[str, str], secrets: dict[str, bytes]) -> None:
    """A build arg is baked into the image history: refuse one that carries a secret or a part of one.

    A part is a whitespace-, `=`- or `:`-separated token of a secret of at least 8 characters, so
    `DEBUG=1` is not refused because a certificate bundle contains a "1"."""
    for key, value in build_args.items():
        raw = value.encode().strip()
        if not raw:
            continue
        for sid, secret in secrets.items():
            tokens = {t for t in re.split(rb"[\s=:]+", secret) if len(t) >= _MIN_SECRET_PART}
            if (len(raw) >= _MIN_SECRET_PART and raw in secret) or any(t in raw for t in tokens):
                raise BadInput(f"build arg {key} carries (part of) the value of secret '{sid}'; build args are baked "
                               "into the image history, pass it with --secret instead", where=f"build.build_args.{key}")


def check_build_inputs(cfg: PipelineConfig) -> tuple[dict[str, str], dict[str, bytes]]:
    """Everything a build reads that a person wrote, checked without side effects: the Dockerfile and
    context exist, the repository names its registry, BASE_IMAGE is pinned, every secret can be read and
    no build arg carries one. Returns the build args and the secret values."""
    bc = cfg.build
    dockerfile, context = Path(bc.dockerfile), Path(bc.context)
    if not dockerfile.is_file():
        raise BadInput("Dockerfile not found", where=f"build.dockerfile: {dockerfile}")
    if not context.is_dir():
        raise BadInput("build context is not a directory", where=f"build.context: {context}")
    split_repository(bc.repository)
    build_args = build_args_for(cfg)
    secrets = load_build_secrets(bc)
    _check_build_args(build_args, secrets)
    return build_args, secrets


def build_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    """BuildKit build with the configured secrets, push, and the digest the registry reports."""
    cfg, reporter = ctx.cfg, ctx.reporter
    result = StageResult(stage=Stage.BUILD, status=StageStatus.OK)
    bc = cfg.build
    dockerfile, context = Path(bc.dockerfile), Path(bc.context)
    build_args, secrets = check_build_inputs(cfg)
    host, name = split_repository(bc.repository)
    engine_version()  # a missing engine is an exact hint now, not a CLI error after staging
    builder = ctx.adapters.image_builder()
    tag = run.image.tag or bc.tag or "dev"  # a run created by the runner always has one
    image = f"{bc.repository}:{tag}"
    staged = stage_wheels(cfg, context)
    details = BuildDetails(dockerfile=str(dockerfile), context=str(context), base_image=build_args.get("BASE_IMAGE"),
                           image=image, cli=builder.cli.path, cli_mode=builder.cli.mode, secret_ids=sorted(secrets),
                           build_arg_names=sorted(build_args), staged_wheels=staged,
                           dockerfile_sha256=hashlib.sha256(dockerfile.read_bytes()).hexdigest())
    reporter.step(f"build {image} from {dockerfile} ({builder.cli.mode} BuildKit via {builder.cli.path})")
    with secret_files(bc, secrets) as files:
        spec = BuildSpec(dockerfile=dockerfile, context=context, image=image, build_args=build_args,
                         secret_files=files, network=bc.network, target=bc.target, timeout_s=bc.timeout_s,
                         labels={"org.opencontainers.image.revision": run.source_commit or "unknown"})
        outcome = builder.build(spec, reporter.step)
    log_path = ctx.ws.run_dir(run.run_id) / "build.log"
    log_path.write_text("\n".join(outcome.log) + "\n")
    result.artifacts.append(Artifact(name="build-log", path=str(log_path), media_type="text/plain",
                                     sha256=hashlib.sha256(log_path.read_bytes()).hexdigest()))
    details.build_s = round(outcome.duration_s, 3)
    details.image_id = outcome.image_id
    result.metrics["build_s"] = details.build_s
    if not outcome.ok:
        result.status = StageStatus.FAILED
        result.reason = (f"docker build did not finish within build.timeout_s={bc.timeout_s:g}s" if outcome.timed_out
                         else f"docker build failed (exit {outcome.returncode}): {outcome.error}")
        result.details = details
        return result

    reporter.step(f"push {image}")
    t0 = time.monotonic()
    with names_its_limit("build.push_timeout_s", bc.push_timeout_s):
        builder.push(image, reporter.step, timeout_s=bc.push_timeout_s)
    details.push_s = round(time.monotonic() - t0, 3)
    reg = ctx.adapters.registry(host)
    digest = reg.resolve(name, tag)
    if digest is None:
        raise InfraError("pushed, but the registry does not list the tag", where=f"{bc.repository}:{tag}")
    size, config_digest = _image_bytes(reg, name, digest)
    if outcome.image_id and outcome.image_id.startswith("sha256:") and config_digest != outcome.image_id:
        raise InfraError(f"registry's {tag} points at config {config_digest}, not the image just built "
                         f"({outcome.image_id}); the tag moved under us", where=f"{bc.repository}:{tag}")
    details.digest = digest
    result.metrics["image_bytes"] = float(size)
    result.metrics["push_s"] = details.push_s
    result.details = details
    reporter.step(f"built {bc.repository}@{digest} ({size / 1e6:.0f} MB compressed)")
    return result


def published_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    """The build step of a plan whose image was built and published elsewhere (Dagger's BuildKit):
    record what the registry holds under the run's digest, so later stages and gates read one shape."""
    cfg = ctx.cfg
    if run.image.digest is None:
        raise BadInput(f"run {run.run_id} names no image digest", where="--image",
                       hint="create the run with `llmgate new-run --image REPO@sha256:…`")
    host, name = split_repository(run.image.repository)
    size, _config = _image_bytes(ctx.adapters.registry(host), name, run.image.digest)
    dockerfile = Path(cfg.build.dockerfile)
    details = BuildDetails(
        dockerfile=str(dockerfile), context=cfg.build.context,
        base_image=build_args_for(cfg).get("BASE_IMAGE") if Path(cfg.stack.lock_file).exists() else None,
        image=run.image.by_tag, digest=run.image.digest, cli="published", cli_mode="external",
        secret_ids=sorted(cfg.build.secrets), build_arg_names=sorted(cfg.build.build_args),
        dockerfile_sha256=hashlib.sha256(dockerfile.read_bytes()).hexdigest() if dockerfile.is_file() else None,
    )
    return StageResult(stage=Stage.BUILD, status=StageStatus.OK, metrics={"image_bytes": float(size)},
                       details=details, reason=f"published elsewhere; {size / 1e6:.0f} MB compressed in the registry")


def reuse_key(run: RunRecord, cfg: PipelineConfig, _options: StageOptions) -> dict[str, object] | None:
    """The commit (and, for a checkout with uncommitted changes, git's tree id of the working tree, so a
    machine-local change such as the re-pinned base lock does not defeat reuse), the Dockerfile, the base
    lock and the build configuration."""
    commit = run.source_commit
    if not commit:
        return None
    tree = source_tree(Path(cfg.build.context)) if commit.endswith("-dirty") else None
    if commit.endswith("-dirty") and tree is None:
        return None
    return {"commit": commit, "tree": tree, "dockerfile": file_sha(Path(cfg.build.dockerfile)),
            "base_lock": file_sha(Path(cfg.stack.lock_file)), "build": cfg.build.model_dump(mode="json", exclude={"tag"}),
            "repository": run.image.repository}


def still_in_registry(run: RunRecord, stored: StageResult, ctx: StageContext) -> bool:
    """A reused build must still be in the registry under its digest, and answer to this run's tag
    there as a build would have made it (the same manifest put under the tag; never a rebuild)."""
    details = stored.details_as(BuildDetails)
    if details is None or details.digest is None:
        return False
    host, name = split_repository(run.image.repository)
    try:
        reg = ctx.adapters.registry(host)
        if reg.resolve(name, details.digest) != details.digest:
            return False
        tag = run.image.tag
        if tag and reg.resolve(name, tag) != details.digest:
            manifest = reg.manifest(name, details.digest)
            return reg.put_manifest(name, tag, manifest.raw, manifest.media_type) == details.digest
        return True
    except LlmgateError:
        return False


SPEC = StageSpec(
    stage=Stage.BUILD, evidence=True, run=build_stage, details=BuildDetails, digest=False,
    metrics=(Metric("build_s", "s", "lower"), Metric("image_bytes", "bytes", "lower")),
    credentials=("registry_password", *EVIDENCE), reuse_key=reuse_key, still_valid=still_in_registry, measurement=True,
    doc="BuildKit build with secrets on the local engine, push, digest from the registry",
    plans={"dagger": Variant(
        run=published_stage,
        doc="record the image Dagger built and published (digest, size, base image, Dockerfile)",
        produces=("image_bytes",),  # Dagger's BuildKit does not report build and push times
    )},
)
