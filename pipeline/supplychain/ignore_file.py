"""The scan ignore file: trivy's `.trivyignore.yaml` layout, with a reason and an expiry made mandatory.

```yaml
vulnerabilities:
  - id: CVE-2019-18276
    statement: bash is not reachable from the server's entrypoint   # or `reason:`
    expired_at: 2026-12-31                                           # or `expires:`
    paths: ["usr/lib/..."]          # optional: fnmatch on the target or package path
    purls: ["pkg:deb/debian/bash"]  # optional: prefix of the package URL
misconfigurations:
  - id: DS-0002
    statement: ...
    expired_at: ...
```

An acceptance without a reason cannot be reviewed and one without an expiry is forever, so both are
required. A `secrets:` section is refused: the policy says any secret finding fails.
"""

from __future__ import annotations

import fnmatch
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from pipeline.config import MAX_YAML_BYTES, parse_yaml
from pipeline.errors import BadInput
from pipeline.regular_files import read_regular
from pipeline.supplychain.trivy_report import Misconfiguration, Vulnerability

_SECTIONS: dict[str, Literal["vulnerability", "misconfig"]] = {
    "vulnerabilities": "vulnerability",
    "misconfigurations": "misconfig",
}
_KEYS = {"id", "statement", "reason", "expired_at", "expires", "paths", "purls"}


class IgnoreEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["vulnerability", "misconfig"]
    id: str
    reason: str
    expires: date
    paths: tuple[str, ...] = ()
    purls: tuple[str, ...] = ()
    source: str = ""  # "file:line", so a person can find the entry

    def expired(self, today: date) -> bool:
        # The expiry day itself is the last day the acceptance holds.
        return today > self.expires

    def matches(self, finding: Vulnerability | Misconfiguration) -> bool:
        if isinstance(finding, Vulnerability):
            if self.kind != "vulnerability" or finding.id != self.id:
                return False
            if self.purls and not any((finding.purl or "").startswith(p) for p in self.purls):
                return False
            where = [finding.target, finding.pkg_path or ""]
        else:
            ids = {finding.id, _strip_avd(finding.id)} | ({finding.avd_id, _strip_avd(finding.avd_id)} if finding.avd_id else set())
            if self.kind != "misconfig" or _strip_avd(self.id) not in ids:
                return False
            where = [finding.target]
        return not (self.paths and not any(fnmatch.fnmatch(w, p) for w in where if w for p in self.paths))


def _strip_avd(i: str) -> str:
    return i[4:] if i.upper().startswith("AVD-") else i


def _as_date(value: object, where: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise BadInput(f"expiry must be a date YYYY-MM-DD, got {value!r}", where=where)


def _str_list(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise BadInput("expected a list of strings", where=where)


def load_ignore_file(path: str | Path) -> list[IgnoreEntry]:
    p = Path(path)
    try:
        raw = read_regular(p, what="ignore file", limit=MAX_YAML_BYTES, not_found="ignore file not found")
    except BadInput as exc:
        raise BadInput(exc.message if exc.message == "ignore file not found" else
                       f"cannot read the ignore file: {exc.message}", where=str(p)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text: byte {exc.start} cannot be decoded", where=str(p)) from exc
    root, data = parse_yaml(text, where=str(p))
    if data is None:
        return []
    if not isinstance(data, dict) or root is None or not isinstance(root, yaml.MappingNode):
        raise BadInput("expected a mapping of sections (vulnerabilities, misconfigurations)", where=str(p))
    node_of = {k.value: v for k, v in root.value}
    entries: list[IgnoreEntry] = []
    for section, items in data.items():
        if section == "secrets":
            raise BadInput(
                "secret findings cannot be ignored (any secret fails the scan gate); remove the secret instead",
                where=f"{p}: secrets",
            )
        if section not in _SECTIONS:
            raise BadInput(f"unknown section {section!r} (expected {', '.join(_SECTIONS)})", where=f"{p}: {section}")
        if items is None:
            continue
        if not isinstance(items, list):
            raise BadInput("expected a list of entries", where=f"{p}: {section}")
        seq = node_of[section]
        for i, item in enumerate(items):
            line = seq.value[i].start_mark.line + 1 if isinstance(seq, yaml.SequenceNode) else 0
            where = f"{p}:{line} ({section}[{i}])"
            if not isinstance(item, dict):
                raise BadInput("expected a mapping with id, statement and expired_at", where=where)
            unknown = set(item) - _KEYS
            if unknown:
                raise BadInput(f"unknown key(s) {sorted(unknown)}", where=where)
            ident = item.get("id")
            if not isinstance(ident, str) or not ident.strip():
                raise BadInput("entry has no id", where=where)
            reason = item.get("statement", item.get("reason"))
            if not isinstance(reason, str) or not reason.strip():
                raise BadInput(f"entry {ident} has no reason (`statement:`)", where=where)
            expiry = item.get("expired_at", item.get("expires"))
            if expiry is None:
                raise BadInput(f"entry {ident} has no expiry date (`expired_at:`)", where=where)
            entries.append(
                IgnoreEntry(
                    kind=_SECTIONS[section],
                    id=ident.strip(),
                    reason=reason.strip(),
                    expires=_as_date(expiry, where),
                    paths=_str_list(item.get("paths"), f"{where}.paths"),
                    purls=_str_list(item.get("purls"), f"{where}.purls"),
                    source=f"{p}:{line}",
                )
            )
    return entries
