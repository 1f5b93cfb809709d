"""Promotion trusts only signed facts: real keys, a real registry, real signatures and verdict
attestations made by the sign, gate and attest stages, and a GitOps repository as the target.

A release is the (image digest, model digest) pair. The good release is promoted with both digests in
the overlay; the degraded one (same image, other weights, blocked verdict) is refused naming the pair.
Each forgery (a run file, a store row edited with SQL, weights swapped after the verdict, a verdict
signed by another key, a run id that climbs out of the work dir) is refused and leaves every stored
run record byte-identical."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.models import Decision, ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate.plan import get_plan
from pipeline.orchestrate.runner import Runner
from pipeline.progress import NullReporter
from pipeline.promote.gitops import GitopsBackend
from pipeline.promote.targets import load_targets
from pipeline.schemas.gate import GateDetails
from pipeline.stages.context import PromoteRequest, StageOptions
from pipeline.supplychain.cosign_keys import write_key_pair
from pipeline.workspace import Workspace
from tests.promote_helpers import git, gitops_repo, make_target, shipped_floor, snapshot
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
        self.key_id = write_key_pair(self.keys, b"").key_id
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

    def promote(self, run_id: str, target: object = "canary", cfg: PipelineConfig | None = None,
                dry_run: bool = False, backend: object = None):
        chosen = make_target(target) if isinstance(target, str) else target
        runner = self.runner(cfg or self.cfg("passing"), promote=PromoteRequest(
            target=chosen, backend=backend or GitopsBackend(repo=self.gitops, overlays={chosen.name: chosen.overlay}),
            dry_run=dry_run))
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


def prod_target(env, name: str = "production", **config: object):  # type: ignore[no-untyped-def]
    """A production target as targets.yaml declares one: the env's key pinned, gates.yaml pinned as the
    accepted policy and the floor."""
    floor = shipped_floor()
    fields: dict[str, object] = {"production": True, "namespace": "llmgate", "keys": [env.key_id],
                                 "accepted_policies": [floor["sha256"]], "floor": floor}
    fields.update(config)
    return make_target(name, **fields)


def _gated_under(env, policy_file: Path, weights: Path, target: str = "canary") -> RunRecord:  # type: ignore[no-untyped-def]
    cfg = env.cfg("passing")
    cfg.gates_file, cfg.target = str(policy_file), target
    runner = env.runner(cfg)
    run = runner.create(image=ImageRef.parse(env.image), model_dir=weights)
    env.booted(run, cfg)
    for stage in (Stage.SIGN, Stage.GATE, Stage.ATTEST):
        runner.run_stage(run, stage)
    return env.ws.store.get(run.run_id)


def test_production_by_configuration_refuses_a_local_policy_verdict_under_any_name(env) -> None:  # type: ignore[no-untyped-def]
    """#22 repro 4: production-hpa (namespace llmgate) is production because targets.yaml says so, and a byte
    copy of gates.local.yaml saved as gates.prod.yaml is still the local policy (same digest)."""
    shutil.copyfile(REPO / "gates.yaml", env.tmp / "gates.yaml")
    (env.tmp / "gates.prod.yaml").write_bytes((REPO / "gates.local.yaml").read_bytes())
    run = _gated_under(env, env.tmp / "gates.prod.yaml", env.weights("good", b"good weights"), "production-hpa")
    before = env.runs_table()
    details = env.promote(run.run_id, target=prod_target(env, "production-hpa"))
    assert details.outcome == "refused", details.reason
    assert "made under the local policy" in details.reason and "gates.prod.yaml" in details.reason
    assert env.runs_table() == before
    shipped = load_targets(REPO / "targets.yaml")
    assert shipped.get("production-hpa").production and shipped.get("production-hpa").namespace == "llmgate"


def test_a_replaced_public_key_in_the_work_dir_promotes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    """#22 repro 5: the trust root is the pin in the target's configuration (or, for a local target, the local
    key pair), never a public key file that sits next to the store."""
    good = env.gated("passing", env.weights("good", b"good weights"))
    attacker = env.tmp / "attacker"
    write_key_pair(attacker, b"")
    forged = env.gated("passing", env.weights("forged", b"forged weights"), keys=attacker)  # signed by them
    original = (env.keys / "cosign.pub").read_bytes()
    shutil.copyfile(attacker / "cosign.pub", env.keys / "cosign.pub")  # the work dir's key replaced
    pinned = make_target("canary", keys=[env.key_id], accept_local_key=False)
    repo_before, before = snapshot(env.gitops), env.runs_table()
    for run in (good, forged):
        details = env.promote(run.run_id, target=pinned)
        assert details.outcome == "refused" and "is not a key target canary pins" in details.reason
        local = env.promote(run.run_id)  # a local target checks the public key against the local private key
        assert local.outcome == "refused" and "not the public half of the local signing key" in local.reason
    assert snapshot(env.gitops) == repo_before and env.runs_table() == before
    (env.keys / "cosign.pub").write_bytes(original)
    done = env.promote(good.run_id, target=pinned)
    assert done.outcome == "promoted", done.reason
    assert done.guard.key.startswith(f"key {env.key_id}") and "pinned for target canary" in done.guard.key
    unpinned = env.promote(good.run_id)  # the local target: the same branch again, so a noop, with its key said
    assert unpinned.outcome == "noop" and "not pinned" in unpinned.guard.key and "production targets require a pinned key" in unpinned.guard.key


def test_a_policy_that_misses_the_floor_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    """#26 A: a one-gate policy not extending gates.yaml passes its own gate, and is refused where the floor is
    gates.yaml, even by a production target configured to accept its digest."""
    run = env.gated("passing", env.weights("good", b"good weights"))
    assert run.decision is Decision.PASS
    floored = make_target("canary", floor=shipped_floor())
    details = env.promote(run.run_id, target=floored)
    assert details.outcome == "refused" and "does not contain the floor gates.yaml" in details.reason
    for missing in ("gate no_secret_in_image (locked in the floor) is missing",
                    "gate manifests (locked in the floor) is missing", "section scan (locked in the floor) is missing"):
        assert missing in details.reason
    for_prod = _gated_under(env, env.tmp / "passing.yaml", env.weights("good", b"good weights"), "production")
    prod = prod_target(env, accepted_policies=[run.policy.sha256])
    assert "does not contain the floor" in env.promote(for_prod.run_id, target=prod).reason
    assert env.promote(run.run_id).outcome == "promoted"  # no floor, non-production: its own verdict stands


def test_a_verdict_gated_for_another_target_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    """#26 B: gated for `default` (against default's baseline), the pass does not promote to canary."""
    run = _gated_under(env, env.tmp / "passing.yaml", env.weights("good", b"good weights"), "default")
    details = env.promote(run.run_id)
    assert details.outcome == "refused" and "gated for target default" in details.reason


