"""The checkable content of a reference answer, as the ground truth states it per item.

An item's `answer_kind` says how its correctness is scored (evals/facts.py, evals/correctness.py):
`facts` items on the facts their answer must state (a wrong number, flag or name scores 0), `paraphrase`
items on similarity to the reference (their guard facts still catch a contradiction), `refusal` items
against their reference refusal.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class AnswerKind(StrEnum):
    FACTS = "facts"
    PARAPHRASE = "paraphrase"
    REFUSAL = "refusal"


class FactKind(StrEnum):
    NUMBER = "number"  # a quantity, with its unit when it has one: "10 seconds", "25%", "0.9", "4096 bytes"
    FLAG = "flag"  # a command-line flag: "--tensor-parallel-size"
    NAME = "name"  # a field name, enum value or named policy: "failureThreshold", "ClusterFirst", "Forbid"
    PATH = "path"  # a file path or endpoint: "/dev/shm", "/v1/models"
    VERSION = "version"  # "v1.32"


class Fact(BaseModel):
    """One thing a correct answer states.

    - `about`: cue words that bind the value in the reference ("default" for "ClusterFirst is the
      default"). When a clause of the response holds a cue and another value of the same slot, but no
      clause holds a cue and this value, the answer contradicts the fact (a swapped name, a wrong default).
    - `rivals`: other values of the same slot; an answer that names a rival but not the value
      contradicts the fact (needed for names that are also ordinary words: Always, Never, Delete).
    - `guard`: the fact only catches contradictions (an answer naming another server's flag); it does
      not count towards how much of the answer was given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FactKind
    value: str = Field(min_length=1)
    about: tuple[str, ...] = ()
    rivals: tuple[str, ...] = ()
    guard: bool = False
