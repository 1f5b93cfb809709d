"""A target's policy floor: the minimum policy any verdict's policy must contain to promote there.

The floor is a policy file (`gates.yaml`: its locked gates and locked sections) named in the target's
configuration with its pinned effective digest, so editing the floor file does not lower the floor: a
floor file that no longer has the pinned digest refuses every promotion to the target.

A verdict names its policy by name and effective digest. To show that the policy contains the floor,
its content is needed: it is read from the policy file the verdict names (relative to the project root)
and trusted only when its effective digest is the one the signed verdict carries, so a file can supply
content but never change which content is judged. A policy whose content cannot be found with that
digest is refused: nothing can show it meets the floor. A policy that extends the floor meets it by
construction (`extends:` keeps locked gates from relaxing); a standalone policy meets it only by
repeating every locked gate and section at least as strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline.errors import BadInput
from pipeline.gates.extends import Problems, floor_relaxations, load_merged
from pipeline.gates.policy import load_policy
from pipeline.gates.sections import as_map
from pipeline.promote.targets import Target
from pipeline.supplychain.gate_sections import SECTIONS
from pipeline.supplychain.predicates import PolicyIdentity


@dataclass(frozen=True)
class _Loaded:
    sha256: str
    data: dict[str, Any]


def _load(path: Path) -> _Loaded:
    plugins = as_map(SECTIONS)
    merged = load_merged(path, plugins, Problems())
    return _Loaded(sha256=load_policy(path, sections=SECTIONS).sha256, data=merged.data)


@dataclass(frozen=True)
class PolicyFloor:
    target: Target

    @property
    def path(self) -> Path:
        return self.target.root / (self.target.config.floor.policy if self.target.config.floor else "")

    @cached_property
    def loaded(self) -> _Loaded | str:
        """The floor policy, or why it cannot serve as the floor."""
        floor = self.target.config.floor
        assert floor is not None
        try:
            got = _load(self.path)
        except BadInput as exc:
            return f"the floor policy {floor.policy} does not load: {exc.render()}"
        if floor.sha256 is not None and got.sha256 != floor.sha256:
            return (f"the floor policy {floor.policy} has digest {got.sha256[:12]} now, not the {floor.sha256[:12]} "
                    f"pinned for target {self.target.name}: the floor changed since it was pinned")
        return got

    def _content(self, policy: PolicyIdentity) -> _Loaded | None:
        """The verdict's policy content, from the file it names, if that file has exactly its digest."""
        candidates: list[Path] = []
        for given in [*policy.files[:1], policy.name]:  # the top file as it was given, then its name
            path = Path(given)
            candidates += [path] if path.is_absolute() else [self.target.root / path, path]
        for candidate in dict.fromkeys(candidates):
            try:
                got = _load(candidate)
            except BadInput:
                continue
            if got.sha256 == policy.sha256:
                return got
        return None

    def problem(self, policy: PolicyIdentity) -> str | None:
        """Why a verdict made under `policy` does not meet the floor (None: it does)."""
        floor = self.loaded
        if isinstance(floor, str):
            return floor
        if policy.sha256 == floor.sha256:
            return None
        content = self._content(policy)
        if content is None:
            return (f"policy {policy.name} (sha256 {policy.sha256[:12]}) cannot be shown to contain the floor "
                    f"{self.path.name}: no policy file with that digest is here to read")
        problems = floor_relaxations(floor.data, content.data, as_map(SECTIONS), where=policy.name)
        if problems:
            return (f"policy {policy.name} (sha256 {policy.sha256[:12]}) does not contain the floor "
                    f"{self.path.name} of target {self.target.name}: " + "; ".join(problems[:6])
                    + (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""))
        return None