def test_a_failed_or_dry_run_promotion_never_changes_the_run(env) -> None:  # type: ignore[no-untyped-def]
    """#22 repro 9, #26 K: a promotion that errors (dry run or not) keeps the run's decision and record."""
    good = env.gated("passing", env.weights("good", b"good weights"))
    broken = GitopsBackend(repo=env.gitops, overlays={"canary": "manifests/overlays/nowhere"})
    before = env.runs_table()
    for dry_run in (True, False):
        with pytest.raises(BadInput, match="overlay 'canary' not found"):
            env.promote(good.run_id, backend=broken, dry_run=dry_run)
        assert env.runs_table() == before
    assert env.ws.store.get(good.run_id).decision is Decision.PASS
    assert [r.outcome for _, r in env.ws.store.promotions("canary")] == ["failed"]  # the real attempt is audited


def test_commit_quotes_the_signed_verdict_and_branches_are_named_by_the_pair(env) -> None:  # type: ignore[no-untyped-def]
    """#22 repro 9: the commit's gate lines are the signed verdict's, whatever the store says now; a
    weights-only release gets a branch of its own; status names the new run, model and verdict."""
    a = env.gated("passing", env.weights("a", b"weights a"))
    b = env.gated("passing", env.weights("b", b"weights b"))
    assert a.image.digest == b.image.digest
    edited = a.model_copy(deep=True)
    stored = edited.details_as(GateDetails)  # the one copy of the verdicts a record holds
    assert stored is not None
    stored.verdicts[0] = stored.verdicts[0].model_copy(update={"value": 0.25})
    env.sql("UPDATE runs SET record_json=:doc WHERE run_id=:id", doc=edited.model_dump_json(), id=a.run_id)
    first = env.promote(a.run_id)
    assert first.outcome == "promoted", first.reason
    message = git(env.gitops, "log", "-1", "--format=%B", first.branch)
    assert "Gates (signed):" in message and "signature: sign.verified = 1 (min 1)" in message
    assert "0.25" not in message and f"Signed verdict: run {a.run_id}, decision pass" in message
    assert f"Llmgate-Fence: {first.guard.fence}" in message
    second = env.promote(b.run_id)
    assert second.outcome == "promoted", second.reason
    assert first.branch != second.branch and b.model.digest.removeprefix("sha256:")[:12] in second.branch
    status = env.ws.store.target_status("canary")
    assert (status.digest, status.model_digest, status.run_id) == (b.image.digest, b.model.digest, b.run_id)
    assert status.verdict_run_id == b.run_id and status.verdict_at == second.guard.verdict_at
    assert status.previous_model_digest == a.model.digest


