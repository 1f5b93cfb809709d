"""Shared fixtures. Docker-backed tests skip locally without an engine but fail in CI,
where `.ci/run` sets LLMGATE_REQUIRE_DOCKER=1 after starting dockerd and the registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The stages declare their metrics; importing the registry installs the catalogue that policies and reports
# read when no plan hands them one (pipeline/metrics.py), as the CLI does before every command.
import pipeline.stages.registry  # noqa: F401

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A test suite run inside GitHub Actions must not annotate the job or write its summary from the runs
# the tests make; the tests of that publisher set these variables themselves.
for _var in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
    os.environ.pop(_var, None)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


def _unavailable(reason: str) -> None:
    if os.environ.get("LLMGATE_REQUIRE_DOCKER") == "1":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"shared fixtures missing at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def docker_engine():  # type: ignore[no-untyped-def]
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine here"
        _unavailable(f"Docker Engine not reachable: {exc}")
    return client


@pytest.fixture(scope="session")
def local_stack(docker_engine):  # type: ignore[no-untyped-def]
    """The real local stack (registry on 127.0.0.1:5000, seeded base), brought up via `pipeline.stack`.

    Idempotent and cheap when already up; seeding the base on a fresh machine takes about two minutes."""
    from pipeline.config import StackConfig
    from pipeline.errors import LlmgateError
    from pipeline.stack import stack_up

    cfg = StackConfig()
    try:
        st = stack_up(cfg, REPO / ".llmgate", REPO / cfg.lock_file)
    except LlmgateError as exc:
        _unavailable(f"local stack not available: {exc.render()}")
    return LocalStack(registry=cfg.registry, base_ref=st.base_ref or "", lock_file=REPO / cfg.lock_file,
                      workdir=REPO / ".llmgate")


class LocalStack:
    def __init__(self, registry: str, base_ref: str, lock_file: Path, workdir: Path) -> None:
        self.registry = registry  # "127.0.0.1:5000"
        self.base_ref = base_ref  # "127.0.0.1:5000/llmgate/base@sha256:…"
        self.lock_file = lock_file
        self.workdir = workdir

    @property
    def base_digest(self) -> str:
        return self.base_ref.rsplit("@", 1)[-1]


class BuiltImage:
    def __init__(self, run, cfg, ws, secrets: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
        self.run, self.cfg, self.ws, self.secrets = run, cfg, ws, secrets


def make_build_config(local_stack, *, repository: str, tag: str, dockerfile: Path, context: Path,  # type: ignore[no-untyped-def]
                      secret_files: dict[str, Path], wheels: bool = True):
    from pipeline.config import PipelineConfig, SecretSource

    cfg = PipelineConfig()
    cfg.stack.lock_file = str(local_stack.lock_file)
    cfg.build.repository = repository
    cfg.build.tag = tag
    cfg.build.dockerfile = str(dockerfile)
    cfg.build.context = str(context)
    cfg.build.secrets = {sid: SecretSource(file=str(p)) for sid, p in secret_files.items()}
    if not wheels:
        cfg.build.wheels = []
    return cfg


def delete_from_registry(registry: str, repository: str, digest: str | None) -> None:
    from pipeline.adapters.registry import RegistryClient, split_repository

    if digest is None:
        return
    with RegistryClient(registry) as reg:
        reg.delete_manifest(split_repository(repository)[1], digest)


@pytest.fixture(scope="session")
def built_cpu_image(local_stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The CPU image built by the real build stage with two secrets: the host CA bundle (pip needs
    it for PyPI) and a pip.conf holding a random token, used by a RUN step. Pushed to the local
    registry under a test repository; its manifest is deleted and the local tag removed afterwards."""
    import secrets as _secrets

    from pipeline.adapters.docker_build import DockerBuilder
    from pipeline.models import ImageRef, RunRecord
    from pipeline.progress import PrintReporter
    from pipeline.stages.build import build_stage
    from pipeline.workspace import Workspace
    from tests.stage_helpers import stage_ctx

    tmp = tmp_path_factory.mktemp("cpu-build")
    token = "llmgate-test-" + _secrets.token_hex(24)
    pip_conf = tmp / "pip.conf"
    # A valid pip.conf (pip parses it) whose only payload is the secret: a comment, so the build
    # does not depend on a private index while the secret is still mounted and read.
    pip_conf.write_text(f"[global]\n# private index token: {token}\n")
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    repository = f"{local_stack.registry}/llmgate/test-server"
    cfg = make_build_config(local_stack, repository=repository, tag="pytest-cpu", dockerfile=REPO / "dockerfiles/cpu.Dockerfile",
                            context=REPO, secret_files={"ca_bundle": ca, "pip_conf": pip_conf})
    ws = Workspace(tmp / "ws")
    run = RunRecord(image=ImageRef(repository=repository, tag="pytest-cpu"))
    result = build_stage(run, stage_ctx(cfg, ws, PrintReporter("test-build")))
    run.add_stage(result)
    yield BuiltImage(run, cfg, ws, {"ca_bundle": ca.read_bytes(), "pip_conf": pip_conf.read_bytes()})
    delete_from_registry(local_stack.registry, repository, run.image.digest)
    DockerBuilder().remove(f"{repository}:pytest-cpu")


# -- the results store on SQLite and on PostgreSQL ---------------------------------------------------
# `.ci/run` starts a throwaway PostgreSQL cluster (scripts/throwaway-postgres.sh), exports its URL as
# LLMGATE_TEST_POSTGRES_URL and sets LLMGATE_REQUIRE_POSTGRES=1: there, a missing server is a failure.
def _postgres_unavailable(reason: str) -> None:
    if os.environ.get("LLMGATE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def postgres_test_url() -> str:
    url = os.environ.get("LLMGATE_TEST_POSTGRES_URL", "").strip()
    if not url:
        _postgres_unavailable("no PostgreSQL for the store tests (LLMGATE_TEST_POSTGRES_URL is not set; "
                              "scripts/throwaway-postgres.sh starts one)")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):  # type: ignore[no-untyped-def]
    """A fresh, empty store as a URL (what LLMGATE_STORE_URL holds), once on SQLite and once on
    PostgreSQL. Each PostgreSQL test gets its own schema (dropped afterwards), so tests never share rows."""
    if request.param == "sqlite":
        (tmp_path / "store").mkdir()
        yield f"sqlite:///{tmp_path / 'store' / 'results.db'}"
        return
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(postgres_test_url())
    schema = f"t_{uuid.uuid4().hex[:16]}"
    conninfo = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        _postgres_unavailable(f"PostgreSQL at {base.host}:{base.port} not reachable: {exc}")
    url = base.set(drivername="postgresql").update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    try:  # a store a test left open must not hang the session: the cluster is thrown away anyway
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET lock_timeout = '5s'")
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    except psycopg.Error:
        pass
