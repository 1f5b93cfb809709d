"""KServe promotion backend against the Kubernetes API double (InferenceService controller played) and a
Prometheus query API double: promote through the canary steps, wait, abort on a failed revision, a
breached SLO or a timeout, and restore the previous revision."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.adapters.kube_api import KubernetesApi
from pipeline.adapters.prometheus import PrometheusHttp
from pipeline.errors import BadInput
from pipeline.promote.backend import Evidence
from pipeline.promote.kserve import KServeBackend
from tests.doubles.prometheus_api import FakePrometheus
from tests.doubles.rollouts_api import FakeKubeAPI, make_inferenceservice
from tests.promote_helpers import REPOSITORY, VirtualClock, digest

NS = "llmgate-kserve"
OLD, NEW = f"{REPOSITORY}@{digest('old')}", f"{REPOSITORY}@{digest('new')}"
OLD_MODEL, NEW_MODEL = digest("weights-old"), digest("weights-new")
EVIDENCE = Evidence(summary="Run: r1")


@pytest.fixture
def kserve(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    api = FakeKubeAPI({"inferenceservices": getattr(request, "param", "healthy")})
    api.add(make_inferenceservice(NS, "llmgate-server", OLD, OLD_MODEL))
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(api.kubeconfig()))
    with api:
        yield api, KubernetesApi.from_kubeconfig(kc)


def backend(kube: KubernetesApi, **kw) -> KServeBackend:  # type: ignore[no-untyped-def]
    clock = VirtualClock()
    kw.setdefault("namespaces", {"kserve": NS})
    return KServeBackend(kube, clock=clock, sleep=clock.sleep, timeout_s=120, restore_timeout_s=120,
                         analysis_interval_s=60, **kw)


def isvc(api: FakeKubeAPI) -> dict:
    return api.get("inferenceservices", NS, "llmgate-server")


def percents(api: FakeKubeAPI) -> list[object]:
    out = []
    for method, _, _, body in api.requests:
        if method == "PATCH" and isinstance(body, dict) and "spec" in body:
            out.append(body["spec"]["predictor"].get("canaryTrafficPercent", "unset"))
    return out


def serves(api: FakeKubeAPI) -> tuple[str, str, str]:
    pred = isvc(api)["spec"]["predictor"]
    env = {e["name"]: e["value"] for e in pred["model"]["env"]}
    return pred["model"]["image"], pred["annotations"]["llmgate.dev/model-digest"], env["LLMGATE_MODEL_DIGEST"]


def test_canary_steps_through_the_plan_with_analysis_then_rolls_out(kserve) -> None:  # type: ignore[no-untyped-def]
    api, kube = kserve
    with FakePrometheus({"time_to_first_token": [0.21], "http_requests_total": [0.0]}) as prom:
        res = backend(kube, prometheus=PrometheusHttp(prom.url), steps=(10, 50)).promote(
            "kserve", NEW, NEW_MODEL, EVIDENCE)
    assert res.outcome == "promoted" and (res.previous_image, res.previous_model_digest) == (OLD, OLD_MODEL)
    assert serves(api) == (NEW, NEW_MODEL, NEW_MODEL)
    # 10 %, then 50 %, then canaryTrafficPercent removed: KServe rolls the new revision out to 100 %
    assert percents(api) == [10, 50, None]
    status = isvc(api)["status"]["components"]["predictor"]
    assert status["traffic"] == [{"revisionName": "llmgate-server-predictor-00002", "percent": 100,
                                  "latestRevision": True}]
    assert "canaryTrafficPercent" not in isvc(api)["spec"]["predictor"]
    # the same SLO queries the AnalysisTemplate runs, on the canary revision's pods, 3 checks per step
    assert len(prom.queries) == 2 * 2 * 3
    assert all('serving_knative_dev_revision="llmgate-server-predictor-00002"' in q for q in prom.queries)
    assert any("vllm:time_to_first_token_seconds_bucket" in q for q in prom.queries)
    text = "\n".join(res.events)
    assert "waiting for the controller to observe generation 2" in text
    assert "llmgate-server-predictor-00002=10% (latest), llmgate-server-predictor-00001=90% (prev)" in text
    assert "llmgate-server-predictor-00002=50% (latest)" in text
    st = backend(kube).status("kserve")
    assert (st.image, st.model_digest, st.in_flight, st.revision) == (NEW, NEW_MODEL, False,
                                                                       "llmgate-server-predictor-00002")


def test_breached_slo_aborts_and_restores_the_previous_revision(kserve) -> None:  # type: ignore[no-untyped-def]
    api, kube = kserve
    with FakePrometheus({"time_to_first_token": [0.2, 0.9], "http_requests_total": [0.0]}) as prom:
        res = backend(kube, prometheus=PrometheusHttp(prom.url)).promote("kserve", NEW, NEW_MODEL, EVIDENCE)
    assert res.outcome == "aborted" and res.reason == "analysis ttft-p99 = 0.9 above 0.5"
    assert res.restored is True
    # abort: 0 % at once, the spec back to the previous release (still 0 %), then rolled out
    assert percents(api) == [10, 0, 0, None]
    assert serves(api) == (OLD, OLD_MODEL, OLD_MODEL)
    traffic = isvc(api)["status"]["components"]["predictor"]["traffic"]
    assert traffic == [{"revisionName": "llmgate-server-predictor-00003", "percent": 100, "latestRevision": True}]


def test_no_data_is_not_a_pass(kserve) -> None:  # type: ignore[no-untyped-def]
    api, kube = kserve
    with FakePrometheus({"time_to_first_token": [None], "http_requests_total": [0.0]}) as prom:
        res = backend(kube, prometheus=PrometheusHttp(prom.url)).promote("kserve", NEW, NEW_MODEL, EVIDENCE)
    assert res.outcome == "aborted" and "no data" in res.reason and res.restored
    assert serves(api)[0] == OLD


@pytest.mark.parametrize("kserve", ["failing-revision"], indirect=True)
def test_failed_revision_aborts_at_once_and_traffic_never_left(kserve) -> None:  # type: ignore[no-untyped-def]
    api, kube = kserve
    res = backend(kube).promote("kserve", NEW, NEW_MODEL, EVIDENCE)
    assert res.outcome == "aborted" and res.reason.startswith("RevisionFailed: Revision \"llmgate-server-predictor-00002\"")
    assert res.restored and serves(api) == (OLD, OLD_MODEL, OLD_MODEL)
    # while the canary was failing, all traffic stayed on the previous revision
    assert "llmgate-server-predictor-00001=100%" in "\n".join(res.events)


@pytest.mark.parametrize("kserve", ["stuck"], indirect=True)
def test_revision_that_never_gets_ready_times_out_then_restores(kserve) -> None:  # type: ignore[no-untyped-def]
    api, kube = kserve
    res = backend(kube).promote("kserve", NEW, NEW_MODEL, EVIDENCE)
    assert res.outcome == "aborted" and res.reason.startswith("timed out after 120 s waiting for canary at 10%")
    assert res.restored and serves(api)[0] == OLD


@pytest.mark.parametrize("kserve", ["stuck"], indirect=True)
def test_abort_command_restores_an_in_flight_canary(kserve) -> None:  # type: ignore[no-untyped-def]
    api, kube = kserve
    b = backend(kube)
    ref = b.ref("kserve")
    # a canary another process started: the new release at 10 %, previous recorded
    kube.patch(ref, b.release_patch(kube.get(ref), NEW, NEW_MODEL, percent=10, previous=(OLD, OLD_MODEL)))
    assert b.status("kserve").in_flight
    res = b.abort("kserve")
    assert (res.outcome, res.restored, res.restored_image, res.restored_model_digest) == ("aborted", True, OLD,
                                                                                          OLD_MODEL)
    assert serves(api) == (OLD, OLD_MODEL, OLD_MODEL)
    assert b.abort("kserve").outcome == "noop"


def test_noop_dry_run_and_bad_steps(kserve) -> None:  # type: ignore[no-untyped-def]
    api, kube = kserve
    assert backend(kube).promote("kserve", OLD, OLD_MODEL, EVIDENCE).outcome == "noop"
    dry = backend(kube).promote("kserve", NEW, NEW_MODEL, EVIDENCE, dry_run=True)
    assert dry.outcome == "dry-run" and dry.patches[0]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert percents(api) == []
    with pytest.raises(BadInput, match="canary steps"):
        KServeBackend(kube, steps=(50, 10))


def test_prometheus_adapter_reads_instant_vectors_and_names_a_refused_query() -> None:
    with FakePrometheus({"up": [1.0, float("nan"), None]}) as prom:
        p = PrometheusHttp(prom.url)
        import math

        assert p.query("sum(up)") == 1.0
        assert math.isnan(p.query("sum(up)") or 0.0)
        assert p.query("sum(up)") is None  # empty result: no data
        with pytest.raises(BadInput, match="PromQL refused: 1:1: parse error"):
            p.query("sum(nope")
        p.close()
