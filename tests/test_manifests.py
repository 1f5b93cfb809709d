"""The shipped manifests pass schema validation and policy once both digests of a release are pinned;
every rule catches a manifest that breaks it; every overlay (one per serving profile, KServe, the HPA
variant) and the Argo CD Applications render and validate, CRDs included."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BadInput
from pipeline.manifests import kustomization, policy
from pipeline.manifests.check import check_overlay, measured_load_time
from pipeline.manifests.render import render
from pipeline.manifests.validate import validate_object, validate_objects
from pipeline.models import ImageRef, ModelRef, RunRecord, StageResult, StageStatus
from tests.promote_helpers import REPO, REPOSITORY, digest

MANIFESTS = REPO / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
SERVER = "spec.template.spec.containers[0]"
MODEL = digest("weights")


def test_every_variant_is_shipped() -> None:
    assert OVERLAYS == ["canary", "canary-llamacpp", "canary-sglang", "canary-tgi", "deployment", "kserve",
                        "production", "production-hpa"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each overlay rendered with both digests pinned (in a scratch copy of the tree)."""
    import shutil

    out = {}
    for o in OVERLAYS:
        d = tmp_path_factory.mktemp(o) / "manifests"
        shutil.copytree(MANIFESTS, d)
        k = d / "overlays" / o / "kustomization.yaml"
        text = kustomization.with_image(k.read_text(), repository=REPOSITORY, digest=digest("a"))
        k.write_text(kustomization.with_model_digest(text, digest=MODEL))
        out[o] = render(k.parent)
    return out


def obj(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind)


