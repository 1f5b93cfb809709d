"""Creating a run record: what identifies it before any stage has run."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.config import PipelineConfig, config_hash
from pipeline.models import ImageRef, RunRecord


def source_commit(repo: Path = Path(".")) -> str | None:
    """HEAD of the source tree, with `-dirty` when uncommitted changes went into the build."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def default_tag(commit: str | None) -> str:
    if not commit:
        return "dev"
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def new_run(cfg: PipelineConfig, *, tag: str | None = None, context: Path | None = None) -> RunRecord:
    context = context or Path(cfg.build.context)
    commit = source_commit(context)
    policy_file = Path(cfg.gates_file)
    return RunRecord(
        target=cfg.target,
        image=ImageRef(repository=cfg.build.repository, tag=tag or cfg.build.tag or default_tag(commit)),
        source_commit=commit,
        config_hash=config_hash(cfg, policy_file, *policy_parents(policy_file)),
    )


def policy_parents(policy_file: Path) -> list[Path]:
    """Files a policy `extends`, so that editing a parent changes the config hash too."""
    import yaml

    parents: list[Path] = []
    seen: set[Path] = set()
    current = policy_file
    while current.exists() and current not in seen:
        seen.add(current)
        try:
            data = yaml.safe_load(current.read_text()) or {}
        except yaml.YAMLError:
            break  # the policy loader reports the error with its location
        parent = data.get("extends") if isinstance(data, dict) else None
        if not isinstance(parent, str):
            break
        current = (current.parent / parent).resolve()
        parents.append(current)
    return parents
