"""Value-level leak proof: no byte sequence of any build secret in a pushed image.

Everything a pull delivers is searched, straight from the registry by digest: the manifest, the
image config (env, labels, every history entry) and every layer blob, both as stored and, for tar
layers, decompressed member by member (file contents, names, link targets, PAX headers).

Needles per secret: the whole value (stripped), and for a multi-line secret (a CA bundle, a key
file, a pip.conf) each distinctive line of at least `MIN_LINE` bytes, so a partial copy is caught
too. A line is not distinctive when it is PEM armour (`-----BEGIN CERTIFICATE-----`) or when it
also occurs in the public reference image (the locked base, built from Debian packages without any
build secret): public CA certificates sit in both the host bundle and the base's bundle, and
counting them would make the gate cry wolf on every image.

A finding names the secret id, which needle (`value` or `line N`) and where (layer digest and file
path, `config` and JSON path, `history[i]`, `manifest`); it never carries the secret's bytes.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ahocorasick_rs import BytesAhoCorasick

from pipeline.adapters.registry import RegistryClient
from pipeline.errors import BadInput, InfraError
from pipeline.redact import MASK, MIN_SECRET_CHARS
from pipeline.schemas.leak import LeakFinding, LeakReport

MIN_LINE = 20  # shorter lines (base64 tails, "MIIB…" prefixes) are too common to be evidence
MIN_VALUE = MIN_SECRET_CHARS  # a shorter secret cannot be told apart from ordinary bytes (nor masked in text)
CHUNK = 8 * 1024 * 1024
_ARMOUR = re.compile(rb"^-----(BEGIN|END) [A-Z0-9 ]+-----$")
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Needle:
    secret_id: str
    label: str  # "value" or "line N" (1-based line of the secret file)
    data: bytes


# -- needles -----------------------------------------------------------------------------------------


def candidate_lines(value: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    seen: set[bytes] = set()
    for n, raw in enumerate(value.splitlines(), start=1):
        line = raw.strip()
        if len(line) < MIN_LINE or _ARMOUR.match(line) or line in seen:
            continue
        seen.add(line)
        out.append((n, line))
    return out


def build_needles(secrets: dict[str, bytes], public_lines: set[bytes] | None = None) -> tuple[list[Needle], dict[str, int]]:
    """Needles for every secret, and per secret how many of its lines were public (excluded)."""
    needles: list[Needle] = []
    excluded: dict[str, int] = {}
    for sid, value in secrets.items():
        whole = value.strip()
        if len(whole) < MIN_VALUE:
            raise BadInput(f"secret is {len(whole)} bytes; at least {MIN_VALUE} are needed to prove it absent",
                           where=f"build.secrets.{sid}")
        needles.append(Needle(sid, "value", whole))
        lines = candidate_lines(value)
        if len(lines) > 1 or (lines and lines[0][1] != whole):
            kept = [(n, line) for n, line in lines if not (public_lines and line in public_lines)]
            excluded[sid] = len(lines) - len(kept)
            needles += [Needle(sid, f"line {n}", line) for n, line in kept if line != whole]
    return needles, excluded


class _Matcher:
    """Multi-needle search over a stream of chunks (matches spanning chunk borders included)."""

    def __init__(self, needles: list[Needle]) -> None:
        self.needles = needles
        self._ac = BytesAhoCorasick([n.data for n in needles]) if needles else None
        self.overlap = max((len(n.data) for n in needles), default=1) - 1

    def search(self, data: bytes) -> set[int]:
        if self._ac is None or not data:
            return set()
        return {i for i, _s, _e in self._ac.find_matches_as_indexes(data, overlapping=True)}

    def search_stream(self, chunks: Iterable[bytes]) -> tuple[set[int], int]:
        hits: set[int] = set()
        tail = b""
        total = 0
        for chunk in chunks:
            total += len(chunk)
            hits |= self.search(tail + chunk)
            tail = (tail + chunk)[-self.overlap :] if self.overlap else b""
        return hits, total


def _read_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def _json_strings(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}" if path else str(k), str(k)  # keys too: a label or env name can hold it
            yield from _json_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_strings(v, f"{path}[{i}]")


# -- scanning ----------------------------------------------------------------------------------------


class LeakScanner:
    def __init__(self, registry: RegistryClient, needles: list[Needle]) -> None:
        self.registry = registry
        self.matcher = _Matcher(needles)
        self.needles = needles

    def _found(self, hits: set[int], **where: Any) -> list[LeakFinding]:
        if hits and where.get("path"):
            where["path"] = self._mask(where["path"])
        return [LeakFinding(secret_id=self.needles[i].secret_id, needle=self.needles[i].label, **where)
                for i in sorted(hits)]

    def _mask(self, text: str) -> str:
        """A path that holds a secret (a file named after it) is kept with the secret's bytes masked:
        findings name the place and the secret's id, never its value."""
        for needle in sorted(self.needles, key=lambda n: len(n.data), reverse=True):
            text = text.replace(needle.data.decode("utf-8", "surrogateescape"), MASK)
        return text

    def scan_json(self, raw: bytes, data: Any, *, where: str) -> list[LeakFinding]:
        findings: list[LeakFinding] = []
        covered: set[int] = set()
        history = data.get("history") if isinstance(data, dict) else None
        for i, entry in enumerate(history or []):
            for path, text in _json_strings(entry):
                hits = self.matcher.search(text.encode())
                covered |= hits
                findings += self._found(hits, where="history", history_index=i, path=path)
        for path, text in _json_strings(data):
            if path.startswith("history["):
                continue
            hits = self.matcher.search(text.encode())
            covered |= hits
            findings += self._found(hits, where=where, path=path)  # type: ignore[arg-type]
        # The raw bytes catch what decoding hides (e.g. a value split by JSON escapes is still
        # whole in a decoded string, but a non-string field is only visible raw).
        findings += self._found(self.matcher.search(raw) - covered, where=where, path="(raw)")  # type: ignore[arg-type]
        return findings

    def scan_layer(self, name: str, descriptor: dict[str, Any], report: LeakReport) -> list[LeakFinding]:
        digest = descriptor["digest"]
        findings: list[LeakFinding] = []
        blob = self.registry.blob_to_file(name, digest)
        try:
            hits, _ = self.matcher.search_stream(_read_chunks(blob))
            findings += self._found(hits, where="layer-blob", layer_digest=digest)
            blob.seek(0)
            magic = blob.read(4)
            blob.seek(0)
            stream: IO[bytes]
            if magic.startswith(_GZIP):
                stream = gzip.GzipFile(fileobj=blob, mode="rb")  # type: ignore[assignment]
            elif magic.startswith(_ZSTD):
                import zstandard

                stream = zstandard.ZstdDecompressor().stream_reader(blob)
            else:
                stream = blob  # type: ignore[assignment]
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for member in tar:
                        report.files_scanned += 1
                        names = "\n".join([member.name, member.linkname or "",
                                           *(f"{k}={v}" for k, v in member.pax_headers.items())])
                        findings += self._found(self.matcher.search(names.encode("utf-8", "surrogateescape")),
                                                where="layer", layer_digest=digest, path=member.name, in_name=True)
                        if member.isfile():
                            fh = tar.extractfile(member)
                            if fh is not None:
                                hits, n = self.matcher.search_stream(_read_chunks(fh))
                                report.bytes_scanned += n
                                findings += self._found(hits, where="layer", layer_digest=digest, path=member.name)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise InfraError(f"layer is not a readable tar ({exc}); cannot prove it free of secrets",
                                 where=f"{name}@{digest}") from exc
        finally:
            blob.close()
        report.layers_scanned += 1
        return findings

    def scan_image(self, repository: str, name: str, digest: str, secret_ids: list[str]) -> LeakReport:
        t0 = time.monotonic()
        report = LeakReport(image=f"{repository}@{digest}", digest=digest, secrets=secret_ids)
        for n in self.needles:
            report.needles[n.secret_id] = report.needles.get(n.secret_id, 0) + 1
        top = self.registry.manifest(name, digest)
        report.findings += self.scan_json(top.raw, top.data, where="manifest")
        manifest = self.registry.image_manifest(name, digest) if top.is_index else top
        if manifest is not top:
            report.findings += self.scan_json(manifest.raw, manifest.data, where="manifest")
        raw, config = self.registry.config(manifest, name)
        report.history_entries = len(config.get("history") or [])
        report.findings += self.scan_json(raw, config, where="config")
        for layer in manifest.layers:
            report.findings += self.scan_layer(name, layer, report)
        report.findings = _dedupe(report.findings)
        report.duration_s = round(time.monotonic() - t0, 3)
        return report


