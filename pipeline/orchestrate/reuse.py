"""Content-addressed reuse: the inputs a stage's result depends on, hashed into its `input_key`.

A stage whose key equals that of a stored result with status ok reuses it (recorded as reused, with
the run it came from and why) instead of doing the work again. The key covers the release identity parts
the stage reads, the stage's own configuration and the versions of the tools and scorers it runs. Stages
that sign or gate have no key and always run.

Boot and bench measure the machine as much as the release, so their key also holds this machine's
fingerprint (`machine_fingerprint`) and, when the bench is interleaved with the last promoted release,
which release that is. They are reused by default only while the stored measurement is younger than the
policy's `reuse.bench_max_age_s` and was not taken on a disturbed machine
(`pipeline.bench.reuse_policy`), never for a server attached with `--server-url` (its machine is not
this one), and boot only when no later step needs a live server; `--remeasure` measures them again and
`--fresh` recomputes everything. A build from a checkout with uncommitted changes is keyed by the content
of its tracked files (git's tree id of the working tree), so a machine-local change such as the
re-pinned base lock does not defeat reuse. Anything unknown (a tree git cannot read, no digest yet)
means no key: when in doubt, recompute.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.adapters.git import source_tree
from pipeline.config import PipelineConfig
from pipeline.models import RunRecord, Stage
from pipeline.stages.context import StageOptions

_TOOL_VERSIONS: dict[str, str] = {}


def _llmgate_version() -> str:
    try:
        return metadata.version("llmgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _file_sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _tree_sha(root: Path) -> str | None:
    """sha256 over every file's relative path and content under `root` (small trees: manifests)."""
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


MEASUREMENTS = (Stage.BOOT, Stage.BENCH)


def may_reuse(stage: Stage, options: StageOptions) -> bool:
    """Whether a stored result with this stage's key may stand in for running it (a boot or bench also
    has to be recent and undisturbed: `pipeline.bench.reuse_policy.why_not_reusable`)."""
    if options.fresh:
        return False
    if stage in MEASUREMENTS:
        return not options.remeasure and options.server_url is None
    return True


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(1 << 16)
    except OSError:
        return ""


@lru_cache(maxsize=1)
def machine_fingerprint() -> str:
    """What a boot or bench measured besides the release: this host (name, machine id, boot), its CPUs,
    memory and kernel. Any change means measuring again."""
    cpuinfo = _read("/proc/cpuinfo")
    models = sorted({line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                     if line.startswith(("model name", "Hardware", "cpu model")) and ":" in line})
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    parts = {"host": socket.gethostname(), "machine_id": _read("/etc/machine-id").strip(),
             "boot_id": _read("/proc/sys/kernel/random/boot_id").strip(), "cpus": os.cpu_count(),
             "cpu_models": models, "memory": memory, "kernel": platform.release(), "arch": platform.machine()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def input_key(stage: Stage, run: RunRecord, cfg: PipelineConfig, options: StageOptions,
              tools: dict[str, str] | None = None, *, baseline: str | None = None) -> str | None:
    """The stage's input key for this run, or None when its result must be recomputed. `baseline`: the
    run the bench would be interleaved with (the target's last promoted release), part of a boot's and a
    bench's inputs when the same-run baseline is on."""
    release = run.release
    common = {"stage": stage.value, "llmgate": _llmgate_version(), **(tools or {})}
    measured = {"machine": machine_fingerprint(),
                "baseline": baseline if cfg.bench.same_run_baseline else "off"}
    if stage is Stage.BUILD:
        commit = run.source_commit
        if not commit:
            return None
        tree = source_tree(Path(cfg.build.context)) if commit.endswith("-dirty") else None
        if commit.endswith("-dirty") and tree is None:
            return None
        dockerfile = _file_sha(Path(cfg.build.dockerfile))
        lock = _file_sha(Path(cfg.stack.lock_file))
        build = cfg.build.model_dump(mode="json", exclude={"tag"})
        return _key({**common, "commit": commit, "tree": tree, "dockerfile": dockerfile, "base_lock": lock,
                     "build": build, "repository": run.image.repository})
    digest = release.image_digest
    if digest is None:
        return None
    if stage is Stage.LEAK:
        return _key({**common, "image": digest, "secret_ids": sorted(cfg.build.secrets)})
    if stage is Stage.SCAN:
        return _key({**common, "image": digest, "scan": cfg.scan.model_dump(mode="json"),
                     "policy": release.policy_sha256})
    if stage is Stage.EVAL:
        if release.model_digest is None or release.ground_truth is None:
            return None
        return _key({**common, "image": digest, "model": release.model_digest, "ground_truth": release.ground_truth,
                     "eval": cfg.eval.model_dump(mode="json"), "boot": cfg.boot.model_dump(mode="json",
                                                                                        exclude={"repetitions"})})
    if stage is Stage.BOOT:
        # Reused only with bench, and only when no later step needs a live server (the runner).
        if release.model_digest is None:
            return None
        return _key({**common, **measured, "image": digest, "model": release.model_digest,
                     "boot": cfg.boot.model_dump(mode="json")})
    if stage is Stage.BENCH:
        if release.model_digest is None:
            return None
        # The policy too: it may size the bench (how many requests its comparisons need).
        return _key({**common, **measured, "image": digest, "model": release.model_digest,
                     "bench": cfg.bench.model_dump(mode="json"), "boot": cfg.boot.model_dump(mode="json"),
                     "policy": release.policy_sha256})
    if stage is Stage.MANIFESTS:
        # The overlay is sized by the measured load time, so a new boot means a new check.
        boot = run.stage(Stage.BOOT.value)
        load = None if boot is None else boot.metrics.get("load_time_p95_s", boot.metrics.get("load_time_s"))
        return _key({**common, "image": digest, "model": release.model_digest, "overlay": options.overlay,
                     "tree": _tree_sha(options.manifests_dir), "load_time_s": load})
    return None
