"""Fact checking of an answer against the checkable content of its reference (`pipeline.schemas.facts`).

Embedding similarity cannot tell "3 by default" from "1 by default", nor ClusterFirst from
ClusterFirstWithHostNet swapped: the sentences are the same but for one token. So an item whose
reference states checkable content (numbers with units, flags, field and enum names, paths, versions)
lists that content as facts in the ground truth, and each fact is looked up in the response:

- *supported*: the response states the value (a number in any unit of the same dimension, "600s" =
  "10 minutes"; a fraction as a percentage; a flag with `_` or `-`; a multi-word name with or without
  spaces);
- *contradicted*: the response binds the fact's cue (`about`) to another value of the same slot and
  never to this one (a swapped name, a wrong default), or names a rival instead of the value, or states
  a value of the same type the item does not know (another flag, a number of the same dimension that
  neither question nor reference gives) where the value should be;
- *missing*: neither.

The item's score (`fact_score`) is 0 when any fact is contradicted, else the share of its facts (guards
aside) that are supported. Deterministic, no model, microseconds per item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pipeline.schemas.facts import Fact, FactKind

_TR = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ", "\u2013": "-",
                     "\u2014": " - ", "\u2011": "-", "\u2212": "-"})

# ------------------------------------------------------------------------------------------ numbers

# unit word -> (dimension, factor to the dimension's base unit)
_TIME = {"ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0,
         "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
         "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0, "day": 86400.0,
         "days": 86400.0}
_BYTES = {"byte": 1.0, "bytes": 1.0, "kb": 1e3, "kib": 1024.0, "mb": 1e6, "mib": 1024.0**2, "gb": 1e9,
          "gib": 1024.0**3, "tb": 1e12, "tib": 1024.0**4}
_PERCENT = {"%": 1.0, "percent": 1.0, "per cent": 1.0}
# Count nouns that make a number's meaning ("3 failures" is not "3 seconds"). Singular and plural.
_COUNTS = ("token", "pod", "replica", "gpu", "bit", "line", "head", "failure", "success", "time", "node",
           "request", "shard", "stage", "layer", "sequence", "port", "core", "cpu", "job", "attempt", "retry",
           "retries", "copy", "copies", "index", "question", "step", "call", "group", "domain", "zone")
_UNITS: dict[str, tuple[str, float]] = {
    **{u: ("time", f) for u, f in _TIME.items()},
    **{u: ("bytes", f) for u, f in _BYTES.items()},
    **{u: ("percent", f) for u, f in _PERCENT.items()},
}
for _c in _COUNTS:
    _base = {"retries": "retry", "copies": "copy"}.get(_c, _c)
    _UNITS[_c] = (_base, 1.0)
    if not _c.endswith("s"):
        _UNITS[_c + ("es" if _c.endswith(("x", "ss")) else "s")] = (_base, 1.0)
_UNITS["indices"] = ("index", 1.0)
_UNITS["gpus"] = ("gpu", 1.0)

_WORD_NUMBERS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
                 "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "eighty": 80, "ninety": 90,
                 "hundred": 100, "single": 1, "a": 1, "an": 1, "half": 0.5}
_UNIT_RX = "|".join(sorted((re.escape(u) for u in _UNITS), key=len, reverse=True))
_DIGITS = r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?|\.\d+"
_NUMBER = re.compile(
    rf"(?<![\w.\-/$:])(?P<num>{_DIGITS}|(?i:{'|'.join(_WORD_NUMBERS)}))"
    rf"(?:\s?(?P<unit>(?i:{_UNIT_RX})))?(?![\w])"
)
# "10 to 20 minutes", "5-10 s": the first number takes the second's unit
_RANGE_GAP = re.compile(r"^\s*(?:to|-|or|and|/)\s*$")


@dataclass(frozen=True)
class Quantity:
    value: float  # in the dimension's base unit (seconds, bytes, percent) or as written for counts
    dim: str  # "time", "bytes", "percent", a count noun, or "" without a unit
    raw: float  # the number as written
    approx: bool = False  # decimal/binary byte units differ by up to 7.4 %

    def same(self, other: Quantity, *, loose_units: bool) -> bool:
        """The same quantity: equal in a shared dimension; with `loose_units`, a number without a unit
        equals one with a unit when the numbers agree, and a fraction equals its percentage."""
        if self.dim and other.dim:
            if self.dim != other.dim:
                return False
            tol = 0.075 if (self.approx or other.approx) else 1e-9
            return abs(self.value - other.value) <= tol * max(abs(self.value), abs(other.value), 1e-12)
        if not loose_units:
            return self.dim == other.dim and abs(self.raw - other.raw) < 1e-9
        if abs(self.raw - other.raw) < 1e-9:
            return True
        timed = self if self.dim == "time" else other if other.dim == "time" else None
        if timed is not None and abs(timed.value - (other.raw if timed is self else self.raw)) < 1e-9:
            return True  # a bare number of a Kubernetes *Seconds field: "3600" is "1 hour"
        pct, frac = (self, other) if self.dim == "percent" else (other, self)
        return pct.dim == "percent" and not frac.dim and 0 < frac.raw <= 1 and abs(frac.raw * 100 - pct.raw) < 1e-6


def _num(text: str) -> float | None:
    t = text.lower()
    if t in _WORD_NUMBERS:
        return float(_WORD_NUMBERS[t])
    try:
        return float(t.replace(",", ""))
    except ValueError:
        return None


def quantities(text: str) -> list[Quantity]:
    """Every number in `text` with its unit, in order."""
    return [q for _, q in quantity_spans(text)]


def quantity_spans(text: str) -> list[tuple[tuple[int, int], Quantity]]:
    """`quantities` with where each stands in `text` (after normalising quotes and dashes)."""
    text = text.translate(_TR)
    found: list[tuple[int, int, float, str | None]] = []
    for m in _NUMBER.finditer(text):
        word = not m.group("num")[0].isdigit() and m.group("num")[0] != "."
        unit = (m.group("unit") or "").lower() or None
        if word and m.group("num").lower() in ("a", "an", "half", "single") and unit not in _TIME:
            continue  # "a"/"an" only count before a time unit ("an hour")
        value = _num(m.group("num"))
        if value is not None:
            found.append((m.start(), m.end(), value, unit))
    out: list[tuple[tuple[int, int], Quantity]] = []
    for i, (start, end, value, unit) in enumerate(found):
        if unit is None and i + 1 < len(found) and found[i + 1][3] and _RANGE_GAP.match(text[end:found[i + 1][0]]):
            unit = found[i + 1][3]
        if unit is None:
            out.append(((start, end), Quantity(value, "", value)))
            continue
        dim, factor = _UNITS[unit]
        out.append(((start, end), Quantity(value * factor, dim, value, approx=dim == "bytes")))
    return out


def parse_quantity(text: str) -> Quantity:
    qs = quantities(text)
    if len(qs) != 1:
        raise ValueError(f"a number fact holds one quantity, got {len(qs)} in {text!r}")
    return qs[0]


# ---------------------------------------------------------------------------------------- tokens

_FLAG = re.compile(r"(?<![\w-])--[a-zA-Z0-9][a-zA-Z0-9_-]*")
_VERSION = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)?)(?![\d.]*\d)")
_CLAUSE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+|,\s+(?:and|but|while|whereas|so|then|otherwise|unlike)\s+|;\s*|\s+-\s+")


def _norm_flag(flag: str) -> str:
    return flag.lower().replace("_", "-")


def flags(text: str) -> set[str]:
    return {_norm_flag(f) for f in _FLAG.findall(text.translate(_TR))}


def versions(text: str) -> set[str]:
    return set(_VERSION.findall(text.translate(_TR)))


def _name_pattern(name: str) -> re.Pattern[str]:
    """A name as a whole token. One capitalised word that is also an ordinary word (Always, Never, Delete)
    must keep its capital; a compound name (ClusterFirstWithHostNet, failureThreshold, no_new_privs)
    matches in any case and with spaces, hyphens or underscores between its parts; a dotted or slashed
    name (nvidia.com/gpu) matches as written, in any case."""
    if re.fullmatch(r"[A-Z][a-z]+", name):
        return re.compile(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)")
    if re.search(r"[./:]", name):
        return re.compile(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)", re.IGNORECASE)
    parts = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)
    body = r"[\s_-]?".join(re.escape(p) for p in parts)
    # a field name may sit in a path: spec.activeDeadlineSeconds, lastState.terminated
    return re.compile(rf"(?<![\w/-]){body}(?![\w/-])", re.IGNORECASE)


def _path_pattern(path: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w/]){re.escape(path)}(?![\w-]|\.\w)")


def clauses(text: str) -> list[str]:
    """Sentences and the clauses inside them (split at ';', ', and', ', but', ...)."""
    return [c.strip() for c in _CLAUSE_SPLIT.split(text.translate(_TR)) if c and c.strip()]


# ---------------------------------------------------------------------------------------- checking


class Status(StrEnum):
    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    MISSING = "missing"


@dataclass(frozen=True)
class FactResult:
    fact: Fact
    status: Status
    why: str = ""


@dataclass(frozen=True)
class FactCheck:
    results: tuple[FactResult, ...]

    @property
    def contradicted(self) -> list[FactResult]:
        return [r for r in self.results if r.status is Status.CONTRADICTED]

    @property
    def score(self) -> float | None:
        """0 when any fact is contradicted; else the share of counting facts supported; None when the item
        has no counting fact (guards only: similarity decides, unless a guard was contradicted)."""
        if self.contradicted:
            return 0.0
        counting = [r for r in self.results if not r.fact.guard]
        if not counting:
            return None
        return sum(r.status is Status.SUPPORTED for r in counting) / len(counting)


class _Slot:
    """How one fact's value, and other values of its slot, are found in a piece of text."""

    def __init__(self, fact: Fact, siblings: Sequence[Fact], accepted_text: str) -> None:
        self.fact = fact
        self.kind = fact.kind
        others = [f.value for f in siblings if f.kind == fact.kind and f.value != fact.value]
        if self.kind is FactKind.NUMBER:
            self.q = parse_quantity(fact.value)
            self.rival_qs = [parse_quantity(r) for r in fact.rivals]
            self.accepted = quantities(accepted_text) + [parse_quantity(f.value) for f in siblings
                                                          if f.kind is FactKind.NUMBER]
        elif self.kind is FactKind.FLAG:
            self.value = _norm_flag(fact.value)
            self.accepted_flags = flags(accepted_text) | {_norm_flag(f.value) for f in siblings
                                                          if f.kind is FactKind.FLAG}
        elif self.kind is FactKind.VERSION:
            self.value = fact.value.lstrip("vV")
            self.accepted_versions = versions(accepted_text) | {self.value}
        else:
            make = _path_pattern if self.kind is FactKind.PATH else _name_pattern
            self.pattern = make(fact.value)
            self.others = [make(o) for o in (*fact.rivals, *others)]
            self.rival_patterns = [make(r) for r in fact.rivals]

    def has_value(self, text: str) -> bool:
        if self.kind is FactKind.NUMBER:
            return any(self.q.same(q, loose_units=True) for q in quantities(text))
        if self.kind is FactKind.FLAG:
            return self.value in flags(text)
        if self.kind is FactKind.VERSION:
            return self.value in versions(text)
        return bool(self.pattern.search(text))

    def spans(self, text: str) -> list[tuple[int, int, bool, str]]:
        """Values of this slot in `text`: (start, end, is this fact's value, as written)."""
        if self.kind is FactKind.NUMBER:
            return [(a, b, self.q.same(q, loose_units=True), text[a:b]) for (a, b), q in quantity_spans(text)
                    if not q.dim or not self.q.dim or q.dim == self.q.dim]
        if self.kind is FactKind.FLAG:
            return [(m.start(), m.end(), _norm_flag(m.group(0)) == self.value, m.group(0)) for m in _FLAG.finditer(text)]
        if self.kind is FactKind.VERSION:
            return [(m.start(), m.end(), m.group(1) == self.value, m.group(0)) for m in _VERSION.finditer(text)]
        out = [(m.start(), m.end(), True, m.group(0)) for m in self.pattern.finditer(text)]
        out += [(m.start(), m.end(), False, m.group(0)) for p in self.others for m in p.finditer(text)]
        return out

    def conflict_anywhere(self, text: str) -> str | None:
        """A rival, or a value of the same type the item does not know, stated where the value is absent."""
        if self.kind is FactKind.NUMBER:
            for q in quantities(text):
                if any(q.same(r, loose_units=False) for r in self.rival_qs):
                    return f"rival {q.raw:g} {q.dim}".strip()
            if not self.q.dim:
                return None  # a bare number says too little to contradict without a cue
            for q in quantities(text):
                if q.dim == self.q.dim and not any(q.same(a, loose_units=False) for a in self.accepted):
                    return f"{q.raw:g} {q.dim}"
            return None
        if self.kind is FactKind.FLAG:
            unknown = sorted(flags(text) - self.accepted_flags)
            return unknown[0] if unknown else None
        if self.kind is FactKind.VERSION:
            unknown = sorted(versions(text) - self.accepted_versions)
            return unknown[0] if unknown else None
        for p in self.rival_patterns:
            m = p.search(text)
            if m:
                return f"rival {m.group(0)}"
        return None


