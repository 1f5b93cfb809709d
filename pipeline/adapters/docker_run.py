"""Running a serving image with the Docker SDK: model dir mounted read-only, container port published
on 127.0.0.1 at a random host port, GPUs by device request, logs, stop/remove, wait for exit.

The boot stage times container start separately from create/pull, so the image pull (network) never
counts as load time. GPU facts come from the runner's `nvidia-smi`; when there is none the adapter
says so plainly instead of guessing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import BadInput, InfraError
from pipeline.redact import redact_text
from pipeline.schemas.boot import GpuInfo, GpuReport

MODEL_MOUNT = "/models"


def has_model_files(path: Path) -> bool:
    """A weights directory worth mounting: a directory holding at least one file that is not hidden."""
    try:
        return path.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in path.iterdir())
    except OSError:
        return False


def query_gpus(nvidia_smi: str | None = None, timeout_s: float = 20) -> GpuReport:
    """GPU model, driver and memory from `nvidia-smi --query-gpu`, or why there are none."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return GpuReport(reason="no GPU: nvidia-smi not found on the runner")
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=index,name,driver_version,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return GpuReport(reason=f"no GPU: nvidia-smi failed: {exc}")
    if proc.returncode != 0:
        return GpuReport(reason=f"no GPU: nvidia-smi exit {proc.returncode}: {proc.stderr.strip()[:200]}")
    return GpuReport(gpus=parse_nvidia_smi(proc.stdout))


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:  # a warning line, or "[N/A]" where the board reports nothing: not a GPU we can describe
            gpus.append(GpuInfo(index=int(parts[0]), name=parts[1], driver=parts[2], memory_mib=int(float(parts[3]))))
        except (ValueError, OverflowError):
            continue
    return gpus


def device_requests(gpus: str | int) -> list[Any]:
    """`--gpus all` / `--gpus N` as Docker SDK device requests; [] for "none"."""
    import docker.types

    if gpus in ("none", 0, None):
        return []
    count = -1 if gpus == "all" else int(gpus)
    return [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]


@dataclass
class RunSpec:
    image: str
    model_dir: Path | None = None
    container_port: int = 8000
    env: dict[str, str] = field(default_factory=dict)
    gpus: str | int = "none"
    memory: str | None = None
    name_prefix: str = "llmgate-boot"
    labels: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None


@dataclass
class Container:
    """A started container. `started_at` is perf_counter just before the engine's start call."""

    raw: Any
    name: str
    container_port: int
    started_at: float
    start_call_s: float
    host_port: int | None = None

    @property
    def id(self) -> str:
        return str(self.raw.id)

    @property
    def base_url(self) -> str:
        if self.host_port is None:
            raise InfraError("container port is not published", where=self.name)
        return f"http://127.0.0.1:{self.host_port}"

    @property
    def pid(self) -> int | None:
        """The host pid of the container's main process (None when the engine does not say), so the bench
        can tell the server's CPU time from other work on the machine."""
        try:
            self.raw.reload()
            pid = int(self.raw.attrs.get("State", {}).get("Pid") or 0)
        except Exception:  # noqa: BLE001 - only a reading for the environment check; never fatal
            return None
        return pid or None

    def state(self) -> tuple[str, int | None]:
        """("running" | "exited" | ..., exit code when exited)."""
        import docker.errors

        try:
            self.raw.reload()
        except docker.errors.NotFound:
            return "removed", None
        st = self.raw.attrs.get("State", {})
        status = st.get("Status", "unknown")
        code = st.get("ExitCode") if status in ("exited", "dead") else None
        return status, code

    def logs(self, tail: int | str = "all") -> str:
        import docker.errors

        try:
            data = self.raw.logs(stdout=True, stderr=True, tail=tail)
        except docker.errors.APIError:
            return ""
        return redact_text(data.decode(errors="replace"))

    def wait(self, timeout_s: float) -> int | None:
        """Exit code, or None if it is still running after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, code = self.state()
            if status in ("exited", "dead", "removed"):
                return code
            time.sleep(0.2)
        return None

    def stop(self, timeout_s: int = 10) -> None:
        import docker.errors

        try:
            self.raw.stop(timeout=timeout_s)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            pass

    def remove(self) -> None:
        import docker.errors

        try:
            self.raw.remove(force=True)
        except docker.errors.NotFound:
            pass


class ContainerRuntime(Protocol):
    """Pulls an image and starts a container from it (the Docker Engine API, `DockerRunner`)."""

    def ensure_image(self, image: str) -> float: ...

    def start(self, spec: RunSpec) -> Container: ...


class DockerRunner:
    """Starts serving containers on the local engine (the one `docker.from_env()` finds)."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
                self._client.ping()
            except Exception as exc:
                raise InfraError(
                    f"Docker Engine not reachable: {exc}", where="DOCKER_HOST", hint="run `llmgate stack up`"
                ) from exc
        return self._client

    def ensure_image(self, image: str) -> float:
        """Pull the image when the engine lacks it; returns the pull time (0 when present)."""
        import docker.errors

        try:
            self.client.images.get(image)
            return 0.0
        except docker.errors.ImageNotFound:
            pass
        t = time.perf_counter()
        try:
            self.client.images.pull(image)
        except docker.errors.APIError as exc:
            raise InfraError(f"cannot pull image: {exc.explanation or exc}", where=image) from exc
        return time.perf_counter() - t

    def start(self, spec: RunSpec) -> Container:
        import docker.errors

        volumes = {}
        env = dict(spec.env)
        if spec.model_dir is not None:
            model_dir = Path(spec.model_dir).resolve()
            if not has_model_files(model_dir):
                raise BadInput("no model here (the directory holds no model file)", where=str(model_dir))
            volumes[str(model_dir)] = {"bind": MODEL_MOUNT, "mode": "ro"}
            env.setdefault("MODEL_PATH", MODEL_MOUNT)
        name = f"{spec.name_prefix}-{uuid.uuid4().hex[:8]}"
        port_key = f"{spec.container_port}/tcp"
        try:
            raw = self.client.containers.create(
                spec.image,
                command=spec.command,
                name=name,
                detach=True,
                environment=env,
                volumes=volumes,
                ports={port_key: ("127.0.0.1", None)},
                device_requests=device_requests(spec.gpus),
                mem_limit=spec.memory,
                labels={"llmgate": "boot", **spec.labels},
            )
        except docker.errors.ImageNotFound as exc:
            raise InfraError("image not present on the engine", where=spec.image) from exc
        except docker.errors.APIError as exc:
            raise InfraError(f"cannot create container: {exc.explanation or exc}", where=spec.image) from exc
        t0 = time.perf_counter()
        try:
            raw.start()
        except docker.errors.APIError as exc:
            raw.remove(force=True)
            raise InfraError(f"cannot start container: {exc.explanation or exc}", where=spec.image) from exc
        c = Container(raw, name, spec.container_port, t0, time.perf_counter() - t0)
        raw.reload()
        ports = (raw.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        binding = ports.get(port_key) or []
        if binding:
            c.host_port = int(binding[0]["HostPort"])
        return c

    def remove_labelled(self, labels: dict[str, str]) -> int:
        """Stop and remove every container carrying all of `labels`; returns how many."""
        import docker.errors

        wanted = [f"{k}={v}" for k, v in labels.items()]
        removed = 0
        for raw in self.client.containers.list(all=True, filters={"label": wanted}):
            try:
                raw.remove(force=True)
                removed += 1
            except docker.errors.NotFound:
                pass
        return removed