def _workload(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] in ("Rollout", "Deployment", "InferenceService"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shipped_overlay_is_schema_valid_and_policy_clean(overlay: str, rendered: dict) -> None:
    objs = rendered[overlay]
    kinds = {o["kind"] for o in objs}
    assert {"ServiceAccount", "PersistentVolumeClaim"} <= kinds
    assert "ConfigMap" not in kinds  # the llmgate-release generator is local-config: used, not emitted
    if overlay == "kserve":
        assert {"InferenceService", "ServingRuntime"} <= kinds and "Rollout" not in kinds
    else:
        assert {"Service", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
        assert ("HorizontalPodAutoscaler" in kinds) != ("ScaledObject" in kinds)
        assert ("Rollout" in kinds and "AnalysisTemplate" in kinds) if overlay != "deployment" else "Deployment" in kinds
    assert validate_objects(objs) == []
    assert policy.check(objs, load_time_s=120.0) == []
    w = _workload(objs)
    if w["kind"] == "InferenceService":
        pred = w["spec"]["predictor"]
        image, annotations, env = pred["model"]["image"], pred["annotations"], pred["model"]["env"]
    else:
        template = w["spec"]["template"]
        image, annotations = template["spec"]["containers"][0]["image"], template["metadata"]["annotations"]
        env = template["spec"]["containers"][0]["env"]
    # both digests of the release, side by side
    assert image == f"{REPOSITORY}@{digest('a')}" or image.startswith(REPOSITORY + "-")
    assert image.endswith(f"@{digest('a')}")
    assert annotations["llmgate.dev/model-digest"] == MODEL
    assert {"name": "LLMGATE_MODEL_DIGEST", "value": MODEL} in env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_without_the_model_digest_fails_the_gate(overlay: str) -> None:
    rep = check_overlay(MANIFESTS, overlay, image=ImageRef(repository=REPOSITORY, digest=digest("x")), load_time_s=60)
    rules = {(f.rule, f.path.rsplit(".", 1)[-1]) for f in rep.problems}
    assert {f.rule for f in rep.problems} == {"model-digest"}, rep.problems
    assert len(rules) == 2  # the annotation and the env var both name the placeholder
    ok = check_overlay(MANIFESTS, overlay, image=ImageRef(repository=REPOSITORY, digest=digest("x")),
                       load_time_s=60, model_digest=MODEL)
    assert ok.problems == [] and ok.model_digest == MODEL


def test_argocd_applications_render_and_validate() -> None:
    objs = render(MANIFESTS / "argocd")
    assert [(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"]) for o in objs] == [
        ("Application", "llmgate-canary", "argocd"), ("Application", "llmgate-production", "argocd")]
    assert validate_objects(objs) == []
    for app in objs:
        path = app["spec"]["source"]["path"]
        assert (REPO / path / "kustomization.yaml").is_file()
    bad = copy.deepcopy(objs[0])
    bad["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    assert [(f.path, "selfheal" in f.message) for f in validate_object(bad)] == [("spec.syncPolicy.automated", True)]
    del bad["spec"]["destination"]
    assert any(f.path == "spec" and "destination" in f.message for f in validate_object(bad))


def test_prometheus_adapter_rules_and_hpa_validate(rendered: dict) -> None:
    objs = render(MANIFESTS / "monitoring" / "prometheus-adapter")
    assert [o["kind"] for o in objs] == ["ConfigMap"] and validate_objects(objs) == []
    hpa = obj(rendered["production-hpa"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "llmgate_requests_waiting"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 16)


def test_kserve_objects_validate_against_kserve_schemas(rendered: dict) -> None:
    isvc = copy.deepcopy(obj(rendered["kserve"], "InferenceService"))
    runtime = copy.deepcopy(obj(rendered["kserve"], "ServingRuntime"))
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    isvc["spec"]["predictor"]["model"]["env"][0]["valu"] = "x"
    found = [(f.path, f.message) for f in validate_object(isvc)]
    assert ("spec.predictor.canaryTrafficPercent", "'10' is not of type 'integer'") in found
    assert any(p == "spec.predictor.model.env[0]" and "valu" in m for p, m in found)  # core EnvVar, strict
    runtime["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 1
    assert [f.path for f in validate_object(runtime)] == ["spec.containers[0].readinessProbe"]
    del runtime["spec"]["containers"]
    assert [f.path for f in validate_object(runtime)] == ["spec"]


def test_kserve_policy_reads_the_predictor_merged_with_its_runtime(rendered: dict) -> None:
    objs = copy.deepcopy(rendered["kserve"])
    runtime = obj(objs, "ServingRuntime")["spec"]["containers"][0]
    runtime["readinessProbe"] = {"httpGet": {"path": "/health", "port": 8000}}
    isvc = obj(objs, "InferenceService")
    isvc["spec"]["predictor"]["model"]["image"] = f"{REPOSITORY}:v1"
    isvc["spec"]["predictor"]["annotations"]["llmgate.dev/model-digest"] = digest("other")
    found = {(f.rule, f.path) for f in policy.check(objs, load_time_s=120.0)}
    assert found == {("readiness-probe", "spec.predictor.model.readinessProbe"),
                     ("image-digest", "spec.predictor.model.image"),
                     ("model-digest", "spec.predictor.model.env[LLMGATE_MODEL_DIGEST]")}


def test_rollout_and_deployment_share_one_pod_template(rendered: dict) -> None:
    rollout = obj(rendered["production"], "Rollout")["spec"]["template"]
    deployment = obj(rendered["deployment"], "Deployment")["spec"]["template"]
    assert rollout == deployment


def test_readiness_probe_execs_the_helper_the_image_ships() -> None:
    dockerfile = (REPO / "dockerfiles" / "cpu.Dockerfile").read_text()
    assert f" {policy.READINESS_HELPER}" in dockerfile  # COPY ... /usr/local/bin/llmgate-ready


def test_scaledobject_targets_the_workload_of_its_variant(rendered: dict) -> None:
    assert obj(rendered["canary"], "ScaledObject")["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    assert obj(rendered["deployment"], "ScaledObject")["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    query = obj(rendered["canary"], "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    assert query == 'sum(vllm:num_requests_waiting{namespace="llmgate-canary"})'
    prod = obj(rendered["production"], "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    assert prod == 'sum(vllm:num_requests_waiting{namespace="llmgate"})' 


# -- schema ---------------------------------------------------------------------------------------
def test_schema_rejects_a_misspelt_canary_step(rendered: dict) -> None:
    r = copy.deepcopy(obj(rendered["canary"], "Rollout"))
    r["spec"]["strategy"]["canary"]["steps"][0] = {"setWieght": 25}
    found = validate_object(r)
    assert [(f.object, f.path) for f in found] == [("Rollout/llmgate-server", "spec.strategy.canary.steps[0]")]
    assert "setWieght" in found[0].message


def test_schema_checks_the_rollout_pod_template_against_core(rendered: dict) -> None:
    r = copy.deepcopy(obj(rendered["canary"], "Rollout"))
    r["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    found = validate_object(r)
    assert [f.path for f in found] == [f"{SERVER}.ports[0].containerPort"]


def test_schema_analysis_metric_needs_a_provider(rendered: dict) -> None:
    a = copy.deepcopy(obj(rendered["canary"], "AnalysisTemplate"))
    del a["spec"]["metrics"][1]["provider"]
    found = validate_object(a)
    assert [(f.object, f.path) for f in found] == [("AnalysisTemplate/llmgate-canary-slo", "spec.metrics[1]")]
    assert "provider" in found[0].message


def test_schema_scaledobject_needs_triggers_and_core_objects_are_strict(rendered: dict) -> None:
    s = copy.deepcopy(obj(rendered["canary"], "ScaledObject"))
    del s["spec"]["triggers"]
    assert [f.path for f in validate_object(s)] == ["spec"]
    svc = copy.deepcopy(obj(rendered["canary"], "Service"))
    svc["spec"]["portz"] = []
    found = validate_object(svc)
    assert found and found[0].object.startswith("Service/") and "portz" in found[0].message


def test_unknown_kind_is_an_error_not_a_pass() -> None:
    found = validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert [(f.object, f.path) for f in found] == [("Widget/w", "apiVersion")]


# -- policy: one broken manifest per rule ------------------------------------------------------------
def _server(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return obj(objs, "Rollout")["spec"]["template"]["spec"]["containers"][0]


def _pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return obj(objs, "Rollout")["spec"]["template"]["spec"]


BREAKS = [
    ("image-digest", lambda o: _server(o).update(image=f"{REPOSITORY}:v1"), f"{SERVER}.image"),
    ("model-digest", lambda o: obj(o, "Rollout")["spec"]["template"]["metadata"]["annotations"].pop(
        "llmgate.dev/model-digest"), "spec.template.metadata.annotations[llmgate.dev/model-digest]"),
    ("model-digest", lambda o: _server(o).update(env=[e for e in _server(o)["env"] if e["name"] != "LLMGATE_MODEL_DIGEST"]),
     f"{SERVER}.env[LLMGATE_MODEL_DIGEST]"),
    ("model-digest", lambda o: next(e for e in _server(o)["env"] if e["name"] == "LLMGATE_MODEL_DIGEST").update(
        value=digest("other")), f"{SERVER}.env[LLMGATE_MODEL_DIGEST]"),
    ("startup-probe", lambda o: _server(o).pop("startupProbe"), f"{SERVER}.startupProbe"),
    ("readiness-probe", lambda o: _server(o).update(readinessProbe={"httpGet": {"path": "/health", "port": 8000}}),
     f"{SERVER}.readinessProbe"),
    ("liveness-probe", lambda o: _server(o).update(livenessProbe=copy.deepcopy(_server(o)["readinessProbe"])),
     f"{SERVER}.livenessProbe"),
    ("liveness-probe", lambda o: _server(o)["livenessProbe"]["httpGet"].update(path="/v1/completions"),
     f"{SERVER}.livenessProbe"),
    ("termination-grace", lambda o: _pod(o).pop("terminationGracePeriodSeconds"),
     "spec.template.spec.terminationGracePeriodSeconds"),
    ("min-ready-seconds", lambda o: obj(o, "Rollout")["spec"].pop("minReadySeconds"), "spec.minReadySeconds"),
    ("gpu-requests-limits", lambda o: _server(o)["resources"]["requests"].pop("nvidia.com/gpu"),
     f"{SERVER}.resources.requests[nvidia.com/gpu]"),
    ("gpu-scheduling", lambda o: _pod(o).pop("tolerations"), "spec.template.spec.tolerations"),
    ("security-context", lambda o: (_server(o)["securityContext"].pop("runAsNonRoot"),
                                    _pod(o)["securityContext"].pop("runAsNonRoot")),
     f"{SERVER}.securityContext.runAsNonRoot"),
    ("security-context", lambda o: _server(o)["securityContext"].update(readOnlyRootFilesystem=False),
     f"{SERVER}.securityContext.readOnlyRootFilesystem"),
    ("security-context", lambda o: _server(o)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
     f"{SERVER}.securityContext.capabilities.drop"),
    ("security-context", lambda o: _server(o)["securityContext"].update(allowPrivilegeEscalation=True),
     f"{SERVER}.securityContext.allowPrivilegeEscalation"),
    ("surge", lambda o: obj(o, "Rollout")["spec"]["strategy"]["canary"].update(maxUnavailable=1),
     "spec.strategy.canary.maxUnavailable"),
    ("surge", lambda o: obj(o, "Rollout")["spec"]["strategy"]["canary"].pop("maxSurge"),
     "spec.strategy.canary.maxSurge"),
    ("canary-steps", lambda o: obj(o, "Rollout")["spec"]["strategy"]["canary"].update(
        steps=[s for s in obj(o, "Rollout")["spec"]["strategy"]["canary"]["steps"] if "analysis" not in s]),
     "spec.strategy.canary.steps"),
    ("canary-steps", lambda o: o.remove(obj(o, "AnalysisTemplate")),
     "spec.strategy.canary.steps[2].analysis.templates[0].templateName"),
    ("shm", lambda o: next(v for v in _pod(o)["volumes"] if v["name"] == "dshm")["emptyDir"].pop("medium"),
     f"{SERVER}.volumeMounts[1]"),
    ("weights-read-only", lambda o: _server(o)["volumeMounts"][0].pop("readOnly"),
     f"{SERVER}.volumeMounts[0].readOnly"),
]


@pytest.mark.parametrize(("rule", "breaker", "path"), BREAKS, ids=[f"{r}:{p}" for r, _, p in BREAKS])
def test_each_policy_rule_names_object_and_field(rule: str, breaker, path: str, rendered: dict) -> None:  # type: ignore[no-untyped-def]
    objs = copy.deepcopy(rendered["canary"])
    breaker(objs)
    found = [f for f in policy.check(objs, load_time_s=120.0) if f.rule == rule]
    assert [(f.object, f.path) for f in found][:1] == [("Rollout/llmgate-server", path)], found
    assert str(found[0]).startswith(f"Rollout/llmgate-server {path}: ")


def test_deployment_surge_rule(rendered: dict) -> None:
    objs = copy.deepcopy(rendered["deployment"])
    obj(objs, "Deployment")["spec"]["strategy"] = {"type": "RollingUpdate"}
    found = [(f.object, f.path) for f in policy.check(objs, load_time_s=120.0)]
    assert found == [("Deployment/llmgate-server", "spec.strategy.rollingUpdate.maxSurge"),
                     ("Deployment/llmgate-server", "spec.strategy.rollingUpdate.maxUnavailable")]


def test_startup_budget_covers_one_and_a_half_p95_load_times(rendered: dict) -> None:
    objs = rendered["canary"]  # budget 10 s × 90 = 900 s
    assert policy.check(objs, load_time_s=600.0) == []  # 1.5 × 600 = 900
    found = policy.check(objs, load_time_s=601.0)
    assert [(f.rule, f.path) for f in found] == [("startup-budget", f"{SERVER}.startupProbe.failureThreshold")]
    assert "900 s" in found[0].message and "901.5 s" in found[0].message
    missing = policy.check(objs, load_time_s=None)
    assert [(f.rule, f.path) for f in missing] == [("startup-budget", f"{SERVER}.startupProbe")]


def test_startup_budget_counts_initial_delay_and_kubernetes_defaults() -> None:
    assert policy.startup_budget_s({"periodSeconds": 10, "failureThreshold": 90, "initialDelaySeconds": 30}) == 930
    assert policy.startup_budget_s({}) == 30  # 10 s × 3 when both are omitted


def test_expected_rollout_duration(rendered: dict) -> None:
    (est,) = policy.estimate(rendered["production"], 120.0)
    # startup seen at 120 s (period 10), +15 s first readiness, +30 s minReady = 165 s; 4 replicas one
    # at a time; 2 × 5 min pauses; 2 analyses of 5 measurements 1 min apart = 2 × 4 min
    assert (est.replicas, est.per_replica_s) == (4, 165)
    assert (est.pauses_s, est.analysis_s) == (600, 480)
    assert est.total_s == 4 * 165 + 600 + 480
    assert "4 replica(s)" in est.describe()
    assert policy.duration_s("1h30m") == 5400 and policy.duration_s("bogus") is None


# -- the gate around it --------------------------------------------------------------------------
def _run(**boot: float) -> RunRecord:
    run = RunRecord(image=ImageRef(repository=REPOSITORY, tag="v1", digest=digest("a")))
    run.model = ModelRef(path="/models", digest=MODEL, files=1, bytes=1)
    if boot:
        run.add_stage(StageResult(stage="boot", status=StageStatus.OK, metrics=boot))
    return run


def test_load_time_from_boot_p95_or_single_repetition() -> None:
    assert measured_load_time(_run()) == (None, None)
    assert measured_load_time(_run(load_time_s=42.0)) == (42.0, "boot.load_time_s")
    assert measured_load_time(_run(load_time_s=42.0, load_time_p95_s=50.0)) == (50.0, "boot.load_time_p95_s")
    run = _run()
    run.add_stage(StageResult(stage="boot", status=StageStatus.FAILED, metrics={"load_time_s": 1.0}))
    assert measured_load_time(run) == (None, None)


def test_check_overlay_leaves_the_source_tree_alone() -> None:
    before = (MANIFESTS / "overlays" / "canary" / "kustomization.yaml").read_bytes()
    rep = check_overlay(MANIFESTS, "canary", image=ImageRef(repository=REPOSITORY, digest=digest("x")), load_time_s=60,
                        model_digest=MODEL)
    assert rep.problems == [] and rep.image == f"{REPOSITORY}@{digest('x')}"
    assert (MANIFESTS / "overlays" / "canary" / "kustomization.yaml").read_bytes() == before
    with pytest.raises(BadInput, match="no overlay 'nope'"):
        check_overlay(MANIFESTS, "nope", image=None, load_time_s=60)
    with pytest.raises(BadInput, match="not a sha256 digest"):
        check_overlay(MANIFESTS, "canary", image=None, load_time_s=60, model_digest="sha256:nope")


def test_model_digest_edit_changes_one_line() -> None:
    text = (MANIFESTS / "overlays" / "production" / "kustomization.yaml").read_text()
    assert kustomization.model_digest_in(text) is None  # the shipped placeholder
    new = kustomization.with_model_digest(text, digest=MODEL)
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines(), strict=True) if a != b]
    assert changed == [("      - model-digest=unpinned", f"      - model-digest={MODEL}")]
    assert kustomization.model_digest_in(new) == MODEL
    with pytest.raises(BadInput, match="no configMapGenerator 'llmgate-release'"):
        kustomization.with_model_digest("resources: [a.yaml]\n", digest=MODEL, where="k.yaml")


def test_manifests_check_without_kubectl_is_an_error_naming_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.manifests.render import KubectlNotFound

    monkeypatch.setenv("PATH", str(tmp_path))  # no kubectl here
    with pytest.raises(KubectlNotFound, match="kubectl not found"):
        check_overlay(MANIFESTS, "canary", image=None, load_time_s=60)


def test_render_error_names_the_directory(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(BadInput) as exc:
        render(tmp_path)
    assert exc.value.where == str(tmp_path) and "missing.yaml" in exc.value.message
    assert "command failed" not in exc.value.message  # kubectl's log prefix is not part of the message
