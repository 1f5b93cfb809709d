"""Targets are configuration (targets.yaml), not names: what each target is, which verdicts and keys it
trusts, its policy floor, and the backend built from it. No registry or cluster needed here; the
promotion tests (tests/test_promote.py) drive the same code through the real stages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import SecretSource, SignConfig
from pipeline.errors import BadInput
from pipeline.gates.policy import load_policy
from pipeline.models import PromotionRecord
from pipeline.promote import audit
from pipeline.promote.factory import Connections, create_backend
from pipeline.promote.floor import PolicyFloor
from pipeline.promote.targets import load_targets
from pipeline.promote.trust import local_policy_digests, target_policy, trusted_key
from pipeline.store import Store
from pipeline.supplychain.cosign_keys import write_key_pair
from pipeline.supplychain.gate_sections import SECTIONS
from pipeline.supplychain.guard import PromotionRefused, is_local_policy
from pipeline.supplychain.predicates import PolicyIdentity
from tests.promote_helpers import digest, make_target, shipped_floor

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "targets.yaml"


def _identity(path: Path) -> PolicyIdentity:
    p = load_policy(path, sections=SECTIONS)
    return PolicyIdentity(name=path.name, sha256=p.sha256, files=[str(path)])


# -- the shipped configuration ---------------------------------------------------------------------
def test_the_shipped_targets_pin_the_shipped_policies() -> None:
    """Every production target pins gates.yaml as it is now. When gates.yaml changes, production refuses
    until the pins are updated: `llmgate policy check gates.yaml` prints the digest to pin."""
    targets = load_targets(SHIPPED)
    prod_sha = shipped_floor()["sha256"]
    production = {n for n, t in targets.targets.items() if t.production}
    assert production == {"production", "production-hpa", "deployment"}
    for name in production:
        cfg = targets.get(name).config
        assert cfg.accepted_policies == [prod_sha] and cfg.floor is not None and cfg.floor.sha256 == prod_sha, name
        assert not cfg.accept_local_policy and not cfg.accept_local_key
    for t in targets.targets.values():
        assert isinstance(PolicyFloor(t).loaded, object) and not isinstance(PolicyFloor(t).loaded, str), t.name
    # every GitOps target's overlay deploys to the namespace it is configured for
    for t in targets.targets.values():
        if t.backend == "gitops":
            overlay = yaml.safe_load((REPO / t.overlay / "kustomization.yaml").read_text())
            assert overlay["namespace"] == t.namespace, t.name


def _write(tmp: Path, targets: dict[str, object], **top: object) -> Path:
    path = tmp / "targets.yaml"
    path.write_text(yaml.safe_dump({"version": 1, **top, "targets": targets}))
    return path


PROD = {"backend": "gitops", "namespace": "llmgate", "production": True, "accepted_policies": ["a" * 64],
        "floor": {"policy": "gates.yaml", "sha256": "a" * 64}}


def test_another_name_for_a_production_place_must_be_production(tmp_path: Path) -> None:
    """#22 repro 4: `production-hpa` deploys where production does; declared non-production, the file is refused."""
    path = _write(tmp_path, {"production": PROD, "production-hpa": {"backend": "gitops", "namespace": "llmgate"}})
    with pytest.raises(BadInput, match="target 'production-hpa' deploys to namespace 'llmgate', where production "
                                       "target 'production' runs: it must be `production: true`"):
        load_targets(path)
    other_cluster = {"backend": "gitops", "namespace": "llmgate", "cluster": "staging"}
    assert not load_targets(_write(tmp_path, {"production": PROD, "staging": other_cluster})).get("staging").production


@pytest.mark.parametrize(("change", "message"), [
    ({"accepted_policies": []}, "must pin the policy digests it accepts"),
    ({"floor": None}, "must name a policy floor with its pinned digest"),
    ({"floor": {"policy": "gates.yaml"}}, "must name a policy floor with its pinned digest"),
    ({"accept_local_policy": True}, "never accepts a local policy"),
    ({"accept_local_key": True}, "trusts pinned keys only"),
])
def test_a_production_target_must_pin_what_it_trusts(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message) as err:
        load_targets(_write(tmp_path, {"production": {**PROD, **change}}))
    assert str(tmp_path / "targets.yaml") in err.value.render()


