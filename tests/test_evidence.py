"""Evidence signed where it is measured, verified before it is judged; the verdict signed by the gate.

Against the real local registry and the store (SQLite and PostgreSQL), with real keys and the real
runner, sign, gate, attest and promote stages. Each attack is the red-team's own steps: an edited store
row, a planted result with a matching input key, an attest replayed from a store that still says pass.
Each refusal names what was refused and why and leaves every store row and registry tag as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.adapters.registry import RegistryClient, split_repository
from pipeline.cli import app
from pipeline.models import Decision, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate import reuse
from pipeline.stages.registry import STAGES
from pipeline.supplychain.evidence import LINK_TYPE, check_run, result_digest
from pipeline.supplychain.signing import load_public_key
from pipeline.supplychain.verdicts import open_verdict
from tests.evidence_env import Env, install_eval_double, registry_tags
from tests.trust_images import trust_repo

pytestmark = pytest.mark.docker  # the real local registry holds images, signatures, attestations, the log


@pytest.fixture
def env(tmp_path: Path, local_stack, store_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LLMGATE_ACTOR", "ci-bot")
    monkeypatch.setenv("LLMGATE_STORE_URL", store_url)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    double = install_eval_double(monkeypatch)
    with trust_repo() as repo:
        yield Env(tmp_path, repo.repository, repo.image(), store_url, double)


def _tags(env: Env) -> dict[str, str | None]:
    host, name = split_repository(env.repository)
    with RegistryClient(host) as reg:
        return registry_tags(reg, name)


def _cli(env: Env, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["--workdir", str(env.ws.root), *args], env={"COLUMNS": "200"})


def _edit_record(env: Env, run_id: str, edit) -> None:  # type: ignore[no-untyped-def]
    """Change the stored record with SQL, as someone with write access to the store would."""
    (raw,) = env.sql("SELECT record_json FROM runs WHERE run_id = :id", id=run_id)[0]
    doc = json.loads(raw)
    edit(doc)
    env.sql("UPDATE runs SET record_json = :doc WHERE run_id = :id", doc=json.dumps(doc), id=run_id)


def test_every_measured_result_carries_a_link_over_its_release_and_inputs(env) -> None:  # type: ignore[no-untyped-def]
    run = env.gated("correctness", env.weights("good", b"good weights"), correctness=0.9)
    pub = load_public_key(env.keys / "cosign.pub")
    checks = check_run(run, pub.key, STAGES.linked)
    assert [c.stage for c in checks] == ["build", "sign", "boot", "eval"] and all(c.verified for c in checks)
    link = json.loads(__import__("base64").b64decode(json.loads(run.stages["eval"].evidence)["payload"]))
    assert link["predicateType"] == LINK_TYPE and link["predicate"]["name"] == "eval"
    assert link["subject"] == [{"name": "llmgate:stage/eval", "digest": {"sha256": result_digest(run.stages["eval"])}}]
    names = {m["name"]: m["digest"]["sha256"] for m in link["predicate"]["materials"]}
    assert names[f"oci://{env.repository}"] == run.image.digest.split(":")[1]
    assert names["llmgate:model"] == run.model.digest.split(":")[1]
    assert names["llmgate:ground-truth/v1"] == run.ground_truth.sha256
    assert names["llmgate:config"] == run.config_hash and names["llmgate:input-key"] == run.stages["eval"].input_key
    assert names["llmgate:stage/boot"] == result_digest(run.stages["boot"])  # what eval read
    # The verdict was signed by the gate, dated with the gate time, and names each link's digest.
    verdict = open_verdict(run.stages["gate"].evidence, pub.key).predicate
    assert verdict.created <= run.stages["gate"].finished_at and verdict.decision is Decision.PASS
    assert [(e.stage, e.result_sha256, e.link_sha256) for e in verdict.evidence] == \
        [(c.stage, c.result_sha256, c.link_sha256) for c in checks]


def test_repro1_a_store_edit_of_a_measured_result_is_refused_naming_the_stage(env) -> None:  # type: ignore[no-untyped-def]
    degraded = env.gated("correctness", env.weights("degraded", b"degraded weights"), correctness=0.406)
    assert degraded.decision is Decision.BLOCKED
    _edit_record(env, degraded.run_id, lambda d: d["stages"]["eval"]["metrics"].update(correctness_mean=0.97))
    assert env.ws.store.get(degraded.run_id).stages["eval"].metrics["correctness_mean"] == 0.97
    rows, tags = env.store_rows(), _tags(env)

    res = _cli(env, "gate", "--run", degraded.run_id, "--config", str(env.config_file("correctness")))
    assert res.exit_code == 1, res.output
    out = " ".join(res.output.split())
    assert f"run {degraded.run_id}: refusing to judge run {degraded.run_id}: stage eval: the result is not what " \
           "was signed when it was measured" in out and "it was changed after the stage ran" in out
    assert env.store_rows() == rows and _tags(env) == tags  # nothing recorded, nothing signed, nothing pushed

    # The blocked verdict the gate signed before the edit is still the newest word on the pair.
    details = env.promote(degraded.run_id)
    assert details.outcome == "refused" and "is blocked" in details.reason


def test_an_unsigned_result_planted_in_a_run_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    run = env.measured("correctness", env.weights("degraded", b"degraded weights"))
    planted = StageResult(stage=Stage.EVAL, status=StageStatus.OK, metrics={"correctness_mean": 0.97},
                          reused_from="a0a0a0a0a0a0").finish()
    _edit_record(env, run.run_id, lambda d: d["stages"].update(eval=json.loads(planted.model_dump_json())))
    rows = env.store_rows()
    with pytest.raises(Exception) as ei:
        env.stage(run.run_id, Stage.GATE, "correctness")
    assert ei.value.exit_code == 1
    assert "stage eval: the result is unsigned (recorded without a signing key)" in ei.value.message
    assert env.store_rows() == rows


def test_a_planted_result_with_a_matching_input_key_is_not_reused(env) -> None:  # type: ignore[no-untyped-def]
    good = env.measured("correctness", env.weights("good", b"good weights"), correctness=0.95)
    runner = env.runner(env.cfg("correctness"))
    run = env.measured("correctness", env.weights("degraded", b"degraded weights"))
    key = reuse.input_key(Stage.EVAL, run, runner.cfg, runner.options)
    assert key is not None
    # Two results an attacker with store access plants under the degraded release's eval input key: one
    # unsigned, one carrying the valid link of the good run's eval (a signature over another result).
    for rid, link in (("planted0unsigned", None), ("planted0relinked", good.stages["eval"].evidence)):
        fake = RunRecord(run_id=rid, image=run.image, model=run.model, ground_truth=run.ground_truth,
                         policy=run.policy, config_hash=run.config_hash)
        fake.add_stage(StageResult(stage=Stage.EVAL, status=StageStatus.OK, input_key=key, evidence=link,
                                   metrics={"correctness_mean": 0.97}))
        env.ws.store.save(fake)
    env.eval.correctness["degraded"] = 0.406
    said: list[str] = []
    runner.reporter = type("Steps", (), {"step": lambda _s, m: said.append(m), "total": lambda *a: None,
                                         "advance": lambda *a: None})()
    res = runner.run_stage(env.ws.store.get(run.run_id), Stage.EVAL)
    assert res.reused_from is None and res.metrics["correctness_mean"] == 0.406  # measured, not planted
    assert "eval: the stored result of run planted0relinked is not reused: it is not what its link signed " \
           "(changed after it was measured)" in said
    env.stage(run.run_id, Stage.GATE, "correctness")
    assert env.ws.store.get(run.run_id).decision is Decision.BLOCKED


def test_a_result_copied_from_another_release_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    good = env.measured("correctness", env.weights("good", b"good weights"), correctness=0.95)
    degraded = env.measured("correctness", env.weights("degraded", b"degraded weights"), correctness=0.406)
    _edit_record(env, degraded.run_id, lambda d: d["stages"].update(
        eval=json.loads(good.stages["eval"].model_dump_json())))  # result and its valid link, as they are
    with pytest.raises(Exception) as ei:
        env.stage(degraded.run_id, Stage.GATE, "correctness")
    assert f"stage eval: its link was signed for run '{good.run_id}', not {degraded.run_id}" in ei.value.message


def test_repro3_attest_replayed_from_a_stale_store_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    weights = env.weights("good", b"good weights")
    passed = env.gated("passing", weights)
    blocked = env.gated("blocking", weights)  # the same pair, judged anew: blocked, signed, attested
    assert passed.decision is Decision.PASS and blocked.decision is Decision.BLOCKED
    assert passed.model.digest == blocked.model.digest
    rows, tags = env.store_rows(), _tags(env)

    res = _cli(env, "stage", "attest", "--run", passed.run_id, "--config", str(env.config_file("passing")))
    assert res.exit_code == 1, res.output
    out = " ".join(res.output.split())
    assert f"the verdict of run {passed.run_id} (log entry #0) is not the newest verdict for this pair: entry #1 " \
           f"(run {blocked.run_id}, blocked" in out
    assert env.store_rows() == rows and _tags(env) == tags

    details = env.promote(passed.run_id)
    assert details.outcome == "refused" and f"(run {blocked.run_id}) is blocked" in details.reason


def test_the_verdict_is_dated_with_the_gate_time_not_the_attest_time(env) -> None:  # type: ignore[no-untyped-def]
    run = env.measured("passing", env.weights("good", b"good weights"))
    env.stage(run.run_id, Stage.GATE, "passing")
    gated = env.ws.store.get(run.run_id)
    env.stage(run.run_id, Stage.ATTEST, "passing")
    attested = env.ws.store.get(run.run_id)
    pub = load_public_key(env.keys / "cosign.pub")
    signed = open_verdict(gated.stages["gate"].evidence, pub.key)
    assert signed.predicate.created < attested.stages["attest"].started_at
    # What the registry holds is the gate's envelope, byte for byte.
    from pipeline.adapters.signer import PythonSigner

    found = PythonSigner().verify_attestations(run.image.by_digest, "https://llmgate.dev/verdict/v1", pub.pem)
    assert [s["predicate"]["created"] for s in found.statements] == [signed.predicate.model_dump(mode="json")["created"]]


def test_without_a_signing_key_the_gate_gives_an_unsigned_preview_that_is_never_promoted(env) -> None:  # type: ignore[no-untyped-def]
    run = env.measured("passing", env.weights("good", b"good weights"))
    cfg = env.config_file("passing")
    doc = __import__("yaml").safe_load(cfg.read_text())
    doc["sign"]["key"] = {"env": "LLMGATE_TEST_NO_SUCH_KEY"}  # a pull-request job: the secret is not given
    cfg.write_text(__import__("yaml").safe_dump(doc))
    res = _cli(env, "gate", "--run", run.run_id, "--config", str(cfg))
    out = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "UNSIGNED PREVIEW (no signing key (environment variable LLMGATE_TEST_NO_SUCH_KEY is not there)): this " \
           "verdict is never attested and never promoted" in out
    stored = env.ws.store.get(run.run_id)
    assert stored.decision is Decision.PASS and stored.stages["gate"].evidence is None
    assert env.sql("SELECT count(*) FROM verdict_log")[0][0] == 0
    res = _cli(env, "stage", "attest", "--run", run.run_id, "--config", str(env.config_file("passing")))
    assert res.exit_code == 1 and "its verdict is an unsigned preview" in " ".join(res.output.split())
    details = env.promote(run.run_id)
    assert details.outcome == "refused" and "no signed verdict" in details.reason


def test_llmgate_verify_shows_each_link_the_verdict_and_its_place_in_the_log(env) -> None:  # type: ignore[no-untyped-def]
    weights = env.weights("good", b"good weights")
    run = env.gated("correctness", weights, correctness=0.9)
    key = ["--key", str(env.keys / "cosign.pub")]
    res = _cli(env, "verify", run.image.by_digest, *key)
    out = res.output
    assert res.exit_code == 0, out
    assert "  evidence   valid: 4 evidence links verified (build, sign, boot, eval)" in out
    for stage in ("build", "sign", "boot", "eval"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"    {stage:<10} result sha256:"))
        assert line.endswith("verified") and "signer sha256:" in line
    assert "  log        valid: entry #0 of 1 (checkpoint root " in out
    assert f"verdict: run {run.run_id}, decision pass" in out and "newest for the pair: yes" in out
    other = _cli(env, "verify", run.image.by_digest, "--model", "sha256:" + "9" * 64, *key)
    assert other.exit_code == 1 and f"but none about model sha256:{'9' * 64}" in " ".join(other.output.split())
    assert _cli(env, "verify", run.image.by_digest, "--model", "9999", *key).exit_code == 2

    blocked = env.gated("blocking", weights)  # a newer verdict for the pair: it is the one shown now
    res = _cli(env, "verify", run.image.by_digest, *key)
    assert res.exit_code == 0, res.output
    assert f"verdict: run {blocked.run_id}, decision blocked" in res.output
    assert "  log        valid: entry #1 of 2 " in res.output and "newest for the pair: yes" in res.output
    same_pair = _cli(env, "verify", run.image.by_digest, "--model", run.model.digest, *key)
    assert f"verdict: run {blocked.run_id}" in same_pair.output  # the blocked verdict is about the same weights
