"""The CI workflow: split by trust, the Dagger CLI pinned to the module's engine, GPU support on.

A pull-request job runs the branch's own code, so anything it can read, that code can read. The checks
here read `.github/workflows/llmgate.yml` as GitHub does (every job a pull request can start, every
`secrets.*` it can reach through the workflow's, the job's or a step's text) and hold it to the split:
no signing key, kubeconfig or store credential for such a job, and no environment (whose secrets would
come with it); signing and promotion only in the protected environment, for pushes to main and v* tags.
Each check is also run against a workflow edited the way a regression would edit it, and must refuse it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "llmgate.yml"
RELEASE_ENVIRONMENT = "llmgate-release"
# The only secrets a job that a pull request can start may name: a push credential for the preview
# repository and the judge's API key. Neither signs, promotes or writes the shared store.
PREVIEW_SECRETS = {"LLMGATE_PREVIEW_REGISTRY_PASSWORD", "LLMGATE_JUDGE_API_KEY"}
TRUST_ARGS = {"--cosign-key", "--cosign-password", "--kubeconfig", "--store-url", "--promote"}
# A job `if:` that GitHub evaluates false for every pull_request event: it requires a push.
_PUSH_ONLY = re.compile(r"^github\.event_name\s*==\s*'push'\s*&&")
_SECRET = re.compile(r"\bsecrets\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_SECRETS_WHOLE = re.compile(r"\bsecrets\b(?!\s*\.)")


def _load(text: str) -> dict[str, Any]:
    wf = yaml.safe_load(text)
    if True in wf:  # YAML 1.1 reads the key `on` as a boolean
        wf["on"] = wf.pop(True)
    return wf


def _triggers(wf: dict[str, Any]) -> set[str]:
    on = wf["on"]
    return {on} if isinstance(on, str) else set(on)


def _push_only(job: dict[str, Any]) -> bool:
    cond = str(job.get("if", "")).strip().removeprefix("${{").removesuffix("}}").strip()
    return bool(_PUSH_ONLY.match(cond))


def pull_request_jobs(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every job a pull request can start (all of them, unless the job's `if:` requires a push)."""
    if not _triggers(wf) & {"pull_request", "pull_request_target", "pull_request_review",
                            "pull_request_review_comment", "workflow_run"}:
        return {}
    return {name: job for name, job in wf["jobs"].items() if not _push_only(job)}


def trust_violations(text: str) -> list[str]:
    """What in the workflow hands a pull request's code something that can make a pass count."""
    wf = _load(text)
    problems = []
    for trigger in ("pull_request_target", "workflow_run"):  # they run with the base's secrets
        if trigger in _triggers(wf):
            problems.append(f"trigger {trigger}")
    shared = yaml.safe_dump(wf.get("env", {}))
    for name, job in pull_request_jobs(wf).items():
        body = shared + yaml.safe_dump(job)
        named = set(_SECRET.findall(body))
        if _SECRETS_WHOLE.search(body):
            problems.append(f"{name}: the whole secrets context")
        for secret in sorted(named - PREVIEW_SECRETS):
            problems.append(f"{name}: secrets.{secret}")
        if "environment" in job:
            problems.append(f"{name}: environment {job['environment']!r}")
        perms = job.get("permissions", wf.get("permissions", {}))
        if not isinstance(perms, dict) or any(v not in ("read", "none") for v in perms.values()):
            problems.append(f"{name}: permissions {perms!r}")
        for step in job.get("steps", []):
            for argv in _dagger_calls(str(step.get("run", ""))):
                given = {a.split("=", 1)[0] for a in argv} & TRUST_ARGS
                if given:
                    problems.append(f"{name}: dagger call with {sorted(given)}")
    return problems


