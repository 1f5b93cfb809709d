"""The stage registry is the one description of a stage: the plans, the dispatch, reuse, the measurement
sets, the metric catalogue, the payload union and the stage commands are read from it, and what cannot be
derived from it (the `Stage` enum is part of the stored record's schema) must agree with it. No other
module lists the stages."""

from __future__ import annotations

import typing
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline import metrics
from pipeline.config import PipelineConfig
from pipeline.errors import ExitCode
from pipeline.models import Decision, ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate import reuse
from pipeline.orchestrate.plan import CREDENTIALS, PLANS, Plan, steps_of
from pipeline.orchestrate.runner import Runner
from pipeline.progress import NullReporter
from pipeline.schemas import StageDetails
from pipeline.stages import gate
from pipeline.stages.context import StageContext, StageOptions
from pipeline.stages.registry import STAGES, Registry
from pipeline.stages.spec import StageSpec
from pipeline.workspace import Workspace

DIGEST = "sha256:" + "ab" * 32


def test_the_stage_enum_is_the_registry_in_order():
    assert [s.stage for s in STAGES] == list(Stage)
    for plan in PLANS.values():
        assert [s.stage for s in plan.steps] == list(Stage)
        assert all(step.spec is STAGES.spec(step.stage) for step in plan.steps)


def test_the_payload_union_is_the_registrys_payloads():
    union = typing.get_args(typing.get_args(StageDetails)[0])
    assert set(union) == {s.details for s in STAGES}
    for spec in STAGES:
        assert spec.details is not None
        assert spec.details.model_fields["stage"].default == spec.name, spec.name


def test_a_second_payload_model_for_a_stage_is_refused_where_it_is_defined():
    from typing import Literal

    from pipeline.schemas import Details, LeakDetails

    with pytest.raises(TypeError, match=r"stage 'leak' has two payload models: pipeline.schemas.leak.LeakDetails and "):
        class OtherLeak(Details):
            stage: Literal["leak"] = "leak"

    assert Details.registered()["leak"] is LeakDetails  # the first one stands
    assert set(Details.registered()) == {s.name for s in STAGES}


def test_the_metric_catalogue_is_what_the_specs_declare_and_covers_every_produced_metric():
    catalogue = STAGES.catalogue
    assert metrics.catalogue() is catalogue  # what the reports read is the registry's
    assert {stage: set(known) for stage, known in catalogue.metrics.items()} == {
        s.stage: {m.name for m in s.metrics} for s in STAGES if s.metrics}
    for plan in PLANS.values():
        assert plan.catalogue == catalogue, plan.name
        for step in plan.steps:
            assert set(step.produces or ()) <= set(catalogue.metrics.get(step.stage, {})), (plan.name, step.stage)
    assert set(STAGES.spec(Stage.BENCH).recorded) == set(catalogue.metrics[Stage.BENCH])
    assert catalogue.item_stage is Stage.EVAL and catalogue.samples[Stage.BENCH] == {"ttft_s", "tpot_s", "e2e_s"}
    assert catalogue.performance_samples == {Stage.BENCH: frozenset({"ttft_s", "tpot_s", "e2e_s"})}


