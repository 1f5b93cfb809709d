"""Versioned ground truth: `ground_truth/vN/` loaded with `datasets` and explicit Features.

Every row is validated before `datasets` sees it, because a bad row deep inside a pyarrow cast
error names neither the file nor the line; here it is a `BadInput` naming file, line and field.
The version is the directory name and the sha256 covers the data files (names and bytes, sorted),
so the same data always gives the same digest and any edit gives a new one.

From v3 on every row also says how its correctness is scored: `answer_kind` (`facts`, `paraphrase`,
`refusal`) and `facts`, the checkable content of its reference (pipeline/schemas/facts.py). Older
versions have neither and are scored on similarity alone. Within one version either every row has
them or none does.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import BadInput
from pipeline.models import GroundTruthRef
from pipeline.regular_files import read_regular
from pipeline.schemas.facts import AnswerKind, Fact

VERSION_RE = re.compile(r"^v(\d+)$")
DATA_GLOB = "data/*.jsonl"
MAX_DATA_FILE_BYTES = 256 << 20
BEHAVIOURS = ("answer", "refuse")
# field -> (python type, element type for lists)
_FIELDS: dict[str, tuple[type, type | None]] = {
    "id": (str, None),
    "question": (str, None),
    "contexts": (list, str),
    "reference": (str, None),
    "expected_behaviour": (str, None),
    "category": (str, None),
}
# Fields a row has from v3 on (all rows of a version, or none).
FACT_FIELDS = ("answer_kind", "facts")


def features(with_facts: bool = False) -> Any:
    """The explicit schema; `datasets` casts to it instead of guessing from the first rows."""
    from datasets import Features, Sequence, Value

    base = {
        "id": Value("string"),
        "question": Value("string"),
        "contexts": Sequence(Value("string")),
        "reference": Value("string"),
        "expected_behaviour": Value("string"),
        "category": Value("string"),
    }
    if with_facts:
        base["answer_kind"] = Value("string")
        base["facts"] = [
            {
                "kind": Value("string"),
                "value": Value("string"),
                "about": [Value("string")],
                "rivals": [Value("string")],
                "guard": Value("bool"),
            }
        ]
    return Features(base)


class GroundTruthItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    question: str
    contexts: tuple[str, ...]
    reference: str
    expected_behaviour: str
    category: str
    answer_kind: str = ""  # AnswerKind from v3 on; "" for older versions (similarity only)
    facts: tuple[Fact, ...] = ()

    @property
    def should_refuse(self) -> bool:
        return self.expected_behaviour == "refuse"


@dataclass(frozen=True)
class GroundTruth:
    path: Path
    version: str
    sha256: str
    items: tuple[GroundTruthItem, ...]

    def ref(self) -> GroundTruthRef:
        return GroundTruthRef(version=self.version, sha256=self.sha256, n_items=len(self.items))


def data_files(path: Path) -> list[Path]:
    files = sorted(path.glob(DATA_GLOB))
    if not files:
        raise BadInput(f"no data files ({DATA_GLOB})", where=str(path))
    return files


def dataset_sha256(path: Path) -> str:
    """sha256 over each data file's relative name and bytes, in sorted order."""
    h = hashlib.sha256()
    for f in data_files(path):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _check_facts(row: dict[str, Any], where: str) -> None:
    kinds = ", ".join(k.value for k in AnswerKind)
    missing = [f for f in FACT_FIELDS if f not in row]
    if missing:
        raise BadInput("missing field (a row with answer_kind or facts needs both)", where=f"{where}: field '{missing[0]}'")
    kind = row["answer_kind"]
    if kind not in {k.value for k in AnswerKind}:
        raise BadInput(f"must be one of {kinds}, got {kind!r}", where=f"{where}: field 'answer_kind'")
    if not isinstance(row["facts"], list):
        raise BadInput(f"expected list, got {type(row['facts']).__name__}", where=f"{where}: field 'facts'")
    facts = []
    for i, raw in enumerate(row["facts"]):
        try:
            facts.append(Fact.model_validate(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise BadInput(f"{err['msg']}", where=f"{where}: field 'facts[{i}]{'.' + loc if loc else ''}'") from exc
        if set(raw) != set(Fact.model_fields):
            raise BadInput(f"every fact lists all of {', '.join(Fact.model_fields)}",
                           where=f"{where}: field 'facts[{i}]'")
    if (kind == AnswerKind.REFUSAL) != (row["expected_behaviour"] == "refuse"):
        raise BadInput("answer_kind refusal is for should-refuse items, and only for them",
                       where=f"{where}: field 'answer_kind'")
    if kind == AnswerKind.FACTS and not any(not f.guard for f in facts):
        raise BadInput("a facts item needs at least one fact that is not a guard", where=f"{where}: field 'facts'")


def _check_row(row: Any, where: str, seen: dict[str, str]) -> None:
    if not isinstance(row, dict):
        raise BadInput("row is not a JSON object", where=where)
    for name in row:
        if name not in _FIELDS and name not in FACT_FIELDS:
            raise BadInput(f"unknown field {name!r}", where=f"{where}: field '{name}'")
    for name, (typ, elem) in _FIELDS.items():
        fw = f"{where}: field '{name}'"
        if name not in row:
            raise BadInput("missing field", where=fw)
        value = row[name]
        if not isinstance(value, typ):
            raise BadInput(f"expected {typ.__name__}, got {type(value).__name__}", where=fw)
        if elem is not None and not all(isinstance(v, elem) for v in value):
            raise BadInput(f"every element must be a {elem.__name__}", where=fw)
        if typ is str and name != "category" and not value.strip():
            raise BadInput("empty", where=fw)
    if row["expected_behaviour"] not in BEHAVIOURS:
        raise BadInput(
            f"must be one of {', '.join(BEHAVIOURS)}, got {row['expected_behaviour']!r}",
            where=f"{where}: field 'expected_behaviour'",
        )
    if row["id"] in seen:
        raise BadInput(f"duplicate id {row['id']!r} (first at {seen[row['id']]})", where=f"{where}: field 'id'")
    if any(f in row for f in FACT_FIELDS):
        _check_facts(row, where)
    seen[row["id"]] = where


def validate_file(path: Path, seen: dict[str, str] | None = None, with_facts: dict[bool, str] | None = None) -> int:
    """Check every line of one JSONL file; the first problem is a BadInput at `file:line: field`.
    `with_facts` collects, across the files of a version, where a row with and one without facts was seen."""
    seen = {} if seen is None else seen
    with_facts = {} if with_facts is None else with_facts
    n = 0
    raw = read_regular(path, what="ground-truth data file", limit=MAX_DATA_FILE_BYTES)  # a FIFO would hang
    for lineno, data in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {exc.start + 1}",
                           where=where) from exc
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"not valid JSON: {exc.msg} (column {exc.colno})", where=where) from exc
        except RecursionError as exc:
            raise BadInput("not valid JSON for a ground-truth row: nested too deeply", where=where) from exc
        _check_row(row, where, seen)
        has = "answer_kind" in row
        with_facts.setdefault(has, where)
        if len(with_facts) > 1:
            first = with_facts[not has]
            raise BadInput(f"rows of one version either all have answer_kind and facts or none do (row at {first} "
                           f"{'has' if not has else 'lacks'} them)", where=f"{where}: field 'answer_kind'")
        n += 1
    return n


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Validate, then load `path` (a `ground_truth/vN` directory) with `datasets` and explicit Features."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput("ground-truth directory not found", where=str(path))
    match = VERSION_RE.match(path.name)
    if not match:
        raise BadInput("a ground-truth directory must be named vN (v1, v2, ...)", where=str(path))
    files = data_files(path)
    seen: dict[str, str] = {}
    with_facts: dict[bool, str] = {}
    for f in files:
        validate_file(f, seen, with_facts)
    if not seen:
        raise BadInput("the data files hold no rows", where=str(path))
    has_facts = True in with_facts

    from datasets import load_dataset

    ds = load_dataset(
        "json",
        data_files=[str(f) for f in files],
        features=features(with_facts=has_facts),
        split="train",
    )
    items = tuple(
        GroundTruthItem(
            id=r["id"],
            question=r["question"],
            contexts=tuple(r["contexts"]),
            reference=r["reference"],
            expected_behaviour=r["expected_behaviour"],
            category=r["category"],
            answer_kind=r.get("answer_kind") or "",
            facts=tuple(Fact.model_validate(f) for f in r.get("facts") or ()),
        )
        for r in ds
    )
    return GroundTruth(path=path, version=path.name, sha256=dataset_sha256(path), items=items)


def new_version(root: str | Path, source: str | None = None) -> Path:
    """Copy the latest (or `source`) version to v(N+1); existing versions are never touched."""
    root = Path(root)
    versions = sorted(
        (int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := VERSION_RE.match(p.name))
    ) if root.is_dir() else []
    if not versions:
        raise BadInput("no ground-truth version to start from (expected vN directories)", where=str(root))
    src = root / source if source else versions[-1][1]
    if not src.is_dir() or not VERSION_RE.match(src.name):
        raise BadInput("source version not found", where=str(src))
    load_ground_truth(src)  # never fork a broken version
    dest = root / f"v{versions[-1][0] + 1}"
    if dest.exists():
        raise BadInput("version already exists; versions are immutable", where=str(dest))
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".cache", "__pycache__"))
    card = dest / "README.md"
    if card.exists():
        text = card.read_text(encoding="utf-8")
        card.write_text(text.replace(f"pretty_name: llmgate ground truth {src.name}", f"pretty_name: llmgate ground truth {dest.name}"), encoding="utf-8")
    return dest
