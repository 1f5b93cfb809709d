"""The local stack: a Docker Engine, an OCI registry on loopback and a seeded Python base image.

`stack_up` is idempotent and cheap when everything is in place (an engine ping, one GET /v2/ and one
HEAD of the locked base digest), so callers (tests, `llmgate run`) may call it every time. State
lives under the workspace root: `registry/` (config, data, pid, log), `dockerd.log`, `base/`.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.adapters.registry import RegistryClient, split_repository
from pipeline.baselock import BaseLock, read_lock, write_lock
from pipeline.config import StackConfig
from pipeline.errors import BadInput, InfraError
from pipeline.process import pid_alive
from pipeline.progress import NULL_REPORTER, Reporter

APT_PACKAGES = ("docker.io", "docker-registry", "debootstrap")
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ENGINE_INSTALL_HINT = (
    "Debian, as root: `llmgate stack up --install` (apt-get install docker.io docker-registry debootstrap, "
    "then starts dockerd); elsewhere install Docker Engine (https://docs.docker.com/engine/install/) and start it"
)


@dataclass
class StackPaths:
    root: Path

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def registry_config(self) -> Path:
        return self.registry_dir / "config.yml"

    @property
    def registry_data(self) -> Path:
        return self.registry_dir / "data"

    @property
    def registry_pid(self) -> Path:
        return self.registry_dir / "registry.pid"

    @property
    def registry_log(self) -> Path:
        return self.registry_dir / "registry.log"

    @property
    def dockerd_log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def dockerd_pid(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def base_dir(self) -> Path:
        return self.root / "base"


@dataclass
class StackStatus:
    engine: str = "unknown"  # "up <version>" or "down: <why>"
    engine_ok: bool = False
    registry: str = "unknown"
    registry_ok: bool = False
    registry_addr: str = ""
    registry_pid: int | None = None  # set when this workspace started it
    base: str = "unknown"
    base_ok: bool = False
    base_ref: str | None = None
    actions: list[str] = field(default_factory=list)  # what `up` changed; empty for a no-op

    @property
    def ok(self) -> bool:
        return self.engine_ok and self.registry_ok and self.base_ok

    def rows(self) -> list[tuple[str, bool, str]]:
        return [("engine", self.engine_ok, self.engine), ("registry", self.registry_ok, self.registry),
                ("base", self.base_ok, self.base)]


# -- engine ------------------------------------------------------------------------------------------


def engine_version() -> str:
    """The engine's version, or InfraError saying exactly how to get one."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=10)
        try:
            return str(client.version().get("Version", "?"))
        finally:
            client.close()
    except DockerException as exc:
        host = os.environ.get("DOCKER_HOST")
        if host:
            hint = f"DOCKER_HOST={host} does not answer: start the engine there, or unset DOCKER_HOST"
        elif shutil.which("dockerd"):
            hint = ("dockerd is installed but not running: `llmgate stack up --install` (as root) starts it, "
                    "or `dockerd --iptables=false > .llmgate/dockerd.log 2>&1 &`")
        else:
            hint = ENGINE_INSTALL_HINT
        raise InfraError(f"no Docker Engine reachable ({_short(exc)})", where=host or "unix:///var/run/docker.sock",
                         hint=hint) from exc


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return text[:200]


def install_packages(reporter: Reporter) -> list[str]:
    """apt-get install what the stack needs (Debian, root). Returns the packages installed."""
    missing = [p for p, tool in zip(APT_PACKAGES, ("dockerd", "docker-registry", "debootstrap"), strict=True)
               if not shutil.which(tool)]
    if not missing:
        return []
    if not Path("/etc/debian_version").exists():
        raise BadInput(f"--install only knows Debian; install {', '.join(missing)} by hand", where="--install")
    if os.geteuid() != 0:
        raise BadInput(f"--install must run as root to apt-get install {', '.join(missing)}", where="--install")
    reporter.step(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for argv in (["apt-get", *lock, "update"],
                 ["apt-get", *lock, "install", "-y", "--no-install-recommends", *missing]):
        r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise InfraError(f"`{' '.join(argv)}` failed: {r.stderr.strip()[-800:]}", where="apt-get")
    # Debian's docker-registry package starts a system service on :5000 with htpasswd auth where
    # systemd runs; ours needs that port, with its own config.
    if "docker-registry" in missing and shutil.which("systemctl") and Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "disable", "--now", "docker-registry"], capture_output=True, check=False)
    return missing