def test_the_guard_runs_under_the_lock_and_a_lost_lock_stops_the_backend(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """#22 repro 8: the guard runs while the promotion lock is held (nothing can change between the check and
    the move); a holder whose lock was taken over is stopped by the fence before its next write."""
    import pipeline.stages.promote as stage
    from pipeline.adapters.kube_api import KubernetesApi
    from pipeline.promote.cluster import ArgoRolloutsBackend
    from tests.doubles.rollouts_api import FakeKubeAPI, make_rollout
    from tests.promote_helpers import VirtualClock

    good = env.gated("passing", env.weights("good", b"good weights"))
    target = make_target("canary", backend="argo-rollouts")
    held_during_guard = []
    real = stage.check_pair

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        held_during_guard.append(env.ws.store.lock_holder(target.lock_key))
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "check_pair", spy)
    api = FakeKubeAPI({"rollouts": "stuck"})
    old = f"{ImageRef.parse(env.image).repository}@sha256:{'0' * 64}"
    api.add(make_rollout("llmgate-canary", "llmgate-server", old))
    kc = env.tmp / "kubeconfig"
    kc.write_text(yaml.safe_dump(api.kubeconfig()))
    clock = VirtualClock()
    stolen = []

    def sleep(s: float) -> None:  # another promoter takes the lock over while the canary is watched
        if not stolen:
            env.sql("UPDATE promotion_locks SET token='thief', holder='other', fence=fence+1 WHERE target=:t",
                    t=target.lock_key)
            stolen.append(True)
        clock.sleep(s)

    with api:
        backend = ArgoRolloutsBackend(KubernetesApi.from_kubeconfig(kc), namespaces={"canary": "llmgate-canary"},
                                      timeout_s=60, clock=clock, sleep=sleep)
        details = env.promote(good.run_id, target=target, backend=backend)
    assert [h.holder for h in held_during_guard] == ["ci-bot"]
    assert details.outcome == "refused" and "is no longer ours" in details.reason and "held by other" in details.reason
    patches = [b for m, _, _, b in api.requests if m == "PATCH"]
    assert len(patches) == 1  # the release patch, fenced; no abort or restore written after the lock was lost
    assert {"op": "add", "path": "/metadata/annotations/llmgate.dev~1promotion-fence",
            "value": str(details.guard.fence)} in patches[0]


