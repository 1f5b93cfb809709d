"""The Dagger module: registered as `dagger call` shows it, and driven over the SDK's wire protocol.

No Dagger engine can run here. The module is loaded through the SDK's own registration machinery, and
its functions are run the way the engine runs them: the SDK's module entrypoint in its own process,
joined to a session (`DAGGER_SESSION_PORT`/`DAGGER_SESSION_TOKEN`) served by a recording GraphQL
endpoint (tests/doubles/dagger_engine.py) that answers from the SDK's generated schema. What the
module asked the engine to build, run, mount and bind is then read back from what was recorded.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import dagger
import pytest
from typer.testing import CliRunner

from pipeline import ci_plan
from pipeline.cli import app as cli_app
from pipeline.errors import BadInput, InfraError
from pipeline.models import Decision, GateStatus, GateVerdict, ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate import runner as runner_module
from pipeline.orchestrate.plan import CREDENTIALS, DAGGER, Credential, Plan
from pipeline.workspace import Workspace
from tests.doubles.dagger_engine import (
    NO_GPU_SUPPORT,
    Call,
    ExecContext,
    ExecResult,
    Obj,
    RecordingEngine,
    error_message,
)
from tests.stage_helpers import record_verdicts

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "llmgate.yml"
FUNCTIONS = {"tool", "build", "publish", "run"}
SECRET_NAME = re.compile(
    r"(password|passwd|token|secret|credential|(^|_)key$|_key_|kubeconfig|api_key|store_url|ca_bundle|pip_conf)"
)
ADDRESS = "registry.example.com/llm/server:v7"
RUN_ID = "run-20260101-0001"
MODEL_DIGEST = "sha256:" + "7" * 64  # what new-run prints for the weights


@pytest.fixture(scope="module")
def module_type():  # type: ignore[no-untyped-def]
    os.environ.setdefault("DAGGER_MAIN_OBJECT", "Llmgate")
    sys.path.insert(0, str(REPO / ".dagger" / "src"))
    try:
        from llmgate_dagger import Llmgate
    finally:
        sys.path.pop(0)
    mod = Llmgate.__dagger_module__
    return mod, mod.get_object("Llmgate")


def _base(t: object) -> set[object]:
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        return {a for a in typing.get_args(t) if a is not type(None)}
    return {t}


# -- registration: what `dagger call --help` shows ------------------------------------------------------
def test_dagger_json_points_at_the_module():
    cfg = json.loads((REPO / "dagger.json").read_text())
    assert cfg["name"] == "llmgate" and cfg["sdk"]["source"] == "python"
    assert (REPO / cfg["source"] / "pyproject.toml").is_file()
    assert "pipeline/**" in cfg["include"]


def test_every_function_is_registered_documented_and_typed(module_type):
    _, obj = module_type
    assert set(obj.functions) == FUNCTIONS  # no second pipeline: no per-stage functions beside `run`
    for name, fn in obj.functions.items():
        assert fn.doc and len(fn.doc) > 20, f"{name} has no doc for `dagger call --help`"
        assert fn.return_type is not None, name
        for p in fn.parameters.values():
            assert p.resolved_type is not typing.Any, f"{name}.{p.name} untyped"
            assert p.doc, f"{name}.{p.name} has no Doc()"


def test_cache_policies(module_type):
    _, obj = module_type
    assert obj.functions["run"].cache_policy == "never" and obj.functions["publish"].cache_policy == "never"
    assert obj.functions["build"].cache_policy is None and obj.functions["tool"].cache_policy is None


def test_every_credential_of_the_plan_is_a_secret_argument_of_run(module_type):
    _, obj = module_type
    params = {p.name: p for p in obj.functions["run"].parameters.values()}
    plan_creds = {c.name for c in DAGGER.credentials()}
    assert {"registry_password", "cosign_key", "cosign_password", "cosign_public_key", "judge_api_key",
            "kubeconfig", "store_url"} <= plan_creds
    for name in plan_creds | set(ci_plan.BUILD_SECRET_IDS):
        assert name in params, f"run takes no {name}"
        assert _base(params[name].resolved_type) == {dagger.Secret}, f"run.{name} must be a dagger.Secret"


def test_no_secret_is_a_plain_string(module_type):
    _, obj = module_type
    seen = 0
    for name, fn in obj.functions.items():
        for p in fn.parameters.values():
            if SECRET_NAME.search(p.name):
                seen += 1
                assert _base(p.resolved_type) == {dagger.Secret}, f"{name}.{p.name} must be dagger.Secret"
    assert seen >= 9 + 2 + 3 + 2  # run: 7 credentials + 2 build secrets; publish 3; build 2; tool 2


def test_source_directory_has_default_path_and_ignore(module_type):
    mod, obj = module_type
    (source,) = obj.get_constructor(mod._converter).parameters.values()
    assert source.resolved_type is dagger.Directory and source.default_path == "."
    assert {".venv", ".llmgate", ".git"} <= set(source.ignore or [])


def test_module_holds_no_stage_logic():
    """The module wires containers; steps, commands and decisions come from the plan via ci_plan."""
    src = (REPO / ".dagger" / "src" / "llmgate_dagger" / "main.py").read_text()
    assert "from pipeline import ci_plan" in src
    for forbidden in ("subprocess", "httpx", "--scanners", "cosign sign", "import numpy", "Stage.", '"scan"', '"gate"'):
        assert forbidden not in src, forbidden


# -- pipeline.ci_plan ----------------------------------------------------------------------------------------
def test_secret_ids_come_from_the_dockerfiles():
    for df in ("dockerfiles/cpu.Dockerfile", "dockerfiles/vllm.cuda.Dockerfile", ci_plan.TOOL_DOCKERFILE):
        ids = ci_plan.dockerfile_secret_ids((REPO / df).read_text())
        assert ids, f"{df} mounts no BuildKit secret"
        assert set(ids) <= set(ci_plan.BUILD_SECRET_IDS), f"{df} mounts ids the module cannot provide: {ids}"
    assert ci_plan.dockerfile_secret_ids((REPO / ci_plan.TOOL_DOCKERFILE).read_text()) == {
        "ca_bundle": False, "pip_conf": False}  # optional: CI with a plain PyPI needs neither


def test_secret_matching_and_required_ids():
    text = ("RUN --mount=type=secret,id=ca_bundle,required=true pip install x\n"
            "RUN --mount=type=secret,id=pip_conf true\n")
    assert ci_plan.dockerfile_secret_ids(text) == {"ca_bundle": True, "pip_conf": False}
    secret = object()
    assert ci_plan.match_build_secrets("D", text, {"ca_bundle": secret, "pip_conf": None}) == {"ca_bundle": secret}
    with pytest.raises(BadInput, match="ca_bundle") as exc:
        ci_plan.match_build_secrets("D", text, {"ca_bundle": None})
    assert exc.value.where == "D"
    with pytest.raises(BadInput, match="unknown build secret"):
        ci_plan.match_build_secrets("D", text, {"pip_credentials": secret})


def test_build_args_refuse_credentials():
    assert ci_plan.parse_build_args(["BASE=x", "N=1"]) == {"BASE": "x", "N": "1"}
    for bad in ("NOEQUALS", "HF_TOKEN=abc", "PIP_PASSWORD=x"):
        with pytest.raises(BadInput):
            ci_plan.parse_build_args([bad])


def test_the_plan_is_run_in_segments_cut_only_where_the_server_comes_and_goes():
    segs = ci_plan.segments(promote=False)
    assert [s.stages for s in segs] == [["build", "leak", "scan", "sign"], ["boot", "bench", "eval"],
                                        ["manifests", "gate", "attest"]]
    assert [s.server for s in segs] == [False, True, False]
    covered = [stage for s in segs for stage in s.stages]
    assert covered == [str(s.stage) for s in DAGGER.steps if not s.on_request]  # every step once, in order
    groups = {s.group for s in DAGGER.steps if s.group}
    for group in groups:  # the Runner runs a group side by side only if one command holds all of it
        assert sum(any(st.group == group for st in seg.steps) for seg in segs) == 1, group
    with_promote = ci_plan.segments(promote=True)
    assert with_promote[:-1] == segs and with_promote[-1].promote and with_promote[-1].stages == ["promote"]
    assert ci_plan.continues(0) and not any(ci_plan.continues(c) for c in (1, 2, 3, 137))


def test_commands_follow_the_plan():
    d = "sha256:" + "b" * 64
    with pytest.raises(BadInput, match="not pinned by digest"):
        ci_plan.new_run_command("reg/app:latest")
    with pytest.raises(BadInput, match="not an image reference"):
        ci_plan.require_digest("reg/app@sha256:short")
    argv = ci_plan.new_run_command(f"reg/app:v1@{d}", tag="v1", target="production")
    assert argv == ["llmgate", "--workdir", ci_plan.STATE, "new-run", "--image", f"reg/app@{d}", "--model-dir",
                    ci_plan.MODELS, "--tag", "v1", "--target", "production", "--plan", "dagger"]
    assert "--target" not in ci_plan.new_run_command(f"reg/app@{d}")
    first, served, last, promote = ci_plan.segments(promote=True)
    assert ci_plan.segment_command(first, RUN_ID) == [
        "llmgate", "--workdir", ci_plan.STATE, "run", "--run", RUN_ID,
        "--only", "build", "--only", "leak", "--only", "scan", "--only", "sign"]
    assert ci_plan.segment_command(served, RUN_ID)[-2:] == ["--server-url", "http://llm:8000"]
    assert "--server-url" not in ci_plan.segment_command(last, RUN_ID)
    assert ci_plan.segment_command(promote, RUN_ID, target="production") == [
        "llmgate", "--workdir", ci_plan.STATE, "promote", "--run", RUN_ID, "--target", "production",
        "--kubeconfig", CREDENTIALS["kubeconfig"].file]
    with pytest.raises(BadInput, match="needs a target"):
        ci_plan.segment_command(promote, RUN_ID)
    with pytest.raises(BadInput):
        ci_plan.segment_command(first, "../etc")
    assert ci_plan.export_command(RUN_ID)[-4:] == ["--run", RUN_ID, "--out", ci_plan.OUT]


def test_the_export_expected_depends_on_whether_the_gates_judged():
    stopped = RunRecord(run_id=RUN_ID, image=ImageRef(repository="r/x", digest="sha256:" + "a" * 64))
    assert ci_plan.expected_export_files(stopped.model_dump_json()) == ("run.json", "summary.md", "report.html")
    assert ci_plan.expected_export_files(_gated_record().model_dump_json()) == ci_plan.EXPORT_FILES
    assert ci_plan.expected_export_files(None) == ci_plan.EXPORT_FILES
    with pytest.raises(InfraError, match="not a run record"):
        ci_plan.expected_export_files("{}")


def test_the_gpu_error_says_what_to_do():
    err = ci_plan.no_gpus(f"input: container.withExec {NO_GPU_SUPPORT}")
    text = err.render()
    assert err.where == "--gpus" and "without GPU support" in text
    assert f"{ci_plan.GPU_SUPPORT_ENV}=1" in text and "--gpus=false" in text
    other = ci_plan.no_gpus('could not select device driver "" with capabilities: [[gpu]]').render()
    assert "could not give a container the runner's GPUs" in other and "--gpus=false" in other


def test_run_id_is_the_last_line_new_run_prints():
    assert ci_plan.parse_run_id(f"stored in postgresql\n{RUN_ID}\n\n") == RUN_ID
    for bad in ("", "\n  \n", "run id: ../../x"):
        with pytest.raises(BadInput):
            ci_plan.parse_run_id(bad)


def test_the_model_digest_new_run_prints_is_what_the_server_is_told():
    assert ci_plan.parse_model_digest(f"model {MODEL_DIGEST}\n{RUN_ID}\n") == MODEL_DIGEST
    for bad in (f"{RUN_ID}\n", "model sha256:abc\n", f"a model {MODEL_DIGEST}\n"):
        with pytest.raises(BadInput, match="no model digest"):
            ci_plan.parse_model_digest(bad)


# -- the protocol: `run` driven by the SDK's module entrypoint against a recording endpoint -------------
def _gated_record(decision: str = "blocked") -> RunRecord:
    run = RunRecord(run_id=RUN_ID, image=ImageRef(repository="r/x", digest="sha256:" + "a" * 64),
                    decision=Decision(decision))
    return record_verdicts(run, [GateVerdict(name="correctness", source="eval.correctness_mean",
                                             status=GateStatus.FAIL)])


@dataclass
class Recorded:
    engine: RecordingEngine
    run: Call
    plaintexts: dict[str, str]  # credential / build secret name -> value passed by URI
    secret_ids: dict[str, str]  # same names -> the id of the secret the caller created
    source_id: str
    model_id: str
    runtime: subprocess.CompletedProcess[str]

    def stage_execs(self) -> list[ExecContext]:
        return [e.detail["ctx"] for e in self.engine.execs if e.detail["ctx"].argv[:1] == ["llmgate"]]

    def llmgate_verbs(self) -> list[str]:
        return [_verb(ctx.argv) for ctx in self.stage_execs()]


def _only(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--only"]


def _verb(argv: list[str]) -> str:
    """`run build,leak` for a segment of the plan, else the command's name."""
    return f"run {','.join(_only(argv))}" if argv[3] == "run" else argv[3]


