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
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.models import RunRecord, Stage
from pipeline.stages.context import StageOptions
from pipeline.stages.registry import STAGES
from pipeline.stages.spec import StageSpec

_TOOL_VERSIONS: dict[str, str] = {}


def _llmgate_version() -> str:
    try:
        return metadata.version("llmgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# Stages that measure the machine as much as the release (their specs say `measures_machine`).
MEASUREMENTS = frozenset(s.stage for s in STAGES if s.measures_machine)


def may_reuse(stage: Stage, options: StageOptions, spec: StageSpec | None = None) -> bool:
    """Whether a stored result with this stage's key may stand in for running it (a boot or bench also
    has to be recent and undisturbed: `pipeline.bench.reuse_policy.why_not_reusable`)."""
    if options.fresh:
        return False
    spec = spec or STAGES.get(stage)
    if spec is not None and spec.measures_machine:
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
              tools: dict[str, str] | None = None, *, baseline: str | None = None,
              spec: StageSpec | None = None) -> str | None:
    """The stage's input key for this run, or None when its result must be recomputed: the parts its spec's
    `reuse_key` names, plus llmgate's and the tools' versions. `baseline`: the run the bench would be
    interleaved with (the target's last promoted release), part of a boot's and a bench's inputs when the
    same-run baseline is on."""
    spec = spec or STAGES.get(stage)
    if spec is None or spec.reuse_key is None:
        return None
    if spec.digest and run.release.image_digest is None:
        return None
    parts = spec.reuse_key(run, cfg, options)
    if parts is None:
        return None
    common = {"stage": stage.value, "llmgate": _llmgate_version(), **(tools or {})}
    measured = ({"machine": machine_fingerprint(), "baseline": baseline if cfg.bench.same_run_baseline else "off"}
                if spec.measures_machine else {})
    return _key({**common, **measured, **parts})
