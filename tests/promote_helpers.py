"""Helpers shared by the manifests/promotion tests: runs, a scratch GitOps repo, repo snapshots."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from pipeline.models import Decision, GateStatus, GateVerdict, ImageRef, RunRecord, StageResult, StageStatus
from tests.stage_helpers import record_verdicts

REPO = Path(__file__).resolve().parents[1]
REPOSITORY = "127.0.0.1:5000/llmgate/server"


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def make_run(seed: str = "a", *, load_time: float | None = 120.0, decision: Decision = Decision.PASS,
             passing_scan: bool = True, tag: str | None = "v1", model_seed: str | None = None) -> RunRecord:
    run = RunRecord(image=ImageRef(repository=REPOSITORY, tag=tag, digest=digest(seed)))
    if model_seed is not None:
        from pipeline.models import ModelRef

        run.model = ModelRef(path="/models", digest=digest(model_seed), files=3, bytes=1000)
    if load_time is not None:
        run.add_stage(StageResult(stage="boot", status=StageStatus.OK,
                                  metrics={"load_time_s": load_time, "load_time_p95_s": load_time}))
    run.add_stage(StageResult(stage="scan", status=StageStatus.OK,
                              metrics={"critical": 0, "high": 0, "medium": 2, "blocking": 0 if passing_scan else 1}))
    run.add_stage(StageResult(stage="sign", status=StageStatus.OK, metrics={"verified": 1.0}))
    run.decision = decision
    return record_verdicts(run, [GateVerdict(name="ttft_p99", source="bench.ttft_p99_s", status=GateStatus.PASS,
                                             value=0.21, threshold=0.5, direction="max")])


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def gitops_repo(tmp: Path) -> Path:
    """A git repository holding a copy of the shipped manifests, one commit on `main`."""
    repo = tmp / "gitops"
    shutil.copytree(REPO / "manifests", repo / "manifests")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "config", "commit.gpgsign", "false")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "manifests")
    return repo


def snapshot(repo: Path) -> dict[str, object]:
    """Everything a failed promotion must leave as it was: files (bytes), HEAD, branch, refs, status."""
    files = {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return {
        "files": files,
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
        "index": (repo / ".git" / "index").read_bytes(),
    }


class VirtualClock:
    """A backend's clock and sleep: polls advance virtual time instead of sleeping."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def make_target(name: str = "canary", *, root: Path = REPO, **config: object):  # type: ignore[no-untyped-def]
    """A configured target (what targets.yaml declares), resolved against `root` (floor and local policies).
    Defaults: a non-production GitOps target in `llmgate-<name>` that accepts local policies and the local
    key pair, with no floor."""
    from pipeline.promote.targets import Target, TargetConfig

    fields: dict[str, object] = {"backend": "gitops", "namespace": f"llmgate-{name}",
                                 "gitops": {"overlay": f"manifests/overlays/{name}"}}
    if not config.get("production"):
        fields.update(accept_local_policy=True, accept_local_key=True)
    fields.update(config)
    return Target(name=name, config=TargetConfig.model_validate(fields), root=root, source=f"test: targets.{name}")


def shipped_floor() -> dict[str, str]:
    """The floor every shipped target names: gates.yaml with its current digest."""
    from pipeline.gates.policy import load_policy
    from pipeline.supplychain.gate_sections import SECTIONS

    return {"policy": "gates.yaml", "sha256": load_policy(REPO / "gates.yaml", sections=SECTIONS).sha256}
