"""Promotion backend "gitops": pin the release (image digest and model digest) in the target overlay,
commit it, push it, and optionally wait for Argo CD to apply it.

All work happens in a temporary `git worktree` at the base commit: the caller's working tree, index,
HEAD and current branch are never touched, so a failure (bad digest, kustomize error, schema or policy
violation, a rejected push) leaves the repository as it was. The commit changes the overlay's
kustomization only (the image's `images:` entry and the `llmgate-release` model-digest literal), with
the evidence summary in its message.

Two ways to land it:
- a promotion branch (`llmgate/promote/<target>/<image digest>-<model digest>`, named by the release
  pair so a weights-only release gets a branch of its own), created locally and, with a remote, pushed
  as a new branch: the merge is where a person or a merge queue signs off;
- with `push_branch` (the branch Argo CD tracks), the commit is made on that branch's tip as fetched
  from the remote and pushed to it as a fast-forward. If the branch moved meanwhile (someone promoted
  first), the push is rejected and the promotion is refused with the remote's reason. Nothing is ever
  force-pushed.

The commit message quotes the signed verdict the guard accepted (the evidence summary is built from it,
not from the store) and carries the promotion fence (`Llmgate-Fence`); the lock's fence is checked
before the commit and before every push.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.adapters.git import Git, GitCli, PushResult
from pipeline.adapters.kubectl import Kustomize
from pipeline.errors import BadInput, GateFailed
from pipeline.manifests import kustomization
from pipeline.manifests.check import ManifestsDetails, check_rendered
from pipeline.manifests.validate import DEFAULT_K8S_VERSION
from pipeline.models import ImageRef
from pipeline.progress import NULL_REPORTER, Reporter
from pipeline.promote.argocd import ArgoCdApp
from pipeline.promote.backend import UNFENCED, AbortResult, Evidence, Fence, PromotionResult, RestorePlan, TargetStatus

DEFAULT_OVERLAY_ROOT = "manifests/overlays"
TARGET_TRAILER = "Llmgate-Target"


class ManifestsRejected(GateFailed):
    """The overlay with the new release fails schema validation or policy: nothing is committed."""


class PushRejected(GateFailed):
    """The remote refused the push (it moved since we read it): a refusal, never retried with force."""


@dataclass
class GitopsResult:
    outcome: str  # "promoted" | "noop" | "dry-run"
    branch: str
    base_commit: str
    commit: str | None
    previous_ref: str | None
    diff: str
    report: ManifestsDetails | None = None
    notes: list[str] = field(default_factory=list)
    previous_model_digest: str | None = None
    pushed_to: str | None = None  # "<remote> <ref>"


FENCE_TRAILER = "Llmgate-Fence"


def branch_name(target: str, digest: str, model_digest: str | None = None) -> str:
    """The promotion branch of a release pair: image and model digests both name it."""
    name = f"llmgate/promote/{target}/{digest.removeprefix('sha256:')[:12]}"
    return name + (f"-{model_digest.removeprefix('sha256:')[:12]}" if model_digest else "")


def _commit_env(repo: Path, git: Git) -> dict[str, str]:
    env = dict(os.environ)
    # A CI checkout often has no identity; the commit is the pipeline's own.
    if not git.config(repo, "user.name"):
        env.setdefault("GIT_AUTHOR_NAME", "llmgate")
        env.setdefault("GIT_COMMITTER_NAME", "llmgate")
    if not git.config(repo, "user.email"):
        env.setdefault("GIT_AUTHOR_EMAIL", "llmgate@localhost")
        env.setdefault("GIT_COMMITTER_EMAIL", "llmgate@localhost")
    return env


def _rejected(push: PushResult, remote: str, base: str, what: str) -> PushRejected:
    detail = push.detail.splitlines()[-1] if push.detail else ""
    return PushRejected(
        f"push of {what} to {push.ref} was rejected ({push.summary}{': ' + detail if detail else ''}): the remote "
        f"moved since {base[:12]}, someone promoted first; nothing was forced", where=remote,
        hint="re-run the promotion: it starts from the remote's new tip")


def _base(git: Git, repo: Path, base_ref: str, remote: str | None, push_branch: str | None) -> str:
    if remote is not None and push_branch is not None:
        tip = git.fetch(repo, remote, f"refs/heads/{push_branch}")
        if tip is None:
            raise BadInput(f"remote has no branch {push_branch!r}", where=remote)
        return tip
    base = git.resolve(repo, base_ref)
    if base is None:
        raise BadInput(f"no commit {base_ref!r}", where=str(repo))
    return base


def _commit_in_worktree(git: Git, repo: Path, base: str, rel: str, text: str, message: str,
                        check: bool, target: str, load_time_s: float | None, k8s_version: str,
                        kustomize: Kustomize | None, reporter: Reporter, tmp: Path) -> tuple[str, ManifestsDetails | None]:
    wt = tmp / "wt"
    git.worktree_add(repo, wt, base)
    (wt / rel).write_text(text)
    report = None
    if check:
        reporter.step(f"gitops: rendering {rel}")
        report = check_rendered((wt / rel).parent, overlay=target, load_time_s=load_time_s, k8s_version=k8s_version,
                                kustomize=kustomize)
        if report.problems:
            raise ManifestsRejected(f"{len(report.problems)} problem(s) with the new release: "
                                    + "; ".join(map(str, report.problems[:5])), where=rel)
    msg_file = tmp / "message.txt"
    msg_file.write_text(message)
    return git.commit_file(wt, rel, msg_file, _commit_env(repo, git)), report


def promote_gitops(
    repo: Path,
    target: str,
    image: ImageRef,
    *,
    evidence: str,
    load_time_s: float | None,
    model_digest: str | None = None,
    overlay_root: str = DEFAULT_OVERLAY_ROOT,
    base_ref: str = "HEAD",
    dry_run: bool = False,
    k8s_version: str = DEFAULT_K8S_VERSION,
    reporter: Reporter = NULL_REPORTER,
    branch: str | None = None,
    remote: str | None = None,
    push_branch: str | None = None,
    git: Git | None = None,
    kustomize: Kustomize | None = None,
    fence: Fence = UNFENCED,
    overlay: str | None = None,
    namespace: str | None = None,
) -> GitopsResult:
    git = git or GitCli()
    top = git.toplevel(Path(repo))
    if top is None:
        raise BadInput("not a git repository", where=str(repo))
    repo = top
    if not image.digest:
        raise BadInput("promotion needs an image digest, not a tag", where=image.by_tag)
    base = _base(git, repo, base_ref, remote, push_branch)
    rel = f"{overlay or f'{overlay_root}/{target}'}/kustomization.yaml"
    old_text = git.blob(repo, base, rel)
    if old_text is None:
        raise BadInput(f"overlay {target!r} not found at {base[:12]}", where=f"{repo}/{rel}")
    deploys_to = _kustomization(old_text).get("namespace")
    if namespace is not None and deploys_to != namespace:
        raise BadInput(f"the overlay deploys to namespace {deploys_to!r}, but target {target} is configured for "
                       f"{namespace!r}: the target's trust level is that of the place it deploys to",
                       where=f"{repo}/{rel}", hint="make targets.yaml and the overlay name the same namespace")
    new_text = kustomization.with_image(old_text, repository=image.repository, digest=image.digest, where=rel)
    if model_digest is not None:
        new_text = kustomization.with_model_digest(new_text, digest=model_digest, where=rel)
    previous = _ref_in(old_text)
    previous_model = _model_in(old_text)
    branch = branch or branch_name(target, image.digest, model_digest)
    diff = "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                        fromfile=f"a/{rel}", tofile=f"b/{rel}"))
    same_model = model_digest is None or previous_model == model_digest

    # Idempotence: the base already pins this release, or the promotion branch already carries it.
    if previous == image.by_digest and same_model:
        return GitopsResult("noop", push_branch or branch, base, None, previous, "", previous_model_digest=previous_model,
                            notes=[f"{rel} at {base[:12]} already pins {image.by_digest}"
                                   + (f" and model {model_digest}" if model_digest else "")])
    if push_branch is None:
        tip = git.resolve(repo, f"refs/heads/{branch}")
        if tip is not None:
            tip_text = git.blob(repo, tip, rel)
            if tip_text is not None and _ref_in(tip_text) == image.by_digest and (
                    model_digest is None or _model_in(tip_text) == model_digest):
                return GitopsResult("noop", branch, base, tip, previous, "", previous_model_digest=previous_model,
                                    notes=[f"branch {branch} already pins {image.by_digest} (commit {tip[:12]})"])
            raise BadInput(f"branch {branch} exists and pins something else", where=str(repo),
                           hint=f"delete it (git branch -D {branch}) or merge it first")

    message = (f"promote {target}: {image.by_digest}\n\n{evidence}\n\n"
               + (f"Model: {model_digest}\n\n" if model_digest else "")
               + f"{TARGET_TRAILER}: {target}\nLlmgate-Digest: {image.digest}\n"
               + (f"Llmgate-Model-Digest: {model_digest}\n" if model_digest else "")
               + (f"{FENCE_TRAILER}: {fence.fence}\n" if fence.fence > 0 else ""))
    tmp = Path(tempfile.mkdtemp(prefix="llmgate-gitops-"))
    try:
        reporter.step(f"gitops: {rel} with {image.by_digest}" + (f" and model {model_digest}" if model_digest else ""))
        if dry_run:
            wt = tmp / "wt"
            git.worktree_add(repo, wt, base)
            (wt / rel).write_text(new_text)
            report = check_rendered((wt / rel).parent, overlay=target, load_time_s=load_time_s,
                                    k8s_version=k8s_version, kustomize=kustomize)
            if report.problems:
                raise ManifestsRejected(f"{len(report.problems)} problem(s) with the new release: "
                                        + "; ".join(map(str, report.problems[:5])), where=rel)
            return GitopsResult("dry-run", push_branch or branch, base, None, previous, diff, report,
                                previous_model_digest=previous_model)
        fence.check()
        commit, report = _commit_in_worktree(git, repo, base, rel, new_text, message, True, target, load_time_s,
                                             k8s_version, kustomize, reporter, tmp)
        pushed = None
        fence.check()  # rendering and checking took a while: the lock must still be ours before it lands
        if push_branch is not None:
            assert remote is not None
            push = git.push(repo, remote, commit, f"refs/heads/{push_branch}")
            if push.rejected:
                raise _rejected(push, remote, base, f"{image.by_digest} for {target}")
            pushed = f"{remote} refs/heads/{push_branch}"
            reporter.step(f"gitops: pushed {commit[:12]} to {pushed}")
        else:
            if remote is not None:
                push = git.push(repo, remote, commit, f"refs/heads/{branch}")
                if push.rejected:
                    raise _rejected(push, remote, base, f"branch {branch}")
                pushed = f"{remote} refs/heads/{branch}"
            # Creating the local ref is the one step that changes the repository, and it is the last one.
            git.create_branch(repo, branch, commit)
            reporter.step(f"gitops: committed {commit[:12]} on {branch}" + (f", pushed to {pushed}" if pushed else ""))
        return GitopsResult("promoted", push_branch or branch, base, commit, previous, diff, report,
                            previous_model_digest=previous_model, pushed_to=pushed)
    finally:
        git.worktree_remove(repo, tmp / "wt")
        shutil.rmtree(tmp, ignore_errors=True)


def _kustomization(text: str) -> dict[str, object]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _ref_in(text: str) -> str | None:
    images = _kustomization(text).get("images") or []
    for e in images if isinstance(images, list) else []:
        if isinstance(e, dict) and e.get("name") == kustomization.IMAGE_NAME and e.get("digest"):
            return f"{e.get('newName', kustomization.IMAGE_NAME)}@{e['digest']}"
    return None


def _model_in(text: str) -> str | None:
    try:
        return kustomization.model_digest_in(text)
    except BadInput:
        return None


@dataclass
class GitopsBackend:
    """`Backend` for a GitOps repository. With `remote` + `push_branch` the commit goes to the branch Argo CD
    tracks; with `argocd` (one Application per target, `app_for`) the promotion waits until it is Synced
    and Healthy there, and restores the previous release (another pushed commit) when it is not."""

    repo: Path
    overlay_root: str = DEFAULT_OVERLAY_ROOT
    base_ref: str = "HEAD"
    k8s_version: str = DEFAULT_K8S_VERSION
    remote: str | None = None
    push_branch: str | None = None
    argocd: dict[str, ArgoCdApp] = field(default_factory=dict)  # target -> its Application
    overlays: dict[str, str] = field(default_factory=dict)  # target -> its overlay directory (configuration)
    namespaces: dict[str, str] = field(default_factory=dict)  # target -> the namespace its overlay must deploy to
    restore_on_failure: bool = True
    git: Git = field(default_factory=GitCli)
    kustomize: Kustomize | None = None
    name: str = "gitops"

    def __post_init__(self) -> None:
        if self.push_branch is not None and self.remote is None:
            raise BadInput("push_branch needs a remote", where="gitops remote")
        if self.argocd and self.push_branch is None:
            raise BadInput("waiting for Argo CD needs the branch it tracks (push_branch) on a remote",
                           where="gitops push_branch")

    def _overlay(self, target: str) -> str:
        return self.overlays.get(target) or f"{self.overlay_root}/{target}"

    def _rel(self, target: str) -> str:
        return f"{self._overlay(target)}/kustomization.yaml"

    def promote(self, target: str, image: str, model_digest: str | None, evidence: Evidence, *,
                dry_run: bool = False, reporter: Reporter = NULL_REPORTER, branch: str | None = None,
                fence: Fence = UNFENCED) -> PromotionResult:
        ref = ImageRef.parse(image)
        g = promote_gitops(self.repo, target, ref, evidence=evidence.summary, load_time_s=evidence.load_time_s,
                           model_digest=model_digest, overlay_root=self.overlay_root, base_ref=self.base_ref,
                           dry_run=dry_run, k8s_version=self.k8s_version, reporter=reporter, branch=branch,
                           remote=self.remote, push_branch=self.push_branch, git=self.git, kustomize=self.kustomize,
                           fence=fence, overlay=self.overlays.get(target), namespace=self.namespaces.get(target))
        result = PromotionResult(backend="gitops", target=target, outcome=g.outcome, image=ref.by_digest,  # type: ignore[arg-type]
                                 model_digest=model_digest, previous_image=g.previous_ref,
                                 previous_model_digest=g.previous_model_digest, reason="; ".join(g.notes),
                                 events=[*g.notes, *(g.report.rollout_estimates if g.report else [])],
                                 branch=g.branch, base_commit=g.base_commit, commit=g.commit, pushed_to=g.pushed_to,
                                 diff=g.diff)
        app = self.argocd.get(target)
        if app is None or dry_run:
            return result
        revision = g.commit or g.base_commit
        result.revision = revision
        failure = app.wait(revision, reporter=reporter, events=result.events)
        if failure is None:
            return result
        result.outcome, result.reason = "aborted", failure
        if self.restore_on_failure and g.commit is not None:
            restore = self._restore(target, g.commit, f"abort {target}: {failure}", reporter, result.events, fence)
            result.restored = restore.restored
            if restore.commit:
                result.events.append(f"restore commit {restore.commit[:12]} pushed")
        return result

    def _last_promotion(self, tip: str, target: str) -> str | None:
        rel = self._rel(target)
        for sha, message in self.git.log_messages(self.repo, tip, rel):
            if f"\n{TARGET_TRAILER}: {target}\n" in f"\n{message}\n" and not message.startswith("abort "):
                return sha
        return None

    def _restore(self, target: str, promotion: str, why: str, reporter: Reporter, events: list[str],
                 fence: Fence = UNFENCED) -> AbortResult:
        """A commit on top of the current tip that gives the overlay back its text from before `promotion`."""
        rel = self._rel(target)
        result = AbortResult(backend="gitops", target=target, outcome="aborted")
        before = self.git.blob(self.repo, f"{promotion}^", rel)
        if before is None:
            result.outcome, result.reason = "noop", f"{rel} did not exist before {promotion[:12]}"
            return result
        result.restored_image, result.restored_model_digest = _ref_in(before), _model_in(before)
        base = _base(self.git, self.repo, self.base_ref, self.remote, self.push_branch)
        if self.git.blob(self.repo, base, rel) == before:
            result.outcome = "noop"
            result.reason = f"{rel} at {base[:12]} already has the release from before {promotion[:12]}"
            return result
        message = (f"{why}\n\nRestores {rel} to its state before {promotion[:12]} "
                   f"({result.restored_image or 'no image pinned'}"
                   + (f", model {result.restored_model_digest}" if result.restored_model_digest else "") + ").\n\n"
                   f"{TARGET_TRAILER}: {target}\nLlmgate-Restores: {promotion}\n"
                   + (f"{FENCE_TRAILER}: {fence.fence}\n" if fence.fence > 0 else ""))
        tmp = Path(tempfile.mkdtemp(prefix="llmgate-gitops-"))
        try:
            fence.check()
            commit, _ = _commit_in_worktree(self.git, self.repo, base, rel, before, message, False, target, None,
                                            self.k8s_version, self.kustomize, reporter, tmp)
            fence.check()
            if self.push_branch is not None:
                assert self.remote is not None
                push = self.git.push(self.repo, self.remote, commit, f"refs/heads/{self.push_branch}")
                if push.rejected:
                    raise _rejected(push, self.remote, base, f"the restore of {target}")
            else:
                self.git.create_branch(self.repo, f"llmgate/abort/{target}/{promotion[:12]}", commit)
        finally:
            self.git.worktree_remove(self.repo, tmp / "wt")
            shutil.rmtree(tmp, ignore_errors=True)
        result.commit = commit
        events.append(f"restore: committed {commit[:12]} ({result.restored_image})")
        reporter.step(f"gitops: restore of {target} committed {commit[:12]}")
        app = self.argocd.get(target)
        if app is None:
            # Without Argo CD to ask, restored means the repository says so (pushed, or on a branch to merge).
            result.restored = self.push_branch is not None
            return result
        failure = app.wait(commit, reporter=reporter, events=events)
        result.restored = failure is None
        result.reason = "restored" if failure is None else f"restore pushed, but {failure}"
        return result

    def restore_plan(self, target: str) -> RestorePlan:
        tip = _base(self.git, self.repo, self.base_ref, self.remote, self.push_branch)
        promotion = self._last_promotion(tip, target)
        if promotion is None:
            return RestorePlan(target=target, in_flight=False, reason=f"no llmgate promotion of {target} at {tip[:12]}")
        before = self.git.blob(self.repo, f"{promotion}^", self._rel(target))
        if before is None:
            return RestorePlan(target=target, in_flight=False,
                               reason=f"{self._rel(target)} did not exist before {promotion[:12]}")
        return RestorePlan(target=target, in_flight=True, image=_ref_in(before), model_digest=_model_in(before))

    def abort(self, target: str, *, reporter: Reporter = NULL_REPORTER, fence: Fence = UNFENCED) -> AbortResult:
        tip = _base(self.git, self.repo, self.base_ref, self.remote, self.push_branch)
        promotion = self._last_promotion(tip, target)
        if promotion is None:
            return AbortResult(backend="gitops", target=target, outcome="noop",
                               reason=f"no llmgate promotion of {target} at {tip[:12]}")
        events: list[str] = []
        result = self._restore(target, promotion, f"abort {target}: restore the release before {promotion[:12]}",
                               reporter, events, fence)
        result.events = events + result.events
        return result

    def status(self, target: str) -> TargetStatus:
        tip = _base(self.git, self.repo, self.base_ref, self.remote, self.push_branch)
        text = self.git.blob(self.repo, tip, self._rel(target))
        if text is None:
            raise BadInput(f"overlay {target!r} not found at {tip[:12]}", where=str(self.repo / self._rel(target)))
        status = TargetStatus(backend="gitops", target=target, image=_ref_in(text), model_digest=_model_in(text),
                              revision=tip, observed={"promotion_commit": self._last_promotion(tip, target)})
        app = self.argocd.get(target)
        if app is not None:
            s = app.state()
            status.phase = f"{s.sync}/{s.health}"
            status.in_flight = not (s.sync == "Synced" and s.health == "Healthy" and s.revision == tip)
            status.message = s.line()
            status.observed["argocd_revision"] = s.revision
        else:
            status.phase = "committed"
        return status