def test_abort_restores_only_a_release_the_guard_still_passes(env) -> None:  # type: ignore[no-untyped-def]
    """#22 repro 7: abort puts back the release recorded before the canary only if that (image, model) pair's
    newest signed verdict for the target passes; a blocked one is never written back."""
    from pipeline.adapters.kube_api import KubernetesApi
    from pipeline.promote.cluster import ArgoRolloutsBackend, RolloutRef, release_patch
    from pipeline.stages.promote import abort_target
    from tests.doubles.rollouts_api import FakeKubeAPI, make_rollout

    good = env.gated("passing", env.weights("good", b"good weights"))
    degraded = env.gated("blocking", env.weights("degraded", b"degraded weights"))
    image = ImageRef.parse(env.image).by_digest
    canary = f"{ImageRef.parse(env.image).repository}@sha256:{'9' * 64}"
    target = make_target("canary", backend="argo-rollouts")
    api = FakeKubeAPI({"rollouts": "stuck"})
    api.add(make_rollout("llmgate-canary", "llmgate-server", image, model_digest=degraded.model.digest))
    kc = env.tmp / "kubeconfig"
    kc.write_text(yaml.safe_dump(api.kubeconfig()))
    with api:
        kube = KubernetesApi.from_kubeconfig(kc)
        backend = ArgoRolloutsBackend(kube, namespaces={"canary": "llmgate-canary"})
        ref = RolloutRef("llmgate-canary")
        kube.patch(ref.obj(), release_patch(kube.get(ref.obj()), ref, canary, good.model.digest,
                                            previous=(image, degraded.model.digest)), patch_type="json")
        writes = len([r for r in api.requests if r[0] == "PATCH"])
        refused = abort_target(target, backend, env.ws.store, env.cfg("passing"))
        assert refused.outcome == "refused" and "blocked" in refused.reason and degraded.model.digest in refused.reason
        assert len([r for r in api.requests if r[0] == "PATCH"]) == writes and api.image("llmgate-canary",
                                                                                        "llmgate-server") == canary
        kube.patch(ref.obj(), release_patch(kube.get(ref.obj()), ref, canary, good.model.digest,
                                            previous=(image, good.model.digest)), patch_type="json")
        done = abort_target(target, backend, env.ws.store, env.cfg("passing"))
    assert done.outcome == "aborted" and done.result is not None and done.result.restored, done.reason
    assert done.guard is not None and done.guard.verdict_run == good.run_id
    assert api.image("llmgate-canary", "llmgate-server") == image
    trail = [(r.outcome, r.model_digest) for _, r in env.ws.store.promotions("canary")]
    assert trail == [("refused", degraded.model.digest), ("aborted", good.model.digest)]


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


def test_cli_promotes_to_the_target_its_configuration_declares(env) -> None:  # type: ignore[no-untyped-def]
    """The command line names the target and how to reach it; targets.yaml (next to --config) says where it
    is and what it trusts, and the output names the verdict and the key that authorised the move."""
    good = env.gated("passing", env.weights("good", b"good weights"))
    project = env.tmp / "project"
    project.mkdir()
    (project / "llmgate.yaml").write_text(yaml.safe_dump({"sign": {
        "key": {"file": str(env.keys / "cosign.key")}, "public_key": str(env.keys / "cosign.pub")}}))
    (project / "targets.yaml").write_text(yaml.safe_dump({"version": 1, "targets": {"canary": {
        "backend": "gitops", "namespace": "llmgate-canary", "gitops": {"overlay": "manifests/overlays/canary"},
        "accept_local_policy": True, "accept_local_key": True}}}))
    cfg = ["--config", str(project / "llmgate.yaml")]
    r = _cli(env, "promote", "--target", "canary", "--run", good.run_id, "--gitops-repo", str(env.gitops), *cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"verdict: run {good.run_id}, gated " in r.stdout and "key: local key" in r.stdout
    assert "branch: llmgate/promote/canary/" in r.stdout
    r = _cli(env, "promote", "--target", "production", "--run", good.run_id, "--gitops-repo", str(env.gitops), *cfg)
    assert r.returncode == 2 and "no target 'production'" in r.stderr  # only what the file declares
