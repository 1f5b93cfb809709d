"""Policy sections other than `gates:` (`scan:`, `sign:`, `manifests:`, ...), as the engine sees them.

A package that gates something of its own (supply chain, manifests) describes its section with a
`SectionPlugin`: the stage whose result it reads, a validator that turns its part of the policy into
a pydantic model when the policy loads (so its errors, too, stop the run before any stage), and an
evaluator that turns a run into `GateVerdict`s the decision treats like any other. The caller that
loads and evaluates a policy passes the plug-ins it wants as an argument; nothing is discovered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.models import RunRecord, Stage
from pipeline.schemas.gate import GateVerdict


@dataclass(frozen=True)
class SectionContext:
    """What an evaluator may need besides the run: the baseline and where the policy file lives."""

    baseline: RunRecord | None
    policy_dir: Path


Validator = Callable[[dict[str, Any] | None, str], BaseModel]  # (raw section or None, where) -> model
Evaluator = Callable[[BaseModel, RunRecord, SectionContext], list[GateVerdict]]
# (parent's model, child's model) -> (field, how) for every way the child accepts more than the parent
Relaxations = Callable[[BaseModel, BaseModel], list[tuple[str, str]]]


@dataclass(frozen=True)
class SectionPlugin:
    name: str
    stage: Stage  # the stage whose result the section reads (the plan check shows it)
    reads: str  # what of that stage it reads, e.g. "report" or "verified"
    validate: Validator  # raises BadInput naming the key; called with None when the section is absent
    evaluate: Evaluator
    # How a child policy's section relaxes its parent's; without it any change to a locked section
    # is refused, since the engine cannot tell tightening from relaxing in a section it does not own.
    relaxations: Relaxations | None = None
    always: bool = False  # evaluate even when the section is absent (a strict default policy applies)


# Sections whose stage is known; present in a policy without a plug-in given, they are an error,
# never a silent pass.
RESERVED: dict[str, Stage] = {"scan": Stage.SCAN, "sign": Stage.SIGN, "manifests": Stage.MANIFESTS, "reuse": Stage.BENCH}

ENGINE_SECTION_KEYS = ("required", "key", "reason", "locked", "relaxable")  # keys the engine owns


def by_name(sections: Iterable[SectionPlugin]) -> dict[str, SectionPlugin]:
    out: dict[str, SectionPlugin] = {}
    for s in sections:
        if s.name in out:
            raise ValueError(f"two section plug-ins named {s.name!r}")
        out[s.name] = s
    return out


SectionSet = Iterable[SectionPlugin] | Mapping[str, SectionPlugin]


def as_map(sections: SectionSet) -> dict[str, SectionPlugin]:
    return dict(sections) if isinstance(sections, Mapping) else by_name(sections)