def test_targets_file_never_comes_from_the_work_dir(tmp_path: Path) -> None:
    workdir = tmp_path / ".llmgate"
    workdir.mkdir()
    shutil.copyfile(SHIPPED, workdir / "targets.yaml")
    with pytest.raises(BadInput, match="inside the work dir"):
        load_targets(workdir / "targets.yaml", workdir=workdir)
    with pytest.raises(BadInput, match="no targets file"):
        load_targets(tmp_path / "targets.yaml")
    with pytest.raises(BadInput, match="no target 'nowhere'.*configured: canary"):
        load_targets(SHIPPED).get("nowhere")


def test_the_command_line_cannot_choose_where_a_target_is(tmp_path: Path) -> None:
    """#22 repro 4: `--target canary --namespace llmgate` patched production; namespace and backend are
    configuration now, and a connection the target does not use is refused rather than ignored."""
    base = ["--workdir", str(tmp_path / "wd"), "--store", str(tmp_path / "r.db")]
    runner = CliRunner()
    res = runner.invoke(app, [*base, "promote", "--target", "canary", "--run", "abc", "--namespace", "llmgate",
                              "--kubeconfig", str(tmp_path / "kc")])
    assert res.exit_code == 2 and "No such option: --namespace" in res.output
    for extra, message in ((["--gitops-repo", str(tmp_path), "--kubeconfig", str(tmp_path / "kc")],
                            "names no Argo CD Application to watch"),
                           ([], "give --gitops-repo DIR")):
        res = runner.invoke(app, [*base, "abort", "--target", "canary", *extra])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    res = runner.invoke(app, [*base, "abort", "--target", "kserve", "--gitops-repo", str(tmp_path)])
    assert res.exit_code == 2 and "--gitops-repo is not used" in " ".join(res.output.split())
    res = runner.invoke(app, [*base, "status", "--target", "prod"])
    assert res.exit_code == 2 and "no target 'prod'" in res.output


def test_cli_modules_hold_no_backend_wiring() -> None:
    """#24: the backend comes from the target's configuration; no command builds one from flags, and no
    command module imports another's private function."""
    from pipeline.cli import promote_cmd

    assert not hasattr(promote_cmd, "_backend")
    for path in (REPO / "pipeline" / "cli").glob("*.py"):
        for line in path.read_text().splitlines():
            if line.strip().startswith("from pipeline.cli.") and " import " in line:
                assert not any(n.strip().startswith("_") for n in line.split(" import ", 1)[1].split(",")), line
        assert "Backend(" not in path.read_text(), path.name


# -- the backend built from configuration ---------------------------------------------------------
def test_kserve_analysis_gets_its_prometheus_from_the_target_configuration() -> None:
    from pipeline.adapters.prometheus import PrometheusHttp
    from pipeline.promote.kserve import KServeBackend

    target = make_target("kserve", backend="kserve", kserve={"prometheus_url": "http://prom.example:9090",
                                                             "steps": [20, 60]}, timeout_s=900)
    backend = create_backend(target, Connections(in_cluster=True), kube=object())  # type: ignore[arg-type]
    assert isinstance(backend, KServeBackend) and isinstance(backend.prometheus, PrometheusHttp)
    assert backend.prometheus.base_url == "http://prom.example:9090"
    assert backend.steps == (20, 60) and backend.timeout_s == 900 and backend.ref("kserve").namespace == "llmgate-kserve"
    bare = create_backend(make_target("kserve", backend="kserve"), Connections(in_cluster=True), kube=object())  # type: ignore[arg-type]
    assert bare.prometheus is None  # readiness only, and each step's events say so