def _dedupe(findings: list[LeakFinding]) -> list[LeakFinding]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for f in findings:
        key = tuple(f.model_dump().values())
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def public_lines_in_image(registry: RegistryClient, name: str, digest: str, secrets: dict[str, bytes]) -> set[bytes]:
    """Which candidate lines of the secrets occur in a reference image built without them."""
    candidates: list[Needle] = []
    for sid, value in secrets.items():
        candidates += [Needle(sid, f"line {n}", line) for n, line in candidate_lines(value)]
    if not candidates:
        return set()
    scanner = LeakScanner(registry, candidates)
    probe = LeakReport(image=name, digest=digest, secrets=list(secrets))
    manifest = registry.image_manifest(name, digest)
    hits: list[LeakFinding] = []
    for layer in manifest.layers:
        hits += scanner.scan_layer(name, layer, probe)
    labels = {(f.secret_id, f.needle) for f in hits}
    return {c.data for c in candidates if (c.secret_id, c.label) in labels}


def check_image(registry: RegistryClient, repository: str, digest: str, secrets: dict[str, bytes], *,
                reference: str | None = None) -> LeakReport:
    """Scan `repository@digest` for every secret; `reference` (repo@sha256:…) supplies public lines."""
    from pipeline.adapters.registry import split_repository

    _host, name = split_repository(repository)
    public: set[bytes] = set()
    if reference:
        ref_repo, _, ref_digest = reference.partition("@")
        _h, ref_name = split_repository(ref_repo)
        public = public_lines_in_image(registry, ref_name, ref_digest, secrets)
    needles, excluded = build_needles(secrets, public)
    report = LeakScanner(registry, needles).scan_image(repository, name, digest, list(secrets))
    report.public_lines_excluded = excluded
    report.reference_image = reference
    return report

