"""GitOps promotion for real: a temporary git repo, real `kubectl kustomize`, real commits.

Every failure path must leave the repository exactly as it was: working-tree bytes, index, HEAD,
current branch, refs and worktree list.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import BadInput
from pipeline.manifests.render import render
from pipeline.models import ImageRef
from pipeline.promote.gitops import ManifestsRejected, branch_name, promote_gitops
from pipeline.promote.lock import PromotionLock
from pipeline.stages.promote import GitopsTarget, promote_stage
from pipeline.workspace import Workspace
from tests.promote_helpers import REPOSITORY, digest, git, gitops_repo, make_run, snapshot

KFILE = "manifests/overlays/canary/kustomization.yaml"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = gitops_repo(tmp_path)
    # Uncommitted work in the caller's tree must survive any promotion untouched.
    (r / KFILE).write_text((r / KFILE).read_text() + "# local edit, not committed\n")
    (r / "notes.txt").write_text("untracked\n")
    return r


def image(seed: str) -> ImageRef:
    return ImageRef(repository=REPOSITORY, digest=digest(seed))


def test_promotion_commits_the_digest_on_a_branch_with_evidence(repo: Path, tmp_path: Path) -> None:
    before = snapshot(repo)
    res = promote_gitops(repo, "canary", image("a"), evidence="Run: r1\nGates:\n  pass ttft", load_time_s=120.0)
    assert res.outcome == "promoted" and res.branch == branch_name("canary", digest("a"))
    after = snapshot(repo)
    # Only a new branch ref appeared; the caller's tree, index, HEAD and branch are as they were.
    assert {k: v for k, v in after.items() if k != "refs"} == {k: v for k, v in before.items() if k != "refs"}
    assert after["refs"] != before["refs"] and f"refs/heads/{res.branch} {res.commit}" in str(after["refs"])
    # The commit: one parent (HEAD), one file changed, the digest and the evidence in the message.
    assert git(repo, "rev-parse", f"{res.commit}^") == before["head"]
    assert git(repo, "diff", "--name-only", f"{res.commit}^", res.commit) == KFILE
    msg = git(repo, "log", "-1", "--format=%B", res.commit)
    assert msg.startswith(f"promote canary: {REPOSITORY}@{digest('a')}")
    assert "Run: r1" in msg and f"Llmgate-Digest: {digest('a')}" in msg
    diff = git(repo, "diff", f"{res.commit}^", res.commit)
    assert f"+  digest: {digest('a')}" in diff and diff.count("\n+") == 1 + 1  # header + one line
    assert res.diff.count("\n+ ") + res.diff.count("\n+  ") >= 1
    # What the branch deploys, rendered from a checkout of the branch tip, pins the digest.
    out = tmp_path / "tip"
    git(repo, "worktree", "add", "--detach", "-q", str(out), res.commit)
    try:
        rollout = next(o for o in render(out / "manifests/overlays/canary") if o["kind"] == "Rollout")
    finally:
        git(repo, "worktree", "remove", "--force", str(out))
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}@{digest('a')}"


def test_rerunning_an_identical_promotion_is_a_noop(repo: Path) -> None:
    first = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0)
    mid = snapshot(repo)
    again = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0)
    assert again.outcome == "noop" and again.commit == first.commit
    assert snapshot(repo) == mid


def test_noop_when_the_base_already_pins_the_digest(repo: Path) -> None:
    res = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0)
    # make room to merge the promotion branch in this scratch repo: drop the local edits
    (repo / KFILE).write_text(git(repo, "show", f"HEAD:{KFILE}") + "\n")
    (repo / "notes.txt").unlink()
    git(repo, "merge", "-q", "--ff-only", res.branch)
    before = snapshot(repo)
    again = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0)
    assert again.outcome == "noop" and again.commit is None and snapshot(repo) == before
    nxt = promote_gitops(repo, "canary", image("b"), evidence="e", load_time_s=120.0)
    assert nxt.outcome == "promoted" and nxt.previous_ref == f"{REPOSITORY}@{digest('a')}"


def test_dry_run_shows_the_diff_and_changes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    res = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, dry_run=True)
    assert res.outcome == "dry-run" and res.commit is None
    assert f"+  digest: {digest('a')}" in res.diff and res.diff.startswith(f"--- a/{KFILE}\n+++ b/{KFILE}\n")
    assert snapshot(repo) == before


def test_invalid_digest_changes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    bad = ImageRef.model_construct(repository=REPOSITORY, tag=None, digest="sha256:not-hex")
    with pytest.raises(BadInput, match="not a sha256 digest"):
        promote_gitops(repo, "canary", bad, evidence="e", load_time_s=120.0)
    with pytest.raises(BadInput, match="not a tag"):
        promote_gitops(repo, "canary", ImageRef(repository=REPOSITORY, tag="latest"), evidence="e", load_time_s=1)
    assert snapshot(repo) == before


def test_render_failure_changes_nothing(repo: Path) -> None:
    (repo / "manifests/base/kustomization.yaml").write_text(
        (repo / "manifests/base/kustomization.yaml").read_text() + "  - does-not-exist.yaml\n")
    git(repo, "commit", "-qam", "break the base")
    (repo / KFILE).write_text((repo / KFILE).read_text() + "# local edit\n")
    before = snapshot(repo)
    with pytest.raises(BadInput, match="kubectl kustomize failed.*does-not-exist.yaml"):
        promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0)
    assert snapshot(repo) == before


def test_validation_failure_changes_nothing(repo: Path) -> None:
    rollout = repo / "manifests/base/rollout.yaml"
    doc = yaml.safe_load(rollout.read_text())
    doc["spec"]["strategy"]["canary"]["steps"][0] = {"setWieght": 25}
    rollout.write_text(yaml.safe_dump(doc))
    git(repo, "commit", "-qam", "typo in a step")
    before = snapshot(repo)
    with pytest.raises(ManifestsRejected, match=r"Rollout/llmgate-server spec.strategy.canary.steps\[0\]"):
        promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0)
    assert snapshot(repo) == before


def test_policy_failure_changes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    with pytest.raises(ManifestsRejected, match="startup budget 900 s"):
        promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=700.0)  # needs 1050 s
    assert snapshot(repo) == before


def test_unknown_overlay_and_not_a_repo(repo: Path, tmp_path: Path) -> None:
    before = snapshot(repo)
    with pytest.raises(BadInput, match="overlay 'staging' not found"):
        promote_gitops(repo, "staging", image("a"), evidence="e", load_time_s=120.0)
    assert snapshot(repo) == before
    (tmp_path / "plain").mkdir()
    with pytest.raises(BadInput, match="not a git repository"):
        promote_gitops(tmp_path / "plain", "canary", image("a"), evidence="e", load_time_s=120.0)


def test_lock_held_refuses_and_changes_nothing(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".llmgate")
    run = make_run("a")
    ws.checkpoint(run)
    holder = PromotionLock(ws.store, "canary", holder="someone else")
    holder.acquire()  # this live process holds it: not stale
    before = snapshot(repo)
    res = promote_stage(run, None, ws, target="canary", gitops=GitopsTarget(repo),  # type: ignore[arg-type]
                        guard=lambda *a: None)
    assert res.details["outcome"] == "refused" and "in progress" in res.details["reason"]
    assert snapshot(repo) == before
    (rid, rec), = ws.store.promotions("canary")
    assert (rid, rec.outcome, rec.digest) == (run.run_id, "refused", digest("a"))
    holder.release()
    res = promote_stage(run, None, ws, target="canary", gitops=GitopsTarget(repo), guard=lambda *a: None)  # type: ignore[arg-type]
    assert res.details["outcome"] == "promoted"