def _cue_bindings(cues: Iterable[str], parts: list[str], slot: _Slot) -> list[tuple[bool, str]]:
    """For each cue in each clause, the value of the slot nearest to it (is it the fact's value, as written).
    "3 successful and 1 failed" binds 3 to "successful" and 1 to "failed"; a swap binds them the other way."""
    rx = [re.compile(rf"(?<![\w-]){re.escape(c)}", re.IGNORECASE) for c in cues]
    out: list[tuple[bool, str]] = []
    for part in parts:
        cands = slot.spans(part)
        if not cands:
            continue
        for r in rx:
            for m in r.finditer(part):
                def gap(c: tuple[int, int, bool, str], m: re.Match[str] = m, part: str = part) -> tuple[int, int, bool]:
                    # Nearest within the same segment (between commas and brackets) first ("Always if the tag
                    # is :latest, IfNotPresent otherwise" binds Always to "latest"), then by characters.
                    a, b, is_value, _ = c
                    lo, hi = (m.end(), a) if a >= m.end() else (b, m.start()) if b <= m.start() else (a, a)
                    between = part[lo:hi]
                    seps = sum(between.count(x) for x in ",()")  # an aside in brackets is its own segment
                    return (seps, hi - lo, not is_value)  # a tie goes to the fact's value
                best = min(cands, key=gap)
                out.append((best[2], best[3]))
    return out


