"""Finding a `docker` command line that can run BuildKit builds, and the engine behind it.

Secrets by id (`--secret id=…,src=…`, `RUN --mount=type=secret`) need BuildKit. A client with the
buildx plugin does that with `docker buildx build`; a classic client before 23.0 does it with
`DOCKER_BUILDKIT=1 docker build`; a client from 23.0 on without buildx cannot do it at all. Several
clients may be on PATH (a distribution's and a newer static one), so each is probed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InfraError

# DOCKER_HOST/DOCKER_CONFIG/... must reach the CLI; nothing else from the caller's environment is needed,
# and keeping the environment small keeps secrets held in env vars away from child processes.
_PASS_ENV = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
             "XDG_RUNTIME_DIR", "TMPDIR", "LANG", "LC_ALL")


@dataclass(frozen=True)
class DockerCli:
    path: str
    client_version: str
    mode: str  # "buildx" or "classic"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _PASS_ENV}
        if self.mode == "classic":
            env["DOCKER_BUILDKIT"] = "1"
        env.setdefault("BUILDKIT_PROGRESS", "plain")
        return env

    def build_argv(self) -> list[str]:
        return [self.path, "buildx", "build", "--load"] if self.mode == "buildx" else [self.path, "build"]

    def run(self, *args: str, timeout: float = 120, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [self.path, *args], env=self.env(), capture_output=True, timeout=timeout, input=input, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"`docker {args[0]}` did not finish in {timeout:.0f}s", where=self.path) from exc


def _candidates() -> list[str]:
    seen: list[str] = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = Path(d) / "docker"
        if p.is_file() and os.access(p, os.X_OK):
            real = str(p.resolve())
            if real not in [str(Path(s).resolve()) for s in seen]:
                seen.append(str(p))
    return seen


def _client_version(path: str) -> str | None:
    try:
        r = subprocess.run([path, "version", "--format", "{{.Client.Version}}"], capture_output=True, timeout=20,
                           env={k: v for k, v in os.environ.items() if k in _PASS_ENV}, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # The client part prints even when the engine is down (exit 1 then), so rc is not checked.
    text = r.stdout.decode(errors="replace").strip().splitlines()
    return text[0].strip() if text else None


def _has_buildx(path: str) -> bool:
    try:
        r = subprocess.run([path, "buildx", "version"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def find_docker_cli() -> DockerCli:
    """The first docker CLI on PATH that can run a BuildKit build, or an error that says why none can."""
    problems: list[str] = []
    candidates = _candidates()
    if not shutil.which("docker") or not candidates:
        raise InfraError(
            "no `docker` command line on PATH",
            where="PATH",
            hint="Debian: `apt-get install docker.io` (or `llmgate stack up --install` as root)",
        )
    for path in candidates:
        version = _client_version(path) or "?"
        if _has_buildx(path):
            return DockerCli(path=path, client_version=version, mode="buildx")
        if version != "?" and _major(version) < 23:
            return DockerCli(path=path, client_version=version, mode="classic")
        problems.append(f"{path} (client {version}) has no buildx plugin, and from 23.0 on DOCKER_BUILDKIT=1 needs it")
    raise InfraError(
        "no docker CLI on PATH can run a BuildKit build: " + "; ".join(problems),
        where="PATH",
        hint="install the buildx plugin (Debian: `apt-get install docker-buildx`, Docker's repo: "
        "docker-buildx-plugin) or put a classic client (< 23.0, e.g. Debian bookworm's docker.io) first on PATH",
    )
