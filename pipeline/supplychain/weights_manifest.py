"""Content manifest of a model weights directory: the weights' release identity.

Standard library only, on purpose: the serving images copy this very file next to their readiness
helper (dockerfiles/runtime/llmgate-ready), so the pod checks its mounted weights with the same code
that computed the digest the release was gated on. Do not import anything outside the stdlib here.

The manifest lists every entry under the root, sorted by relative POSIX path (code-point order,
which is also UTF-8 byte order):

- a regular file: ``{"path": "model.safetensors", "sha256": "<hex>", "size": 1234}``
- a symbolic link: ``{"path": "tokenizer.json", "symlink": "blobs/abc"}``, the target as a path
  relative to the root, resolved but never followed for hashing (the file it points at has its
  own entry). A link that resolves outside the root, or to nothing, is refused: the digest would
  not cover what the server reads. (A Hugging Face cache snapshot links into ``../../blobs``;
  copy it with ``cp -rL`` or download with ``--local-dir`` first.)

Directories contribute only through the files they hold (an empty directory changes nothing);
FIFOs, sockets and devices are refused, as is a name that is not valid UTF-8.

Canonical bytes: ``json.dumps({"files": [...], "version": 1}, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`` encoded as UTF-8. The digest is
``"sha256:" + sha256(canonical bytes)``.

Files are hashed streamed in 1 MiB chunks read into one reused buffer (OpenSSL's SHA-256 through
hashlib, which releases the GIL), so memory stays flat whatever the shard size; see
benchmarks/model_digest.py for the throughput against ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

MANIFEST_VERSION = 1
CHUNK_BYTES = 1 << 20


class ManifestError(ValueError):
    """The directory cannot be given a trustworthy manifest; `where` names the path at fault."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(f"{where}: {message}")
        self.message = message
        self.where = where


@dataclass(frozen=True)
class Entry:
    path: str  # relative POSIX path
    size: int = 0
    sha256: str | None = None  # regular files
    symlink: str | None = None  # links: resolved target, relative to the root
    mtime_ns: int = 0  # for the stat cache only (with ctime_ns and ino); never part of the manifest
    ctime_ns: int = 0  # set by the kernel on every write or metadata change; a user cannot set it back
    ino: int = 0

    def manifest_item(self) -> dict[str, object]:
        if self.symlink is not None:
            return {"path": self.path, "symlink": self.symlink}
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    root: str
    entries: tuple[Entry, ...]
    raw: bytes  # canonical JSON
    digest: str
    files: int  # regular files
    bytes: int  # their total size
    hashed: int = 0  # how many files were read (the rest came from the stat cache)
    reused: list[str] = field(default_factory=list, compare=False)


def sha256_file(path: str | os.PathLike[str], chunk: int = CHUNK_BYTES) -> tuple[int, str]:
    """(bytes read, hex sha256) of one file, streamed through a single reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            total += n
    return total, h.hexdigest()


def _relpath(parts: tuple[str, ...], where: str) -> str:
    try:
        for p in parts:
            p.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ManifestError("file name is not valid UTF-8", where) from exc
    return "/".join(parts)


def _walk(root: str) -> list[tuple[str, str, os.stat_result]]:
    """(relative path, absolute path, lstat) of every non-directory entry, links not followed."""
    out: list[tuple[str, str, os.stat_result]] = []
    stack: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                items = list(it)
        except OSError as exc:
            raise ManifestError(f"cannot list directory: {exc.strerror}", directory) from exc
        for item in items:
            parts = (*prefix, item.name)
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as exc:
                raise ManifestError(f"cannot stat: {exc.strerror}", item.path) from exc
            if stat.S_ISDIR(st.st_mode):
                stack.append((item.path, parts))
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                out.append((_relpath(parts, item.path), item.path, st))
            else:
                raise ManifestError("not a regular file, directory or symbolic link", item.path)
    out.sort(key=lambda t: t[0])
    return out


def _link_target(root_real: str, path: str) -> str:
    real = os.path.realpath(path)
    if os.path.commonpath([root_real, real]) != root_real or real == root_real:
        raise ManifestError("symbolic link points outside the weights directory", path)
    if not os.path.exists(real):
        raise ManifestError("symbolic link points to nothing", path)
    return os.path.relpath(real, root_real).replace(os.sep, "/")


def canonical_bytes(entries: list[Entry] | tuple[Entry, ...]) -> bytes:
    doc = {"files": [e.manifest_item() for e in sorted(entries, key=lambda e: e.path)], "version": MANIFEST_VERSION}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest_of(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def build_manifest(
    root: str | os.PathLike[str],
    *,
    known: Mapping[str, Entry] | None = None,
    on_entry: Callable[[Entry], None] | None = None,
) -> Manifest:
    """The manifest of `root`.

    `known` is a stat cache (relative path -> Entry from an earlier manifest): a regular file whose
    size, mtime, ctime and inode all equal the cached entry's is not read again. mtime alone can be set
    back (`touch -d`) after a same-size rewrite; ctime cannot (the kernel sets it on every change), nor
    can a file swapped in by rename keep its inode. `on_entry` is called after each entry, so a caller
    can persist progress of a long first pass.
    """
    root_s = os.fspath(root)
    if not os.path.isdir(root_s):
        raise ManifestError("weights directory not found", root_s)
    root_real = os.path.realpath(root_s)
    entries: list[Entry] = []
    reused: list[str] = []
    hashed = 0
    for rel, path, st in _walk(root_real):
        if stat.S_ISLNK(st.st_mode):
            entry = Entry(path=rel, symlink=_link_target(root_real, path))
        else:
            cached = (known or {}).get(rel)
            if (cached is not None and cached.sha256 is not None and cached.size == st.st_size
                    and cached.mtime_ns == st.st_mtime_ns and cached.ctime_ns == st.st_ctime_ns
                    and cached.ino == st.st_ino):
                entry = cached
                reused.append(rel)
            else:
                try:
                    size, sha = sha256_file(path)
                    after = os.stat(path, follow_symlinks=False)
                except OSError as exc:
                    raise ManifestError(f"cannot read: {exc.strerror}", path) from exc
                if size != after.st_size or after.st_mtime_ns != st.st_mtime_ns or after.st_ctime_ns != st.st_ctime_ns:
                    raise ManifestError("file changed while it was being hashed", path)
                entry = Entry(path=rel, size=size, sha256=sha, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
                              ino=st.st_ino)
                hashed += 1
        entries.append(entry)
        if on_entry is not None:
            on_entry(entry)
    raw = canonical_bytes(entries)
    regular = [e for e in entries if e.symlink is None]
    return Manifest(root=root_s, entries=tuple(entries), raw=raw, digest=digest_of(raw), files=len(regular),
                    bytes=sum(e.size for e in regular), hashed=hashed, reused=reused)