class CliDouble:
    """TEST DOUBLE of the `llmgate` CLI contract the module relies on (the tool image's commands):
    `new-run` prints the run id as its last line; `run --run ID --only …` exits 0 when its steps ran
    (the decision still pending), 1 when its gate blocked, 2 bad input, 3 when the Runner stopped at a
    failed step; `promote` 0 promoted, 1 refused; `export` writes run.json (the record), summary.md and
    report.html, and verdict.json and junit.xml once the gates judged, exiting 1 without them.
    `exits` maps a stage (the segment holding it exits so) or a command name to an exit code."""

    def __init__(self, exits: dict[str, int] | None = None, *, export_writes: bool = True) -> None:
        self.exits = exits or {}
        self.export_writes = export_writes
        self.judged = False

    def __call__(self, ctx: ExecContext) -> ExecResult:
        verb = ctx.argv[3] if ctx.argv[:1] == ["llmgate"] else ""
        if verb == "new-run":
            return ExecResult(self.exits.get("new-run", 0), f"model {MODEL_DIGEST}\n{RUN_ID}\n",
                              f"run {RUN_ID}: {ctx.argv[5]}\n")
        if verb == "run":
            stages = _only(ctx.argv)
            code = next((self.exits[s] for s in stages if s in self.exits), 0)
            self.judged = self.judged or ("gate" in stages and code in (0, 1))
            return ExecResult(code, "", "")
        if verb == "export":
            out = ctx.argv[ctx.argv.index("--out") + 1]
            names = ci_plan.EXPORT_FILES if self.judged else ci_plan.expected_export_files(_stopped_json())
            record = _gated_record().model_dump_json() if self.judged else _stopped_json()
            writes = {f"{out}/{name}": (record if name == "run.json" else "{}") for name in names}
            code = self.exits.get("export", 0 if self.judged else 1)
            return ExecResult(code, f"exported run {RUN_ID} to {out}\n", "", writes if self.export_writes else {})
        return ExecResult(self.exits.get(verb, 0), "", "")


