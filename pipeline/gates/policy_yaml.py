"""Reading a policy file: UTF-8 YAML with no duplicate keys, or a BadInput naming the file and line.

PyYAML keeps the last of two equal keys (`threshold: 0.01` then `threshold: 0.99`), so a policy could
say one thing to a reviewer and another to the engine. This loader refuses that, as it refuses bytes
that are not UTF-8, a directory given as a file, and a file too large to be a policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from pipeline.errors import BadInput

MAX_BYTES = 1 << 20  # a policy is a page of YAML; anything near this size is not one


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (merge keys `<<` keep YAML's meaning)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: SafeConstructor reports it with its own message
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_policy_yaml(path: Path) -> Any:
    """The parsed document (an empty file is `{}`); every defect is BadInput naming `path` (and line)."""
    where = str(path)
    try:
        if path.is_dir():
            raise BadInput("is a directory, not a policy file", where=where)
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise BadInput(f"{size} bytes is too large for a policy file (limit {MAX_BYTES})", where=where)
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInput("file not found", where=where) from exc
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", where=where) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} cannot be decoded", where=where
        ) from exc
    try:
        return yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKey as exc:
        raise BadInput(
            f"duplicate key {exc.key!r} (first at line {exc.first_line}); a key may appear once per mapping",
            where=f"{where}:{exc.line}",
        ) from None
    except (yaml.YAMLError, ConstructorError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise BadInput(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", where=at) from exc
    except RecursionError as exc:
        raise BadInput("not valid YAML: nested too deeply", where=where) from exc
