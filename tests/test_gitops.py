"""GitOps promotion for real: a temporary git repo, a bare repository as its remote, real `kubectl
kustomize`, real commits and pushes; Argo CD played by the Kubernetes API double (its Application
controller reads the bare remote's branch head).

Every failure path must leave the repository exactly as it was: working-tree bytes, index, HEAD,
current branch, refs and worktree list.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.adapters.git import GitCli, PushResult
from pipeline.adapters.kube_api import KubernetesApi
from pipeline.errors import BadInput, GateFailed
from pipeline.manifests.render import render
from pipeline.models import ImageRef
from pipeline.promote.argocd import ArgoCdApp
from pipeline.promote.backend import Evidence
from pipeline.promote.gitops import GitopsBackend, ManifestsRejected, PushRejected, branch_name, promote_gitops
from tests.doubles.rollouts_api import FakeKubeAPI, make_application
from tests.promote_helpers import REPOSITORY, VirtualClock, digest, git, gitops_repo, snapshot

KFILE = "manifests/overlays/canary/kustomization.yaml"
MODEL = digest("weights")
EVIDENCE = Evidence(summary="Run: r1\nGates:\n  pass ttft", run_id="r1", load_time_s=120.0)


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
    res = promote_gitops(repo, "canary", image("a"), evidence="Run: r1\nGates:\n  pass ttft", load_time_s=120.0, model_digest=MODEL)
    assert res.outcome == "promoted" and res.branch == branch_name("canary", digest("a"), MODEL)
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
    # header + the image's digest line + the model digest line
    assert f"+  digest: {digest('a')}" in diff and diff.count("\n+") == 1 + 2
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
    first = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    mid = snapshot(repo)
    again = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    assert again.outcome == "noop" and again.commit == first.commit
    assert snapshot(repo) == mid


def test_noop_when_the_base_already_pins_the_digest(repo: Path) -> None:
    res = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    # make room to merge the promotion branch in this scratch repo: drop the local edits
    (repo / KFILE).write_text(git(repo, "show", f"HEAD:{KFILE}") + "\n")
    (repo / "notes.txt").unlink()
    git(repo, "merge", "-q", "--ff-only", res.branch)
    before = snapshot(repo)
    again = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    assert again.outcome == "noop" and again.commit is None and snapshot(repo) == before
    nxt = promote_gitops(repo, "canary", image("b"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    assert nxt.outcome == "promoted" and nxt.previous_ref == f"{REPOSITORY}@{digest('a')}"


def test_dry_run_shows_the_diff_and_changes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    res = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL, dry_run=True)
    assert res.outcome == "dry-run" and res.commit is None
    assert f"+  digest: {digest('a')}" in res.diff and res.diff.startswith(f"--- a/{KFILE}\n+++ b/{KFILE}\n")
    assert snapshot(repo) == before


def test_invalid_digest_changes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    bad = ImageRef.model_construct(repository=REPOSITORY, tag=None, digest="sha256:not-hex")
    with pytest.raises(BadInput, match="not a sha256 digest"):
        promote_gitops(repo, "canary", bad, evidence="e", load_time_s=120.0, model_digest=MODEL)
    with pytest.raises(BadInput, match="not a tag"):
        promote_gitops(repo, "canary", ImageRef(repository=REPOSITORY, tag="latest"), evidence="e", load_time_s=1, model_digest=MODEL)
    assert snapshot(repo) == before


def test_render_failure_changes_nothing(repo: Path) -> None:
    (repo / "manifests/base/kustomization.yaml").write_text(
        (repo / "manifests/base/kustomization.yaml").read_text() + "  - does-not-exist.yaml\n")
    git(repo, "commit", "-qam", "break the base")
    (repo / KFILE).write_text((repo / KFILE).read_text() + "# local edit\n")
    before = snapshot(repo)
    with pytest.raises(BadInput, match="kubectl kustomize failed.*does-not-exist.yaml"):
        promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    assert snapshot(repo) == before


def test_validation_failure_changes_nothing(repo: Path) -> None:
    rollout = repo / "manifests/base/rollout.yaml"
    doc = yaml.safe_load(rollout.read_text())
    doc["spec"]["strategy"]["canary"]["steps"][0] = {"setWieght": 25}
    rollout.write_text(yaml.safe_dump(doc))
    git(repo, "commit", "-qam", "typo in a step")
    before = snapshot(repo)
    with pytest.raises(ManifestsRejected, match=r"Rollout/llmgate-server spec.strategy.canary.steps\[0\]"):
        promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    assert snapshot(repo) == before


def test_policy_failure_changes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    with pytest.raises(ManifestsRejected, match="startup budget 900 s"):
        promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=700.0, model_digest=MODEL)  # needs 1050 s
    assert snapshot(repo) == before


def test_unknown_overlay_and_not_a_repo(repo: Path, tmp_path: Path) -> None:
    before = snapshot(repo)
    with pytest.raises(BadInput, match="overlay 'staging' not found"):
        promote_gitops(repo, "staging", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    assert snapshot(repo) == before
    (tmp_path / "plain").mkdir()
    with pytest.raises(BadInput, match="not a git repository"):
        promote_gitops(tmp_path / "plain", "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)


def test_both_digests_are_committed_side_by_side(repo: Path, tmp_path: Path) -> None:
    res = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=MODEL)
    assert res.outcome == "promoted"
    diff = git(repo, "diff", f"{res.commit}^", res.commit)
    assert f"+  digest: {digest('a')}" in diff and f"+      - model-digest={MODEL}" in diff
    assert f"Llmgate-Model-Digest: {MODEL}" in git(repo, "log", "-1", "--format=%B", res.commit)
    out = tmp_path / "tip"
    git(repo, "worktree", "add", "--detach", "-q", str(out), res.commit)
    try:
        rollout = next(o for o in render(out / "manifests/overlays/canary") if o["kind"] == "Rollout")
    finally:
        git(repo, "worktree", "remove", "--force", str(out))
    template = rollout["spec"]["template"]
    assert template["metadata"]["annotations"]["llmgate.dev/model-digest"] == MODEL
    assert {"name": "LLMGATE_MODEL_DIGEST", "value": MODEL} in template["spec"]["containers"][0]["env"]
    # the same image with other weights is a new promotion, not a no-op
    other = promote_gitops(repo, "canary", image("a"), evidence="e", load_time_s=120.0, model_digest=digest("w2"),
                           branch="llmgate/promote/canary/other-weights")
    assert other.outcome == "promoted" and other.previous_model_digest is None


# -- the remote ------------------------------------------------------------------------------------
@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    """A bare remote holding the manifests on `main`, and a fresh clone of it to promote from."""
    seed = gitops_repo(tmp_path / "seed")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True)
    for k, v in (("user.name", "Test"), ("user.email", "test@example.invalid"), ("commit.gpgsign", "false")):
        git(clone, "config", k, v)
    return bare, clone


def remote_head(bare: Path) -> str:
    return git(bare, "rev-parse", "refs/heads/main")


def test_promotion_is_pushed_to_the_tracked_branch(remote: tuple[Path, Path]) -> None:
    bare, clone = remote
    before_local, before_remote = snapshot(clone), remote_head(bare)
    b = GitopsBackend(clone, remote="origin", push_branch="main")
    res = b.promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    assert res.outcome == "promoted" and res.pushed_to == "origin refs/heads/main"
    assert remote_head(bare) == res.commit and git(bare, "rev-parse", f"{res.commit}^") == before_remote
    # the caller's checkout is untouched (files, index, HEAD, local branches); git's own push moved only
    # the remote-tracking ref, as any `git push` does
    after_local = snapshot(clone)
    assert {k: v for k, v in after_local.items() if k != "refs"} == {k: v for k, v in before_local.items() if k != "refs"}
    assert git(clone, "rev-parse", "refs/heads/main") == before_remote
    st = b.status("canary")
    assert (st.image, st.model_digest, st.revision) == (image("a").by_digest, MODEL, res.commit)
    again = b.promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    assert again.outcome == "noop" and remote_head(bare) == res.commit


class RacingGit(GitCli):
    """The real git, with another promoter pushing to the remote between our fetch and our push."""

    def __init__(self, other: Path) -> None:
        super().__init__()
        self.other = other

    def push(self, repo: Path, remote: str, commit: str, ref: str) -> PushResult:
        git(self.other, "pull", "-q", "--ff-only")
        (self.other / "manifests" / "overlays" / "production" / "NOTE").write_text("promoted by someone else\n")
        git(self.other, "add", "-A")
        git(self.other, "commit", "-qm", "someone else promoted first")
        git(self.other, "push", "-q", "origin", "HEAD:main")
        return super().push(repo, remote, commit, ref)


def test_a_rejected_push_is_a_refusal_and_never_forced(remote: tuple[Path, Path], tmp_path: Path) -> None:
    bare, clone = remote
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(bare), str(other)], check=True)
    git(other, "config", "user.name", "Other")
    git(other, "config", "user.email", "other@example.invalid")
    before = snapshot(clone)
    b = GitopsBackend(clone, remote="origin", push_branch="main", git=RacingGit(other))
    with pytest.raises(PushRejected) as exc:
        b.promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    assert isinstance(exc.value, GateFailed) and "someone promoted first" in exc.value.message
    assert "rejected" in exc.value.message and "nothing was forced" in exc.value.message
    # the other promoter's commit is the remote's tip; ours went nowhere
    assert git(bare, "log", "-1", "--format=%s", "main") == "someone else promoted first"
    assert snapshot(clone) == before
    # a re-run starts from the new tip and lands on top of it
    res = GitopsBackend(clone, remote="origin", push_branch="main").promote("canary", image("a").by_digest, MODEL,
                                                                          EVIDENCE)
    assert res.outcome == "promoted" and git(bare, "log", "-2", "--format=%s", "main").splitlines()[1] == \
        "someone else promoted first"


def test_branch_mode_pushes_a_new_branch_and_refuses_to_overwrite_one(remote: tuple[Path, Path]) -> None:
    bare, clone = remote
    res = GitopsBackend(clone, remote="origin").promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    branch = branch_name("canary", digest("a"), MODEL)
    assert res.outcome == "promoted" and git(bare, "rev-parse", f"refs/heads/{branch}") == res.commit
    assert remote_head(bare) == res.base_commit  # main untouched: the merge is a person's
    # the same branch name on the remote at another commit (another promoter): rejected, not forced
    git(clone, "branch", "-D", branch)
    with pytest.raises(PushRejected, match="rejected"):
        GitopsBackend(clone, remote="origin").promote("canary", image("a").by_digest, MODEL,
                                                      Evidence(summary="Run: r2", load_time_s=120.0))
    assert git(bare, "rev-parse", f"refs/heads/{branch}") == res.commit
    # the same image with other weights is another release: a branch of its own, no collision
    other = GitopsBackend(clone, remote="origin").promote("canary", image("a").by_digest, digest("w2"), EVIDENCE)
    assert other.outcome == "promoted" and other.branch == branch_name("canary", digest("a"), digest("w2"))
    assert other.branch != branch


# -- Argo CD ---------------------------------------------------------------------------------------
@pytest.fixture
def argocd(remote: tuple[Path, Path], tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    bare, clone = remote
    api = FakeKubeAPI({"applications": getattr(request, "param", "healthy")}, branch_head=lambda: remote_head(bare))
    api.add(make_application("argocd", "llmgate-canary", "manifests/overlays/canary", remote_head(bare),
                             repo_url=str(bare)))
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(api.kubeconfig()))
    clock = VirtualClock()
    with api:
        app = ArgoCdApp(KubernetesApi.from_kubeconfig(kc), "llmgate-canary", timeout_s=300, poll_s=5, clock=clock,
                        sleep=clock.sleep)
        yield api, GitopsBackend(clone, remote="origin", push_branch="main", argocd={"canary": app}), bare


def app_status(api: FakeKubeAPI) -> dict:
    return api.get("applications", "argocd", "llmgate-canary")["status"]


def test_promotion_waits_for_argocd_synced_and_healthy(argocd) -> None:  # type: ignore[no-untyped-def]
    api, b, bare = argocd
    res = b.promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    assert res.outcome == "promoted" and res.revision == res.commit == remote_head(bare)
    text = "\n".join(res.events)
    assert f"argocd: sync=OutOfSync revision={res.commit[:12]}" in text
    assert f"argocd: sync=Synced revision={res.commit[:12]} health=Progressing" in text
    assert f"argocd: sync=Synced revision={res.commit[:12]} health=Healthy" in text
    # the refresh was requested the way `argocd app get --refresh` does, and the controller took it
    refresh = [b for m, _, _, b in api.requests if m == "PATCH"]
    assert refresh == [{"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}}]
    assert "argocd.argoproj.io/refresh" not in api.get("applications", "argocd", "llmgate-canary")["metadata"].get(
        "annotations", {})
    st = b.status("canary")
    assert st.phase == "Synced/Healthy" and not st.in_flight and st.model_digest == MODEL


@pytest.mark.parametrize("argocd", ["manual"], indirect=True)
def test_no_sync_times_out_with_a_clear_failure_and_the_previous_release_is_pushed_back(argocd) -> None:  # type: ignore[no-untyped-def]
    _, b, bare = argocd
    base = remote_head(bare)
    original = git(bare, "show", f"{base}:{KFILE}")
    res = b.promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    assert res.outcome == "aborted"
    assert res.reason.startswith("timed out after 300 s waiting for Application argocd/llmgate-canary to be "
                                 f"Synced and Healthy at {res.commit[:12]} (sync=OutOfSync")
    # restore: a new commit on top (no force), the overlay as before the promotion
    log = git(bare, "log", "-3", "--format=%H %s", "main").splitlines()
    assert [line.split(" ", 1)[0] for line in log[1:]] == [res.commit, base]
    assert log[0].split(" ", 1)[1].startswith("abort canary: timed out")
    assert git(bare, "show", f"main:{KFILE}") == original
    assert res.restored is False  # Argo CD never synced that either: said, not hidden


@pytest.mark.parametrize("argocd", [["degraded", "healthy"]], indirect=True)
def test_degraded_after_sync_aborts_and_restore_is_waited_for(argocd) -> None:  # type: ignore[no-untyped-def]
    api, b, bare = argocd
    res = b.promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    assert res.outcome == "aborted" and "is Degraded at" in res.reason and "progress deadline" in res.reason
    assert res.restored is True
    assert app_status(api)["sync"]["revision"] == remote_head(bare) and app_status(api)["health"]["status"] == "Healthy"


@pytest.mark.parametrize("argocd", [["sync-failed", "healthy"]], indirect=True)
def test_failed_sync_is_named(argocd) -> None:  # type: ignore[no-untyped-def]
    _, b, _ = argocd
    res = b.promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    assert res.outcome == "aborted" and "sync of" in res.reason and "admission webhook denied" in res.reason
    assert res.restored is True


def test_abort_restores_the_release_before_the_last_promotion(argocd) -> None:  # type: ignore[no-untyped-def]
    api, b, bare = argocd
    base = remote_head(bare)
    original = git(bare, "show", f"{base}:{KFILE}")
    first = b.promote("canary", image("a").by_digest, MODEL, EVIDENCE)
    assert first.outcome == "promoted"
    res = b.abort("canary")
    assert res.outcome == "aborted" and res.restored and res.commit == remote_head(bare)
    assert git(bare, "show", f"main:{KFILE}") == original
    assert app_status(api)["sync"]["revision"] == res.commit
    assert b.abort("canary").outcome == "noop"  # the overlay is already as it was before


@pytest.mark.parametrize("target", ["production", "deployment", "canary-llamacpp", "kserve", "production-hpa"])
def test_every_overlay_takes_both_digests_and_passes_the_gate(repo: Path, target: str) -> None:
    repository = REPOSITORY + ("-llamacpp" if target == "canary-llamacpp" else "")  # the overlay's own image
    res = promote_gitops(repo, target, ImageRef(repository=repository, digest=digest("a")), evidence="e",
                         load_time_s=120.0, model_digest=MODEL)
    assert res.outcome == "promoted" and res.report is not None and res.report.problems == []
    changed = [ln for ln in res.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert sorted(changed) == sorted([f"+  digest: {digest('a')}", f"+      - model-digest={MODEL}"])
