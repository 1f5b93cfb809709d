"""`llmgate runs list|show`, `history` and `status` against a real store (SQLite) holding what the demo
leaves: a passing run of the good model and a blocked run of the degraded one, plus a promotion.
`status --gitops-repo` reads a real git repository through the real GitOps backend."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import BadInput
from pipeline.models import PromotionRecord, RunRecord
from pipeline.report.listing import parse_since
from pipeline.report.units import fmt_value
from pipeline.store import Store
from tests.promote_helpers import git, gitops_repo
from tests.sample_data import make_run

T0 = datetime(2026, 8, 1, 9, 0, tzinfo=UTC)


@pytest.fixture()
def demo(tmp_path: Path) -> tuple[list[str], RunRecord, RunRecord, RunRecord]:
    """Two runs as after `scripts/demo.sh` (good passes and is promoted, degraded is blocked), and an
    earlier run of the good tag whose content-addressed stages a later one reused."""
    earlier = make_run("demo-good", seed=1, created_at=T0 - timedelta(days=2), target="canary")
    good = make_run("demo-good", seed=4, created_at=T0, target="canary", reused_from=earlier.run_id)
    degraded = make_run("demo-degraded", seed=3, created_at=T0 + timedelta(minutes=5), target="canary",
                        quality=0.45, model_seed="degraded")
    assert good.decision.value == "pass" and degraded.decision.value == "blocked"
    promo = PromotionRecord(target="canary", digest=good.image.digest or "", mode="gitops", outcome="promoted",
                            who="ci@example", at=T0 + timedelta(minutes=3), detail="promote demo-good")
    good.promotion = promo
    store = Store(tmp_path / "results.db")
    for r in (earlier, good, degraded):
        store.save(r)
    store.record_promotion(promo, good.run_id)
    store.record_promotion(PromotionRecord(target="canary", digest=degraded.image.digest or "", mode="gitops",
                                           outcome="refused", at=T0 + timedelta(minutes=8),
                                           detail=degraded.decision_reason), degraded.run_id)
    store.close()
    return ["--workdir", str(tmp_path / "wd"), "--store", str(tmp_path / "results.db")], earlier, good, degraded


def invoke(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, args)
    return res.exit_code, res.output


def test_runs_list_shows_both_demo_runs_with_decision_and_digests(demo) -> None:  # type: ignore[no-untyped-def]
    base, earlier, good, degraded = demo
    code, text = invoke([*base, "runs", "list"])
    assert code == 0, text
    lines = {r.run_id: next(line for line in text.splitlines() if r.run_id in line) for r in (good, degraded)}
    for run, decision in ((good, "pass"), (degraded, "blocked")):
        line = lines[run.run_id]
        assert decision in line and (run.image.tag or "") in line
        assert run.image.digest[7:19] in line and run.model.digest[7:19] in line  # type: ignore[union-attr,index]
    assert "★ serving" in lines[good.run_id] and "serving" not in lines[degraded.run_id]
    assert text.index(degraded.run_id) < text.index(good.run_id) < text.index(earlier.run_id)  # newest first

    code, text = invoke([*base, "runs", "list", "--json"])
    doc = json.loads(text)
    assert [r["run_id"] for r in doc["runs"]] == [degraded.run_id, good.run_id, earlier.run_id]
    first = doc["runs"][1]
    assert first["image_digest"] == good.image.digest and first["model_digest"] == good.model.digest  # type: ignore[union-attr]
    assert first["decision"] == "pass" and first["promoted"] and first["serving"]
    assert not doc["runs"][0]["promoted"] and not doc["runs"][2]["serving"]


def test_runs_list_filters(demo) -> None:  # type: ignore[no-untyped-def]
    base, earlier, good, degraded = demo

    def ids(*args: str) -> list[str]:
        code, text = invoke([*base, "runs", "list", "--json", *args])
        assert code == 0, text
        return [r["run_id"] for r in json.loads(text)["runs"]]

    assert ids("--tag", "demo-good") == [good.run_id, earlier.run_id]
    assert ids("--decision", "blocked") == [degraded.run_id]
    assert ids("--target", "canary", "--limit", "1") == [degraded.run_id]
    assert ids("--target", "production") == []
    assert ids("--since", (T0 - timedelta(hours=1)).isoformat()) == [degraded.run_id, good.run_id]
    code, text = invoke([*base, "runs", "list", "--since", "yesterday-ish"])
    assert code == 2 and "--since" in text
    code, text = invoke([*base, "runs", "list", "--decision", "maybe"])
    assert code == 2


def test_parse_since() -> None:
    now = datetime(2026, 8, 10, 12, 0, tzinfo=UTC)
    assert parse_since("1d", now=now) == now - timedelta(days=1)
    assert parse_since("12h", now=now) == now - timedelta(hours=12)
    assert parse_since("2w", now=now) == now - timedelta(weeks=2)
    assert parse_since("2026-08-01") == datetime(2026, 8, 1, tzinfo=UTC)
    assert parse_since("2026-08-01T12:00+02:00") == datetime(2026, 8, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(BadInput):
        parse_since("last tuesday")


def test_runs_show_by_tag_id_and_prefix(demo) -> None:  # type: ignore[no-untyped-def]
    base, earlier, good, degraded = demo
    code, text = invoke([*base, "runs", "show", "demo-good"])  # a tag: its newest run
    assert code == 0, text
    assert good.run_id in text and earlier.run_id in text  # the reused stages name their source run
    assert f"{good.image.repository}@{good.image.digest}" in text and good.model.digest in text  # type: ignore[union-attr]
    assert good.ground_truth.sha256 in text and good.policy.sha256 in text  # type: ignore[union-attr]
    for g in good.gates:  # the verdict table: every gate on one line of its own
        assert re.search(rf"^{re.escape(g.name)}\s+{g.status.value}\b", text, re.MULTILINE), g.name
    build = good.stages["build"]
    assert re.search(rf"^build\s+ok\s+\d\d:\d\d:\d\d\s+{re.escape(fmt_value(build.duration_s, 's'))}", text, re.MULTILINE)
    assert re.search(rf"^leak\s+ok\s+-\s+reused from run {earlier.run_id}", text, re.MULTILINE)

    code, text = invoke([*base, "runs", "show", degraded.run_id, "--json"])
    doc = json.loads(text)
    assert doc["run_id"] == degraded.run_id and doc["decision"] == "blocked"
    assert doc["release"]["model_digest"] == degraded.model.digest  # type: ignore[union-attr]
    assert {g["name"] for g in doc["gates"]} == {g.name for g in degraded.gates}
    stages = {s["stage"]: s for s in doc["stages"]}
    assert stages["build"]["duration_s"] == pytest.approx(degraded.stages["build"].duration_s)

    code, text = invoke([*base, "runs", "show", good.run_id[:6], "--json"])  # a unique prefix
    doc = json.loads(text)
    assert doc["run_id"] == good.run_id
    assert {s["stage"]: s["reused_from"] for s in doc["stages"]}["eval"] == earlier.run_id
    assert {s["stage"]: s["duration_s"] for s in doc["stages"]}["eval"] is None  # not computed by this run
    code, text = invoke([*base, "runs", "show", "no-such-thing"])
    assert code == 2 and "no-such-thing" in text


def test_history_of_a_tag_and_of_a_target(demo) -> None:  # type: ignore[no-untyped-def]
    base, earlier, good, degraded = demo
    code, text = invoke([*base, "history", "demo-good", "--json"])
    assert code == 0, text
    doc = json.loads(text)
    assert [r["run_id"] for r in doc["runs"]] == [earlier.run_id, good.run_id]  # oldest first
    keys = [g.name for g in good.gates if g.key]
    assert doc["key_gates"] == keys and keys
    corr = next(g for g in good.gates if g.name == "correctness")
    assert doc["runs"][1]["gates"]["correctness"]["value"] == pytest.approx(corr.value)
    code, text = invoke([*base, "history", "--target", "canary"])
    assert code == 0, text
    for r in (earlier, good, degraded):
        assert r.run_id in text
    assert fmt_value(corr.value, "ratio") in text  # key metrics with their unit
    code, text = invoke([*base, "history"])
    assert code == 2 and "--target" in text


def test_status_from_the_store(demo) -> None:  # type: ignore[no-untyped-def]
    base, _, good, degraded = demo
    code, text = invoke([*base, "status", "--target", "canary", "--json"])
    assert code == 0, text
    doc = json.loads(text)
    assert doc["promoted_digest"] == good.image.digest and doc["run_id"] == good.run_id
    assert doc["model_digest"] == good.model.digest and doc["tag"] == "demo-good"  # type: ignore[union-attr]
    assert doc["since"].startswith("2026-08-01T09:03") and doc["who"] == "ci@example"
    assert doc["last_attempt"]["outcome"] == "refused" and doc["last_attempt_run_id"] == degraded.run_id
    assert doc["live"] is None
    code, text = invoke([*base, "status", "--target", "canary"])
    assert code == 0 and good.image.digest in text and "refused" in text  # type: ignore[operator]
    code, text = invoke([*base, "status", "--target", "production"])
    assert code == 0 and "no promotion recorded" in text
    code, text = invoke([*base, "status"])
    assert code == 2  # --target is required, as everywhere


def test_status_reads_the_live_overlay_of_a_gitops_repository(demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, _, good, _ = demo
    repo = gitops_repo(tmp_path)
    kfile = repo / "manifests/overlays/canary/kustomization.yaml"
    text = kfile.read_text().replace("  newName: 127.0.0.1:5000/llmgate/server",
                                     f"  newName: 127.0.0.1:5000/llmgate/server\n  digest: {good.image.digest}")
    kfile.write_text(text.replace("model-digest=unpinned", f"model-digest={good.model.digest}"))  # type: ignore[union-attr]
    git(repo, "commit", "-q", "-am", "pin canary")
    code, out = invoke([*base, "status", "--target", "canary", "--gitops-repo", str(repo), "--json"])
    assert code == 0, out
    live = json.loads(out)["live"]
    assert live["backend"] == "gitops" and live["phase"] == "committed"
    assert live["image"] == f"127.0.0.1:5000/llmgate/server@{good.image.digest}"
    assert live["model_digest"] == good.model.digest and live["matches_store"] is True  # type: ignore[union-attr]
    git(repo, "revert", "--no-edit", "HEAD")  # the overlay no longer pins what the store promoted
    code, out = invoke([*base, "status", "--target", "canary", "--gitops-repo", str(repo)])
    assert code == 0 and "gitops: committed" in out
    code, out = invoke([*base, "status", "--target", "nowhere", "--gitops-repo", str(repo)])
    assert code == 2 and "nowhere" in out


def test_a_weights_only_release_is_named_by_status_and_marked_serving_by_its_pair(tmp_path: Path) -> None:
    """#26 D/E: the same image with new weights, promoted: `status` names the new run, model and the verdict
    that authorised it, and `runs list` marks only that run ★ serving, not a blocked run that shares the image."""
    first = make_run("v1", seed=1, created_at=T0, target="canary")
    new = first.model_copy(deep=True, update={"run_id": "0000000000b2", "created_at": T0 + timedelta(hours=1)})
    new.model = new.model.model_copy(update={"digest": "sha256:" + "b" * 64})  # type: ignore[union-attr]
    blocked = make_run("v1", seed=1, created_at=T0 + timedelta(hours=2), target="canary", quality=0.4,
                       model_seed="degraded")
    blocked.run_id = "0000000000c3"
    assert blocked.decision.value == "blocked" and first.image.digest == new.image.digest == blocked.image.digest
    store = Store(tmp_path / "results.db")
    for i, run in enumerate((first, new)):
        assert run.model is not None
        rec = PromotionRecord(target="canary", digest=run.image.digest or "", model_digest=run.model.digest,
                              mode="gitops", outcome="promoted", at=T0 + timedelta(hours=i, minutes=30),
                              verdict_run_id=run.run_id, verdict_at=T0 + timedelta(hours=i, minutes=20))
        run.promotion = rec
        store.save(run)
        store.record_promotion(rec, run.run_id)
    store.save(blocked)
    store.close()
    base = ["--workdir", str(tmp_path / "wd"), "--store", str(tmp_path / "results.db")]
    code, text = invoke([*base, "status", "--target", "canary", "--json"])
    assert code == 0, text
    doc = json.loads(text)
    assert (doc["run_id"], doc["model_digest"], doc["verdict_run_id"]) == (new.run_id, "sha256:" + "b" * 64, new.run_id)
    assert doc["verdict_at"].startswith("2026-08-01T10:20") and doc["previous_model_digest"] == first.model.digest  # type: ignore[union-attr]
    code, text = invoke([*base, "status", "--target", "canary"])
    assert code == 0 and f"signed verdict of run {new.run_id}, gated 2026-08-01 10:20:00 UTC" in text
    code, text = invoke([*base, "runs", "list", "--json"])
    rows = {r["run_id"]: r for r in json.loads(text)["runs"]}
    assert rows[new.run_id]["serving"] and not rows[first.run_id]["serving"] and rows[first.run_id]["promoted"]
    assert not rows[blocked.run_id]["serving"]
    code, text = invoke([*base, "history", "--target", "canary", "--json"])
    serving = json.loads(text)["serving"]
    assert (serving["model_digest"], serving["verdict_run_id"]) == ("sha256:" + "b" * 64, new.run_id)


def test_history_of_a_target_names_the_verdict_that_authorised_what_it_serves(demo) -> None:  # type: ignore[no-untyped-def]
    base, _, good, degraded = demo
    code, text = invoke([*base, "history", "--target", "canary", "--json"])
    doc = json.loads(text)
    assert code == 0 and doc["serving"]["image_digest"] == good.image.digest
    assert doc["serving"]["verdict_run_id"] is None  # the demo's promotion predates naming verdicts: said so
    code, text = invoke([*base, "history", "--target", "canary"])
    assert "promoted before verdicts were named" in " ".join(text.split())
    row = next(line for line in text.splitlines() if good.run_id in line)
    assert "★ serving" in row and "★ serving" not in next(line for line in text.splitlines() if degraded.run_id in line)