def check_fact(fact: Fact, response: str, *, siblings: Sequence[Fact] = (), accepted_text: str = "") -> FactResult:
    """Whether `response` states `fact`. `siblings` are the item's facts (their values are the same
    slot's other values); `accepted_text` (question and reference) holds values that are never a
    contradiction of the type-level check."""
    slot = _Slot(fact, siblings, accepted_text)
    text = response.translate(_TR)
    if fact.about:
        bound = _cue_bindings(fact.about, clauses(text), slot)
        if any(is_value for is_value, _ in bound):
            return FactResult(fact, Status.SUPPORTED, "stated where the reference states it")
        if bound:
            return FactResult(fact, Status.CONTRADICTED, f"{bound[0][1]!r} where the reference has {fact.value!r}")
    if slot.has_value(text):
        return FactResult(fact, Status.SUPPORTED)
    conflict = slot.conflict_anywhere(text)
    if conflict is not None:
        return FactResult(fact, Status.CONTRADICTED, f"{conflict!r} instead of {fact.value!r}")
    return FactResult(fact, Status.MISSING)


def check_facts(facts: Sequence[Fact], response: str, *, question: str = "", reference: str = "") -> FactCheck:
    accepted = f"{question}\n{reference}"
    return FactCheck(tuple(check_fact(f, response, siblings=facts, accepted_text=accepted) for f in facts))


def propose_facts(reference: str, question: str = "") -> list[Fact]:
    """Candidate facts of a reference (its numbers, flags, compound names, paths, versions) for a person
    to review when annotating ground truth; never used for scoring."""
    text = reference.translate(_TR)
    out: list[Fact] = []
    seen: set[tuple[FactKind, str]] = set()

    def add(kind: FactKind, value: str) -> None:
        if (kind, value) not in seen:
            seen.add((kind, value))
            out.append(Fact(kind=kind, value=value))

    for m in _NUMBER.finditer(text):
        if m.group("num")[0].isdigit():
            add(FactKind.NUMBER, m.group(0).strip())
    for f in _FLAG.findall(text):
        add(FactKind.FLAG, f)
    for v in _VERSION.findall(text):
        add(FactKind.VERSION, v)
    for n in re.findall(r"(?<![\w./-])(?:[a-z]+(?:[A-Z][a-z0-9]+)+|[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+)(?![\w/-])", text):
        add(FactKind.NAME, n)
    for p in re.findall(r"(?<![\w/])/[a-z][\w./-]*[\w]", text):
        add(FactKind.PATH, p)
    return out
