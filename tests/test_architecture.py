"""The architecture the code keeps: layers checked by import-linter, typed payloads read as models,
no plug-ins loaded by name, and one plan that every face runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pipeline.models import Stage
from pipeline.orchestrate.plan import PLANS

REPO = Path(__file__).resolve().parents[1]
CODE = [p for root in ("pipeline", "evals", "benchmarks", "scripts") for p in (REPO / root).rglob("*.py")]


def test_import_contracts_hold():
    """faces -> orchestrate -> stages -> domain -> adapters/store -> core, SQL only in the store, and the
    docker SDK, the Kubernetes client and subprocesses only behind adapters (pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    kept = re.findall(r"^(.+) KEPT(?: \(\d+ ignored imports?\))?$", proc.stdout, re.MULTILINE)
    assert len(kept) == 3, proc.stdout


def test_the_code_passes_the_linter():
    """ruff with the rules in pyproject.toml, over everything the project ships and tests."""
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "--no-cache", "--output-format", "concise",
                           "pipeline", "evals", "tests", "benchmarks", "scripts", ".dagger"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_import_contract_catches_an_upward_import(tmp_path):
    """The check is not vacuous: a domain module importing a stage breaks it."""
    bad = REPO / "pipeline" / "gates" / "_upward_probe.py"
    bad.write_text("from pipeline.stages import context  # noqa: F401\n")
    try:
        lint = Path(sys.executable).with_name("lint-imports")
        proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300,
                              check=False)
    finally:
        bad.unlink()
    assert proc.returncode != 0
    assert "pipeline.gates._upward_probe" in proc.stdout


def test_payloads_are_never_read_by_string_keys():
    """`details["…"]` / `details.get(…)` only in the module that owns a stage's payload (none today:
    every payload is a model)."""
    offenders = []
    for path in CODE:
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"\bdetails(\[\s*[\"']|\.get\()", line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def test_no_module_is_loaded_by_name():
    """Stages, gates and adapters are wired by imports a reader can follow. (scripts/vendor_kserve_crds.py
    walks KServe's generated SDK by class name: that is its job, and it is not part of the product.)"""
    product = [p for p in CODE if p.parts[len(REPO.parts)] in ("pipeline", "evals")]
    offenders = [str(p.relative_to(REPO)) for p in product if "import_module(" in p.read_text()]
    assert offenders == []


def test_every_stage_runs_in_every_plan_in_one_order():
    for plan in PLANS.values():
        assert plan.stages == list(Stage), plan.name
        for i, step in enumerate(plan.steps):
            assert all(plan.stages.index(n) < i for n in step.needs), (plan.name, step.stage)


POLICIES = sorted(p.name for p in REPO.glob("gates*.yaml"))


def _policy_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "policy", "check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_shipped_policy_is_fed_by_both_plans():
    """`llmgate policy check POLICY --plan local|dagger` exits 0 for every policy the project ships."""
    assert {"gates.yaml", "gates.local.yaml"} <= set(POLICIES)
    for policy in POLICIES:
        for plan in PLANS:
            r = _policy_check(policy, "--plan", plan)
            assert r.returncode == 0, (policy, plan, r.stdout[-2000:], r.stderr[-2000:])
            assert f"the {plan} plan feeds every required gate" in r.stdout


def test_a_required_gate_no_plan_step_feeds_is_named(tmp_path):
    """The Dagger plan's build step records only what the registry says (image_bytes): a required gate on
    the build time is fed by the local plan and by no step of the dagger plan."""
    policy = tmp_path / "build-time.yaml"
    policy.write_text(f"extends: {REPO / 'gates.yaml'}\ngates:\n  - name: build_time\n    source: build.build_s\n"
                      "    threshold: 600\n")
    local, dagger = _policy_check(str(policy), "--plan", "local"), _policy_check(str(policy), "--plan", "dagger")
    assert local.returncode == 0, local.stderr
    assert dagger.returncode == 1
    assert "required gate build_time reads build.build_s" in dagger.stderr
    assert "records only image_bytes" in dagger.stderr


def _doc_layers(doc: str) -> list[set[str]]:
    """The modules of each layer of ARCHITECTURE.md's diagram, top first (layers are separated by a line
    holding only `│`)."""
    block = doc.split("## Layers", 1)[1].split("```", 2)[1]
    layers: list[set[str]] = [set()]
    for line in block.splitlines():
        if re.fullmatch(r"\s*│\s*", line):
            layers.append(set())
        else:
            layers[-1] |= set(re.findall(r"(?<![\w.])(pipeline\.\w+|evals)\b", line))
    return [layer for layer in layers if layer]


def _doc_rules(doc: str) -> list[str]:
    rules = doc.split("contracts in `pyproject.toml`):", 1)[1].split("\n\n", 2)[1]
    return [" ".join(r.split()) for r in re.split(r"^\d+\. ", rules, flags=re.MULTILINE) if r.strip()]


def test_architecture_md_states_exactly_the_import_contracts():
    """ARCHITECTURE.md's diagram is the layers contract, layer by layer, and each of its rules "X are
    imported directly by no module except Y" is a forbidden contract over every other module, with
    exactly the exemptions the rule names. A rule without a contract, or a contract without a rule,
    fails here."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    layers_contract = next(c for c in contracts if c["type"] == "layers")
    layers = [{m.strip() for m in layer.split(":")} for layer in layers_contract["layers"]]
    assert _doc_layers(doc) == layers
    every = set().union(*layers)
    packages = {f"pipeline.{p.stem if p.is_file() else p.name}" for p in (REPO / "pipeline").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()} | {"evals"}
    assert packages == every  # no package outside the layers, hence outside every rule

    rules = _doc_rules(doc)
    forbidden = [c for c in contracts if c["type"] == "forbidden"]
    assert rules[0].startswith("**Layers**") and len(rules) == 1 + len(forbidden) == len(contracts)
    for rule in rules[1:]:
        what, _, rest = rule.partition(" are imported directly by no module except ")
        exempt_part, _, tail = rest.partition("(")
        modules = set(re.findall(r"`([\w.]+)`", what))
        contract = next(c for c in forbidden if set(c["forbidden_modules"]) == modules)
        assert set(contract["source_modules"]) == every - set(re.findall(r"`([\w.]+)`", exempt_part)), rule
        assert set(contract.get("ignore_imports", [])) == set(re.findall(r"`([\w.]+ -> [\w.]+)`", tail)), rule
        assert contract["allow_indirect_imports"] is True  # "directly"