def start_dockerd(paths: StackPaths, reporter: Reporter, *, wait_s: float = 60) -> None:
    if os.environ.get("DOCKER_HOST"):
        raise InfraError("not starting a local dockerd while DOCKER_HOST points elsewhere",
                         where=os.environ["DOCKER_HOST"], hint="unset DOCKER_HOST or start that engine")
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise InfraError("dockerd not installed", where="PATH", hint=ENGINE_INSTALL_HINT)
    if os.geteuid() != 0:
        raise InfraError("starting dockerd needs root", where="dockerd", hint="run `llmgate stack up --install` as root")
    reporter.step(f"starting dockerd (log {paths.dockerd_log})")
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.dockerd_log, "ab") as log:
        # No iptables: containers publish on loopback only and never need NAT here.
        proc = subprocess.Popen([dockerd, "--iptables=false"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    paths.dockerd_pid.write_text(str(proc.pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfraError(f"dockerd exited with {proc.returncode}: {_tail(paths.dockerd_log)}", where=dockerd)
        try:
            engine_version()
            return
        except InfraError:
            time.sleep(0.5)
    raise InfraError(f"dockerd did not answer within {wait_s:.0f}s: {_tail(paths.dockerd_log)}", where=dockerd)


def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


# -- registry ----------------------------------------------------------------------------------------

_REGISTRY_CONFIG = """\
# Written by `llmgate stack up`: a loopback-only registry with its own data directory.
version: 0.1
log:
  level: info
  fields:
    service: llmgate-registry
storage:
  filesystem:
    rootdirectory: {data}
  # Deleting is on (tests and benchmarks remove what they push). No blob-descriptor cache: with one, a
  # manifest pushed again after a delete answers 404 (distribution/distribution#3322).
  delete:
    enabled: true
http:
  addr: {addr}
  secret: {secret}
  headers:
    X-Content-Type-Options: [nosniff]
"""


def registry_pid(paths: StackPaths) -> int | None:
    try:
        pid = int(paths.registry_pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start_registry(paths: StackPaths, addr: str, reporter: Reporter, *, wait_s: float = 30) -> int:
    exe = shutil.which("docker-registry") or shutil.which("registry")
    if exe is None:
        raise InfraError("docker-registry not installed", where="PATH",
                         hint="Debian: `apt-get install docker-registry` (or `llmgate stack up --install` as root)")
    host = addr.rpartition(":")[0]
    if not host.startswith("127.") and host != "localhost":
        raise BadInput("the local registry binds loopback only", where="stack.registry")
    paths.registry_data.mkdir(parents=True, exist_ok=True)
    paths.registry_config.write_text(_REGISTRY_CONFIG.format(
        data=paths.registry_data.resolve(), addr=addr, secret=secrets.token_hex(16)))
    reporter.step(f"starting registry on {addr} (log {paths.registry_log})")
    with open(paths.registry_log, "ab") as log:
        proc = subprocess.Popen([exe, "serve", str(paths.registry_config.resolve())], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    paths.registry_pid.write_text(str(proc.pid))
    client = RegistryClient(addr)
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                paths.registry_pid.unlink(missing_ok=True)
                raise InfraError(f"registry exited with {proc.returncode}: {_tail(paths.registry_log)}",
                                 where=str(paths.registry_config))
            if client.ping():
                return proc.pid
            time.sleep(0.2)
    finally:
        client.close()
    raise InfraError(f"registry did not answer within {wait_s:.0f}s: {_tail(paths.registry_log)}",
                     where=f"http://{addr}/v2/")


def stop_registry(paths: StackPaths, reporter: Reporter) -> bool:
    pid = registry_pid(paths)
    if pid is None:
        paths.registry_pid.unlink(missing_ok=True)
        return False
    reporter.step(f"stopping registry (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    try:  # reap it when this process started it (tests), so no zombie keeps "alive" true
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    paths.registry_pid.unlink(missing_ok=True)
    return True


# -- base image --------------------------------------------------------------------------------------


def base_present(lock: BaseLock | None, cfg: StackConfig) -> bool:
    """The lock names the configured base, and the registry holds that digest."""
    if lock is None or lock.repository != f"{cfg.registry}/{cfg.base_repository}":
        return False
    with RegistryClient(cfg.registry) as reg:
        return reg.has_manifest(cfg.base_repository, lock.digest)


def seed_base(cfg: StackConfig, paths: StackPaths, lock_path: Path, reporter: Reporter) -> BaseLock:
    """debootstrap → tar → docker import → push; the digest the registry reports goes to the lock."""
    repository = f"{cfg.registry}/{cfg.base_repository}"
    tag = cfg.suite
    with RegistryClient(cfg.registry) as reg:
        # Another checkout on this machine may have seeded the same registry already.
        existing = reg.resolve(cfg.base_repository, tag)
    if existing is None:
        _build_and_push_base(cfg, paths, repository, tag, reporter)
        with RegistryClient(cfg.registry) as reg:
            existing = reg.resolve(cfg.base_repository, tag)
        if existing is None:
            raise InfraError("pushed the base image but the registry does not list it", where=f"{repository}:{tag}")
    else:
        reporter.step(f"registry already holds {repository}:{tag}; locking its digest")
    lock = BaseLock(repository=repository, tag=tag, digest=existing, suite=cfg.suite, packages=list(BASE_PACKAGES))
    write_lock(lock_path, lock)
    return lock


def _build_and_push_base(cfg: StackConfig, paths: StackPaths, repository: str, tag: str, reporter: Reporter) -> None:
    import docker
    from docker.errors import DockerException

    exe = shutil.which("debootstrap")
    if exe is None:
        raise InfraError("debootstrap not installed (needed once to seed the base image)", where="PATH",
                         hint="Debian: `apt-get install debootstrap` (or `llmgate stack up --install` as root)")
    if os.geteuid() != 0:
        raise InfraError("seeding the base image runs debootstrap, which needs root", where="debootstrap",
                         hint="run `llmgate stack up` once as root")
    rootfs = paths.base_dir / f"rootfs-{cfg.suite}"
    tarball = paths.base_dir / f"base-{cfg.suite}.tar"
    shutil.rmtree(rootfs, ignore_errors=True)
    paths.base_dir.mkdir(parents=True, exist_ok=True)
    log_path = paths.base_dir / "debootstrap.log"
    reporter.step(f"debootstrap {cfg.suite} (minbase + {', '.join(BASE_PACKAGES)}); log {log_path}")
    argv = [exe, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", cfg.suite, str(rootfs), DEBIAN_MIRROR]
    with open(log_path, "wb") as log:
        r = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=1200)
    if r.returncode != 0:
        raise InfraError(f"debootstrap failed ({r.returncode}): {_tail(log_path)}", where=str(log_path))
    # Package caches and lists are only weight in an image that never runs apt.
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (rootfs / sub).glob("*"):
            if p.is_file():
                p.unlink()
    reporter.step("packing rootfs")
    r = subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
                       capture_output=True, check=False)
    if r.returncode != 0:
        raise InfraError(f"tar failed: {r.stderr.decode(errors='replace')[-400:]}", where=str(rootfs))
    reporter.step(f"docker import → {repository}:{tag}")
    try:
        client = docker.from_env(timeout=600)
        client.api.import_image(
            src=str(tarball), repository=repository, tag=tag,
            changes=["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]'],
        )
        reporter.step(f"push {repository}:{tag}")
        for event in client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise InfraError(f"push failed: {event['error']}", where=f"{repository}:{tag}")
        client.close()
    except DockerException as exc:
        raise InfraError(f"import/push of the base image failed: {_short(exc)}", where=f"{repository}:{tag}") from exc
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
        tarball.unlink(missing_ok=True)


# -- the whole stack ---------------------------------------------------------------------------------


@contextmanager
def _exclusive(paths: StackPaths) -> Iterator[None]:
    """Serialise `up` between processes (parallel test sessions share one registry)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.root / "stack.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def stack_status(cfg: StackConfig, root: Path, lock_path: Path) -> StackStatus:
    paths = StackPaths(root)
    st = StackStatus(registry_addr=cfg.registry)
    try:
        st.engine = f"Docker Engine {engine_version()}"
        st.engine_ok = True
    except InfraError as exc:
        st.engine = exc.render()
    st.registry_pid = registry_pid(paths)
    with RegistryClient(cfg.registry, timeout=5) as reg:
        st.registry_ok = reg.ping()
    owner = f"pid {st.registry_pid}, data {paths.registry_data}" if st.registry_pid else "not started by this workspace"
    st.registry = f"http://{cfg.registry}/v2/ answers ({owner})" if st.registry_ok else f"http://{cfg.registry}/v2/ down"
    try:
        lock = read_lock(lock_path)
    except BadInput as exc:
        lock = None
        st.base = exc.render()
    if lock is not None:
        st.base_ref = lock.ref
        if st.registry_ok and base_present(lock, cfg):
            st.base_ok = True
            st.base = f"{lock.ref} (locked in {lock_path})"
        else:
            st.base = f"{lock.ref} locked in {lock_path} but not in the registry; `llmgate stack up` reseeds it"
    elif st.base == "unknown":
        st.base = f"no lock at {lock_path}; `llmgate stack up` seeds the base"
    return st


def stack_up(cfg: StackConfig, root: Path, lock_path: Path, reporter: Reporter = NULL_REPORTER, *,
             install: bool = False) -> StackStatus:
    paths = StackPaths(root)
    actions: list[str] = []
    with _exclusive(paths):
        if install:
            actions += [f"installed {p}" for p in install_packages(reporter)]
        try:
            engine_version()
        except InfraError:
            if not install or os.environ.get("DOCKER_HOST"):
                raise
            start_dockerd(paths, reporter)
            actions.append("started dockerd")
        split_repository(f"{cfg.registry}/{cfg.base_repository}")  # validates the address early
        with RegistryClient(cfg.registry, timeout=5) as reg:
            up = reg.ping()
        if not up:
            start_registry(paths, cfg.registry, reporter)
            actions.append(f"started registry on {cfg.registry}")
        if not base_present(read_lock(lock_path), cfg):
            lock = seed_base(cfg, paths, lock_path, reporter)
            actions.append(f"seeded base {lock.ref}")
    st = stack_status(cfg, root, lock_path)
    st.actions = actions
    if not st.ok:
        raise InfraError("stack not healthy after `up`: " + "; ".join(f"{n}: {d}" for n, ok, d in st.rows() if not ok),
                         where=str(root))
    return st


def stack_down(cfg: StackConfig, root: Path, reporter: Reporter = NULL_REPORTER) -> list[str]:
    """Stop what this workspace started (the registry). The shared engine is left running."""
    paths = StackPaths(root)
    actions = []
    if stop_registry(paths, reporter):
        actions.append("stopped registry")
    return actions
