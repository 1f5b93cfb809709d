"""The build stage on the real engine and registry: the CPU image built with BuildKit secrets,
pushed, identified by the registry's digest; bad build inputs refused before anything runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.adapters.registry import RegistryClient, split_repository
from pipeline.config import PipelineConfig, SecretSource
from pipeline.errors import BadInput
from pipeline.models import DIGEST_RE, ImageRef, RunRecord, StageStatus
from pipeline.schemas import BuildDetails
from pipeline.stages.build import build_args_for, build_stage
from pipeline.workspace import Workspace
from tests.stage_helpers import stage_ctx

REPO = Path(__file__).resolve().parents[1]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()


@pytest.mark.docker
@pytest.mark.slow
def test_cpu_image_is_built_pushed_and_named_by_registry_digest(built_cpu_image, local_stack):
    run = built_cpu_image.run
    res = run.stages["build"]
    assert res.status is StageStatus.OK, res.reason
    assert DIGEST_RE.match(run.image.digest or "")
    _host, name = split_repository(run.image.repository)
    with RegistryClient(local_stack.registry) as reg:
        assert reg.resolve(name, "pytest-cpu") == run.image.digest
        manifest = reg.image_manifest(name, run.image.digest)
        _raw, config = reg.config(manifest, name)
    # The digest the run holds names exactly the image the build produced.
    details = res.details_as(BuildDetails)
    assert details is not None and details.digest == run.image.digest
    assert details.image_id == manifest.config_descriptor["digest"]
    assert res.metrics["image_bytes"] == manifest.total_bytes > 100e6  # torch is in there
    assert res.metrics["build_s"] > 0
    assert details.base_image == local_stack.base_ref
    assert sorted(details.secret_ids) == ["ca_bundle", "pip_conf"]
    assert details.dockerfile_sha256 == hashlib.sha256((REPO / "dockerfiles/cpu.Dockerfile").read_bytes()).hexdigest()
    cc = config["config"]
    assert cc["User"] == "llm:llm"
    assert "MODEL_PATH=/models" in cc["Env"]
    assert cc["Entrypoint"] == ["llmgate-serve"]
    assert cc["Healthcheck"]["Test"] == ["CMD", "llmgate-ready"]
    # The build log is an artifact, redacted: the token never reaches it.
    log = Path(res.artifacts[0].path).read_text()
    token = built_cpu_image.secrets["pip_conf"].decode().split("token: ")[1].strip()
    assert "pip install" in log and token not in log


@pytest.mark.docker
@pytest.mark.slow
def test_image_has_serving_stack_and_no_weights(built_cpu_image, docker_engine):
    ref = built_cpu_image.run.image.by_digest
    script = (
        "import transformers, torch, fastapi, os, sys;"
        "assert transformers.__version__ == '5.23.0', transformers.__version__;"
        "assert torch.__version__.endswith('+cpu'), torch.__version__;"
        "weights = [f for r, _, fs in os.walk('/') if not r.startswith(('/proc', '/sys'))"
        " for f in fs if f.endswith(('.safetensors', '.gguf'))];"
        "print(os.getuid(), len(weights))"
    )
    out = docker_engine.containers.run(ref, ["-c", script], entrypoint="python", remove=True, network_mode="none")
    uid, n_weights = out.decode().split()
    assert uid == "10001" and n_weights == "0"


@pytest.mark.docker
def test_entrypoint_without_model_fails_clearly(built_cpu_image, docker_engine):
    import docker

    c = docker_engine.containers.run(built_cpu_image.run.image.by_digest, detach=True, network_mode="none")
    try:
        assert c.wait(timeout=60)["StatusCode"] == 2
        assert b"no model at MODEL_PATH=/models" in c.logs()
    finally:
        try:
            c.remove(force=True)
        except docker.errors.APIError:
            pass


def _cfg(tmp_path: Path, **build_args: str) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.stack.lock_file = str(REPO / "dockerfiles/base.lock.json")
    cfg.build.build_args = dict(build_args)
    return cfg


def test_base_image_must_be_pinned_by_digest(tmp_path):
    with pytest.raises(BadInput) as exc:
        build_args_for(_cfg(tmp_path, BASE_IMAGE="127.0.0.1:5000/llmgate/base:bookworm"))
    assert exc.value.where == "build.build_args.BASE_IMAGE"


def test_base_image_comes_from_the_lock(tmp_path):
    lock = json.loads((REPO / "dockerfiles/base.lock.json").read_text())
    args = build_args_for(_cfg(tmp_path))
    assert args["BASE_IMAGE"] == f"{lock['repository']}@{lock['digest']}"


@pytest.mark.docker
def test_build_arg_carrying_a_secret_is_refused(tmp_path, local_stack):
    secret = tmp_path / "token"
    secret.write_text("tok-" + "x7" * 16)
    cfg = _cfg(tmp_path, HF_TOKEN=secret.read_text())
    cfg.build.secrets = {"hf": SecretSource(file=str(secret))}
    run = RunRecord(image=ImageRef(repository=cfg.build.repository))
    with pytest.raises(BadInput) as exc:
        build_stage(run, stage_ctx(cfg, Workspace(tmp_path / "ws")))
    assert exc.value.where == "build.build_args.HF_TOKEN"
    assert secret.read_text() not in exc.value.render()


@pytest.mark.parametrize(("value", "refused"), [
    ("1", False),  # DEBUG=1 must not count as the CA bundle's value (a "1" occurs in any bundle)
    ("production", False),
    ("tok-" + "x7" * 16, True),  # the whole secret
    ("prefix-tok-" + "x7" * 16 + "-suffix", True),  # the secret inside a longer value
    ("x7" * 16, True),  # a long part of the secret
])
def test_build_args_are_compared_with_secrets_by_meaningful_parts(value, refused):
    from pipeline.stages.build import _check_build_args

    secrets = {"hf": b"tok-" + b"x7" * 16 + b"\n", "ca_bundle": CA_BUNDLE}
    if refused:
        with pytest.raises(BadInput) as exc:
            _check_build_args({"ARG": value}, secrets)
        assert exc.value.where == "build.build_args.ARG"
    else:
        _check_build_args({"ARG": value}, secrets)


def test_unreadable_secret_file_names_the_field(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.build.secrets = {"ca_bundle": SecretSource(file=str(tmp_path / "missing.crt"))}
    from pipeline.build_secrets import load_build_secrets

    with pytest.raises(BadInput) as exc:
        load_build_secrets(cfg.build)
    assert exc.value.where == "build.secrets.ca_bundle.file"