def test_the_catalogue_reaches_readers_without_a_plan_only_through_the_registry(tmp_path: Path):
    """Below the stages nothing can build the catalogue: reading it before the registry installed it is an
    error naming the fix (never an empty catalogue that would refuse every gate), and every CLI command
    installs it before it runs."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = ("from pipeline.gates.policy import load_policy; from pipeline.supplychain.gate_sections import SECTIONS; "
            "load_policy('gates.yaml', sections=SECTIONS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                         check=False)
    assert out.returncode != 0 and "no metric catalogue is installed: import pipeline.stages.registry" in out.stderr
    # `runs list` imports no plan: the command wrapper installs the catalogue its units are read from
    code = ("import sys; from typer.testing import CliRunner; from pipeline.cli import app; "
            f"r = CliRunner().invoke(app, ['--workdir', {str(tmp_path / 'state')!r}, 'runs', 'list']); "
            "print(r.exit_code, 'pipeline.stages.registry' in sys.modules, 'pipeline.orchestrate.plan' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                         check=False)
    assert out.stdout.strip() == "0 True False", out.stdout + out.stderr


def test_a_metric_declared_twice_or_item_scores_from_two_stages_are_refused():
    twice = replace(STAGES.spec(Stage.LEAK), metrics=(*STAGES.spec(Stage.LEAK).metrics, metrics.Metric("leaks", "count", "lower")))
    with pytest.raises(ValueError, match="leak declares metric 'leaks' twice"):
        STAGES.replace(twice)
    items = replace(STAGES.spec(Stage.BENCH), items=STAGES.spec(Stage.EVAL).items)
    with pytest.raises(ValueError, match="both declare per-item scores"):
        STAGES.replace(items)


def test_credentials_and_measurement_sets_come_from_the_specs():
    assert {c for s in STAGES for c in s.credentials} <= set(CREDENTIALS)
    assert reuse.MEASUREMENTS == {Stage.BOOT, Stage.BENCH}
    assert {s.stage for s in STAGES if s.measurement} == {Stage.BUILD, Stage.BOOT, Stage.BENCH, Stage.EVAL}
    assert {s.stage for s in STAGES if s.reuse_key is None} == {Stage.SIGN, Stage.GATE, Stage.ATTEST, Stage.PROMOTE}


def test_the_evidence_stages_come_from_the_specs():
    measured = (Stage.BUILD, Stage.LEAK, Stage.SCAN, Stage.SIGN, Stage.BOOT, Stage.BENCH, Stage.EVAL, Stage.MANIFESTS)
    assert STAGES.linked == measured
    for plan in PLANS.values():
        assert plan.linked == measured, plan.name
    # a context nobody told which links to verify cannot judge (it never means "verify none")
    with pytest.raises(RuntimeError, match="evidence stages"):
        StageContext(cfg=PipelineConfig(), ws=Workspace(Path("/nonexistent-ws"))).linked_stages()


def test_a_registry_refuses_a_stage_that_reads_a_later_one():
    late = replace(STAGES.spec(Stage.LEAK), needs=(Stage.BENCH,))
    with pytest.raises(ValueError, match="leak reads"):
        STAGES.replace(late)


# A toy check: it counts what it found in the run's tag, so the test can make it find something. It records
# a metric no other stage declares, declared in its spec alone: the gate reads it through the plan's catalogue.
def toy_check(run: RunRecord, ctx: StageContext) -> StageResult:
    found = float((run.image.tag or "").count("x"))
    return StageResult(stage=Stage.MANIFESTS, status=StageStatus.OK, metrics={"toy_findings": found})


TOY = StageSpec(stage=Stage.MANIFESTS, run=toy_check, doc="a toy check", check=lambda r: r.metrics["toy_findings"] == 0,
                metrics=(metrics.Metric("toy_findings", "count", "lower"),))
POLICY = "version: 1\ngates:\n  - name: toy\n    source: manifests.toy_findings\n    threshold: 0\n    key: true\n"


def _gated(tmp_path: Path, tag: str) -> tuple[RunRecord, ExitCode]:
    registry = Registry((TOY, gate.SPEC))  # the toy stage and the gate: through the registry alone
    plan = Plan(name="local", steps=steps_of(registry, "local"))
    (tmp_path / "gates.yaml").write_text(POLICY)
    cfg = PipelineConfig()
    cfg.gates_file = str(tmp_path / "gates.yaml")
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    runner = Runner(ws=Workspace(tmp_path / f"ws-{tag}"), cfg=cfg, plan=plan, reporter=NullReporter(),
                    parallel=False, options=StageOptions())
    run = runner.create(image=ImageRef(repository="127.0.0.1:5000/llmgate/toy", tag=tag, digest=DIGEST),
                        model_dir=model)
    runner.run(run)
    res = run.stages["manifests"]
    return run, TOY.exit_code(run, res)


def test_a_stage_added_through_the_registry_runs_in_a_plan_and_is_judged_by_a_gate(tmp_path: Path):
    assert STAGES.catalogue.metric(Stage.MANIFESTS, "toy_findings") is None  # known to the toy plan only
    clean, clean_exit = _gated(tmp_path, "v1")
    assert clean.stages["manifests"].metrics == {"toy_findings": 0.0}
    assert clean_exit is ExitCode.PASS and clean.decision is Decision.PASS, clean.decision_reason
    assert [g.name for g in clean.gates] == ["toy"]

    found, found_exit = _gated(tmp_path, "vxx")
    assert found.stages["manifests"].metrics == {"toy_findings": 2.0}
    assert found_exit is ExitCode.GATE_FAILED and found.decision is Decision.BLOCKED
    (verdict,) = found.gates
    assert verdict.source == "manifests.toy_findings" and verdict.status.value == "fail" and verdict.value == 2.0
    assert TOY.outcome(found.stages["manifests"]) == "blocked"


def test_the_plans_load_no_optional_extra_and_the_cli_no_stage():
    """The Dagger module reads the plans with llmgate's core only; `llmgate --help` loads no stage."""
    import subprocess
    import sys

    code = ("import sys, pipeline.orchestrate.plan, pipeline.cli; "
            "print(sorted(m for m in ('torch', 'ragas', 'datasets', 'sentence_transformers', 'transformers', 'docker',"
            " 'kubernetes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
    code = "import sys, pipeline.cli; print('pipeline.stages.registry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
    # the root help lists every stage's command without building the ones made from a spec
    code = ("import sys; from typer.testing import CliRunner; from pipeline.cli import app; "
            "r = CliRunner().invoke(app, ['--help'], terminal_width=200); "
            "print(r.exit_code, 'pipeline.stages.registry' in sys.modules, 'llmgate attest --help' in r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "0 False True", out.stdout + out.stderr


def test_every_registered_stage_has_its_command_and_a_plain_one_is_built_from_the_spec():
    import typer

    from pipeline.cli import app
    from pipeline.cli.app import LazyCommand

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert {s.name for s in STAGES} <= set(group.commands)
    built = {}
    for spec in STAGES:
        cmd = group.commands[spec.name]
        if isinstance(cmd, LazyCommand):
            built[spec.name] = cmd.real()
    assert set(built) == {"leak", "sign", "boot", "bench", "attest"}  # the rest do more than run their step
    options = {name: {o for p in cmd.params for o in p.opts} for name, cmd in built.items()}
    assert options["sign"] == {"--run", "--config", "-c"}  # never reused, no server
    assert options["leak"] == {"--run", "--config", "-c", "--fresh"}
    assert options["boot"] == options["bench"] == {"--run", "--config", "-c", "--server-url", "--fresh"}
    assert built["leak"].help == STAGES.spec(Stage.LEAK).help
    assert built["attest"].help.startswith("Publish the gate's signed verdict")  # no help of its own: the doc


def test_a_plain_stage_command_refuses_an_option_its_spec_does_not_give_and_names_a_bad_run(tmp_path: Path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    wd = ["--workdir", str(tmp_path / "state")]
    refused = CliRunner().invoke(app, [*wd, "sign", "--server-url", "http://x:1"])
    assert refused.exit_code == 2 and "--server-url" in refused.output  # sign talks to no server
    missing = CliRunner().invoke(app, [*wd, "leak", "--run", "nope"])
    assert missing.exit_code == 2 and "no run with id 'nope'" in missing.output, missing.output


# The registry lists the stages; `Stage` (pipeline/models.py) is the vocabulary the stored record is typed
# with, checked above to be the registry in order. Nothing else may enumerate them: a module naming this
# many stages is a parallel description that adding a stage would have to edit.
ENUMERATORS = {"pipeline/stages/registry.py", "pipeline/models.py"}
MOST_STAGES_NAMED = 6


def stages_named(source: str) -> set[str]:
    """The stages a module names: `Stage.X` members and stage-name string literals (docstrings aside)."""
    import ast

    tree = ast.parse(source)
    members = {s.name: s.value for s in Stage}
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    named: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "Stage" and n.attr in members:
            named.add(members[n.attr])
        elif isinstance(n, ast.Constant) and n.value in set(members.values()) and id(n) not in docs:
            named.add(n.value)
    return named


def test_the_scan_counts_members_and_stage_keys_but_not_docstrings():
    source = ('"""build leak scan sign boot bench eval"""\nfrom pipeline.models import Stage\n'
              'A = (Stage.BUILD, Stage.LEAK, Stage.SCAN)\nB = {"sign": 1, "boot": 2}\nC = run.stage("bench")\n')
    assert stages_named(source) == {"build", "leak", "scan", "sign", "boot", "bench"}


def test_no_module_but_the_registry_and_the_stage_enum_enumerates_the_stages():
    root = Path(__file__).resolve().parents[1]
    offenders = {}
    for path in sorted((root / "pipeline").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        named = stages_named(path.read_text())
        if rel not in ENUMERATORS and len(named) > MOST_STAGES_NAMED:
            offenders[rel] = sorted(named)
    assert offenders == {}, f"modules enumerating the stages (derive them from pipeline.stages.registry): {offenders}"
    assert len(stages_named((root / "pipeline/models.py").read_text())) == len(Stage)  # the scan sees the enum


def toy_leak(run: RunRecord, ctx: StageContext) -> StageResult:
    return StageResult(stage=Stage.LEAK, status=StageStatus.OK, metrics={"leaks": float((run.image.tag or "").count("x"))})


def test_a_plain_stage_command_runs_its_step_and_exits_with_the_specs_code(tmp_path: Path, monkeypatch):
    """`llmgate leak` has no function of its own: it runs the plan's leak step and exits as the spec says."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.orchestrate import plan as plans

    toy = StageSpec(stage=Stage.LEAK, run=toy_leak, doc="a toy leak check", check=lambda r: r.metrics["leaks"] == 0,
                    metrics=(metrics.Metric("leaks", "count", "lower"),))
    monkeypatch.setitem(plans.PLANS, "local", Plan(name="local", steps=steps_of(Registry((toy, gate.SPEC)), "local")))
    policy = tmp_path / "gates.yaml"
    policy.write_text("version: 1\ngates:\n  - name: leaks\n    source: leak.leaks\n    threshold: 0\n    key: true\n")
    config = tmp_path / "llmgate.yaml"
    config.write_text(f"gates_file: {policy}\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    ws = Workspace(tmp_path / "state")
    for tag, code in (("v1", ExitCode.PASS), ("vx", ExitCode.GATE_FAILED)):
        cfg = PipelineConfig()
        cfg.gates_file = str(policy)
        runner = Runner(ws=ws, cfg=cfg, plan=plans.PLANS["local"], reporter=NullReporter(), parallel=False,
                        options=StageOptions())
        run = runner.create(image=ImageRef(repository="127.0.0.1:5000/llmgate/toy", tag=tag, digest=DIGEST),
                            model_dir=tmp_path / "model")
        res = CliRunner().invoke(app, ["--workdir", str(ws.root), "leak", "--run", run.run_id, "-c", str(config)])
        assert res.exit_code == code, res.output
        assert f"run {run.run_id}: leak {'ok' if code is ExitCode.PASS else 'blocked'}" in res.output, res.output
        assert ws.load_run(run.run_id).stages["leak"].metrics == {"leaks": float(tag.count("x"))}
