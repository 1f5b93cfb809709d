"""The Dagger module, loaded through the Dagger SDK's own registration machinery (no engine here).

It checks what `dagger call --help` would show: each function's name, arguments, types, defaults,
docs and cache policy, and that no secret ever travels as a plain string.
"""

from __future__ import annotations

import os
import re
import sys
import types
import typing
from pathlib import Path

import dagger
import pytest

from pipeline import ci_plan
from pipeline.errors import BadInput

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {"build", "publish", "scan", "sign", "bench", "evaluate", "gate", "promote", "run"}
MEASURING = {"publish", "scan", "sign", "bench", "evaluate", "gate", "promote", "run"}
SECRET_NAME = re.compile(r"(password|passwd|token|secret|credential|(^|_)key$|_key_|kubeconfig|api_key)")


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


def test_dagger_json_points_at_the_module():
    import json

    cfg = json.loads((REPO / "dagger.json").read_text())
    assert cfg["name"] == "llmgate" and cfg["sdk"]["source"] == "python"
    assert (REPO / cfg["source"] / "pyproject.toml").is_file()
    assert "pipeline/**" in cfg["include"]


def test_every_function_is_registered_documented_and_typed(module_type):
    _, obj = module_type
    assert set(obj.functions) == EXPECTED
    for name, fn in obj.functions.items():
        assert fn.doc and len(fn.doc) > 20, f"{name} has no doc for `dagger call --help`"
        assert fn.return_type is not None, name
        for p in fn.parameters.values():
            assert p.resolved_type is not typing.Any, f"{name}.{p.name} untyped"
            assert p.doc, f"{name}.{p.name} has no Doc()"


def test_functions_that_measure_are_never_cached(module_type):
    _, obj = module_type
    for name in MEASURING:
        assert obj.functions[name].cache_policy == "never", name
    assert obj.functions["build"].cache_policy is None  # a build is content-addressed: caching is right


def test_signatures_and_defaults(module_type):
    _, obj = module_type
    f = obj.functions
    params = {n: {p.name: p for p in fn.parameters.values()} for n, fn in f.items()}
    assert params["publish"]["address"].resolved_type is str and not params["publish"]["address"].has_default
    assert params["build"]["dockerfile"].signature.default == "dockerfiles/vllm.cuda.Dockerfile"
    assert params["bench"]["model"].resolved_type is dagger.Directory
    assert params["bench"]["gpus"].signature.default is True
    assert params["promote"]["dry_run"].signature.default is True  # promotion is opt-in
    assert params["gate"]["policy"].signature.default == "gates.yaml"
    assert f["publish"].return_type is str
    assert f["build"].return_type is dagger.Container
    assert f["gate"].return_type is dagger.Directory and f["bench"].return_type is dagger.File


def test_source_directory_has_default_path_and_ignore(module_type):
    mod, obj = module_type
    ctor = obj.get_constructor(mod._converter)
    (source,) = ctor.parameters.values()
    assert source.resolved_type is dagger.Directory
    assert source.default_path == "."
    assert {".venv", ".llmgate", ".git"} <= set(source.ignore or [])


def test_no_secret_is_a_plain_string(module_type):
    _, obj = module_type
    seen = 0
    for name, fn in obj.functions.items():
        for p in fn.parameters.values():
            if SECRET_NAME.search(p.name):
                seen += 1
                assert _base(p.resolved_type) == {dagger.Secret}, f"{name}.{p.name} must be dagger.Secret"
            assert str not in _base(p.resolved_type) or not SECRET_NAME.search(p.name)
    assert seen >= 8  # registry password, pip credentials, CA bundle, cosign key+password, judge key, kubeconfig


def test_module_holds_no_stage_logic():
    """The module wires containers; commands and decisions come from pipeline.ci_plan."""
    src = (REPO / ".dagger" / "src" / "llmgate_dagger" / "main.py").read_text()
    assert "from pipeline import ci_plan" in src
    for forbidden in ("subprocess", "httpx", "--scanners", "cosign sign", "import numpy", "scipy"):
        assert forbidden not in src, forbidden


# -- pipeline.ci_plan (what the module runs) ------------------------------------------------------------
def test_secret_ids_come_from_the_dockerfiles():
    for df in ("dockerfiles/cpu.Dockerfile", "dockerfiles/vllm.cuda.Dockerfile"):
        text = (REPO / df).read_text()
        ids = ci_plan.dockerfile_secret_ids(text)
        assert ids, f"{df} mounts no BuildKit secret"
        assert set(ids) <= set(ci_plan.BUILD_SECRET_IDS), f"{df} mounts ids the module cannot provide: {ids}"


def test_secret_matching_and_required_ids():
    text = "RUN --mount=type=secret,id=ca_bundle,required=true pip install x\nRUN --mount=type=secret,id=pip_conf true\n"
    assert ci_plan.dockerfile_secret_ids(text) == {"ca_bundle": True, "pip_conf": False}
    secret = object()
    assert ci_plan.match_build_secrets("D", text, {"ca_bundle": secret, "pip_credentials": object()}) == {"ca_bundle": secret}
    with pytest.raises(BadInput, match="ca_bundle") as exc:
        ci_plan.match_build_secrets("D", text, {"ca_bundle": None})
    assert exc.value.where == "D"
    with pytest.raises(BadInput, match="unknown build secret"):
        ci_plan.match_build_secrets("D", text, {"aws": secret})


def test_build_args_refuse_credentials():
    assert ci_plan.parse_build_args(["BASE=x", "N=1"]) == {"BASE": "x", "N": "1"}
    for bad in ("NOEQUALS", "HF_TOKEN=abc", "PIP_PASSWORD=x"):
        with pytest.raises(BadInput):
            ci_plan.parse_build_args([bad])


def test_commands_require_digests():
    d = "sha256:" + "b" * 64
    with pytest.raises(BadInput, match="not pinned by digest"):
        ci_plan.new_run_command("reg/app:latest")
    argv = ci_plan.new_run_command(f"reg/app@{d}", tag="v1")
    assert argv[:2] == ["llmgate", "--workdir"] and f"reg/app@{d}" in argv and "v1" in argv
    assert ci_plan.stage_command("bench", url=ci_plan.server_url())[-2:] == ["--url", "http://llm:8000"]


def test_stage_commands_rewrite_the_run_file_they_were_given(tmp_path):
    """The module passes one run.json from function to function: each stage command must update it."""
    import json
    import subprocess

    run_file = tmp_path / "run.json"
    base = [sys.executable, "-m", "pipeline", "--workdir", str(tmp_path / ".llmgate")]
    d = "sha256:" + "c" * 64
    made = subprocess.run([*base, "new-run", "--image", f"127.0.0.1:5000/x@{d}", "--out", str(run_file)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert json.loads(run_file.read_text())["gates"] == []
    gated = subprocess.run([*base, "gate", "--run", str(run_file)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert gated.returncode == 1, gated.stderr  # nothing measured: required gates are not run, so blocked
    record = json.loads(run_file.read_text())
    assert record["decision"] == "blocked" and record["gates"]
