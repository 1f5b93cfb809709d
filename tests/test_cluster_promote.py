"""Cluster promotion against the "rollouts API" test double (tests/doubles/rollouts_api.py).

The code under test talks through the official `kubernetes` client, configured from a kubeconfig that
points at the double's 127.0.0.1 URL; only the API server and the Argo controller are played.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import BadInput, InfraError
from pipeline.promote.cluster import RolloutClient, RolloutRef, api_client, image_patch, promote_cluster
from pipeline.stages.promote import ClusterTarget, promote_stage
from pipeline.workspace import Workspace
from tests.doubles.rollouts_api import FakeRolloutsAPI, make_rollout
from tests.promote_helpers import REPOSITORY, digest, make_run

NS = "llmgate-canary"
OLD = f"{REPOSITORY}@{digest('old')}"
NEW = f"{REPOSITORY}@{digest('new')}"


class FakeClock:
    """Polls advance a virtual clock instead of sleeping."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def start(scenario: str, tmp_path: Path) -> tuple[FakeRolloutsAPI, Path]:
    api = FakeRolloutsAPI(scenario)
    api.add(make_rollout(NS, "llmgate-server", OLD))
    kc = tmp_path / f"kubeconfig-{scenario}"
    kc.write_text(yaml.safe_dump(api.kubeconfig()))
    return api.__enter__(), kc


def run_promotion(scenario: str, tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    api, kc = start(scenario, tmp_path)
    clock = FakeClock()
    try:
        res = promote_cluster(api_client(kc), RolloutRef(NS), NEW, poll_s=5, clock=clock, sleep=clock.sleep, **kw)
    finally:
        api.__exit__()
    return api, res


def patches(api: FakeRolloutsAPI) -> list[tuple[str, str, object]]:
    return [(p, ct, b) for m, p, ct, b in api.requests if m == "PATCH"]


def test_healthy_canary_is_promoted(tmp_path: Path) -> None:
    api, res = run_promotion("healthy", tmp_path, timeout_s=600)
    assert res.outcome == "promoted" and res.previous_image == OLD
    assert api.image(NS, "llmgate-server") == NEW
    # One JSON patch, guarded by a test op on the container name (index 1: a sidecar comes first).
    (path, ctype, body), = patches(api)
    assert ctype == "application/json-patch+json" and not path.endswith("/status")
    assert body == [{"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "server"},
                    {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": NEW}]
    # It watched steps, pauses, analysis runs and weights up to 100, not the stale Healthy status.
    text = "\n".join(res.events)
    assert res.events[0] == "waiting for the controller to observe generation 2"
    for needle in ("canary weight=25", "paused(CanaryPauseStep)", ":Running", ":Successful", "canary weight=50",
                   "phase=Healthy step=5/5 canary weight=100"):
        assert needle in text


def test_stale_healthy_status_is_not_trusted(tmp_path: Path) -> None:
    """The double's first reads after the patch still say Healthy for generation 1; a watcher that
    trusted phase alone would report success before the canary's analysis failed."""
    api, res = run_promotion("failing-analysis", tmp_path, timeout_s=600)
    assert res.outcome == "aborted"
    gets = [p for m, p, _, _ in api.requests if m == "GET"]
    assert len(gets) > 5


def test_failing_analysis_aborts_and_restores_the_stable_digest(tmp_path: Path) -> None:
    api, res = run_promotion("failing-analysis", tmp_path, timeout_s=600)
    assert res.outcome == "aborted" and "Failed" in res.reason and "ttft-p99" in res.reason
    (_, _, _first), (abort_path, abort_type, abort_body), (_, _, restore) = patches(api)
    assert abort_path.endswith("/rollouts/llmgate-server/status")
    assert abort_type == "application/merge-patch+json" and abort_body == {"status": {"abort": True}}
    assert restore == image_patch(1, "server", OLD)
    assert api.image(NS, "llmgate-server") == OLD and res.restored
    assert api.rollouts[(NS, "llmgate-server")]["status"]["phase"] == "Healthy"


def test_stuck_rollout_times_out_then_aborts(tmp_path: Path) -> None:
    api, res = run_promotion("stuck", tmp_path, timeout_s=120)
    assert res.outcome == "aborted" and res.reason.startswith("timed out after 120 s")
    assert [p.endswith("/status") for p, _, _ in patches(api)] == [False, True, False]
    assert api.image(NS, "llmgate-server") == OLD


def test_dry_run_and_noop_send_no_patch(tmp_path: Path) -> None:
    api, kc = start("healthy", tmp_path)
    try:
        client = api_client(kc)
        dry = promote_cluster(client, RolloutRef(NS), NEW, dry_run=True)
        assert dry.outcome == "dry-run" and dry.patch == image_patch(1, "server", NEW)
        same = promote_cluster(client, RolloutRef(NS), OLD)
        assert same.outcome == "noop"
        assert patches(api) == []
    finally:
        api.__exit__()


def test_test_op_refuses_a_patch_for_a_renamed_container(tmp_path: Path) -> None:
    api, kc = start("healthy", tmp_path)
    try:
        rc = RolloutClient(api_client(kc), RolloutRef(NS))
        with pytest.raises(BadInput, match="test failed"):
            rc.json_patch(image_patch(0, "server", NEW))  # index 0 is the sidecar
        assert api.image(NS, "llmgate-server") == OLD and api.image(NS, "llmgate-server", "sidecar").startswith("busybox")
        with pytest.raises(BadInput, match="no container 'model'"):
            promote_cluster(api_client(kc), RolloutRef(NS, container="model"), NEW)
        with pytest.raises(BadInput, match="no such Rollout"):
            promote_cluster(api_client(kc), RolloutRef("elsewhere"), NEW)
    finally:
        api.__exit__()


def test_unreachable_api_is_an_infrastructure_error(tmp_path: Path) -> None:
    api, kc = start("healthy", tmp_path)
    api.__exit__()  # server gone, kubeconfig still points at it
    client = api_client(kc)
    client.configuration.retries = 0
    with pytest.raises(InfraError, match="unreachable"):
        promote_cluster(client, RolloutRef(NS), NEW)


def test_promote_stage_in_cluster_is_audited(tmp_path: Path) -> None:
    api, kc = start("healthy", tmp_path)
    ws = Workspace(tmp_path / ".llmgate")
    run = make_run("new")
    try:
        res = promote_stage(run, None, ws, target="canary", guard=lambda *a: None,  # type: ignore[arg-type]
                            cluster=ClusterTarget(kc, poll_s=0.01, timeout_s=30))
    finally:
        api.__exit__()
    assert res.details["outcome"] == "promoted" and res.details["previous"] == OLD
    (rid, rec), = ws.store.promotions("canary")
    assert (rid, rec.mode, rec.outcome, rec.digest, rec.previous_digest) == (
        run.run_id, "cluster", "promoted", digest("new"), digest("old"))
    assert rec.who and rec.at is not None
