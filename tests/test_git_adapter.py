"""The git adapter against real repositories: identity of a checkout, fetch without touching refs, and a
push the remote rejects reported as such (never retried with force)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.adapters.git import GitCli, source_commit, source_tree
from tests.promote_helpers import git, gitops_repo


def test_source_commit_marks_uncommitted_tracked_changes(tmp_path: Path) -> None:
    repo = gitops_repo(tmp_path)
    head = git(repo, "rev-parse", "HEAD")
    assert source_commit(repo) == head
    (repo / "notes.txt").write_text("untracked does not count\n")
    assert source_commit(repo) == head
    (repo / "manifests" / "base" / "rollout.yaml").write_text("changed\n")
    assert source_commit(repo) == f"{head}-dirty"
    assert source_commit(tmp_path / "nowhere") is None


def test_source_tree_keys_uncommitted_changes_by_content(tmp_path: Path) -> None:
    repo = gitops_repo(tmp_path)
    rollout = repo / "manifests" / "base" / "rollout.yaml"
    clean = source_tree(repo)
    assert clean == git(repo, "rev-parse", "HEAD^{tree}")
    (repo / "notes.txt").write_text("untracked does not count\n")
    assert source_tree(repo) == clean
    original = rollout.read_text()
    rollout.write_text("changed\n")
    changed = source_tree(repo)
    assert changed not in (None, clean)
    assert source_tree(repo) == changed  # the same changes, the same key, call after call
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == "M manifests/base/rollout.yaml"
    assert git(repo, "stash", "list") == ""  # nothing stashed, nothing reverted
    rollout.write_text("changed again\n")
    assert source_tree(repo) not in (None, clean, changed)
    rollout.write_text(original)
    assert source_tree(repo) == clean
    assert source_tree(tmp_path / "nowhere") is None


def test_fetch_and_rejected_push(tmp_path: Path) -> None:
    seed = gitops_repo(tmp_path / "seed")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    g = GitCli()
    refs_before = git(seed, "for-each-ref")
    assert g.fetch(seed, str(bare), "refs/heads/main") == git(seed, "rev-parse", "HEAD")
    assert g.fetch(seed, str(bare), "refs/heads/nope") is None
    assert git(seed, "for-each-ref") == refs_before  # only FETCH_HEAD was written
    # a commit that does not descend from the remote's tip is rejected, and said so
    git(seed, "commit", "-q", "--allow-empty", "-m", "ahead")
    ahead = git(seed, "rev-parse", "HEAD")
    assert g.push(seed, str(bare), ahead, "refs/heads/main").ok
    git(seed, "reset", "-q", "--hard", "HEAD~1")
    git(seed, "commit", "-q", "--allow-empty", "-m", "diverged")
    pushed = g.push(seed, str(bare), git(seed, "rev-parse", "HEAD"), "refs/heads/main")
    assert pushed.rejected and "rejected" in pushed.summary
    assert git(bare, "rev-parse", "refs/heads/main") == ahead
    assert g.toplevel(tmp_path) is None and g.resolve(seed, "no-such-ref") is None
