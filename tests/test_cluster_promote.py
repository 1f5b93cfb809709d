"""Argo Rollouts promotion backend against the Kubernetes API double (tests/doubles/rollouts_api.py).

The code under test talks through the official `kubernetes` client, configured from a kubeconfig that
points at the double's 127.0.0.1 URL; only the API server and the Argo controller are played.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.adapters.kube_api import KubernetesApi, ObjectConflict, ObjectNotFound, PatchRefused
from pipeline.errors import BadInput, InfraError
from pipeline.promote.backend import Evidence, FenceRefused
from pipeline.promote.cluster import ArgoRolloutsBackend, RolloutRef, image_patch, release_patch
from tests.doubles.rollouts_api import FakeKubeAPI, make_rollout
from tests.promote_helpers import REPOSITORY, VirtualClock, digest

NS = "llmgate-canary"
OLD = f"{REPOSITORY}@{digest('old')}"
NEW = f"{REPOSITORY}@{digest('new')}"
OLD_MODEL, NEW_MODEL = digest("weights-old"), digest("weights-new")
EVIDENCE = Evidence(summary="Run: r1", run_id="r1", load_time_s=120.0)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    scenario = getattr(request, "param", "healthy")
    api = FakeKubeAPI({"rollouts": scenario})
    api.add(make_rollout(NS, "llmgate-server", OLD, model_digest=OLD_MODEL))
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(api.kubeconfig()))
    with api:
        yield api, KubernetesApi.from_kubeconfig(kc)


def backend(kube: KubernetesApi, **kw) -> ArgoRolloutsBackend:  # type: ignore[no-untyped-def]
    clock = VirtualClock()
    kw.setdefault("namespaces", {"canary": NS})
    return ArgoRolloutsBackend(kube, clock=clock, sleep=clock.sleep, **kw)


def patches(api: FakeKubeAPI) -> list[tuple[str, str, object]]:
    return [(p, ct, b) for m, p, ct, b in api.requests if m == "PATCH"]


def server(api: FakeKubeAPI) -> dict:
    return api.get("rollouts", NS, "llmgate-server")["spec"]["template"]


def test_healthy_canary_is_promoted_with_both_digests(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    res = backend(kube, timeout_s=600).promote("canary", NEW, NEW_MODEL, EVIDENCE)
    assert (res.outcome, res.previous_image, res.previous_model_digest) == ("promoted", OLD, OLD_MODEL)
    template = server(api)
    c = template["spec"]["containers"][1]
    assert c["image"] == NEW and c["env"] == [{"name": "LLMGATE_MODEL_DIGEST", "value": NEW_MODEL}]
    assert template["metadata"]["annotations"]["llmgate.dev/model-digest"] == NEW_MODEL
    annotations = api.get("rollouts", NS, "llmgate-server")["metadata"]["annotations"]
    assert annotations == {"llmgate.dev/previous-image": OLD, "llmgate.dev/previous-model-digest": OLD_MODEL}
    # One JSON patch, guarded by test ops on the container name and the env entry (index 1: a sidecar first).
    (path, ctype, body), = patches(api)
    assert ctype == "application/json-patch+json" and not path.endswith("/status")
    assert body[:2] == image_patch(1, "server", NEW)
    assert {"op": "test", "path": "/spec/template/spec/containers/1/env/0/name", "value": "LLMGATE_MODEL_DIGEST"} in body
    # It watched steps, pauses, analysis runs and weights up to 100, not the stale Healthy status.
    text = "\n".join(res.events)
    assert res.events[0] == "waiting for the controller to observe generation 2"
    for needle in ("canary weight=25", "paused(CanaryPauseStep)", ":Running", ":Successful", "canary weight=50",
                   "phase=Healthy step=5/5 canary weight=100"):
        assert needle in text
    st = backend(kube).status("canary")
    assert (st.image, st.model_digest, st.phase, st.in_flight) == (NEW, NEW_MODEL, "Healthy", False)


def test_a_new_model_alone_is_a_new_canary(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    res = backend(kube, timeout_s=600).promote("canary", OLD, NEW_MODEL, EVIDENCE)
    assert res.outcome == "promoted" and server(api)["metadata"]["annotations"]["llmgate.dev/model-digest"] == NEW_MODEL
    assert backend(kube).promote("canary", OLD, NEW_MODEL, EVIDENCE).outcome == "noop"


@pytest.mark.parametrize("cluster", ["failing-analysis"], indirect=True)
def test_failing_analysis_aborts_and_restores_the_previous_release(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    res = backend(kube, timeout_s=600).promote("canary", NEW, NEW_MODEL, EVIDENCE)
    assert res.outcome == "aborted" and "Failed" in res.reason and "ttft-p99" in res.reason
    gets = [p for m, p, _, _ in api.requests if m == "GET"]
    assert len(gets) > 5  # the stale Healthy of generation 1 was not trusted
    (_, _, _first), (abort_path, abort_type, abort_body), (_, _, restore) = patches(api)
    assert abort_path.endswith("/rollouts/llmgate-server/status")
    assert abort_type == "application/merge-patch+json" and abort_body == {"status": {"abort": True}}
    assert restore[:2] == image_patch(1, "server", OLD)  # type: ignore[index]
    template = server(api)
    assert template["spec"]["containers"][1]["image"] == OLD and res.restored
    assert template["metadata"]["annotations"]["llmgate.dev/model-digest"] == OLD_MODEL
    assert api.get("rollouts", NS, "llmgate-server")["status"]["phase"] == "Healthy"


@pytest.mark.parametrize("cluster", ["stuck"], indirect=True)
def test_stuck_rollout_times_out_then_aborts(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    res = backend(kube, timeout_s=120).promote("canary", NEW, NEW_MODEL, EVIDENCE)
    assert res.outcome == "aborted" and res.reason.startswith("timed out after 120 s")
    assert [p.endswith("/status") for p, _, _ in patches(api)] == [False, True, False]
    assert api.image(NS, "llmgate-server") == OLD and res.restored


@pytest.mark.parametrize("cluster", ["stuck"], indirect=True)
def test_abort_of_an_in_flight_canary_restores_the_recorded_release(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    b = backend(kube)
    # A canary in flight, as another llmgate process left it: new release in the spec, previous recorded.
    ref = RolloutRef(NS).obj()
    kube.patch(ref, release_patch(kube.get(ref), RolloutRef(NS), NEW, NEW_MODEL, previous=(OLD, OLD_MODEL)),
               patch_type="json")
    st = b.status("canary")
    assert st.in_flight and st.image == NEW
    res = b.abort("canary")
    assert (res.outcome, res.restored, res.restored_image, res.restored_model_digest) == (
        "aborted", True, OLD, OLD_MODEL)
    assert api.image(NS, "llmgate-server") == OLD
    assert b.abort("canary").outcome == "noop"  # Healthy and fully promoted: nothing in flight


def test_dry_run_and_noop_send_no_patch(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    dry = backend(kube).promote("canary", NEW, NEW_MODEL, EVIDENCE, dry_run=True)
    assert dry.outcome == "dry-run" and dry.patches[0][:2] == image_patch(1, "server", NEW)
    assert backend(kube).promote("canary", OLD, OLD_MODEL, EVIDENCE).outcome == "noop"
    assert patches(api) == []


def test_test_op_refuses_a_patch_for_a_renamed_container(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    ref = RolloutRef(NS).obj()
    with pytest.raises(PatchRefused, match="test failed") as exc:
        kube.patch(ref, image_patch(0, "server", NEW), patch_type="json")  # index 0 is the sidecar
    assert exc.value.where.endswith("/namespaces/llmgate-canary/rollouts/llmgate-server")
    assert api.image(NS, "llmgate-server") == OLD and api.image(NS, "llmgate-server", "sidecar").startswith("busybox")
    with pytest.raises(BadInput, match="no container 'model'"):
        backend(kube, container="model").promote("canary", NEW, NEW_MODEL, EVIDENCE)
    with pytest.raises(ObjectNotFound, match='rollouts.argoproj.io "llmgate-server" not found'):
        backend(kube, namespaces={"elsewhere": "elsewhere"}).promote("elsewhere", NEW, NEW_MODEL, EVIDENCE)
    with pytest.raises(BadInput, match="no namespace configured for target 'canary-x'"):
        backend(kube).promote("canary-x", NEW, NEW_MODEL, EVIDENCE)  # a name alone reaches no place


def test_stale_replace_is_a_conflict_and_a_bad_type_is_invalid(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    ref = RolloutRef(NS).obj()
    current = kube.get(ref)
    kube.patch(ref, {"metadata": {"labels": {"x": "1"}}})  # someone else writes first
    with pytest.raises(ObjectConflict, match="the object has been modified"):
        kube.replace(ref, current)
    with pytest.raises(PatchRefused, match="Invalid value"):
        kube.patch(ref, {"spec": {"replicas": "two"}})
    assert api.get("rollouts", NS, "llmgate-server")["spec"]["replicas"] == 2
    # an unknown field is pruned, not refused (structural schema), and so not there afterwards
    assert "replicaz" not in kube.patch(ref, {"spec": {"replicaz": 3}})["spec"]


def test_status_subresource_writes_only_status(cluster) -> None:  # type: ignore[no-untyped-def]
    _, kube = cluster
    ref = RolloutRef(NS).obj()
    before = kube.get(ref)
    after = kube.patch_status(ref, {"spec": {"replicas": 9}, "status": {"message": "x"}})
    assert after["spec"]["replicas"] == 2 and after["status"]["message"] == "x"
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert int(after["metadata"]["resourceVersion"]) == int(before["metadata"]["resourceVersion"]) + 1


def test_unreachable_api_is_an_infrastructure_error(tmp_path: Path) -> None:
    api = FakeKubeAPI()
    api.add(make_rollout(NS, "llmgate-server", OLD))
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(api.kubeconfig()))
    api.server.server_close()  # never started: nothing listens at the kubeconfig's address
    kube = KubernetesApi.from_kubeconfig(kc)
    kube.api_client.configuration.retries = 0
    with pytest.raises(InfraError, match="unreachable"):
        backend(kube).promote("canary", NEW, NEW_MODEL, EVIDENCE)
    with pytest.raises(BadInput, match="kubeconfig not found"):
        KubernetesApi.from_kubeconfig(tmp_path / "nope")


class FakeFence:
    """A promotion lock as the backend sees it: its number, and the test before each write."""

    def __init__(self, fence: int, on_check=None) -> None:  # type: ignore[no-untyped-def]
        self.fence, self.on_check, self.checks = fence, on_check, 0

    def check(self) -> None:
        self.checks += 1
        if self.on_check is not None:
            self.on_check()


FENCE_PATH = "/metadata/annotations/llmgate.dev~1promotion-fence"


def test_every_release_patch_carries_the_fence_and_a_newer_one_stops_us(cluster) -> None:  # type: ignore[no-untyped-def]
    api, kube = cluster
    fence = FakeFence(7)
    res = backend(kube, timeout_s=600).promote("canary", NEW, NEW_MODEL, EVIDENCE, fence=fence)
    assert res.outcome == "promoted" and fence.checks >= 1
    annotations = api.get("rollouts", NS, "llmgate-server")["metadata"]["annotations"]
    assert annotations["llmgate.dev/promotion-fence"] == "7"
    # A later promoter (fence 8) wrote the object; we (fence 7) must not write over it.
    ref = RolloutRef(NS).obj()
    kube.patch(ref, {"metadata": {"annotations": {"llmgate.dev/promotion-fence": "8"}}})
    writes = len(patches(api))
    with pytest.raises(FenceRefused, match="fence 8, newer than ours"):
        backend(kube, timeout_s=600).promote("canary", OLD, OLD_MODEL, EVIDENCE, fence=FakeFence(7))
    assert len(patches(api)) == writes


def test_the_api_server_refuses_a_patch_when_the_fence_moved_since_it_was_read(cluster) -> None:  # type: ignore[no-untyped-def]
    """Compare-and-set at the storage: the patch tests the fence value read before; another promoter writing
    between our read and our patch makes the API server refuse it (422), whatever our own check said."""
    api, kube = cluster
    ref = RolloutRef(NS).obj()
    kube.patch(ref, {"metadata": {"annotations": {"llmgate.dev/promotion-fence": "3"}}})

    def race() -> None:  # after we read the object, before our patch reaches the server
        kube.patch(ref, {"metadata": {"annotations": {"llmgate.dev/promotion-fence": "5"}}})

    with pytest.raises(PatchRefused, match="test failed"):
        backend(kube, timeout_s=600).promote("canary", NEW, NEW_MODEL, EVIDENCE, fence=FakeFence(4, race))
    assert api.image(NS, "llmgate-server") == OLD
    body = next(b for _, _, b in patches(api) if isinstance(b, list))
    assert body[0] == {"op": "test", "path": FENCE_PATH, "value": "3"}
    assert body[-1] == {"op": "replace", "path": FENCE_PATH, "value": "4"}
