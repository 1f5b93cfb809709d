"""The local stack against the real engine and registry: idempotent `up`, status, registry lifecycle,
and the exact errors for a missing engine, a dead registry and a docker CLI without BuildKit."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.adapters.docker_cli import find_docker_cli
from pipeline.adapters.registry import RegistryClient
from pipeline.config import StackConfig
from pipeline.errors import InfraError
from pipeline.progress import NullReporter
from pipeline.stack import StackPaths, registry_pid, stack_down, stack_status, stack_up, start_registry

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _llmgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], check=False, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "1000", **(env or {})}, timeout=300)


@pytest.mark.docker
def test_second_up_is_a_noop(local_stack):
    lock_before = local_stack.lock_file.read_bytes()
    pid_before = registry_pid(StackPaths(local_stack.workdir))
    st = stack_up(StackConfig(), local_stack.workdir, local_stack.lock_file)
    assert st.ok
    assert st.actions == []
    assert local_stack.lock_file.read_bytes() == lock_before
    assert registry_pid(StackPaths(local_stack.workdir)) == pid_before
    assert st.base_ref == local_stack.base_ref


@pytest.mark.docker
def test_base_digest_is_in_registry_and_has_python(local_stack, docker_engine):
    name = "llmgate/base"
    with RegistryClient(local_stack.registry) as reg:
        assert reg.resolve(name, local_stack.base_digest) == local_stack.base_digest
    out = docker_engine.containers.run(local_stack.base_ref, ["python3", "-c", "import venv, ssl; print('ok')"],
                                       remove=True, network_mode="none")
    assert out.strip() == b"ok"


@pytest.mark.docker
def test_status_cli_lists_engine_registry_and_base(local_stack):
    r = _llmgate("stack", "status")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "Docker Engine" in text and "5000/v2/ answers" in text
    assert local_stack.base_digest[:20] in text.replace(" ", "")


@pytest.mark.docker
def test_registry_lifecycle_under_its_own_dir(local_stack, tmp_path):
    """A second registry on an ephemeral port: own config and data dir, pid file, stopped by `down`."""
    if shutil.which("docker-registry") is None:  # scripts/setup.sh installs it: a failure in CI
        from tests.conftest import _unavailable

        _unavailable("docker-registry not installed (Debian package docker-registry)")
    addr = f"127.0.0.1:{_free_port()}"
    paths = StackPaths(tmp_path / "ws")
    pid = start_registry(paths, addr, NullReporter())
    try:
        assert paths.registry_config.read_text().count(str(paths.registry_data.resolve())) == 1
        assert registry_pid(paths) == pid
        with RegistryClient(addr) as reg:
            assert reg.ping()
            assert reg.tags("llmgate/none") == []
    finally:
        actions = stack_down(StackConfig(registry=addr), paths.root)
    assert actions == ["stopped registry"]
    with RegistryClient(addr, timeout=2) as reg:
        assert not reg.ping()
    assert not paths.registry_pid.exists()


def test_registry_down_is_infra_error_with_hint(tmp_path):
    addr = f"127.0.0.1:{_free_port()}"  # nothing listens there
    with RegistryClient(addr, timeout=2) as reg, pytest.raises(InfraError) as exc:
        reg.require_up()
    assert exc.value.where == f"http://{addr}/v2/"
    assert "llmgate stack up" in (exc.value.hint or "")
    st = stack_status(StackConfig(registry=addr), tmp_path, tmp_path / "none.lock.json")
    assert not st.registry_ok and not st.ok
    assert "down" in st.registry


def test_missing_engine_exits_3_with_exact_hint(tmp_path):
    dead = f"unix://{tmp_path}/no-docker.sock"
    r = _llmgate("--workdir", str(tmp_path / "ws"), "stack", "up", env={"DOCKER_HOST": dead})
    assert r.returncode == 3, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert "no Docker Engine reachable" in err
    assert f"DOCKER_HOST={dead} does not answer" in err


def test_missing_engine_build_exits_3(tmp_path):
    dead = f"unix://{tmp_path}/no-docker.sock"
    weights = tmp_path / "weights"  # its own model, so the check reached is the engine's, whatever ran before
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"\0" * 64)
    r = _llmgate("--workdir", str(tmp_path / "ws"), "build", "--tag", "never", "--model-dir", str(weights),
                 env={"DOCKER_HOST": dead})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "no Docker Engine reachable" in " ".join(r.stderr.split())


def test_selected_cli_can_run_buildkit():
    if shutil.which("docker") is None:
        from tests.conftest import _unavailable

        _unavailable("no docker CLI on PATH (CI installs docker.io)")
    cli = find_docker_cli()
    assert cli.mode in ("buildx", "classic")
    if cli.mode == "classic":
        assert int(cli.client_version.split(".")[0]) < 23
        assert cli.env()["DOCKER_BUILDKIT"] == "1"


# A docker CLI from 23.0 on without the buildx plugin, as docker 28.2.2 answers (recorded from the real
# client): the client version on stdout even with no engine (exit 1), and `buildx` an unknown command.
_NEWER_CLIENT_DOUBLE = """#!/bin/sh
# TEST DOUBLE: a docker 28.2.2 client without the buildx plugin
if [ "$1" = "version" ]; then
  echo "28.2.2"
  echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
  exit 1
fi
if [ "$1" = "buildx" ]; then
  printf 'docker: unknown command: docker buildx\n\nRun '"'"'docker --help'"'"' for more information\n' >&2
  exit 1
fi
exit 1
"""


def _newer_client_without_buildx(tmp_path: Path) -> Path:
    """The real second client this machine may have at /usr/local/bin/docker when it lacks buildx, else the
    double above (a clean CI machine has only its distribution's classic client)."""
    real = Path("/usr/local/bin/docker")
    if real.exists() and subprocess.run([str(real), "buildx", "version"], capture_output=True,
                                        check=False).returncode != 0:
        return real
    double = tmp_path / "docker-28-double"
    double.write_text(_NEWER_CLIENT_DOUBLE)
    double.chmod(0o755)
    return double


def test_cli_without_buildx_is_refused_with_reason(monkeypatch, tmp_path):
    """A docker >= 23 client without buildx alone on PATH: no BuildKit build possible."""
    newer = _newer_client_without_buildx(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").symlink_to(newer)
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(InfraError) as exc:
        find_docker_cli()
    assert "has no buildx plugin" in exc.value.message and "from 23.0 on" in exc.value.message
    assert exc.value.where == "PATH" and "docker-buildx" in (exc.value.hint or "")
    assert "docker-buildx" in (exc.value.hint or "")
