"""Promotion trusts only signed facts: real keys, a real registry, real signatures and verdict
attestations made by the sign, gate and attest stages, and a GitOps repository as the target.

A release is the (image digest, model digest) pair. The good release is promoted with both digests in
the overlay; the degraded one (same image, other weights, blocked verdict) is refused naming the pair.
Each forgery (a run file, a store row edited with SQL, weights swapped after the verdict, a verdict
signed by another key, a run id that climbs out of the work dir) is refused and leaves every stored
run record byte-identical."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipeline.config import PipelineConfig
from pipeline.models import Decision, ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate.plan import get_plan
from pipeline.orchestrate.runner import Runner
from pipeline.progress import NullReporter
from pipeline.promote.gitops import GitopsBackend
from pipeline.stages.context import PromoteRequest, StageOptions
from pipeline.supplychain.cosign_keys import write_key_pair
from pipeline.workspace import Workspace
from tests.promote_helpers import git, gitops_repo, snapshot
from tests.stage_helpers import record_measured
from tests.trust_images import trust_repo

pytestmark = pytest.mark.docker  # the real local registry holds the images, signatures and attestations

REPO = Path(__file__).resolve().parents[1]
KFILE = "manifests/overlays/canary/kustomization.yaml"
PASSING = "version: 1\ngates:\n  - name: signature\n    source: sign.verified\n    threshold: 1\n    key: true\n"
BLOCKING = PASSING + "  - name: no_secret_in_image\n    source: leak.leaks\n    threshold: 0\n    key: true\n"


class Env:
    def __init__(self, tmp: Path, repository: str, image: str, store_url: str) -> None:
        self.tmp, self.repository, self.image, self.store_url = tmp, repository, image, store_url
        self.ws = Workspace(tmp / "ws")  # the store comes from LLMGATE_STORE_URL, as on a CI runner
        self.keys = tmp / "keys"
        write_key_pair(self.keys, b"")
        self.gitops = gitops_repo(tmp)

    def cfg(self, policy: str, keys: Path | None = None) -> PipelineConfig:
        path = self.tmp / f"{policy}.yaml"
        path.write_text(PASSING if policy == "passing" else BLOCKING)
        cfg = PipelineConfig()
        cfg.gates_file = str(path)
        cfg.eval.ground_truth = str(REPO / "ground_truth" / "v1")
        keys = keys or self.keys
        cfg.sign.key.file, cfg.sign.public_key = str(keys / "cosign.key"), str(keys / "cosign.pub")
        return cfg

    def runner(self, cfg: PipelineConfig, **options: object) -> Runner:
        return Runner(ws=self.ws, cfg=cfg, plan=get_plan("dagger"), reporter=NullReporter(),
                      options=StageOptions(**options))  # type: ignore[arg-type]

    def weights(self, name: str, content: bytes) -> Path:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(content)
        return d

    def gated(self, policy: str, weights: Path, *, keys: Path | None = None) -> RunRecord:
        """A release signed, gated and attested by the real stages."""
        runner = self.runner(self.cfg(policy, keys))
        run = runner.create(image=ImageRef.parse(self.image), model_dir=weights)
        self.booted(run, runner.cfg)
        for stage in (Stage.SIGN, Stage.GATE, Stage.ATTEST):
            runner.run_stage(run, stage)
        return self.ws.store.get(run.run_id)

    def booted(self, run: RunRecord, cfg: PipelineConfig) -> None:
        """The load time a boot measured (the GitOps overlay's startup budget is checked against it),
        signed where it was measured as the runner signs it."""
        record_measured(run, StageResult(stage=Stage.BOOT, status=StageStatus.OK,
                                         metrics={"load_time_s": 20.0, "load_time_p95_s": 20.0}), cfg)
        self.ws.checkpoint(run)

    def promote(self, run_id: str, target: str = "canary", cfg: PipelineConfig | None = None, dry_run: bool = False):
        runner = self.runner(cfg or self.cfg("passing"), promote=PromoteRequest(
            target=target, backend=GitopsBackend(repo=self.gitops), dry_run=dry_run))
        return runner.run_stage(self.ws.store.get(run_id), Stage.PROMOTE).details

    def sql(self, statement: str, **params: object) -> list[tuple]:
        """Raw SQL on the store, as someone with database access would run it."""
        engine = create_engine(self.store_url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def runs_table(self) -> list[tuple]:
        return self.sql("SELECT * FROM runs ORDER BY run_id")


@pytest.fixture
def env(tmp_path: Path, local_stack, store_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Runs on SQLite and on PostgreSQL (the `store_url` fixture)."""
    monkeypatch.setenv("LLMGATE_ACTOR", "ci-bot")
    monkeypatch.setenv("LLMGATE_STORE_URL", store_url)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    with trust_repo() as repo:
        yield Env(tmp_path, repo.repository, repo.image(), store_url)


def test_good_release_is_promoted_with_both_digests_and_degraded_twin_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    good = env.gated("passing", env.weights("good", b"good weights"))
    degraded = env.gated("blocking", env.weights("degraded", b"degraded weights"))
    assert good.image.digest == degraded.image.digest and good.model.digest != degraded.model.digest
    assert good.decision is Decision.PASS and degraded.decision is Decision.BLOCKED

    before = env.runs_table()
    refused = env.promote(degraded.run_id)
    assert refused.outcome == "refused"
    assert f"(image {degraded.image.by_digest}, model {degraded.model.digest})" in refused.reason
    assert "blocked" in refused.reason
    assert env.runs_table() == before  # a refusal is an audit event, not a change to the release's record

    done = env.promote(good.run_id)
    assert done.outcome == "promoted", done.reason
    overlay = git(env.gitops, "show", f"{done.branch}:{KFILE}")
    assert good.image.digest in overlay and good.model.digest in overlay
    assert degraded.model.digest not in overlay
    assert env.ws.store.get(good.run_id).promotion.outcome == "promoted"
    audit = [(rid, rec.outcome) for rid, rec in env.ws.store.promotions("canary")]
    assert audit == [(degraded.run_id, "refused"), (good.run_id, "promoted")]


def test_a_store_row_edited_to_say_pass_promotes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    degraded = env.gated("blocking", env.weights("degraded", b"degraded weights"))
    record = degraded.model_copy(update={"decision": Decision.PASS, "decision_reason": ""})
    env.sql("UPDATE runs SET decision='pass', record_json=:doc WHERE run_id=:id", doc=record.model_dump_json(),
            id=degraded.run_id)
    assert env.ws.store.get(degraded.run_id).decision is Decision.PASS
    repo_before, before = snapshot(env.gitops), env.runs_table()
    details = env.promote(degraded.run_id)
    assert details.outcome == "refused" and "newest signed verdict" in details.reason
    assert env.runs_table() == before and snapshot(env.gitops) == repo_before


def test_weights_swapped_after_the_verdict_are_refused(env) -> None:  # type: ignore[no-untyped-def]
    weights = env.weights("good", b"good weights")
    good = env.gated("passing", weights)
    (weights / "model.safetensors").write_bytes(b"other weights")
    before = env.runs_table()
    details = env.promote(good.run_id)
    assert details.outcome == "refused" and "changed since the verdict" in details.reason
    assert env.runs_table() == before


def test_a_verdict_signed_by_another_key_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    other = env.tmp / "other-keys"
    write_key_pair(other, b"")
    good = env.gated("passing", env.weights("good", b"good weights"), keys=other)
    before = env.runs_table()
    details = env.promote(good.run_id)  # verifies with the configured key, not the one that signed
    assert details.outcome == "refused" and "image signature" in details.reason
    assert env.runs_table() == before


def test_production_never_accepts_a_verdict_made_under_the_local_policy(env) -> None:  # type: ignore[no-untyped-def]
    cfg = env.cfg("passing")
    local = env.tmp / "trust.local.yaml"
    local.write_text(PASSING)
    cfg.gates_file = str(local)
    runner = env.runner(cfg)
    run = runner.create(image=ImageRef.parse(env.image), model_dir=env.weights("good", b"good weights"))
    env.booted(run, cfg)
    for stage in (Stage.SIGN, Stage.GATE, Stage.ATTEST):
        runner.run_stage(run, stage)
    assert env.ws.store.get(run.run_id).decision is Decision.PASS
    details = env.promote(run.run_id, target="production", cfg=cfg)
    assert details.outcome == "refused" and "local policy" in details.reason
    assert env.promote(run.run_id, target="canary", cfg=cfg).outcome == "promoted"


def test_dry_run_changes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    good = env.gated("passing", env.weights("good", b"good weights"))
    repo_before, before = snapshot(env.gitops), env.runs_table()
    details = env.promote(good.run_id, dry_run=True)
    assert details.outcome == "dry-run" and good.model.digest in details.diff
    assert snapshot(env.gitops) == repo_before and env.runs_table() == before
    assert env.ws.store.promotions("canary") == []


def _cli(env, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    import os

    return subprocess.run([sys.executable, "-m", "pipeline", "--workdir", str(env.ws.root), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                          env={**os.environ, "LLMGATE_STORE_URL": env.store_url})


def test_cli_takes_run_ids_only_and_needs_an_explicit_release(env) -> None:  # type: ignore[no-untyped-def]
    good = env.gated("passing", env.weights("good", b"good weights"))
    forged = env.tmp / "run.json"
    forged.write_text(good.model_dump_json())
    before = env.runs_table()
    for ref in (str(forged), "../../escape"):
        r = _cli(env, "promote", "--target", "canary", "--run", ref, "--gitops-repo", str(env.gitops))
        assert r.returncode == 2, r.stderr
        assert "not a run id" in r.stderr and "Traceback" not in r.stderr
    r = _cli(env, "promote", "--target", "canary", "--gitops-repo", str(env.gitops))
    assert r.returncode == 2 and "--run" in r.stderr  # no default: the newest run of all is never promoted
    assert env.runs_table() == before and not (env.tmp.parent / "escape").exists()
