"""BuildKit builds and pushes through the docker CLI (subprocess).

Secrets reach the build as `--secret id=…,src=FILE`: the command line names files, never values.
A secret that comes from an environment variable is written to a private 0600 file for the
duration of the build, because `env=` secrets are not understood by every client. Output lines are
redacted before they reach the reporter or the log.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.adapters.docker_cli import DockerCli, find_docker_cli
from pipeline.errors import BadInput, InfraError
from pipeline.redact import redact_text

_STEP = re.compile(r"^#\d+ (\[|DONE|CACHED|ERROR|naming|exporting|writing)")
_SECRET_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class BuildSpec:
    dockerfile: Path
    context: Path
    image: str  # repository:tag to name the result
    build_args: dict[str, str] = field(default_factory=dict)
    secret_files: dict[str, Path] = field(default_factory=dict)  # id -> file holding the value
    network: str | None = "host"
    target: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 1800


@dataclass
class BuildOutcome:
    ok: bool
    image_id: str | None
    duration_s: float
    returncode: int
    log: list[str]  # redacted
    error: str | None = None  # the last error lines, for the stage's reason
    timed_out: bool = False  # killed at the spec's timeout


class ImageBuilder(Protocol):
    """Builds an image with BuildKit and pushes it (the docker CLI's buildx, `DockerBuilder`)."""

    @property
    def cli(self) -> DockerCli: ...

    def build(self, spec: BuildSpec, on_line: Callable[[str], None] = ...) -> BuildOutcome: ...

    def push(self, image: str, on_line: Callable[[str], None] = ..., timeout_s: float = ...) -> list[str]: ...


class DockerBuilder:
    """Build, push and remove images with the first BuildKit-capable docker CLI on PATH."""

    def __init__(self, cli: DockerCli | None = None) -> None:
        self._cli = cli

    @property
    def cli(self) -> DockerCli:
        if self._cli is None:
            self._cli = find_docker_cli()
        return self._cli

    def argv(self, spec: BuildSpec, iidfile: Path) -> list[str]:
        argv = [*self.cli.build_argv(), "--progress=plain", "-f", str(spec.dockerfile), "-t", spec.image,
                "--iidfile", str(iidfile)]
        if spec.network:
            argv += ["--network", spec.network]
        if spec.target:
            argv += ["--target", spec.target]
        for k, v in sorted(spec.build_args.items()):
            argv += ["--build-arg", f"{k}={v}"]
        for k, v in sorted(spec.labels.items()):
            argv += ["--label", f"{k}={v}"]
        for sid, path in sorted(spec.secret_files.items()):
            if not _SECRET_ID.match(sid):
                raise BadInput("secret id may hold letters, digits, '_', '.', '-' only", where=f"build.secrets.{sid}")
            argv += ["--secret", f"id={sid},src={path}"]
        argv.append(str(spec.context))
        return argv

    def build(self, spec: BuildSpec, on_line: Callable[[str], None] = lambda _l: None) -> BuildOutcome:
        with tempfile.TemporaryDirectory(prefix="llmgate-build-") as tmp:
            iidfile = Path(tmp) / "iid"
            argv = self.argv(spec, iidfile)
            t0 = time.monotonic()
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self.cli.env())
            except OSError as exc:
                raise InfraError(f"cannot run the docker CLI: {exc}", where=self.cli.path) from exc
            timed_out = threading.Event()

            def _kill() -> None:
                timed_out.set()
                proc.kill()

            timer = threading.Timer(spec.timeout_s, _kill)
            timer.start()
            log: list[str] = []
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = redact_text(raw.decode("utf-8", "replace").rstrip("\n"))
                    log.append(line)
                    if _STEP.match(line) or "error" in line.lower():
                        on_line(line)
                rc = proc.wait()
            finally:
                timer.cancel()
            duration = time.monotonic() - t0
            image_id = iidfile.read_text().strip() if rc == 0 and iidfile.exists() else None
        error = None
        if timed_out.is_set():
            error = f"build timed out after {spec.timeout_s:.0f}s"
        elif rc != 0:
            error = _engine_error(log) or " | ".join(ln for ln in log[-6:] if ln.strip())[-800:]
        return BuildOutcome(ok=rc == 0 and not timed_out.is_set(), image_id=image_id, duration_s=duration,
                            returncode=rc, log=log, error=error, timed_out=timed_out.is_set())

    def push(self, image: str, on_line: Callable[[str], None] = lambda _l: None, timeout_s: float = 1800) -> list[str]:
        r = self.cli.run("push", image, timeout=timeout_s)
        lines = [redact_text(x) for x in (r.stdout + r.stderr).decode("utf-8", "replace").splitlines()]
        for line in lines[-3:]:
            on_line(line)
        if r.returncode != 0:
            raise InfraError(f"docker push failed: {' | '.join(lines[-3:])}", where=image,
                             hint="is the registry up? `llmgate stack status`")
        return lines

    def remove(self, image: str) -> None:
        self.cli.run("rmi", image, timeout=120)


def _engine_error(log: list[str]) -> str | None:
    text = "\n".join(log[-20:])
    if "Cannot connect to the Docker daemon" in text or "error during connect" in text:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise InfraError(f"no Docker Engine reachable at {host}", where=host,
                         hint="`llmgate stack status`; `llmgate stack up --install` as root starts one")
    return None
