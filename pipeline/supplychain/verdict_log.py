"""The verdict log: every signed verdict, in the order the gates made them, under signed checkpoints.

Registry tags and attestation layers can be rewritten by anyone who can push; a store row can be
deleted by anyone with database access. Neither may make an older pass look like the newest word on
a release. So each gate that signs a verdict also appends an entry for it to an append-only log, and
signs a checkpoint over the whole log:

- entries are canonical JSON (`LogEntry`: repository, image digest, model digest, decision, run id,
  gate time, the target it was gated for and the sha256 of the verdict predicate);
- the log is an RFC 6962 Merkle tree over the entries (leaf hash SHA-256(0x00 || entry), node hash
  SHA-256(0x01 || left || right));
- a checkpoint is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): the signed note
  (https://c2sp.org/signed-note) `<origin>\\n<size>\\n<base64 root>\\n`, signed with the release key as
  an ECDSA note signature (type 0x02: key ID = the first four bytes of SHA-256 of the DER public key,
  signature ASN.1 DER over SHA-256 of the note text). The origin, also the key name, is
  `<image repository>/llmgate-verdicts/<log id>`: one log per repository, store and key, the id derived
  from the store's location and the key id (`log_id`).

Copies: the store (`verdict_log` and `verdict_log_checkpoints` tables, entry and checkpoint written
in one transaction), the registry (an OCI artifact tagged `llmgate-verdict-log-<log id>` in the repository,
written by attest) and, per verifier, the last checkpoint it accepted (`<work dir>/verdict-log/`).
A reader verifies each copy against its checkpoint, checks that every copy and the remembered
checkpoint are consistent (the smaller is a prefix of the larger: the root of the larger's first n
entries equals the smaller's root), and uses the largest. A copy that does not verify, copies that
disagree, or a log smaller than one this verifier has seen are refused (`LogRefused`, exit 1).
Promotion then requires the newest entry for the (image, model) pair gated for the target to be the
pass it acts on.
docs/SUPPLY_CHAIN.md has the threat model: what this detects and what it cannot.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.adapters import log_artifact
from pipeline.adapters.registry import OciRegistry, RegistryClient, split_repository
from pipeline.errors import GateFailed, InfraError, LlmgateError
from pipeline.store import Store, StoreLocation
from pipeline.supplychain import cosign_keys
from pipeline.supplychain.evidence import canonical_json

ORIGIN_SUFFIX = "/llmgate-verdicts"
SEEN_DIR = "verdict-log"  # under the work dir: the newest checkpoint this verifier accepted, per log
NOTE_SIG_ECDSA = 0x02
EM_DASH = "\u2014"
MAX_NOTE_SIGNATURES = 16  # the signed-note spec: verifiers must accept at least 16


class LogRefused(GateFailed):
    """The verdict log cannot vouch for what was asked (tampered, rolled back, or a newer verdict). Exit 1."""


def log_id(location: StoreLocation, public_key: ec.EllipticCurvePublicKey) -> str:
    """Which log this is: one per store and key, derived from where the promoter finds the store (the
    SQLite file, or the server URL without its password) and the key that signs its checkpoints, so a
    store writer cannot point a verifier at another store's log by editing rows, and a gate signing with
    another key writes to a log of its own that the pinned key never reads."""
    where = str(location.path.resolve()) if location.path is not None else location.shown
    return hashlib.sha256(f"{where}\n{cosign_keys.key_id(public_key)}".encode()).hexdigest()[:16]


def origin_for(repository: str, log: str) -> str:
    return f"{repository}{ORIGIN_SUFFIX}/{log}"


class LogEntry(BaseModel):
    """One verdict as the log records it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = 1
    repository: str
    image: str
    model: str | None
    decision: str
    run_id: str
    created: datetime
    verdict_sha256: str
    policy_sha256: str | None = None
    target: str | None = None  # the target it was gated for: a verdict speaks for that target only

    def leaf(self) -> str:
        return canonical_json(self.model_dump(mode="json")).decode()

    def describe(self) -> str:
        return f"run {self.run_id}, {self.decision}, gated {self.created.isoformat(timespec='seconds')}"


def verdict_sha256(predicate: dict[str, Any]) -> str:
    """How the log names a verdict: sha256 of its predicate as canonical JSON."""
    return hashlib.sha256(canonical_json(predicate)).hexdigest()


