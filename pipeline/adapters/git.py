"""Git, behind a Protocol: the few operations the pipeline needs, through the `git` command line.

Used by GitOps promotion (a commit in a temporary worktree, a branch, a push), by the release identity
(`source_commit`) and by the build stage (the tag of a checkout). The command line rather than a
library: it is what every CI image has, it reads the user's config and credential helpers exactly as
a person's `git push` would, and its porcelain output is a stable interface.

No operation here ever rewrites a remote ref: `push` is a plain push, so a remote that moved since
we read it rejects it as a non-fast-forward, and that rejection is returned, never retried with force.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.errors import InfraError

GIT_TIMEOUT_S = 60
# Network operations (fetch, push, ls-remote) may wait for a slow remote.
GIT_REMOTE_TIMEOUT_S = 300


@dataclass(frozen=True)
class PushResult:
    """What `git push --porcelain` said about the one ref pushed."""

    ok: bool
    ref: str
    summary: str  # git's own words: "[new branch]", "abc..def", "[rejected] (fetch first)", ...
    detail: str = ""  # stderr when rejected (the remote's hook messages included)

    @property
    def rejected(self) -> bool:
        return not self.ok


class Git(Protocol):
    """The git operations llmgate performs. Paths are a repository or worktree directory."""

    def toplevel(self, repo: Path) -> Path | None: ...

    def resolve(self, repo: Path, rev: str, *, short: int | None = None) -> str | None:
        """The commit `rev` names (full sha, or abbreviated to `short`), None when it names none."""
        ...

    def is_dirty(self, repo: Path) -> bool:
        """Tracked files differ from HEAD (untracked files do not count)."""
        ...

    def blob(self, repo: Path, rev: str, path: str) -> str | None:
        """A file's exact text at a commit, None where it does not exist."""
        ...

    def worktree_tree(self, repo: Path) -> str | None:
        """The tree id of the tracked files as they are in the checkout now (HEAD's tree when clean)."""
        ...

    def config(self, repo: Path, key: str) -> str | None: ...

    def worktree_add(self, repo: Path, path: Path, commit: str) -> None: ...

    def worktree_remove(self, repo: Path, path: Path) -> None:
        """Remove a worktree and prune stale entries; never fails (cleanup path)."""
        ...

    def commit_file(self, worktree: Path, path: str, message_file: Path, env: dict[str, str]) -> str:
        """Stage `path` and commit it with the message in `message_file`; the new commit's sha."""
        ...

    def create_branch(self, repo: Path, name: str, commit: str) -> None: ...

    def fetch(self, repo: Path, remote: str, ref: str) -> str | None:
        """Fetch `ref` (e.g. refs/heads/main) from `remote` without touching any local ref; its sha,
        None when the remote has no such ref."""
        ...

    def push(self, repo: Path, remote: str, commit: str, ref: str) -> PushResult:
        """Push `commit` to `ref` on `remote`, fast-forward only."""
        ...

    def log_messages(self, repo: Path, rev: str, path: str, *, limit: int = 50) -> list[tuple[str, str]]:
        """(sha, full message) of the commits reachable from `rev` that touched `path`, newest first."""
        ...


