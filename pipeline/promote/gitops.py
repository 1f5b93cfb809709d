"""GitOps promotion: pin the digest in the target overlay and commit it on a branch.

All work happens in a temporary `git worktree` at the base commit: the caller's working tree, index,
HEAD and current branch are never touched, so a failure (bad digest, kustomize error, schema or
policy violation) leaves the repository as it was. On success the only change is a new branch whose
tip is one commit: the kustomization diff, with the evidence summary in the message. A branch (not
a push to main) because the merge is where a person or a merge queue signs off.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.errors import BadInput, GateFailed, InfraError
from pipeline.manifests import kustomization
from pipeline.manifests.check import ManifestReport, check_rendered
from pipeline.manifests.validate import DEFAULT_K8S_VERSION
from pipeline.models import ImageRef
from pipeline.progress import NullReporter, Reporter

DEFAULT_OVERLAY_ROOT = "manifests/overlays"
GIT_TIMEOUT_S = 60


class ManifestsRejected(GateFailed):
    """The overlay with the new digest fails schema validation or policy: nothing is committed."""


@dataclass
class GitopsResult:
    outcome: str  # "promoted" | "noop" | "dry-run"
    branch: str
    base_commit: str
    commit: str | None
    previous_ref: str | None
    diff: str
    report: ManifestReport | None = None
    notes: list[str] = field(default_factory=list)


def _run(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise InfraError("git not found", where="git")
    try:
        return subprocess.run([git, "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"git {args[0]} timed out", where=str(repo)) from exc


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = _run(repo, *args, env=env)
    if proc.returncode != 0:
        raise InfraError(f"git {' '.join(args[:2])} failed: {proc.stderr.strip()}", where=str(repo))
    return proc.stdout.strip()


def _ok(repo: Path, *args: str) -> tuple[bool, str]:
    proc = _run(repo, *args)
    return proc.returncode == 0, proc.stdout.strip()


def _blob(repo: Path, rev: str, rel: str) -> str | None:
    """A file's exact content at a commit, or None where it does not exist."""
    proc = _run(repo, "cat-file", "blob", f"{rev}:{rel}")
    return proc.stdout if proc.returncode == 0 else None


def short_commit(repo: Path, ref: str = "HEAD") -> str:
    ok, sha = _ok(Path(repo), "rev-parse", "--short=12", "--verify", f"{ref}^{{commit}}")
    if not ok:
        raise BadInput(f"no commit {ref!r}", where=str(repo))
    return sha


def branch_name(target: str, digest: str) -> str:
    return f"llmgate/promote/{target}/{digest.removeprefix('sha256:')[:12]}"


def _commit_env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    has_name, _ = _ok(repo, "config", "user.name")
    has_email, _ = _ok(repo, "config", "user.email")
    # A CI checkout often has no identity; the commit is the pipeline's own.
    if not has_name:
        env.setdefault("GIT_AUTHOR_NAME", "llmgate")
        env.setdefault("GIT_COMMITTER_NAME", "llmgate")
    if not has_email:
        env.setdefault("GIT_AUTHOR_EMAIL", "llmgate@localhost")
        env.setdefault("GIT_COMMITTER_EMAIL", "llmgate@localhost")
    return env


def promote_gitops(
    repo: Path,
    target: str,
    image: ImageRef,
    *,
    evidence: str,
    load_time_s: float | None,
    overlay_root: str = DEFAULT_OVERLAY_ROOT,
    base_ref: str = "HEAD",
    dry_run: bool = False,
    k8s_version: str = DEFAULT_K8S_VERSION,
    reporter: Reporter = NullReporter(),
    branch: str | None = None,
) -> GitopsResult:
    repo = Path(repo)
    ok, top = _ok(repo, "rev-parse", "--show-toplevel")
    if not ok:
        raise BadInput("not a git repository", where=str(repo))
    repo = Path(top)
    if not image.digest:
        raise BadInput("promotion needs an image digest, not a tag", where=image.by_tag)
    ok, base = _ok(repo, "rev-parse", "--verify", f"{base_ref}^{{commit}}")
    if not ok:
        raise BadInput(f"no commit {base_ref!r}", where=str(repo))
    rel = f"{overlay_root}/{target}/kustomization.yaml"
    old_text = _blob(repo, base, rel)
    if old_text is None:
        raise BadInput(f"overlay {target!r} not found at {base[:12]}", where=f"{repo}/{rel}")
    new_text = kustomization.with_image(old_text, repository=image.repository, digest=image.digest, where=rel)
    previous = _ref_in(old_text)
    branch = branch or branch_name(target, image.digest)
    diff = "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                        fromfile=f"a/{rel}", tofile=f"b/{rel}"))

    # Idempotence: the base already pins this digest, or the promotion branch already carries it.
    if previous == image.by_digest:
        return GitopsResult("noop", branch, base, None, previous, "",
                            notes=[f"{rel} at {base[:12]} already pins {image.by_digest}"])
    exists, tip = _ok(repo, "rev-parse", "--verify", f"refs/heads/{branch}")
    if exists:
        tip_text = _blob(repo, tip, rel)
        if tip_text is not None and _ref_in(tip_text) == image.by_digest:
            return GitopsResult("noop", branch, base, tip, previous, "",
                                notes=[f"branch {branch} already pins {image.by_digest} (commit {tip[:12]})"])
        raise BadInput(f"branch {branch} exists and pins something else", where=str(repo),
                       hint=f"delete it (git branch -D {branch}) or merge it first")

    tmp = Path(tempfile.mkdtemp(prefix="llmgate-gitops-"))
    wt = tmp / "wt"
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(wt), base)
        (wt / rel).write_text(new_text)
        reporter.step(f"gitops: rendering {rel} with {image.by_digest}")
        report = check_rendered((wt / rel).parent, overlay=target, load_time_s=load_time_s, k8s_version=k8s_version)
        if report.problems:
            raise ManifestsRejected(
                f"{len(report.problems)} problem(s) with the new digest: " + "; ".join(map(str, report.problems[:5])),
                where=rel,
            )
        if dry_run:
            return GitopsResult("dry-run", branch, base, None, previous, diff, report)
        env = _commit_env(repo)
        _git(wt, "add", "--", rel)
        message = (f"promote {target}: {image.by_digest}\n\n{evidence}\n\n"
                   f"Llmgate-Target: {target}\nLlmgate-Digest: {image.digest}\n")
        msg_file = tmp / "message.txt"
        msg_file.write_text(message)
        _git(wt, "commit", "--quiet", "--no-verify", "-F", str(msg_file), env=env)
        commit = _git(wt, "rev-parse", "HEAD")
        # Creating the ref is the one step that changes the repository, and it is the last one.
        _git(repo, "branch", branch, commit)
        reporter.step(f"gitops: committed {commit[:12]} on {branch}")
        return GitopsResult("promoted", branch, base, commit, previous, diff, report)
    finally:
        _ok(repo, "worktree", "remove", "--force", str(wt))
        _ok(repo, "worktree", "prune")
        shutil.rmtree(tmp, ignore_errors=True)


def _ref_in(text: str) -> str | None:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return None
    for e in data.get("images") or [] if isinstance(data, dict) else []:
        if isinstance(e, dict) and e.get("name") == kustomization.IMAGE_NAME and e.get("digest"):
            return f"{e.get('newName', kustomization.IMAGE_NAME)}@{e['digest']}"
    return None
