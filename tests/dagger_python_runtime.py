"""What the Dagger engine's Python runtime does to this module before any of its functions runs.

Reproduced step by step from dagger/dagger (engine v0.21.x), so that a module the engine cannot install
fails here first. The project venv cannot show it: it has PyPI's dagger-io, versioned like a release.

- The module's context directory (core/schema/modulesource.go `loadModuleSourceContext`): from the
  directory holding dagger.json, with `.gitignore` applied, exactly `dagger.json`, the module source
  (`source`, here `.dagger`) and the `include` patterns of dagger.json; nothing else of the project.
- The SDK (toolchains/engine-dev/build/sdk.go `pythonSDKContent`; sdk/python/runtime/main.go `New`
  and `WithSDK`): the engine ships the sources of sdk/python — `pyproject.toml` as committed, so
  `version = "0.0.0"` (the version is only set when a release is built for PyPI), `src/**/*.py`,
  `src/**/*.typed` without `src/dagger/_engine/` and `src/dagger/provisioning/`, `codegen/` (a uv
  workspace member of the SDK's pyproject), LICENSE, README.md — and the runtime copies them to
  `<source>/sdk`, after removing any `sdk` and `.venv` the module had (discovery.go `DirExcludes`).
  Here they come from dagger-io's source distribution on PyPI, of the version the project venv
  holds, with the version set back to 0.0.0.
- The install (main.go `WithBase`, `WithUpdates`, `WithInstall`): uv 0.10.3
  (sdk/python/runtime/images/uv/Dockerfile), `UV_LINK_MODE=copy`, `UV_NATIVE_TLS=1`; in the module
  source directory, without a `uv.lock` or `requirements.lock` there: `uv pip install -e ./sdk -e .`,
  then `uv pip check`. The runtime installs into the base image's Python (`UV_SYSTEM_PYTHON=1`,
  python:<requires-python>-slim); here into a fresh virtual environment of this Python. The runtime's
  `UV_COMPILE_BYTECODE=1` is left out: it compiles what was installed, changes nothing uv resolves, and
  takes several times as long as the install itself.
- The entrypoint (sdk/python/runtime/template/runtime.py): `dagger.mod.cli.app`, which finds the
  main object through the `dagger.mod` entry point, with `DAGGER_MODULE`,
  `DAGGER_DEFAULT_PYTHON_PACKAGE` and `DAGGER_MAIN_OBJECT` set (main.go `WithSource`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME_UV_VERSION = "0.10.3"  # sdk/python/runtime/images/uv/Dockerfile: ghcr.io/astral-sh/uv:0.10.3
ENGINE_SDK_VERSION = "0.0.0"  # sdk/python/pyproject.toml as committed
SDK_DIR = "sdk"  # GenDir in sdk/python/runtime/main.go
SDK_EXCLUDED = ("src/dagger/_engine/", "src/dagger/provisioning/")  # "not needed in modules"
MODULE_DIR_EXCLUDES = (".venv", SDK_DIR)
# sdk/python/codegen/pyproject.toml (v0.21.x): the SDK's pyproject names it as a workspace member, so uv
# reads it when it builds the SDK; the engine ships it with codegen's sources.
CODEGEN_PYPROJECT = """[project]
name = "codegen"
version = "0.0.0"
description = "Codegen for the Python SDK"
requires-python = ">= 3.10"
dependencies = ["graphql-core>=3.2.3"]

[build-system]
requires = ["uv_build>=0.8.4,<0.9.0"]
build-backend = "uv_build"
"""
# sdk/python/runtime/template/runtime.py, the module runtime's entrypoint.
RUNTIME_ENTRYPOINT = """#!/usr/bin/env python

import sys

from dagger.mod.cli import app

if __name__ == "__main__":
    sys.exit(app(None, "--register" in sys.argv[1:]))
"""
CACHE = REPO / ".llmgate" / "cache" / "dagger-runtime"


@dataclass(frozen=True)
class ModuleConfig:
    name: str
    source: str
    include: tuple[str, ...]

    @classmethod
    def read(cls, repo: Path = REPO) -> ModuleConfig:
        cfg = json.loads((repo / "dagger.json").read_text())
        return cls(name=cfg["name"], source=cfg.get("source", "."), include=tuple(cfg.get("include", [])))

    @property
    def main_object(self) -> str:
        """NormalizeObjectName: the PascalCase of the module name."""
        return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_ ]+", self.name) if part)


def _pattern(pattern: str) -> re.Pattern[str]:
    """An include pattern as the engine's directory filter reads it: `**` any depth, `*` within a name;
    a pattern that names a directory takes everything under it."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out.rstrip('/')}(/.*)?$")


def context_files(repo: Path = REPO) -> list[str]:
    """The files of the project the engine loads for the module (relative POSIX paths)."""
    cfg = ModuleConfig.read(repo)
    patterns = [_pattern(p) for p in ("dagger.json", cfg.source, *cfg.include)]
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    candidates = [p for p in listed if p and (repo / p).is_file() and any(r.match(p) for r in patterns)]
    # A tracked file that .gitignore names is left out too: the engine applies .gitignore, not git's index.
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "--no-index", "--stdin", "-z"],
                             input="\0".join(candidates).encode(), capture_output=True, check=False).stdout
    dropped = set(ignored.decode().split("\0"))
    source = cfg.source.rstrip("/") + "/"
    excluded = tuple(source + d + "/" for d in MODULE_DIR_EXCLUDES)
    return sorted(p for p in candidates if p not in dropped and not p.startswith(excluded))