# -- RFC 6962 Merkle tree ----------------------------------------------------------------------------
def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _mth(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two smaller than n
    return _node(_mth(hashes[:k]), _mth(hashes[k:]))


def tree_root(leaves: Sequence[str]) -> bytes:
    """The RFC 6962 Merkle Tree Hash of `leaves` (the hash of the empty string for none)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    return _mth([_leaf_hash(leaf.encode()) for leaf in leaves])


# -- checkpoints (C2SP tlog-checkpoint, signed note) ------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str

    @property
    def root_b64(self) -> str:
        return base64.b64encode(self.root).decode()


def note_key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:4]


def sign_checkpoint(origin: str, size: int, root: bytes, key: cosign_keys.SigningKey) -> Checkpoint:
    text = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    signature = base64.b64encode(note_key_id(key.public) + key.sign(text.encode())).decode()
    return Checkpoint(origin, size, root, f"{text}\n{EM_DASH} {origin} {signature}\n")


def open_checkpoint(note: str, public_key: ec.EllipticCurvePublicKey, *, origin: str) -> Checkpoint:
    """A checkpoint of log `origin` whose note carries a signature by `public_key`; ValueError saying why not.
    As the signed-note spec asks: signatures of unknown keys are ignored, one of the known key must verify."""
    if any(ord(c) < 0x20 and c != "\n" for c in note) or not note.endswith("\n"):
        raise ValueError("not a signed note (control characters, or no final newline)")
    text, sep, sigs = note.rpartition("\n\n")
    if not sep:
        raise ValueError("not a signed note (no blank line before the signatures)")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise ValueError("checkpoint note has fewer than three lines")
    if lines[0] != origin:
        raise ValueError(f"checkpoint is of log {lines[0]!r}, not {origin!r}")
    if not lines[1].isdigit() or (lines[1].startswith("0") and lines[1] != "0"):
        raise ValueError(f"checkpoint tree size {lines[1]!r} is not a decimal number")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("checkpoint root hash is not base64") from exc
    if len(root) != 32:
        raise ValueError("checkpoint root hash is not 32 bytes")
    sig_lines = [s for s in sigs.split("\n") if s]
    if not sig_lines or len(sig_lines) > MAX_NOTE_SIGNATURES:
        raise ValueError(f"checkpoint carries {len(sig_lines)} signature lines")
    want = note_key_id(public_key)
    known = 0
    for line in sig_lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise ValueError("malformed signature line in the checkpoint note")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("checkpoint signature is not base64") from exc
        if parts[1] != origin or blob[:4] != want:
            continue  # another key's signature (a witness, a rotated key): not ours to judge
        known += 1
        if not cosign_keys.verify_signature(public_key, blob[4:], text.encode()):
            raise ValueError(f"checkpoint signature does not verify with key {cosign_keys.key_id(public_key)[:23]}…")
    if not known:
        raise ValueError(f"checkpoint is not signed by key {cosign_keys.key_id(public_key)[:23]}…")
    return Checkpoint(origin, int(lines[1]), root, note)


# -- reading copies ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Copy:
    """One copy of the log, verified: exactly the entries its checkpoint covers."""

    where: str  # "the store", "the registry"
    checkpoint: Checkpoint
    leaves: list[str]


def verified_copy(where: str, note: str | None, leaves: list[str], public_key: ec.EllipticCurvePublicKey,
                  origin: str) -> Copy | None:
    """`leaves` under checkpoint `note`, or None for an empty copy; LogRefused when they do not match."""
    if note is None:
        if leaves:
            raise LogRefused(f"{where} holds {len(leaves)} verdict log entries but no signed checkpoint",
                             where=origin)
        return None
    try:
        cp = open_checkpoint(note, public_key, origin=origin)
    except ValueError as exc:
        raise LogRefused(f"the checkpoint in {where} does not verify: {exc}", where=origin) from exc
    if len(leaves) < cp.size:
        raise LogRefused(f"{where} holds {len(leaves)} verdict log entries, its signed checkpoint {cp.size}: "
                         "entries were deleted", where=origin)
    if len(leaves) > cp.size:
        # Entry and checkpoint are written together, so entries past the newest checkpoint mean a checkpoint
        # was deleted (to hide the entries after it) or rows were written outside llmgate.
        raise LogRefused(f"{where} holds {len(leaves)} verdict log entries, but its newest signed checkpoint "
                         f"covers {cp.size}: checkpoints were deleted or entries planted", where=origin)
    if tree_root(leaves) != cp.root:
        raise LogRefused(f"the verdict log entries in {where} do not hash to its signed checkpoint (size {cp.size}): "
                         "entries were changed or reordered", where=origin)
    return Copy(where, cp, list(leaves))


def _store_leaves(entries: list[tuple[int, str]], origin: str) -> list[str]:
    leaves: list[str] = []
    for i, (idx, leaf) in enumerate(entries):
        if idx != i:
            raise LogRefused(f"the store's verdict log has no entry #{i} (deleted): its entries are not contiguous",
                             where=origin)
        leaves.append(leaf)
    return leaves


@dataclass
class LogView:
    """The largest consistent copy of one log, and where each copy stood."""

    origin: str
    checkpoint: Checkpoint | None
    leaves: list[str]
    sizes: dict[str, int] = field(default_factory=dict)  # "store" / "registry" / "seen" -> size
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.leaves)

    def entries(self) -> list[LogEntry | None]:
        out: list[LogEntry | None] = []
        for leaf in self.leaves:
            try:
                out.append(LogEntry.model_validate_json(leaf))
            except ValidationError:
                out.append(None)  # an entry of a format this version does not read: counted, never matched
        return out

    def newest_for(self, image: str, model: str | None, target: str | None) -> tuple[int, LogEntry] | None:
        """The newest entry for the pair gated for `target` (a verdict for another target supersedes nothing here)."""
        entries = self.entries()
        for i in range(len(entries) - 1, -1, -1):
            e = entries[i]
            if e is not None and e.image == image and e.model == model and e.target == target:
                return i, e
        return None

    def index_of(self, sha: str) -> int | None:
        for i, e in enumerate(self.entries()):
            if e is not None and e.verdict_sha256 == sha:
                return i
        return None

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"log {self.origin}: no entries yet"
        where = ", ".join(f"{k} {v}" for k, v in self.sizes.items())
        return f"log {self.origin}: {self.size} entries, root {self.checkpoint.root_b64} ({where})"


def combine(origin: str, copies: list[Copy], seen: Checkpoint | None) -> LogView:
    """The largest copy, once every copy and the remembered checkpoint are consistent with it."""
    ordered = sorted(copies, key=lambda c: c.checkpoint.size, reverse=True)
    best = ordered[0] if ordered else None
    size = best.checkpoint.size if best else 0
    if seen is not None and seen.size > size:
        have = f"{best.where} holds {size}" if best else "no copy can be read"
        raise LogRefused(f"the verdict log was rolled back: this verifier has seen a checkpoint of {seen.size} entries, "
                         f"but {have}", where=origin)
    others = [(c.where, c.checkpoint) for c in ordered[1:]] + ([("the checkpoint this verifier saw last", seen)]
                                                             if seen is not None else [])
    for where, cp in others:
        assert best is not None
        if tree_root(best.leaves[:cp.size]) != cp.root:
            raise LogRefused(f"{where} (size {cp.size}) and {best.where} (size {size}) disagree on the first "
                             f"{cp.size} entries: the log was rewritten", where=origin)
    view = LogView(origin, best.checkpoint if best else None, list(best.leaves) if best else [])
    for c in copies:
        view.sizes["store" if c.where == "the store" else "registry"] = c.checkpoint.size
    if seen is not None:
        view.sizes["seen"] = seen.size
    return view


# -- the reader/writer the stages, the guard and `verify` use --------------------------------------------
class VerdictLog:
    """One store's logs, their registry copies and this verifier's memory, checked with the public key."""

    def __init__(self, store: Store | None, public_key: ec.EllipticCurvePublicKey, *, seen_dir: Path | None,
                 registry: OciRegistry | None = None, read_registry: bool = True,
                 location: StoreLocation | None = None) -> None:
        self.store = store
        self.public_key = public_key
        self.seen_dir = seen_dir
        self._registry = registry
        self.read_registry = read_registry
        where = location or (store.location if store is not None else None)
        if where is None:
            raise InfraError("a verdict log is named after its store: give the store or its location")
        self.log_id = log_id(where, public_key)

    def origin(self, repository: str) -> str:
        return origin_for(repository, self.log_id)

    def _client(self, repository: str) -> tuple[OciRegistry, str]:
        host, name = split_repository(repository)
        if self._registry is None or self._registry.host != host:
            self._registry = RegistryClient(host)
        return self._registry, name

    def _seen_path(self, origin: str) -> Path | None:
        if self.seen_dir is None:
            return None
        return self.seen_dir / (hashlib.sha256(origin.encode()).hexdigest()[:16] + ".checkpoint")

    def _seen(self, origin: str) -> Checkpoint | None:
        path = self._seen_path(origin)
        if path is None or not path.is_file():
            return None
        try:
            return open_checkpoint(path.read_text(), self.public_key, origin=origin)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise LogRefused(f"the checkpoint this verifier remembers ({path}) does not verify: {exc}",
                             where=origin) from exc

    def remember(self, view: LogView) -> None:
        """Keep the view's checkpoint as the newest this verifier has seen (only ever growing)."""
        path = self._seen_path(view.origin)
        if path is None or view.checkpoint is None:
            return
        seen = self._seen(view.origin)
        if seen is not None and seen.size >= view.checkpoint.size:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(view.checkpoint.note)
            tmp.replace(path)
        except OSError:
            pass  # a verifier that cannot remember still checked this view; it only loses rollback memory

    def _store_copy(self, origin: str, notes: list[str]) -> Copy | None:
        if self.store is None:
            notes.append("no store to read the log from")
            return None
        stored = self.store.verdict_log(origin)
        return verified_copy("the store", stored.checkpoint, _store_leaves(stored.entries, origin), self.public_key,
                             origin)

    def _registry_copy(self, repository: str, origin: str, notes: list[str]) -> Copy | None:
        if not self.read_registry:
            return None
        try:
            reg, name = self._client(repository)
            pulled = log_artifact.pull(reg, name, log_artifact.tag_for(self.log_id))
        except LlmgateError as exc:
            notes.append(f"registry copy not read: {exc.render().splitlines()[0]}")
            return None
        if pulled is None:
            notes.append("the registry holds no copy yet")
            return None
        return verified_copy("the registry", pulled.checkpoint, pulled.entries, self.public_key, origin)

    def view(self, repository: str) -> LogView:
        """The log of `repository`, every copy checked (LogRefused if any is tampered with)."""
        origin = self.origin(repository)
        notes: list[str] = []
        copies = [c for c in (self._store_copy(origin, notes), self._registry_copy(repository, origin, notes))
                  if c is not None]
        view = combine(origin, copies, self._seen(origin))
        view.notes.extend(notes)
        self.remember(view)  # verified: from now on a smaller or different log is refused here
        return view

    def append(self, repository: str, entry: LogEntry, key: cosign_keys.SigningKey) -> tuple[int, LogView]:
        """Append `entry` to the store's log under a new signed checkpoint; its index and the new view."""
        origin = self.origin(repository)
        if self.store is None:
            raise InfraError("no store to append the verdict to", where=origin)
        for _ in range(16):
            view = self.view(repository)
            stored = view.sizes.get("store", 0)
            if view.size > stored:
                raise LogRefused(f"the store's verdict log ({stored} entries) is behind the newest copy "
                                 f"({view.size}): the store was rolled back, or another store appends to this log",
                                 where=origin)
            index = view.size
            leaf = entry.leaf()
            cp = sign_checkpoint(origin, index + 1, tree_root([*view.leaves, leaf]), key)
            if self.store.append_verdict_log(origin, index, leaf, cp.note):
                done = LogView(origin, cp, [*view.leaves, leaf], {**view.sizes, "store": index + 1}, view.notes)
                self.remember(done)
                return index, done
            # another gate took this index first: read the log again (a planted row is refused there)
        raise InfraError("could not append to the verdict log: other gates kept appending first", where=origin)

    def publish(self, repository: str, view: LogView) -> str | None:
        """Put `view` in the registry unless the registry already holds it (or more); the manifest digest."""
        if view.checkpoint is None or view.sizes.get("registry", -1) >= view.size:
            return None
        reg, name = self._client(repository)
        return log_artifact.push(reg, name, log_artifact.tag_for(self.log_id), view.checkpoint.note, view.leaves)


def require_newest(view: LogView, *, image: str, model: str | None, target: str | None, verdict_sha: str,
                   what: str) -> int:
    """The index of the verdict `verdict_sha` if it is the newest entry for (image, model) gated for `target`;
    LogRefused otherwise."""
    mine = view.index_of(verdict_sha)
    entry = view.entries()[mine] if mine is not None else None
    if mine is None or entry is None or (entry.image, entry.model, entry.target) != (image, model, target):
        raise LogRefused(f"{what} is not in the verdict log for this pair ({view.describe()})", where=view.origin)
    newest = view.newest_for(image, model, target)
    if newest is not None and newest[0] != mine:
        raise LogRefused(f"{what} (log entry #{mine}) is not the newest verdict for this pair: entry #{newest[0]} "
                         f"({newest[1].describe()}) is", where=view.origin)
    return mine