def test_gitops_and_cluster_backends_come_from_configuration(tmp_path: Path) -> None:
    from pipeline.promote.cluster import ArgoRolloutsBackend
    from pipeline.promote.gitops import GitopsBackend

    cfg = make_target("canary", gitops={"overlay": "deploy/canary", "remote": "origin", "push_branch": "main"})
    g = create_backend(cfg, Connections(gitops_repo=tmp_path))
    assert isinstance(g, GitopsBackend) and (g.remote, g.push_branch) == ("origin", "main")
    assert g._rel("canary") == "deploy/canary/kustomization.yaml" and g.namespaces == {"canary": "llmgate-canary"}
    r = create_backend(make_target("canary", backend="argo-rollouts", rollout={"name": "srv", "container": "llm"},
                                   timeout_s=600), Connections(in_cluster=True), kube=object())  # type: ignore[arg-type]
    assert isinstance(r, ArgoRolloutsBackend) and str(r.ref("canary")) == "Rollout llmgate-canary/srv container llm"
    assert r.timeout_s == 600


# -- the policy floor -----------------------------------------------------------------------------
def test_policies_that_extend_the_floor_meet_it_and_a_minimal_one_does_not(tmp_path: Path) -> None:
    """#26 A: a one-gate policy not extending gates.yaml lacks the floor's locked gates and sections."""
    floor = PolicyFloor(make_target("production", production=True, namespace="llmgate", keys=["sha256:" + "1" * 64],
                                    accepted_policies=["a" * 64], floor=shipped_floor()))
    for name in ("gates.yaml", "gates.local.yaml", "gates.llamacpp.yaml"):
        assert floor.problem(_identity(REPO / name)) is None, name
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("version: 1\ngates:\n  - name: error_rate\n    source: bench.error_rate\n    threshold: 0.01\n")
    problem = floor.problem(_identity(minimal))
    assert problem is not None and "does not contain the floor gates.yaml of target production" in problem
    for missing in ("no_secret_in_image", "signature", "manifests"):
        assert f"gate {missing} (locked in the floor) is missing" in problem
    assert "section scan (locked in the floor) is missing" in problem


def test_a_standalone_policy_meets_the_floor_only_by_repeating_it_as_strictly(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "gates.yaml").read_text())
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(data))  # the same content under another name
    floor = PolicyFloor(make_target("canary", floor=shipped_floor()))
    assert floor.problem(_identity(tmp_path / "own.yaml")) is None
    loose = {**data, "gates": [dict(g, threshold=5) if g["name"] == "no_secret_in_image" else g for g in data["gates"]],
             "scan": {**data["scan"], "max": {"critical": 3, "high": 0}}}
    (tmp_path / "loose.yaml").write_text(yaml.safe_dump(loose))
    problem = floor.problem(_identity(tmp_path / "loose.yaml"))
    assert problem is not None and "gate no_secret_in_image: threshold may only get stricter (0 -> 5, max)" in problem
    assert "section scan:" in problem


def test_the_floor_is_pinned_and_a_policy_must_be_readable_by_its_digest(tmp_path: Path) -> None:
    for name in ("gates.yaml", "gates.local.yaml"):
        shutil.copyfile(REPO / name, tmp_path / name)
    target = make_target("canary", root=tmp_path, floor=shipped_floor())
    local = _identity(tmp_path / "gates.local.yaml")
    assert PolicyFloor(target).problem(local) is None
    # the floor file edited in place: its pinned digest no longer matches, so nothing meets it
    text = (tmp_path / "gates.yaml").read_text().replace("    locked: true\n", "", 1)
    (tmp_path / "gates.yaml").write_text(text)
    problem = PolicyFloor(make_target("canary", root=tmp_path, floor=shipped_floor())).problem(local)
    assert problem is not None and "the floor changed since it was pinned" in problem
    # a verdict's policy whose content is nowhere to be read with its digest cannot be shown to meet it
    ghost = PolicyIdentity(name="ghost.yaml", sha256="e" * 64, files=[str(tmp_path / "ghost.yaml")])
    problem = PolicyFloor(make_target("canary", floor=shipped_floor())).problem(ghost)
    assert problem is not None and "no policy file with that digest is here to read" in problem