class GitCli:
    """`Git` through the `git` executable."""

    def __init__(self, executable: str | None = None) -> None:
        self._exe = executable

    @property
    def exe(self) -> str:
        if self._exe is None:
            found = shutil.which("git")
            if found is None:
                raise InfraError("git not found", where="git", hint="install git (Debian: apt-get install git)")
            self._exe = found
        return self._exe

    def run(self, repo: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = GIT_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self.exe, "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=timeout, env=env, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"git {args[0]} did not finish in {timeout:g} s", where=str(repo)) from exc
        except OSError as exc:
            raise InfraError(f"cannot run git: {exc}", where=self.exe) from exc

    def _must(self, repo: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = GIT_TIMEOUT_S) -> str:
        proc = self.run(repo, *args, env=env, timeout=timeout)
        if proc.returncode != 0:
            raise InfraError(f"git {' '.join(args[:2])} failed: {proc.stderr.strip()}", where=str(repo))
        return proc.stdout.strip()

    def toplevel(self, repo: Path) -> Path | None:
        if not Path(repo).is_dir():
            return None
        proc = self.run(repo, "rev-parse", "--show-toplevel")
        return Path(proc.stdout.strip()) if proc.returncode == 0 else None

    def resolve(self, repo: Path, rev: str, *, short: int | None = None) -> str | None:
        args = ["rev-parse", "--verify", "--quiet"]
        if short:
            args.append(f"--short={short}")
        proc = self.run(repo, *args, f"{rev}^{{commit}}")
        return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None

    def is_dirty(self, repo: Path) -> bool:
        return bool(self._must(repo, "status", "--porcelain", "--untracked-files=no"))

    def blob(self, repo: Path, rev: str, path: str) -> str | None:
        proc = self.run(repo, "cat-file", "blob", f"{rev}:{path}")
        return proc.stdout if proc.returncode == 0 else None

    def worktree_tree(self, repo: Path) -> str | None:
        # `stash create` writes the working tree as an unreferenced commit and touches no ref, index or
        # file; its tree id is content-addressed (the commit's own id carries a timestamp), so the same
        # uncommitted changes give the same id on every call. It prints nothing for a clean tree, and fails
        # on files whose stat changed but whose content did not, so refresh the index first as `git status`
        # does (its exit code says only whether files differ).
        self.run(repo, "update-index", "-q", "--refresh")
        proc = self.run(repo, "stash", "create")
        if proc.returncode != 0:
            return None
        rev = proc.stdout.strip() or "HEAD"
        tree = self.run(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{tree}}")
        return tree.stdout.strip() if tree.returncode == 0 and tree.stdout.strip() else None

    def config(self, repo: Path, key: str) -> str | None:
        proc = self.run(repo, "config", key)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def worktree_add(self, repo: Path, path: Path, commit: str) -> None:
        self._must(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)

    def worktree_remove(self, repo: Path, path: Path) -> None:
        self.run(repo, "worktree", "remove", "--force", str(path))
        self.run(repo, "worktree", "prune")

    def commit_file(self, worktree: Path, path: str, message_file: Path, env: dict[str, str]) -> str:
        self._must(worktree, "add", "--", path)
        self._must(worktree, "commit", "--quiet", "--no-verify", "-F", str(message_file), env=env)
        return self._must(worktree, "rev-parse", "HEAD")

    def create_branch(self, repo: Path, name: str, commit: str) -> None:
        self._must(repo, "branch", name, commit)

    def fetch(self, repo: Path, remote: str, ref: str) -> str | None:
        # An empty --refmap keeps remote-tracking refs as they are; only FETCH_HEAD is written.
        proc = self.run(repo, "fetch", "--quiet", "--no-tags", "--refmap=", remote, ref,
                        timeout=GIT_REMOTE_TIMEOUT_S, env=_no_prompt())
        if proc.returncode != 0:
            if "couldn't find remote ref" in proc.stderr:
                return None
            raise InfraError(f"git fetch {ref} failed: {proc.stderr.strip()}", where=remote)
        return self._must(repo, "rev-parse", "FETCH_HEAD^{commit}")

    def push(self, repo: Path, remote: str, commit: str, ref: str) -> PushResult:
        proc = self.run(repo, "push", "--porcelain", remote, f"{commit}:{ref}", timeout=GIT_REMOTE_TIMEOUT_S,
                        env=_no_prompt())
        # --porcelain: one "<flag>\t<from>:<to>\t<summary>" line per ref; '!' marks a rejection.
        for line in proc.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].endswith(f":{ref}"):
                flag, summary = parts[0], parts[2]
                return PushResult(ok=flag != "!" and proc.returncode == 0, ref=ref, summary=summary,
                                  detail=proc.stderr.strip() if flag == "!" else "")
        if proc.returncode != 0:
            raise InfraError(f"git push failed: {proc.stderr.strip()}", where=remote)
        return PushResult(ok=True, ref=ref, summary=proc.stdout.strip())

    def log_messages(self, repo: Path, rev: str, path: str, *, limit: int = 50) -> list[tuple[str, str]]:
        out = self._must(repo, "log", f"-{limit}", "--format=%H%x00%B%x01", rev, "--", path)
        pairs = []
        for record in out.split("\x01"):
            record = record.strip("\n")
            if "\x00" in record:
                sha, message = record.split("\x00", 1)
                pairs.append((sha.strip(), message.strip()))
        return pairs


def _no_prompt() -> dict[str, str]:
    """Never wait for a password on a terminal nobody watches (CI): fail instead."""
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0"}


def source_commit(repo: Path = Path("."), git: Git | None = None) -> str | None:
    """HEAD of the source tree, with `-dirty` when uncommitted tracked changes went into the build."""
    git = git or GitCli()
    try:
        head = git.resolve(repo, "HEAD")
        if head is None:
            return None
        return f"{head}-dirty" if git.is_dirty(repo) else head
    except InfraError:
        return None


def source_tree(repo: Path = Path("."), git: Git | None = None) -> str | None:
    """The git tree id of the source tree's tracked files as they are now, uncommitted changes included:
    a content key for a build from a dirty tree. None where it cannot be read."""
    git = git or GitCli()
    try:
        return git.worktree_tree(repo)
    except InfraError:
        return None