def _dagger_calls(script: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", script)
    return [shlex.split(line.strip()) for line in joined.splitlines() if line.strip().startswith("dagger call ")]


def release_violations(text: str) -> list[str]:
    """Signing and promotion only for pushes to protected refs, in the protected environment."""
    wf = _load(text)
    problems = []
    for name, job in wf["jobs"].items():
        signs = any(argv and {a.split("=", 1)[0] for a in argv} & {"--cosign-key", "--promote"}
                    for step in job.get("steps", []) for argv in _dagger_calls(str(step.get("run", ""))))
        if not signs:
            continue
        env = job.get("environment")
        env_name = env.get("name") if isinstance(env, dict) else env
        if env_name != RELEASE_ENVIRONMENT:
            problems.append(f"{name}: signs outside the {RELEASE_ENVIRONMENT} environment ({env_name!r})")
        cond = str(job.get("if", ""))
        refs = set(re.findall(r"github\.ref == '([^']+)'", cond)) | {
            f"{p}*" for p in re.findall(r"startsWith\(github\.ref, '([^']+)'\)", cond)}
        if not _push_only(job) or not refs or not refs <= {"refs/heads/main", "refs/tags/v*"}:
            problems.append(f"{name}: runs for {cond!r}, not only for pushes to main and v* tags")
        for step in job.get("steps", []):
            for argv in _dagger_calls(str(step.get("run", ""))):
                if "--promote" in argv and not str(step.get("if", "")).startswith("startsWith(github.ref, 'refs/tags/v"):
                    problems.append(f"{name}: promotes outside a v* tag")
    return problems


def test_pull_request_jobs_hold_no_signing_key_kubeconfig_or_store_credential():
    text = WORKFLOW.read_text()
    assert set(pull_request_jobs(_load(text))) == {"preview"}
    assert trust_violations(text) == []


def test_signing_and_promotion_run_only_for_protected_refs_in_the_protected_environment():
    text = WORKFLOW.read_text()
    assert release_violations(text) == []
    release = _load(text)["jobs"]["release"]
    assert release["environment"] == RELEASE_ENVIRONMENT
    assert {"COSIGN_PRIVATE_KEY", "LLMGATE_KUBECONFIG", "LLMGATE_STORE_URL"} <= set(
        _SECRET.findall(yaml.safe_dump(release)))


@pytest.mark.parametrize(("edit", "found"), [
    # the key handed to the preview job, as the workflow did before the split
    (lambda t: t.replace("      JUDGE_API_KEY: ${{ secrets.LLMGATE_JUDGE_API_KEY }}\n      # The release",
                         "      JUDGE_API_KEY: ${{ secrets.LLMGATE_JUDGE_API_KEY }}\n"
                         "      COSIGN_PRIVATE_KEY: ${{ secrets.COSIGN_PRIVATE_KEY }}\n      # The release", 1),
     "preview: secrets.COSIGN_PRIVATE_KEY"),
    # a secret named in a step, not in env
    (lambda t: t.replace("            --target production \\\n            export --path llmgate-out\n"
                         "      - name: Verdict\n        # `dagger",
                         "            --target production \\\n            export --path llmgate-out\n"
                         "        env:\n          KUBE: ${{ secrets.LLMGATE_KUBECONFIG }}\n"
                         "      - name: Verdict\n        # `dagger", 1),
     "preview: secrets.LLMGATE_KUBECONFIG"),
    # the release job opened to pull requests
    (lambda t: t.replace("    if: github.event_name == 'push' && (github.ref",
                         "    if: github.event_name != 'schedule' && (github.ref", 1),
     "release: secrets.COSIGN_PRIVATE_KEY"),
    # the preview job given the protected environment (its secrets come with it)
    (lambda t: t.replace("    timeout-minutes: 90\n", "    timeout-minutes: 90\n    environment: llmgate-release\n", 1),
     "preview: environment 'llmgate-release'"),
    # the base's secrets for a pull request's code
    (lambda t: t.replace("on:\n  pull_request:\n", "on:\n  pull_request_target:\n", 1), "trigger pull_request_target"),
    (lambda t: t.replace("            --judge-api-key env://JUDGE_API_KEY \\\n            --target production \\\n"
                         "            export --path llmgate-out\n      - name: Verdict\n        # `dagger",
                         "            --judge-api-key env://JUDGE_API_KEY \\\n            --store-url env://STORE_URL \\\n"
                         "            --target production \\\n            export --path llmgate-out\n"
                         "      - name: Verdict\n        # `dagger", 1),
     "preview: dagger call with ['--store-url']"),
    (lambda t: t.replace("    permissions:\n      contents: read\n    env:\n      _EXPERIMENTAL_DAGGER_GPU_SUPPORT: \"1\"\n"
                         "      REGISTRY: ${{ vars.LLMGATE_PREVIEW_REGISTRY }}",
                         "    permissions:\n      contents: read\n      id-token: write\n    env:\n"
                         "      _EXPERIMENTAL_DAGGER_GPU_SUPPORT: \"1\"\n      REGISTRY: ${{ vars.LLMGATE_PREVIEW_REGISTRY }}", 1),
     "preview: permissions"),
])
def test_the_trust_check_refuses_a_workflow_that_breaks_the_split(edit, found):  # type: ignore[no-untyped-def]
    text = WORKFLOW.read_text()
    edited = edit(text)
    assert edited != text, "the edit did not apply: update it with the workflow"
    assert any(p.startswith(found) for p in trust_violations(edited)), trust_violations(edited)


@pytest.mark.parametrize(("edit", "found"), [
    (lambda t: t.replace("    environment: llmgate-release\n", "", 1), "release: signs outside"),
    (lambda t: t.replace("github.ref == 'refs/heads/main' ||", "github.ref == 'refs/heads/dev' ||", 1),
     "release: runs for"),
    (lambda t: t.replace("        if: startsWith(github.ref, 'refs/tags/v')\n        run: |\n          dagger call run",
                         "        run: |\n          dagger call run", 1), "release: promotes outside"),
])
def test_the_release_check_refuses_signing_outside_protected_refs(edit, found):  # type: ignore[no-untyped-def]
    text = WORKFLOW.read_text()
    edited = edit(text)
    assert edited != text, "the edit did not apply: update it with the workflow"
    assert any(p.startswith(found) for p in release_violations(edited)), release_violations(edited)


def _dagger_jobs(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: j for n, j in wf["jobs"].items()
            if any(_dagger_calls(str(s.get("run", ""))) for s in j.get("steps", []))}


def test_every_dagger_job_installs_the_cli_of_the_module_s_engine_version():
    """The CLI starts an engine of its own version; dagger.json's engineVersion is the version the module
    needs (an older engine refuses it), so the workflow installs exactly that CLI, by a pinned action."""
    engine = json.loads((REPO / "dagger.json").read_text())["engineVersion"]
    wf = _load(WORKFLOW.read_text())
    jobs = _dagger_jobs(wf)
    assert set(jobs) == {"preview", "release"}
    for name, job in jobs.items():
        steps = job["steps"]
        first_call = next(i for i, s in enumerate(steps) if _dagger_calls(str(s.get("run", ""))))
        installs = [s for s in steps[:first_call] if str(s.get("uses", "")).startswith("dagger/dagger-for-github@")]
        assert len(installs) == 1, f"{name}: no dagger/dagger-for-github step before `dagger call`"
        (install,) = installs
        assert re.fullmatch(r"dagger/dagger-for-github@[0-9a-f]{40}", install["uses"]), "pin the action by commit"
        assert str(install["with"]["version"]).removeprefix("v") == engine.removeprefix("v"), name
        assert set(install["with"]) == {"version"}, "install only: the run step calls dagger itself"


def test_every_dagger_job_enables_gpu_support_for_the_cli():
    """`run` gives the server every GPU unless told --gpus=false; the CLI starts the GPU engine only when
    _EXPERIMENTAL_DAGGER_GPU_SUPPORT is set."""
    from pipeline import ci_plan

    wf = _load(WORKFLOW.read_text())
    for name, job in _dagger_jobs(wf).items():
        calls = [a for s in job["steps"] for a in _dagger_calls(str(s.get("run", "")))]
        wants_gpus = any("--gpus=false" not in argv for argv in calls)
        assert not wants_gpus or str(job.get("env", {}).get(ci_plan.GPU_SUPPORT_ENV, "")) not in ("", "0"), name
