"""The Dagger module installs the way the engine's Python runtime installs it, and then shows its functions.

tests/dagger_python_runtime.py reproduces the runtime's steps (quoted there from dagger/dagger): a copy of
exactly the files dagger.json lets the engine load, the SDK's sources at `.dagger/sdk` versioned 0.0.0,
`uv pip install -e ./sdk -e .` and `uv pip check` with the runtime's uv, then the runtime's entrypoint
registering the module against a session (tests/doubles/dagger_engine.py). It needs PyPI (uv resolves the
module's dependencies there, as the engine does); uv's cache makes a second run fast.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import dagger_python_runtime as rt
from tests.doubles.dagger_engine import RecordingEngine

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = {"tool", "build", "publish", "run"}


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;@(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


@dataclass
class Installed:
    install: rt.Install
    context: Path


def _install_copy(tmp: Path, *, edit: dict[str, str] | None = None) -> Installed:
    context = tmp / "context"
    module_source = rt.copy_context(context)
    for rel, text in (edit or {}).items():
        (context / rel).write_text(text)
    rt.place_sdk(rt.sdk_sdist(importlib.metadata.version("dagger-io")), module_source)
    return Installed(rt.install(module_source, tmp / "venv"), context)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return _install_copy(tmp_path_factory.mktemp("dagger-runtime"))


def test_the_engine_loads_only_what_dagger_json_includes():
    files = rt.context_files()
    assert "dagger.json" in files and ".dagger/pyproject.toml" in files and "pyproject.toml" in files
    assert any(f.startswith("pipeline/") for f in files) and any(f.startswith("evals/") for f in files)
    for absent in ("tests/", "dockerfiles/", "scripts/", ".github/", "gates.yaml", "requirements.lock", ".venv/"):
        assert not any(f == absent or f.startswith(absent) for f in files), absent
    assert not any("__pycache__" in f for f in files)  # .gitignore applies


def test_the_module_installs_with_the_sdk_the_engine_ships(installed: Installed):
    inst = installed.install
    assert inst.ok, inst.output[-6000:]
    sdk = tomllib.loads((inst.module_source / "sdk" / "pyproject.toml").read_text())["project"]
    assert sdk["name"] == "dagger-io" and sdk["version"] == rt.ENGINE_SDK_VERSION
    assert not (inst.module_source / "sdk" / "src" / "dagger" / "_engine").exists()
    probe = subprocess.run([str(inst.python), "-c", (
        "import importlib.metadata as m, json, dagger, pipeline; "
        "print(json.dumps({'dagger-io': m.version('dagger-io'), 'dagger': dagger.__file__, "
        "'pipeline': pipeline.__file__, 'httpx2': m.packages_distributions().get('httpx2')}))")],
        cwd=inst.module_source, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
        check=False)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    assert seen["dagger-io"] == rt.ENGINE_SDK_VERSION
    assert Path(seen["dagger"]).is_relative_to(inst.module_source / "sdk")  # the engine's copy, editable
    assert Path(seen["pipeline"]).is_relative_to(installed.context)  # llmgate from the context dir (..)
    assert seen["httpx2"] is None  # llmgate's core only: no extras reach the module


def test_the_installed_module_registers_its_functions(installed: Installed):
    """The runtime's entrypoint, run in the installed environment, registers the module as `dagger
    functions` sees it: every function of the main object, with its constructor."""
    inst = installed.install
    assert inst.ok, inst.output[-3000:]
    cfg = rt.ModuleConfig.read()
    entrypoint = inst.venv / "runtime"
    entrypoint.write_text(rt.RUNTIME_ENTRYPOINT)
    with RecordingEngine() as engine:
        call = engine.call("", "", {}, {})  # no parent: the engine asks for the module's type definitions
        env = {"PATH": "/usr/bin:/bin", "HOME": str(inst.venv), **engine.session_env(),
               **rt.runtime_env(cfg, inst.module_source)}
        proc = subprocess.run([str(inst.python), str(entrypoint)], cwd=inst.module_source, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and call.error is None, proc.stderr[-4000:]
    module = engine.get(json.loads(call.returned or "null"))
    assert module.type == "Module"
    objects = [o for o in module.chain() if o.field == "withObject"]
    assert len(objects) == 1
    typedef = engine.get(objects[0].args["object"])
    assert [c.args["name"] for c in typedef.calls("withObject")] == [cfg.main_object]
    functions = {engine.get(c.args["function"]).calls("function")[0].args["name"] for c in typedef.calls("withFunction")}
    assert functions == FUNCTIONS
    assert typedef.calls("withConstructor"), "no constructor registered (the source directory argument)"


def test_the_installed_module_runs_every_step_of_the_plan(installed: Installed, tmp_path: Path):
    """`dagger call run` once more, recorded on the wire, with the module as the runtime installed it (the
    engine's SDK copy, llmgate without extras): the constructor, then `run`, through every step."""
    from pipeline import ci_plan
    from pipeline.orchestrate.plan import DAGGER
    from tests.test_dagger_module import ModuleRuntime, record_run

    inst = installed.install
    assert inst.ok, inst.output[-3000:]
    entrypoint = inst.venv / "runtime"
    entrypoint.write_text(rt.RUNTIME_ENTRYPOINT)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(inst.venv), **rt.runtime_env(rt.ModuleConfig.read(), inst.module_source)}
    runtime = ModuleRuntime(argv=(str(inst.python), str(entrypoint)), cwd=inst.module_source, env=tuple(env.items()))
    rec = record_run(tmp_path, runtime=runtime, exits={"gate": 1, "export": 1}, target="production")
    assert rec.runtime.returncode == 0 and rec.run.error is None, rec.runtime.stderr[-4000:]
    runs = [ctx.argv for ctx in rec.stage_execs() if ctx.argv[3] == "run"]
    only = [[a[i + 1] for i, x in enumerate(a) if x == "--only"] for a in runs]
    assert only == [s.stages for s in ci_plan.segments(promote=False)]
    assert [s for seg in only for s in seg] == [str(s.stage) for s in DAGGER.steps if not s.on_request]
    assert rec.llmgate_verbs()[0] == "new-run" and rec.llmgate_verbs()[-1] == "export"


def test_a_dagger_io_pin_reachable_from_the_module_breaks_the_install(tmp_path: Path):
    """What the reproduction guards against: llmgate pinning dagger-io again, as it did."""
    pyproject = (REPO / "pyproject.toml").read_text()
    pinned = pyproject.replace("dependencies = [\n", f'dependencies = [\n  "dagger-io=={importlib.metadata.version("dagger-io")}",\n', 1)
    assert pinned != pyproject
    broken = _install_copy(tmp_path, edit={"pyproject.toml": pinned}).install
    assert not broken.ok
    assert re.search(r"no version of dagger-io==[\d.]+", broken.output), broken.output[-3000:]
    assert "unsatisfiable" in broken.output


def test_no_dagger_io_constraint_is_reachable_and_the_pins_agree():
    """The module depends on llmgate without extras: llmgate's core dependencies must leave dagger-io to
    the engine. The project venv's pin (requirements.lock) is the engine version dagger.json names, and
    the venv's uv is the runtime's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "dagger-io" not in {_requirement_name(r) for r in project["dependencies"]}
    module = tomllib.loads((REPO / ".dagger" / "pyproject.toml").read_text())
    assert {_requirement_name(r) for r in module["project"]["dependencies"]} == {"dagger-io", "llmgate"}
    assert all(r.strip() in ("dagger-io", "llmgate") for r in module["project"]["dependencies"])  # no pin
    lock = dict(line.split("==", 1) for line in (REPO / "requirements.lock").read_text().split() if "==" in line)
    engine = json.loads((REPO / "dagger.json").read_text())["engineVersion"]
    assert lock["dagger-io"] == engine.removeprefix("v") == importlib.metadata.version("dagger-io")
    assert lock["uv"] == rt.RUNTIME_UV_VERSION
    uv = subprocess.run([str(rt.uv_binary()), "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert uv.stdout.split()[1] == rt.RUNTIME_UV_VERSION


def test_the_runtime_picks_this_python():
    """The runtime's base image is python:<requires-python>-slim; the reproduction uses this Python."""
    chosen = rt.runtime_python_version(REPO / ".dagger")
    assert chosen == f"{sys.version_info.major}.{sys.version_info.minor}"
