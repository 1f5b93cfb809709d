"""The main job end to end on the embedded local default, against real parts: Docker Engine, the local
registry, a BuildKit build with a secret, the CPU image booted with `transformers serve`, streamed
bench, embedding-scored eval, gate and store. The demo model passes; its degraded twin is blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.adapters.registry import RegistryClient
from pipeline.models import Decision, GateStatus
from pipeline.store import Store

REPO = Path(__file__).resolve().parents[1]
LLMGATE = [sys.executable, "-m", "pipeline"]

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.slow]


def _llmgate(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run([*LLMGATE, *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("models")
    for name, extra in (("good", []), ("degraded", ["--degraded"])):
        r = _llmgate("demo-model", str(root / name), *extra, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    return root


def test_main_job_promotes_good_and_blocks_degraded(local_stack, demo_models, tmp_path):
    store = tmp_path / "results.db"
    good = _llmgate("--store", str(store), "run", "--model-dir", str(demo_models / "good"), "--tag", "e2e-good")
    assert good.returncode == 0, f"stdout:\n{good.stdout[-4000:]}\nstderr:\n{good.stderr[-6000:]}"

    runs = Store(str(store)).runs(tag="e2e-good")
    assert len(runs) == 1
    run = runs[0]
    assert run.decision is Decision.PASS
    assert run.image.digest and run.image.digest.startswith("sha256:")
    for stage in ("build", "leak", "scan", "sign", "boot", "bench", "eval", "manifests", "gate", "attest"):
        assert stage in run.stages, f"missing stage {stage}"
        assert run.stages[stage].status.value == "ok", (stage, run.stages[stage].reason)
    # leak, scan and sign read the pushed image side by side
    group = [run.stages[s] for s in ("leak", "scan", "sign")]
    assert max(r.started_at for r in group) < min(r.finished_at for r in group)
    assert run.model is not None and run.model.digest.startswith("sha256:")
    assert run.stages["leak"].metrics["leaks"] == 0
    assert run.stages["boot"].metrics["load_time_s"] > 0
    bench = run.stages["bench"].metrics
    assert 0 < bench["ttft_p50_s"] <= bench["ttft_p99_s"]
    assert bench["tpot_p50_s"] > 0
    assert run.stages["eval"].metrics["correctness_mean"] > 0
    assert len(run.stages["eval"].items) >= 400
    assert run.ground_truth and run.ground_truth.version == "v3" and len(run.ground_truth.sha256) == 64
    # correctness on v3 checks the facts: the scorer recorded is the fact-checking one
    assert run.stages["eval"].details.scorers["correctness"].id.startswith("fact-correctness/")
    verdicts = {g.name: g for g in run.gates}
    # trivy comes from the venv (CI does not activate it) and must be found and run, not skipped
    assert verdicts["scan"].status is GateStatus.PASS, verdicts["scan"].reason
    # the refusal scorer's calibration on record is found under the id the eval stage records
    assert verdicts["refusal"].status is GateStatus.PASS, verdicts["refusal"].reason
    # signing works on the embedded default: the signature gate ran and passed
    assert verdicts["signature"].status is GateStatus.PASS and verdicts["signature"].required
    run_dir = REPO / ".llmgate" / "runs" / run.run_id
    report = json.loads((run_dir / "report.json").read_text())
    assert report["run_id"] == run.run_id
    assert (run_dir / "report.html").stat().st_size > 1000

    bad = _llmgate("--store", str(store), "run", "--model-dir", str(demo_models / "degraded"), "--tag", "e2e-degraded")
    assert bad.returncode == 1, f"stdout:\n{bad.stdout[-4000:]}\nstderr:\n{bad.stderr[-6000:]}"
    blocked = Store(str(store)).runs(tag="e2e-degraded")[0]
    assert blocked.decision is Decision.BLOCKED
    failed = {g.name for g in blocked.gates if g.status is GateStatus.FAIL}
    assert any("correctness" in name for name in failed), failed
    # same Dockerfile and context: the same image digest is measured, only the model differs
    assert blocked.image.digest == run.image.digest
    assert blocked.model.digest != run.model.digest
    # the unchanged source was not built again; the reused image answers to this run's tag as well
    assert blocked.stages["build"].reused_from == run.run_id
    assert blocked.image.tag == "e2e-degraded"
    with RegistryClient(local_stack.registry) as reg:
        assert reg.resolve("llmgate/server", "e2e-degraded") == run.image.digest
        assert reg.resolve("llmgate/server", "e2e-good") == run.image.digest

    # Promotion trusts the signed verdict for the exact (image, model) pair.
    from tests.promote_helpers import git, gitops_repo

    deploy = gitops_repo(tmp_path)
    refused = _llmgate("--store", str(store), "promote", "--target", "canary", "--run", blocked.run_id,
                       "--gitops-repo", str(deploy))
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert f"model {blocked.model.digest}" in refused.stdout and "refused" in refused.stdout
    done = _llmgate("--store", str(store), "promote", "--target", "canary", "--run", run.run_id,
                    "--gitops-repo", str(deploy))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    branch = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("branch: "))
    overlay = git(deploy, "show", f"{branch}:manifests/overlays/canary/kustomization.yaml")
    assert run.image.digest in overlay and run.model.digest in overlay

    # Every measured result carried a link the gate verified, and `llmgate verify` shows each one, the
    # verdict and its place in the verdict log.
    shown = _llmgate("--store", str(store), "verify", run.image.by_digest, "--model", run.model.digest)
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
    linked = ("build", "leak", "scan", "sign", "boot", "bench", "eval", "manifests")
    assert f"  evidence   valid: {len(linked)} evidence links verified ({', '.join(linked)})" in shown.stdout
    for stage in linked:
        line = next(ln for ln in shown.stdout.splitlines() if ln.startswith(f"    {stage:<10} result sha256:"))
        assert line.endswith("verified") and "NOT VERIFIED" not in line, line
    assert f"  verdict: run {run.run_id}, decision pass, model {run.model.digest}" in shown.stdout
    assert "  log        valid: entry #" in shown.stdout and "newest for the pair: yes" in shown.stdout
