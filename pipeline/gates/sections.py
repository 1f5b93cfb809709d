"""Extension point for policy sections other than `gates:` (`scan:`, `sign:`, `manifests:`, ...).

A section owner (supply chain, manifests) registers a `SectionPlugin`: a pydantic model that
validates its part of `gates.yaml` when the policy is loaded (so its errors, too, stop the run
before any stage) and an evaluator that turns a run into `GateVerdict`s. The engine treats those
verdicts like its own (required/key decide the release), without knowing the section.

Plug-ins live next to what they gate and are found by importing the modules in `PLUGIN_MODULES`
(a module that is not there yet is simply not registered); tests can `register_section` directly.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.models import GateVerdict, RunRecord


@dataclass(frozen=True)
class SectionContext:
    """What an evaluator may need besides the run: the baseline and where the policy file lives."""

    baseline: RunRecord | None
    policy_dir: Path


Validator = Callable[[dict[str, Any] | None, str], BaseModel]  # (raw section or None, where) -> model
Evaluator = Callable[[BaseModel, RunRecord, SectionContext], list[GateVerdict]]


@dataclass(frozen=True)
class SectionPlugin:
    name: str
    validate: Validator  # raises BadInput naming the key; called with None when the section is absent
    evaluate: Evaluator
    always: bool = False  # evaluate even when the section is absent (a strict default policy applies)
    owner: str = ""


_REGISTRY: dict[str, SectionPlugin] = {}

# Sections whose owners are known; a section here without a registered plug-in is an error, not a pass.
RESERVED: dict[str, str] = {
    "scan": "supply chain (pipeline/supplychain)",
    "sign": "supply chain (pipeline/supplychain)",
    "manifests": "manifests (pipeline/stages/manifests.py)",
}

PLUGIN_MODULES: tuple[str, ...] = (
    "pipeline.gates.builtin_sections",
    "pipeline.supplychain.gate_sections",
    "pipeline.stages.manifests_gate",
)
_discovered = False


def register_section(plugin: SectionPlugin, *, replace: bool = False) -> None:
    if plugin.name in _REGISTRY and not replace:
        raise ValueError(f"gate section {plugin.name!r} is already registered by {_REGISTRY[plugin.name].owner}")
    _REGISTRY[plugin.name] = plugin


def unregister_section(name: str) -> None:
    _REGISTRY.pop(name, None)


def discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for mod in PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # the plug-in exists but is broken: say so instead of hiding it
                raise


def sections() -> dict[str, SectionPlugin]:
    discover()
    return dict(_REGISTRY)