def copy_context(dest: Path, repo: Path = REPO) -> Path:
    """`dest` becomes the module's context directory; returns the module source directory in it."""
    for rel in context_files(repo):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)
    return dest / ModuleConfig.read(repo).source


def sdk_sdist(version: str, cache: Path = CACHE) -> Path:
    """dagger-io's source distribution from PyPI (kept in `cache`, so a second run needs no network)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"dagger_io-{version}.tar.gz"))
    if found:
        return found[0]
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "dagger-io",
                           f"dagger-io=={version}", "--dest", str(cache)],
                          capture_output=True, text=True, timeout=300, check=False)
    found = sorted(cache.glob(f"dagger_io-{version}.tar.gz"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"pip could not download the dagger-io {version} sdist: {proc.stderr[-2000:]}")
    return found[0]


def place_sdk(sdist: Path, module_source: Path) -> Path:
    """The SDK at `<module source>/sdk` as the engine ships it: its sources, version 0.0.0."""
    sdk = module_source / SDK_DIR
    shutil.rmtree(sdk, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        root = tar.getnames()[0].split("/")[0]
        for member in tar.getmembers():
            rel = member.name.removeprefix(root + "/")
            keep = rel in ("pyproject.toml", "LICENSE", "README.md") or (
                rel.startswith("src/") and rel.endswith((".py", ".typed")) and not rel.startswith(SDK_EXCLUDED))
            if not member.isfile() or not keep:
                continue
            target = sdk / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    pyproject = sdk / "pyproject.toml"
    text, n = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{ENGINE_SDK_VERSION}"', pyproject.read_text(), count=1)
    if n != 1:
        raise RuntimeError(f"{sdist.name}: no version line in pyproject.toml")
    pyproject.write_text(text)
    if "codegen" in tomllib.loads(text).get("tool", {}).get("uv", {}).get("workspace", {}).get("members", []):
        (sdk / "codegen" / "src" / "codegen").mkdir(parents=True, exist_ok=True)
        (sdk / "codegen" / "pyproject.toml").write_text(CODEGEN_PYPROJECT)
        (sdk / "codegen" / "src" / "codegen" / "__init__.py").write_text("")
    return sdk


def uv_binary() -> Path:
    """uv from this venv (the test extra pins the runtime's version)."""
    exe = Path(sys.executable).with_name("uv")
    if not exe.is_file():
        raise RuntimeError("uv missing from the venv: install the test extra (`pip install -e .[test]`)")
    return exe


def runtime_python_version(module_source: Path) -> str:
    """The Python the runtime picks (discovery.go findPythonVersion): `.python-version`, else the version
    after `>=` or `==` in requires-python."""
    pinned = module_source / ".python-version"
    if pinned.is_file():
        return pinned.read_text().strip()
    spec = tomllib.loads((module_source / "pyproject.toml").read_text())["project"].get("requires-python", "")
    spec = spec.strip()
    return spec[2:].strip() if spec.startswith((">=", "==")) else ""


def uv_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({"UV_LINK_MODE": "copy", "UV_NATIVE_TLS": "1", "VIRTUAL_ENV": str(venv), "PYTHONUNBUFFERED": "1"})
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    return env


@dataclass
class Install:
    module_source: Path
    venv: Path
    steps: list[subprocess.CompletedProcess[str]]

    @property
    def ok(self) -> bool:
        return all(p.returncode == 0 for p in self.steps)

    @property
    def output(self) -> str:
        return "\n".join(f"$ {' '.join(p.args)}\n{p.stdout}{p.stderr}" for p in self.steps)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def install(module_source: Path, venv: Path) -> Install:
    """The runtime's install of a module source with the SDK already placed (no lock file there)."""
    for lock in ("uv.lock", "requirements.lock"):
        if (module_source / lock).exists():
            raise RuntimeError(f"{module_source / lock}: the runtime would sync that lock instead; not reproduced here")
    uv = str(uv_binary())
    env = uv_env(venv)
    made = subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    steps = [made]
    if made.returncode == 0:
        for argv in ([uv, "pip", "install", "-e", f"./{SDK_DIR}", "-e", "."], [uv, "pip", "check"]):
            proc = subprocess.run(argv, cwd=module_source, capture_output=True, text=True, env=env, timeout=600,
                                  check=False)
            steps.append(proc)
            if proc.returncode != 0:
                break
    return Install(module_source, venv, steps)


def runtime_env(cfg: ModuleConfig, module_source: Path) -> dict[str, str]:
    """What main.go `WithSource` sets for the entrypoint."""
    project = tomllib.loads((module_source / "pyproject.toml").read_text())["project"]["name"]
    return {"DAGGER_MODULE": cfg.name, "DAGGER_DEFAULT_PYTHON_PACKAGE": re.sub(r"[-_.]+", "_", project.lower()),
            "DAGGER_MAIN_OBJECT": cfg.main_object}


__all__ = ["CACHE", "ENGINE_SDK_VERSION", "RUNTIME_ENTRYPOINT", "RUNTIME_UV_VERSION", "Install", "ModuleConfig",
           "context_files", "copy_context", "install", "place_sdk", "runtime_env", "runtime_python_version",
           "sdk_sdist", "uv_binary"]