def test_a_local_policy_is_known_by_its_digest_not_its_name(tmp_path: Path) -> None:
    """#22 repro 4: a byte copy of gates.local.yaml saved as gates.prod.yaml is still the local policy."""
    shutil.copyfile(REPO / "gates.yaml", tmp_path / "gates.yaml")
    (tmp_path / "gates.prod.yaml").write_bytes((REPO / "gates.local.yaml").read_bytes())
    copy = _identity(tmp_path / "gates.prod.yaml")
    target = make_target("production", production=True, namespace="llmgate", keys=["sha256:" + "1" * 64],
                         accepted_policies=["a" * 64], floor=shipped_floor())
    assert not copy.is_local  # the name says nothing
    assert is_local_policy(copy, local_policy_digests(target))
    policy = target_policy(target)
    assert policy.production and not policy.allow_local_policy and copy.sha256 in policy.local_policy_sha256


# -- the key a target trusts ----------------------------------------------------------------------
def test_the_key_comes_from_the_pin_or_the_local_key_pair(tmp_path: Path) -> None:
    """#22 repro 5: a public key file replaced next to the store verifies nothing: a pinned target checks
    its id, a local target checks it is the public half of the local private key, production needs a pin."""
    mine = write_key_pair(tmp_path / "mine", b"")
    theirs = write_key_pair(tmp_path / "theirs", b"")
    sign = SignConfig(key=SecretSource(file=str(mine.private_key)), password=None, public_key=str(mine.public_key))
    pinned = make_target("canary", keys=[mine.key_id], accept_local_key=False)
    assert "pinned for target canary" in trusted_key(pinned, sign, where="x").how
    local = trusted_key(make_target("canary"), sign, where="x")
    assert local.key.key_id == mine.key_id and "not pinned" in local.how
    swapped = sign.model_copy(update={"public_key": str(theirs.public_key)})
    with pytest.raises(PromotionRefused, match="is not a key target canary pins"):
        trusted_key(pinned, swapped, where="x")
    with pytest.raises(PromotionRefused, match="not the public half of the local signing key"):
        trusted_key(make_target("canary"), swapped, where="x")
    prod = make_target("production", production=True, namespace="llmgate", accepted_policies=["a" * 64],
                       floor=shipped_floor())
    with pytest.raises(PromotionRefused, match="pins no signing key") as err:
        trusted_key(prod, sign, where="x")
    assert "llmgate keys id" in err.value.render()


# -- rollback by release pair ---------------------------------------------------------------------
def test_rollback_after_a_weights_only_promotion_finds_the_earlier_pair(tmp_path: Path) -> None:
    """#22 repro 7: same image, new weights is a release; rollback goes back to the earlier pair."""
    store = Store(tmp_path / "results.db")
    image = digest("image")
    for run_id, model in (("r1", digest("m1")), ("r2", digest("m2"))):
        store.record_promotion(PromotionRecord(target="canary", digest=image, model_digest=model, mode="gitops",
                                               outcome="promoted"), run_id)
    current, previous = audit.current_and_previous(store, "canary")
    assert current is not None and previous is not None
    assert (current[0], previous[0], previous[1].model_digest) == ("r2", "r1", digest("m1"))
    assert audit.pair_text(current[1]) == f"(image {image}, model {digest('m2')})"


def test_the_lock_lease_is_shorter_than_any_rollout_it_guards() -> None:
    """#22 repro 8: the lease (3600 s) equalled the Rollouts timeout, so a long canary outlived its lock; now
    it is short and renewed every third of itself by the heartbeat (tests/test_store_lock.py)."""
    from pipeline.config import PromoteConfig
    from pipeline.store.lock import DEFAULT_LEASE_S, HEARTBEAT_FRACTION

    lease = PromoteConfig().lock_lease_s
    assert lease == DEFAULT_LEASE_S and HEARTBEAT_FRACTION >= 2
    assert all(lease < t.config.timeout_s for t in load_targets(SHIPPED).targets.values())