def _stopped_json() -> str:
    return RunRecord(run_id=RUN_ID, image=ImageRef(repository="r/x", digest="sha256:" + "a" * 64),
                     decision=Decision.ERROR, decision_reason="stage scan: trivy failed").model_dump_json()


@dataclass(frozen=True)
class ModuleRuntime:
    """How the module's runtime process starts: argv, working directory, environment (session added)."""

    argv: tuple[str, ...]
    cwd: Path
    env: tuple[tuple[str, str], ...] = ()


# This venv, the module's sources from the checkout (tests/doubles/dagger_runtime.py).
CHECKOUT_RUNTIME = ModuleRuntime(argv=(sys.executable, "-m", "tests.doubles.dagger_runtime",
                                       str(REPO / ".dagger" / "src")), cwd=REPO)


def _invoke(engine: RecordingEngine, name: str, parent: dict[str, object], inputs: dict[str, object],
            runtime: ModuleRuntime = CHECKOUT_RUNTIME) -> tuple[Call, subprocess.CompletedProcess[str]]:
    call = engine.call("Llmgate", name, parent, inputs)
    base = dict(runtime.env) if runtime.env else dict(os.environ)
    env = {**base, **engine.session_env(), "DAGGER_MAIN_OBJECT": "Llmgate"}
    proc = subprocess.run(list(runtime.argv), cwd=runtime.cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    return call, proc


def record_run(tmp_path: Path, *, exits: dict[str, int] | None = None, export_writes: bool = True,
               on_exec: typing.Callable[[ExecContext], ExecResult] | None = None, gpu_support: bool = True,
               runtime: ModuleRuntime = CHECKOUT_RUNTIME, **options: object) -> Recorded:
    names = [c.name for c in DAGGER.credentials()] + ["ca_bundle"]
    plaintexts = {n: f"llmgate-{n}-{secrets.token_hex(12)}" for n in names}
    host_env = {f"LLMGATE_TEST_{n.upper()}": v for n, v in plaintexts.items()}
    model = tmp_path / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(b"\0" * 64)
    engine = RecordingEngine(on_exec=on_exec or CliDouble(exits, export_writes=export_writes), host_env=host_env,
                             gpu_support=gpu_support)
    with engine:
        source_id = engine.add_host_directory(REPO)
        model_id = engine.add_host_directory(model)
        secret_ids = {n: engine.add_secret(f"env://LLMGATE_TEST_{n.upper()}") for n in names}
        ctor, proc = _invoke(engine, "", {}, {"source": source_id}, runtime)  # the constructor first
        assert proc.returncode == 0 and ctor.returned, proc.stderr
        inputs: dict[str, object] = {"address": ADDRESS, "model": model_id, "registry_username": "ci-bot",
                                     **secret_ids, **options}
        run, proc = _invoke(engine, "run", json.loads(ctor.returned), inputs, runtime)
    return Recorded(engine, run, plaintexts, secret_ids, source_id, model_id, proc)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """`dagger call run --target production` (no promotion), with a gate that blocks (export then exits 1 too)."""
    return record_run(tmp_path_factory.mktemp("dagger-run"), exits={"gate": 1, "export": 1}, target="production")


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """`dagger call run --target production --promote`, every step passing."""
    return record_run(tmp_path_factory.mktemp("dagger-promote"), target="production", promote=True)


def test_run_returns_a_directory_even_when_the_gate_blocks(recorded: Recorded):
    assert recorded.runtime.returncode == 0, recorded.runtime.stderr
    assert recorded.run.error is None
    out = recorded.engine.get(json.loads(recorded.run.returned or "null"))
    assert out.type == "Directory" and out.field == "directory" and out.args["path"] == ci_plan.OUT
    assert "llmgate run manifests,gate,attest: exit 1" in recorded.runtime.stderr


def test_the_recorded_run_covers_every_step_of_the_plan_in_order(recorded: Recorded):
    """What the module sent the engine: new-run, the Runner over every step of the dagger plan (each once,
    in plan order, in the segments ci_plan cuts), export."""
    verbs = recorded.llmgate_verbs()
    assert verbs[0] == "new-run" and verbs[-1] == "export"
    runs = [ctx.argv for ctx in recorded.stage_execs() if ctx.argv[3] == "run"]
    assert [_only(a) for a in runs] == [s.stages for s in ci_plan.segments(promote=False)]
    assert [st for a in runs for st in _only(a)] == [str(s.stage) for s in DAGGER.steps if not s.on_request]
    assert "promote" not in verbs
    for ctx in recorded.stage_execs():
        assert ctx.argv[:3] == ["llmgate", "--workdir", ci_plan.STATE]
        assert ctx.workdir == ci_plan.SOURCE
        if ctx.argv[3] != "new-run":
            assert ctx.argv[ctx.argv.index("--run") + 1] == RUN_ID  # the id new-run printed
        expect_any = ctx.argv[3] in ("run", "export")
        assert ctx.expect == ("ANY" if expect_any else "SUCCESS")  # a blocked gate still reaches the export


def test_each_command_reads_the_state_the_previous_one_left(recorded: Recorded):
    execs = [e for e in recorded.engine.execs if e.detail["ctx"].argv[:1] == ["llmgate"]]
    first = execs[0].detail["ctx"].mounts[ci_plan.STATE]
    assert first.field == "directory" and first.parent is not None and first.parent.type == "Query"  # empty
    for prev, cur in itertools.pairwise(execs):
        state = cur.detail["ctx"].mounts[ci_plan.STATE]
        assert state.field == "directory" and state.args["path"] == ci_plan.STATE
        assert state.parent is prev.obj, f"{cur.detail['ctx'].argv[3:5]} does not read what the step before wrote"
    export = execs[-1].obj
    out = recorded.engine.get(json.loads(recorded.run.returned or "null"))
    assert out.parent is export


def test_new_run_records_the_published_digest(recorded: Recorded):
    (publish,) = [e for e in recorded.engine.events if e.kind == "publish"]
    assert publish.detail["address"] == ADDRESS
    new_run = recorded.stage_execs()[0]
    digest_ref = ci_plan.require_digest(publish.detail["ref"])
    assert new_run.argv[new_run.argv.index("--image") + 1] == digest_ref
    assert new_run.argv[new_run.argv.index("--tag") + 1] == "v7"
    assert new_run.argv[new_run.argv.index("--target") + 1] == "production"
    assert new_run.argv[new_run.argv.index("--model-dir") + 1] == ci_plan.MODELS
    assert ci_plan.INVOCATION_ENV in new_run.env  # never answered from the exec cache
    builds = [e for e in recorded.engine.events if e.kind == "build"]
    serving = next(b for b in builds if b.detail["dockerfile"] == ci_plan.SERVER_DOCKERFILE)
    assert publish.obj.calls("dockerBuild")[0] is serving.obj


def test_tool_image_is_built_from_the_project_dockerfile(recorded: Recorded):
    for ctx in recorded.stage_execs():
        exec_obj = next(e.obj for e in recorded.engine.execs if e.detail["ctx"] is ctx)
        (build,) = exec_obj.calls("dockerBuild")
        assert build.args["dockerfile"] == ci_plan.TOOL_DOCKERFILE
        assert {a["name"]: a["value"] for a in build.args["buildArgs"]} == {"BASE_IMAGE": ci_plan.TOOL_BASE_IMAGE}
        context = build.parent
        assert context is not None and recorded.engine.host_path(context) == REPO  # the project itself
        assert [c.args["path"] for c in context.calls("withDirectory")] == list(ci_plan.STAGED_CONTEXT_DIRS)
        assert ctx.mounts[ci_plan.SOURCE].id == recorded.source_id
        model = next(c for c in exec_obj.calls("withMountedDirectory") if c.args["path"] == ci_plan.MODELS)
        assert model.args["source"] == recorded.model_id and model.args["readOnly"] is True


def test_server_is_started_once_with_all_gpus_right_before_the_segment_that_boots_it(recorded: Recorded):
    bound: set[str] = set()
    for ctx in recorded.stage_execs():
        if ctx.argv[3] == "run" and any(s in _only(ctx.argv) for s in ("boot", "bench", "eval")):
            assert _only(ctx.argv) == ["boot", "bench", "eval"]
            assert set(ctx.services) == {ci_plan.SERVER_ALIAS}
            assert ctx.argv[-2:] == ["--server-url", f"http://{ci_plan.SERVER_ALIAS}:{ci_plan.SERVER_PORT}"]
            bound.add(ctx.services[ci_plan.SERVER_ALIAS])
        else:
            assert ctx.services == {}, ctx.argv
    (service_id,) = bound  # boot, bench and eval talk to one service
    service = recorded.engine.get(service_id)
    fields = [c.field for c in service.chain()]
    assert fields.count("experimentalWithAllGPUs") == 1 and fields[-1] == "asService"
    assert service.args.get("useEntrypoint") is True
    (from_,) = service.calls("from")
    publish = next(e for e in recorded.engine.events if e.kind == "publish")
    assert from_.args["address"] == ci_plan.require_digest(publish.detail["ref"])  # what was pushed, by digest
    (models,) = service.calls("withMountedDirectory")
    assert models.args == {"path": ci_plan.MODELS, "source": recorded.model_id, "readOnly": True}
    env = {c.args["name"]: c.args["value"] for c in service.calls("withEnvVariable")}
    assert env[ci_plan.MODEL_DIGEST_ENV] == MODEL_DIGEST  # the entrypoint checks the weights before serving
    (port,) = service.calls("withExposedPort")
    assert port.args["port"] == ci_plan.SERVER_PORT
    (auth,) = service.calls("withRegistryAuth")
    assert auth.args["secret"] == recorded.secret_ids["registry_password"]

    kinds = [(e.kind, _verb(e.detail["ctx"].argv) if e.kind == "exec" and e.detail["ctx"].argv[:1] == ["llmgate"]
              else "") for e in recorded.engine.events if e.kind in ("exec", "service-start", "service-stop")]
    starts = [i for i, k in enumerate(kinds) if k[0] == "service-start"]
    stops = [i for i, k in enumerate(kinds) if k[0] == "service-stop"]
    assert len(starts) == 1 and len(stops) == 1, kinds  # started once, never just-in-time per exec
    assert [k[1] for k in kinds[starts[0] + 1:stops[0]]] == ["run boot,bench,eval"]
    assert kinds[starts[0] - 1] == ("exec", "run build,leak,scan,sign")  # not before the supply-chain checks
    # Before anything is built, one container with every GPU asks the engine whether it has any.
    events = recorded.engine.events
    (probe,) = [e for e in recorded.engine.execs if e.detail["ctx"].argv == ["true"]]
    assert "experimentalWithAllGPUs" in [o.field for o in probe.obj.chain()]
    assert ci_plan.INVOCATION_ENV in probe.detail["ctx"].env  # never answered from the cache
    assert events.index(probe) < min(i for i, e in enumerate(events) if e.kind in ("build", "publish"))


def test_secrets_travel_only_as_secret_ids(recorded: Recorded):
    engine = recorded.engine
    wire = list(engine.wire_text())
    runtime_creds = {c.name for c in DAGGER.credentials()}
    for name in runtime_creds:
        leaked = [t[:200] for t in wire if recorded.plaintexts[name] in t]
        assert leaked == [], f"{name} travelled in plain text: {leaked}"
    # A build secret is re-registered under the id its Dockerfile mounts (BuildKit mounts a Dagger
    # secret by name); that setSecret is the only query that may carry its value.
    ca = recorded.plaintexts["ca_bundle"]
    carriers = [r.query for r in engine.requests if ca in r.query]
    assert carriers and all(re.search(r'setSecret\(\s*name: "ca_bundle"', q) for q in carriers), carriers
    renamed = {o.id for o in engine.objects.values() if o.field == "setSecret"}
    assert {o.args["name"] for o in engine.objects.values() if o.field == "setSecret"} == {"ca_bundle"}
    for b in (e for e in engine.events if e.kind == "build"):
        assert set(b.obj.args.get("secrets", [])) <= renamed
        assert b.detail["secrets"] == ["ca_bundle"]
    # Only build secrets are ever read back as plain text.
    queries = "\n".join(r.query for r in engine.requests)
    read_back = re.findall(r'node\(id: "([^"]+)"\)\s*\{\s*\.\.\. on Secret \{\s*plaintext', queries)
    assert set(read_back) == {recorded.secret_ids["ca_bundle"]}


def _wanted_credentials(argv: list[str]) -> list[Credential]:
    wanted = list(ci_plan.run_wide_credentials())
    if argv[3] == "run":
        wanted += ci_plan.segment_credentials(ci_plan.Segment(steps=tuple(DAGGER.step(s) for s in _only(argv))))
    if argv[3] == "promote":
        wanted += ci_plan.segment_credentials(ci_plan.Segment(steps=(DAGGER.step("promote"),), promote=True))
    return wanted


def test_each_segment_gets_exactly_the_credentials_its_steps_read(recorded: Recorded):
    store = CREDENTIALS["store_url"]
    seen_cosign_key = []
    for ctx in recorded.stage_execs():
        wanted = _wanted_credentials(ctx.argv)
        env = {c.env: recorded.secret_ids[c.name] for c in wanted if c.env}
        files = {c.file: recorded.secret_ids[c.name] for c in wanted if c.file}
        assert ctx.secret_env == env, ctx.argv
        assert ctx.secret_mounts == files, ctx.argv
        for name in (c.env for c in CREDENTIALS.values() if c.env):
            assert name not in ctx.env, f"{name} as a plain variable in {ctx.argv}"
        assert ctx.env.get(ci_plan.STORE_URL_FILE_ENV) == store.file  # a path; the URL is in the mounted file
        has_registry = any(c.name == "registry_password" for c in wanted)
        assert (ctx.env.get(ci_plan.REGISTRY_USERNAME_ENV) == "ci-bot") is has_registry
        if "COSIGN_PRIVATE_KEY" in ctx.secret_env:
            seen_cosign_key.append(_verb(ctx.argv))
    # The signing key reaches the segments with a step that reads it, and no other command.
    signing = [s.name for s in ci_plan.segments(promote=False)
               if any("cosign_key" in step.credentials for step in s.steps)]
    assert signing and seen_cosign_key == signing
    for obj in recorded.engine.objects.values():
        if obj.field == "withMountedSecret":
            assert obj.args["owner"] == ci_plan.TOOL_UID and obj.args.get("mode", 0o400) == 0o400


def test_export_layout_is_what_the_workflow_reads(recorded: Recorded):
    export = recorded.stage_execs()[-1]
    assert export.argv[3:] == ["export", "--run", RUN_ID, "--out", ci_plan.OUT]
    text = WORKFLOW.read_text()
    assert set(re.findall(r"llmgate-out/([\w.]+)", text)) == set(ci_plan.EXPORT_FILES)
    for call in _dagger_calls(text):
        assert call[-3:] == ["export", "--path", "llmgate-out"]  # the directory `run` returns, as is


def test_the_project_cli_takes_every_recorded_command(recorded: Recorded, promoted: Recorded, tmp_path: Path):
    """Each command line the module sent parses with the project's CLI (unknown options fail before
    the eager --help), promotion's included, and every stage of the plan is a choice of `--only`."""
    exe = Path(sys.executable).parent / "llmgate"
    shapes: dict[tuple[str, bool], list[str]] = {}
    for ctx in recorded.stage_execs() + promoted.stage_execs():
        shapes.setdefault((ctx.argv[3], "--server-url" in ctx.argv), ctx.argv)
    assert {k[0] for k in shapes} == {"new-run", "run", "promote", "export"}
    for argv in shapes.values():
        r = subprocess.run([str(exe), *argv[1:], "--help"], capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, f"{ci_plan.describe(argv)}: {r.stdout[-800:]}{r.stderr[-800:]}"
    refused = subprocess.run([str(exe), "--workdir", str(tmp_path / "state"), "run", "--plan", "dagger", "--image",
                              "r/x@sha256:" + "a" * 64, "--only", "no-such-stage"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2  # bad input, naming what the plan has
    named = refused.stdout + refused.stderr
    assert "--only" in named and all(str(s) in named for s in DAGGER.stages), named


def test_promotion_runs_only_when_asked_last_and_after_a_pass(promoted: Recorded, tmp_path: Path):
    rec = promoted
    assert rec.runtime.returncode == 0, rec.runtime.stderr
    segs = [s.name for s in ci_plan.segments(promote=True)]
    assert rec.llmgate_verbs() == ["new-run", *segs, "export"]
    promote = rec.stage_execs()[-2]
    assert promote.argv[3:] == ["promote", "--run", RUN_ID, "--target", "production", "--kubeconfig",
                                CREDENTIALS["kubeconfig"].file]
    assert set(promote.secret_mounts) == {CREDENTIALS["kubeconfig"].file, CREDENTIALS["cosign_public_key"].file,
                                          CREDENTIALS["store_url"].file}
    assert "COSIGN_PRIVATE_KEY" not in promote.secret_env  # promotion verifies; it never signs
    blocked = record_run(tmp_path / "blocked", exits={"gate": 1}, target="production", promote=True)
    assert blocked.run.error is None and "promote" not in blocked.llmgate_verbs()  # a blocked gate ends the run


def test_promotion_without_a_target_is_refused_before_anything_runs(tmp_path: Path):
    rec = record_run(tmp_path, promote=True)
    assert rec.runtime.returncode != 0 and rec.run.error is not None
    assert "promotion needs a target" in error_message(rec.run.error)
    assert rec.engine.events == []
    assert "Traceback" not in rec.runtime.stderr  # an llmgate error is reported as it is


def test_a_failed_step_stops_the_run_and_the_record_is_still_exported(tmp_path: Path):
    """The Runner stops at the failed step (exit 3): the module starts no server and runs no later segment,
    and still returns run.json, summary.md and report.html, which say why."""
    rec = record_run(tmp_path, exits={"scan": 3}, target="production")
    assert rec.run.error is None, error_message(rec.run.error) if rec.run.error else ""
    assert rec.llmgate_verbs() == ["new-run", "run build,leak,scan,sign", "export"]
    assert not [e for e in rec.engine.events if e.kind.startswith("service")]
    out = rec.engine.get(json.loads(rec.run.returned or "null"))
    assert sorted(rec.engine.files_under(out.parent, ci_plan.OUT)) == sorted(
        ci_plan.expected_export_files(_stopped_json()))


def test_an_export_without_its_files_fails_the_call(tmp_path: Path):
    rec = record_run(tmp_path, exits={"export": 3}, export_writes=False, target="production")
    assert rec.run.returned is None and rec.run.error is not None
    message = error_message(rec.run.error)
    assert "exit 3" in message and all(name in message for name in ci_plan.EXPORT_FILES)


def test_a_new_run_that_fails_stops_before_any_stage(tmp_path: Path):
    rec = record_run(tmp_path, exits={"new-run": 2}, target="production")
    assert rec.run.error is not None and "exit code: 2" in error_message(rec.run.error)
    assert rec.llmgate_verbs() == ["new-run"]


# -- one step loop: the commands the module sends run through the project's own Runner -------------------
@dataclass
class Span:
    stage: str
    start: float
    end: float


class ProjectCli:
    """Answers each `llmgate` command the module sent with the project's own CLI, in this process: the
    Runner's step loop, the store and the records are the real ones. The tool container's paths are
    mapped to temporary directories, the stage functions are replaced (they record when they ran and
    can fail), and anything else the module runs (the GPU probe) succeeds."""

    def __init__(self, root: Path, model: Path, *, fail: dict[str, Exception] | None = None,
                 delay_s: float = 0.0) -> None:
        self.paths = {ci_plan.STATE: root / "state", ci_plan.MODELS: model, ci_plan.OUT: root / "out"}
        self.fail = fail or {}
        self.delay_s = delay_s
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    def stage_fn(self, stage: Stage, *, plan: Plan) -> typing.Callable[..., StageResult]:
        assert plan.name == "dagger", plan.name

        def run(_run: RunRecord, _ctx: object) -> StageResult:
            start = time.monotonic()
            time.sleep(self.delay_s)
            with self.lock:
                self.spans.append(Span(stage.value, start, time.monotonic()))
            if stage.value in self.fail:
                raise self.fail[stage.value]
            return StageResult(stage=stage, status=StageStatus.OK)

        return run

    def __call__(self, ctx: ExecContext) -> ExecResult:
        if ctx.argv[:1] != ["llmgate"]:
            return ExecResult(0, "", "")
        argv = [str(self.paths.get(a, a)) for a in ctx.argv[1:]]
        result = CliRunner().invoke(cli_app, argv)
        writes: dict[str, str] = {}
        if argv[2] == "export" and self.paths[ci_plan.OUT].is_dir():
            writes = {f"{ci_plan.OUT}/{f.name}": f.read_text() for f in self.paths[ci_plan.OUT].iterdir()}
        return ExecResult(result.exit_code, result.stdout, result.stderr, writes)

    def record(self) -> RunRecord:
        """The run as the store holds it after the module's last command."""
        latest = Workspace(self.paths[ci_plan.STATE]).store.latest()
        assert latest is not None, "no run in the state directory"
        return latest


def _through_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **cli: typing.Any) -> tuple[Recorded,
                                                                                                     ProjectCli]:
    model = tmp_path / "weights"
    model.mkdir()
    (model / "config.json").write_text("{}")
    project = ProjectCli(tmp_path, model, **cli)
    monkeypatch.setattr(runner_module, "stage_fn", project.stage_fn)
    monkeypatch.setattr(runner_module, "stage_precheck", lambda _stage: None)  # the replaced stages' own checks
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # the Runner runs groups side by side with > 1 core
    monkeypatch.chdir(REPO)  # the tool container's working directory is the project
    return record_run(tmp_path, on_exec=project, target="production"), project


def test_a_parallel_group_runs_side_by_side_through_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rec, project = _through_the_runner(tmp_path, monkeypatch, delay_s=0.4)
    assert rec.run.error is None, error_message(rec.run.error) if rec.run.error else rec.runtime.stderr
    spans = {s.stage: s for s in project.spans}
    assert list(spans) != [] and set(spans) == {str(s.stage) for s in DAGGER.steps if not s.on_request}
    group = [spans[str(s.stage)] for s in DAGGER.steps if s.group == "supply-chain"]
    assert len(group) == 3
    assert max(s.start for s in group) < min(s.end for s in group), "leak, scan and sign did not overlap"
    assert spans["boot"].start >= max(s.end for s in group)  # the next step waits for the whole group
    record = project.record()
    assert record.decision is Decision.PENDING  # the replaced gate judged nothing; every step is recorded
    assert set(record.stages) == set(spans)


def test_a_failed_step_stops_the_dagger_run_in_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rec, project = _through_the_runner(tmp_path, monkeypatch, fail={"scan": InfraError("trivy DB download failed",
                                                                                        where="scan")})
    assert rec.run.error is None, error_message(rec.run.error) if rec.run.error else rec.runtime.stderr
    ran = [s.stage for s in project.spans]
    assert set(ran) == {"build", "leak", "scan", "sign"}  # its group finished; nothing after it started
    assert rec.llmgate_verbs() == ["new-run", "run build,leak,scan,sign", "export"]
    assert "llmgate run build,leak,scan,sign: exit 3" in rec.runtime.stderr
    assert not [e for e in rec.engine.events if e.kind.startswith("service")]  # the GPU server never started
    record = project.record()
    assert record.decision is Decision.ERROR and record.decision_reason.startswith("stage scan:")
    assert record.stages["scan"].status is StageStatus.ERROR and "boot" not in record.stages
    out = rec.engine.get(json.loads(rec.run.returned or "null"))
    exported = rec.engine.files_under(out.parent, ci_plan.OUT)
    assert set(exported) == {"run.json", "summary.md", "report.html"}
    assert RunRecord.model_validate_json(exported["run.json"]).decision is Decision.ERROR


def test_llmgate_run_plan_dagger_is_the_same_step_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`llmgate run --plan dagger` (an image built elsewhere, a server started elsewhere) runs every step of
    the plan through the Runner the module's segments go through: the same steps, the group side by side."""
    model = tmp_path / "weights"
    model.mkdir()
    (model / "config.json").write_text("{}")
    project = ProjectCli(tmp_path, model, delay_s=0.3)
    monkeypatch.setattr(runner_module, "stage_fn", project.stage_fn)
    monkeypatch.setattr(runner_module, "stage_precheck", lambda _stage: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.chdir(REPO)
    state = str(tmp_path / "state")
    image = "registry.example.com/llm/server@sha256:" + "c" * 64
    result = CliRunner().invoke(cli_app, ["--workdir", state, "run", "--plan", "dagger", "--image", image,
                                          "--model-dir", str(model), "--server-url", "http://llm:8000"])
    assert result.exit_code == 3, result.output  # the replaced gate judged nothing: no decision is an error
    assert [s.stage for s in sorted(project.spans, key=lambda s: s.start)][:1] == ["build"]
    assert {s.stage for s in project.spans} == {str(s.stage) for s in DAGGER.steps if not s.on_request}
    group = [s for s in project.spans if s.stage in ("leak", "scan", "sign")]
    assert max(s.start for s in group) < min(s.end for s in group)
    record = project.record()
    assert record.labels["llmgate.plan"] == "dagger" and record.image.digest == "sha256:" + "c" * 64


@pytest.mark.parametrize(("args", "where"), [
    (["run", "--image", "r/x@sha256:" + "a" * 64], "--image"),  # the local plan builds its own
    (["run", "--plan", "dagger"], "--image"),  # the dagger plan measures one built elsewhere
    (["run", "--plan", "dagger", "--image", "r/x:latest"], "--image"),  # by digest only
    (["run", "--run", "run-1", "--tag", "v2"], "--run"),  # a stored run already names its release
    (["run", "--run", "run-1", "--plan", "dagger"], "--run"),
    (["run", "--plan", "dagger", "--image", "r/x@sha256:" + "a" * 64, "--only", "nope"], "--only"),
])
def test_llmgate_run_refuses_what_does_not_fit_the_plan(tmp_path: Path, args: list[str], where: str):
    result = CliRunner().invoke(cli_app, ["--workdir", str(tmp_path / "state"), *args])
    assert result.exit_code == 2, result.output
    assert where in result.output
    assert Workspace(tmp_path / "state").store.latest() is None  # refused before a run was recorded


# -- GPUs ---------------------------------------------------------------------------------------------------
def test_gpus_on_an_engine_without_gpu_support_fail_first_and_clearly(tmp_path: Path):
    """The dagger CLI without _EXPERIMENTAL_DAGGER_GPU_SUPPORT starts an engine that refuses GPU containers:
    `run` says so, and what to do, before building anything; no traceback."""
    rec = record_run(tmp_path, gpu_support=False, target="production")
    assert rec.run.returned is None and rec.run.error is not None
    message = error_message(rec.run.error)
    assert "FunctionError: --gpus: the Dagger engine was started without GPU support" in message
    assert "_EXPERIMENTAL_DAGGER_GPU_SUPPORT=1" in message and "--gpus=false" in message
    assert "Traceback" not in rec.runtime.stderr, rec.runtime.stderr[-2000:]
    assert not [e for e in rec.engine.events if e.kind in ("build", "publish")]  # nothing built or pushed


def test_gpus_false_runs_on_a_cpu_engine(tmp_path: Path):
    rec = record_run(tmp_path, gpu_support=False, gpus=False, exits={"gate": 1}, target="production")
    assert rec.run.error is None, error_message(rec.run.error) if rec.run.error else ""
    assert not any(o.field == "experimentalWithAllGPUs" for o in rec.engine.objects.values())
    assert [e.kind for e in rec.engine.events if e.kind.startswith("service")] == ["service-start", "service-stop"]


def test_unauthenticated_requests_are_refused():
    import httpx

    with RecordingEngine() as engine:
        r = httpx.post(f"http://127.0.0.1:{engine.port}/query", json={"query": "{ __typename }"})
        assert r.status_code == 401 and engine.unauthorized == 1 and engine.requests == []


# -- the workflow and the README call the module's real functions ------------------------------------------
def _dagger_calls(text: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [shlex.split(line.strip()) for line in joined.splitlines() if line.strip().startswith("dagger call ")]


def _check_call(argv: list[str], functions: dict[str, object]) -> str:
    """Every option of `dagger call FN …` is a parameter of FN; secrets are passed by reference."""
    assert argv[:2] == ["dagger", "call"], argv
    fn_name = argv[2].replace("-", "_")
    assert fn_name in functions, f"no function {argv[2]}"
    params = {p.name: p for p in functions[fn_name].parameters.values()}  # type: ignore[attr-defined]
    i = 3
    while i < len(argv) and argv[i].startswith("--"):
        name = argv[i][2:].split("=", 1)[0].replace("-", "_")
        assert name in params, f"{argv[2]} has no --{argv[i][2:]}"
        p = params[name]
        if p.resolved_type is bool or _base(p.resolved_type) == {bool}:
            i += 1
            continue
        value = argv[i].split("=", 1)[1] if "=" in argv[i] else argv[i + 1]
        if _base(p.resolved_type) == {dagger.Secret}:
            assert re.match(r"^(env|file|cmd)://", value), f"--{argv[i][2:]} must name a secret source, not a value"
        i += 1 if "=" in argv[i] else 2
    return fn_name


def test_workflow_calls_run_with_its_real_arguments(module_type):
    _, obj = module_type
    calls = _dagger_calls(WORKFLOW.read_text())
    assert len(calls) == 3  # the pull-request preview, main, a tag
    assert {_check_call(c, obj.functions) for c in calls} == {"run"}
    signing = [c for c in calls if "--cosign-key" in c]
    assert len(signing) == 2 and all("--store-url" in c for c in signing)
    assert sum("--promote" in c for c in calls) == 1


def test_readme_dagger_section_matches_the_module(module_type):
    _, obj = module_type
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Dagger"):]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else len(section)]
    calls = _dagger_calls(section)
    assert {_check_call(c, obj.functions) for c in calls} == FUNCTIONS
    run_calls = [c for c in calls if c[2] == "run"]
    assert any("--store-url" in c for c in run_calls)
    for name in ci_plan.EXPORT_FILES:
        assert name in section, f"README does not say the export holds {name}"


def test_actionlint_accepts_the_workflow_and_rejects_a_broken_one(tmp_path: Path):
    from pipeline.adapters.tools import find_tool

    exe = find_tool("actionlint")
    assert exe, "actionlint missing: install the dev extras (`pip install -e .[dev]`)"
    if shutil.which("shellcheck") is None and os.environ.get("LLMGATE_REQUIRE_DOCKER") == "1":
        pytest.fail("shellcheck missing (scripts/setup.sh installs it): actionlint would not check run: scripts")
    config = REPO / ".github" / "actionlint.yaml"
    ok = subprocess.run([exe, "-config-file", str(config), str(WORKFLOW)], capture_output=True, text=True, timeout=60,
                        check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "llmgate.yml"
    broken.write_text(WORKFLOW.read_text().replace("github.event_name == 'pull_request'", "github.event_nam == 'pr'"))
    bad = subprocess.run([exe, "-config-file", str(config), str(broken)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 1 and "event_nam" in bad.stdout


def test_recorded_objects_are_typed_like_the_engine_s(recorded: Recorded):
    """Sanity of the double itself: ids load only as the type they were made as."""
    engine = recorded.engine
    d = engine.get(recorded.source_id)
    assert isinstance(d, Obj) and d.type == "Directory"
    result = engine.execute(f'{{ node(id: "{recorded.source_id}") {{ ... on Container {{ id }} }} }}', None)
    assert result.get("errors") and "loaded as Container" in result["errors"][0]["message"]
