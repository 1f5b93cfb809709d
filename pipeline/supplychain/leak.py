"""Value-level leak proof: no byte sequence of any build secret in a pushed image, as is or in a form a
build step commonly hides it in.

Everything a pull delivers is searched, straight from the registry by digest: the manifest, the
image config (env, labels, every history entry) and every layer blob, both as stored and, for tar
layers, decompressed member by member (file contents, names, link targets, PAX headers).

Needles per secret: the whole value (stripped), and for a multi-line secret (a CA bundle, a key
file, a pip.conf) each distinctive line of at least `MIN_LINE` bytes, so a partial copy is caught
too. A line is not distinctive when it is PEM armour (`-----BEGIN CERTIFICATE-----`) or when it
also occurs in the public reference image (the locked base, built from Debian packages without any
build secret): public CA certificates sit in both the host bundle and the base's bundle, and
counting them would make the gate cry wolf on every image.

Each needle is searched in the forms a layer commonly hides it in (`encodings`): as is, reversed, hex
(lower and upper case), base64 and base64url (at each of the three alignments a needle can have inside
a longer encoded text, so the needle's bytes need not start the encoded data). Rather than decoding
every file every way, the needles are encoded: one Aho-Corasick pass over each file finds all forms.
That pass reads the file with whitespace, line breaks and backslashes removed, and the needles likewise,
so a secret split across a line break (a shell line continuation included), or base64/hex wrapped at 64
or 76 columns, is still one match; a match is then checked against the file as it is, to tell "as is" from "split". A file that
starts as a gzip or zlib stream is searched again decompressed (up to `MAX_DECODED_BYTES`), once: one
whose content starts as another such stream is named in the report (`nested_compressed`). Each file
is read once, as it streams out of the layer. What the check cannot see is listed in
docs/SUPPLY_CHAIN.md.

A finding names the secret id, which needle (`value` or `line N`), how it was hidden (`encoding`) and
where (layer digest and file path, `config` and JSON path, `history[i]`, `manifest`); it never carries
the secret's bytes.
"""

from __future__ import annotations

import base64
import gzip
import re
import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ahocorasick_rs import BytesAhoCorasick, Implementation

from pipeline.adapters.registry import OciRegistry
from pipeline.errors import BadInput, InfraError
from pipeline.redact import MASK, MIN_SECRET_CHARS
from pipeline.schemas.leak import LeakDetails, LeakFinding

MIN_LINE = 20  # shorter lines (base64 tails, "MIIB…" prefixes) are too common to be evidence
MIN_VALUE = MIN_SECRET_CHARS  # a shorter secret cannot be told apart from ordinary bytes (nor masked in text)
CHUNK = 8 * 1024 * 1024
# A compressed file inside a layer is searched decompressed up to this much; past it (a bomb, or a huge
# archive) the rest is not searched and the report names the file.
MAX_DECODED_BYTES = 256 * 1024 * 1024
_ARMOUR = re.compile(rb"^-----(BEGIN|END) [A-Z0-9 ]+-----$")
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
# removed from files and needles alike for the search that sees through splits: whitespace and line
# breaks, and the backslash of a shell line continuation
_SPLITTERS = b" \t\r\n\x0b\x0c\\"
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_DFA_PATTERN_MAX = 4096  # longer patterns go to the compact automaton (see _Detector)
SPLIT = "split by line breaks or whitespace"
ENCODINGS = ("as is", "reversed", "hex", "base64", "base64url", SPLIT, "gzip", "zlib")


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


class _Automata:
    """Aho-Corasick over `patterns`, found by index. Patterns up to _DFA_PATTERN_MAX bytes (lines, tokens
    and their encodings: nearly all of them) are one DFA, the fastest kind by a factor of 2-3 here; the
    few longer ones (the whole value of a CA bundle or key file) a compact automaton, where a DFA would
    take a gigabyte of memory."""

    def __init__(self, patterns: list[bytes]) -> None:
        short = [i for i, p in enumerate(patterns) if len(p) <= _DFA_PATTERN_MAX]
        long = [i for i, p in enumerate(patterns) if len(p) > _DFA_PATTERN_MAX]
        self._acs = [(BytesAhoCorasick([patterns[i] for i in group], implementation=impl), group)
                     for group, impl in ((short, Implementation.DFA), (long, None)) if group]
        self.overlap = max((len(p) for p in patterns), default=1) - 1

    def find(self, data: bytes) -> set[int]:
        if not data:
            return set()
        return {group[i] for ac, group in self._acs for i, _s, _e in ac.find_matches_as_indexes(data, overlapping=True)}


class _Matcher:
    """Multi-needle search over a stream of chunks (matches spanning chunk borders included)."""

    def __init__(self, needles: list[Needle]) -> None:
        self.needles = needles
        self._ac = _Automata([n.data for n in needles])
        self.overlap = self._ac.overlap

    def search(self, data: bytes) -> set[int]:
        return self._ac.find(data)

    def search_stream(self, chunks: Iterable[bytes]) -> tuple[set[int], int]:
        hits: set[int] = set()
        tail = b""
        total = 0
        for chunk in chunks:
            total += len(chunk)
            hits |= self.search(tail + chunk)
            tail = _tail(tail, chunk, self.overlap)
        return hits, total


def encodings(data: bytes) -> list[tuple[str, bytes]]:
    """`data` in every form searched, as (encoding, bytes), without duplicates. For base64 each of the
    three alignments gives the run of encoded characters that depend on `data` alone (the characters
    shared with what comes before or after it differ from file to file)."""
    forms = [("as is", data), ("reversed", data[::-1]), ("hex", data.hex().encode()),
             ("hex", data.hex().upper().encode())]
    n = len(data)
    for k in range(3):
        encoded = base64.b64encode(bytes(k) + data)
        core = encoded[(8 * k + 5) // 6 : (8 * (k + n)) // 6]
        forms += [("base64", core), ("base64url", core.translate(_URLSAFE))]
    seen: set[bytes] = set()
    out = []
    for name, form in forms:
        if len(form) >= MIN_VALUE and form not in seen:
            seen.add(form)
            out.append((name, form))
    return out


@dataclass(frozen=True)
class _Form:
    needle: int  # index into the needles
    encoding: str
    data: bytes


class _Detector:
    """Every needle in every searched form, as automata: over the forms with splitters removed (searched
    in every chunk, over the chunk with splitters removed), and over the forms as they are (searched
    only in a chunk where the first found something, to tell an exact copy from a split one; and in every
    chunk for a form that is mostly whitespace). `decode=False`: exact bytes only.

    A multi-line secret with distinctive lines is searched encoded through those lines (a line of it is
    in any encoding of the whole), so its whole value is searched as is (and split) only."""

    def __init__(self, needles: list[Needle], *, decode: bool = True) -> None:
        self.needles = needles
        self.decode = decode
        with_lines = {n.secret_id for n in needles if n.label != "value"}
        self.forms = [_Form(i, enc, data) for i, n in enumerate(needles)
                      for enc, data in (encodings(n.data) if decode and not (n.label == "value" and n.secret_id
                                                                             in with_lines) else
                                        [("as is", n.data)])]
        loose = [f.data.translate(None, _SPLITTERS) for f in self.forms] if decode else []
        self.loose = [i for i, data in enumerate(loose) if len(data) >= MIN_VALUE]
        self.exact_only = set(range(len(self.forms))) - set(self.loose)
        self._loose_ac = _Automata([loose[i] for i in self.loose])
        self._exact_ac = _Automata([f.data for f in self.forms])
        self.loose_overlap = self._loose_ac.overlap
        self.exact_overlap = self._exact_ac.overlap

    def exact(self, data: bytes) -> set[int]:
        return self._exact_ac.find(data)

    def loose_hits(self, data: bytes) -> set[int]:
        return {self.loose[i] for i in self._loose_ac.find(data)}

    def scan(self, *, decompress: bool = True) -> _Scan:
        return _Scan(self, decompress=decompress and self.decode)

    def search(self, data: bytes, *, decompress: bool = True) -> set[tuple[int, str]]:
        """(needle index, encoding) of every match in `data`."""
        if not decompress:  # a name or a short string, tens of thousands of them: no stream around it
            loose = self.loose_hits(data.translate(None, _SPLITTERS)) if self.loose else set()
            exact = self.exact(data) if loose or self.exact_only else set()
            return {(self.forms[i].needle, self._label(i, exact)) for i in loose | exact}
        scan = self.scan()
        scan.feed(data)
        return scan.close()

    def _label(self, i: int, exact: set[int]) -> str:
        enc = self.forms[i].encoding
        if i in exact:
            return enc
        return SPLIT if enc == "as is" else f"{enc}, {SPLIT}"


class _Scan:
    """One stream (a file's content, a name, a JSON string) searched by a `_Detector`, chunk by chunk,
    matches spanning chunk borders included; a stream that starts as gzip or zlib is also searched
    decompressed, by a nested scan."""

    def __init__(self, det: _Detector, *, decompress: bool) -> None:
        self.det = det
        self._loose_tail = b""
        self._exact_tail = b""
        self.loose: set[int] = set()
        self.exact: set[int] = set()
        self._first = True
        self._decompress = decompress
        self.compressed_unsearched = False  # starts as a gzip/zlib stream it was not asked to decompress
        self._inflate: Any = None
        self._inflated: _Scan | None = None
        self._codec = ""
        self.decoded = 0
        self.decode_cut = False
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        det = self.det
        self.total += len(chunk)
        if self._first:
            self._first = False
            if self._decompress:
                self._start_inflate(chunk)
            else:
                self.compressed_unsearched = _compression(chunk) is not None
        if det.loose:
            bare = chunk.translate(None, _SPLITTERS)
            found = det.loose_hits(self._loose_tail + bare)
            self._loose_tail = _tail(self._loose_tail, bare, det.loose_overlap)
        else:
            found = set()
        if det.exact_only or found - self.exact:
            self.exact |= det.exact(self._exact_tail + chunk)
        self._exact_tail = _tail(self._exact_tail, chunk, det.exact_overlap)
        self.loose |= found
        if self._inflate is not None:
            self._inflate_feed(chunk)

    def close(self) -> set[tuple[int, str]]:
        """(needle index, encoding) of every match."""
        hits = {(self.det.forms[i].needle, self.det._label(i, self.exact)) for i in self.loose | self.exact}
        if self._inflated is not None:
            with_codec = self._inflated.close()
            hits |= {(n, f"{self._codec}, {enc}" if enc != "as is" else self._codec) for n, enc in with_codec}
        return hits

    # -- a compressed file, searched decompressed -------------------------------------------------
    def _start_inflate(self, head: bytes) -> None:
        found = _compression(head)
        if found is None:
            return
        self._codec, wbits = found
        self._wbits = wbits
        self._inflate = zlib.decompressobj(wbits=wbits)
        self._inflated = _Scan(self.det, decompress=False)

    @property
    def decompressed(self) -> bool:
        """Whether the stream was a gzip/zlib stream, searched decompressed too."""
        return self._inflated is not None and self.decoded > 0

    @property
    def nested_unsearched(self) -> bool:
        """Whether what the stream decompressed to is itself a gzip/zlib stream, searched as it is only
        (one level of compression is undone, never two)."""
        return self._inflated is not None and self._inflated.compressed_unsearched

    def _inflate_feed(self, data: bytes) -> None:
        try:
            while self._inflate is not None:
                out = self._inflate.decompress(data, CHUNK)  # at most CHUNK out per call: a bomb stays small
                data = self._inflate.unconsumed_tail
                if out:
                    self._emit(out)
                if self._inflate is None:
                    return
                if self._inflate.eof:
                    rest = self._inflate.unused_data
                    # another gzip member follows (`cat a.gz b.gz`); anything else ends the stream
                    self._inflate = zlib.decompressobj(wbits=self._wbits) if rest[:2] == _GZIP else None
                    data = rest
                elif not data and len(out) < CHUNK:
                    return  # all input taken and no output waiting
        except zlib.error:
            self._inflate = None  # not a compressed stream after all (a magic-number look-alike)

    def _emit(self, out: bytes) -> None:
        assert self._inflated is not None
        room = MAX_DECODED_BYTES - self.decoded
        if len(out) > room:
            out, self.decode_cut, self._inflate = out[:room], True, None
        self.decoded += len(out)
        self._inflated.feed(out)


def _compression(head: bytes) -> tuple[str, int] | None:
    """The codec and zlib `wbits` of a stream that starts as gzip (RFC 1952 magic) or zlib (RFC 1950: CM 8,
    a window of at most 32 KiB, a header check divisible by 31); None for anything else."""
    if head[:2] == _GZIP:
        return "gzip", 31
    if len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and ((head[0] << 8) | head[1]) % 31 == 0:
        return "zlib", 15
    return None


def _tail(before: bytes, chunk: bytes, n: int) -> bytes:
    """The last `n` bytes of `before + chunk`, without copying a large chunk whole."""
    if n <= 0:
        return b""
    return chunk[-n:] if len(chunk) >= n else (before + chunk)[-n:]


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
    def __init__(self, registry: OciRegistry, needles: list[Needle], *, decode: bool = True) -> None:
        self.registry = registry
        self.matcher = _Matcher(needles)  # the layer blob as stored: exact bytes only
        self.detector = _Detector(needles, decode=decode)
        self.needles = needles
        # every searched form, longest first (a line inside the value is masked with it)
        self._masked = [d.decode("utf-8", "surrogateescape")
                        for d in sorted({f.data for f in self.detector.forms}, key=len, reverse=True)]

    def _found(self, hits: set[tuple[int, str]], **where: Any) -> list[LeakFinding]:
        if hits and where.get("path"):
            where["path"] = self._mask(where["path"])
        return [LeakFinding(secret_id=self.needles[i].secret_id, needle=self.needles[i].label,
                            encoding=None if enc == "as is" else enc, **where)
                for i, enc in sorted(hits)]

    def _mask(self, text: str) -> str:
        """A path that holds a secret (a file named after it) is kept with the secret's bytes masked:
        findings name the place and the secret's id, never its value."""
        for form in self._masked:
            text = text.replace(form, MASK)
        return text

    def scan_json(self, raw: bytes, data: Any, *, where: str) -> list[LeakFinding]:
        findings: list[LeakFinding] = []
        covered: set[tuple[int, str]] = set()
        history = data.get("history") if isinstance(data, dict) else None
        for i, entry in enumerate(history or []):
            for path, text in _json_strings(entry):
                hits = self.detector.search(text.encode("utf-8", "surrogateescape"))
                covered |= hits
                findings += self._found(hits, where="history", history_index=i, path=path)
        for path, text in _json_strings(data):
            if path.startswith("history["):
                continue
            hits = self.detector.search(text.encode("utf-8", "surrogateescape"))
            covered |= hits
            findings += self._found(hits, where=where, path=path)  # type: ignore[arg-type]
        # The raw bytes catch what decoding hides (e.g. a value split by JSON escapes is still
        # whole in a decoded string, but a non-string field is only visible raw).
        findings += self._found(self.detector.search(raw) - covered, where=where, path="(raw)")  # type: ignore[arg-type]
        return findings

    def _scan_member(self, fh: IO[bytes], member: tarfile.TarInfo, report: LeakDetails) -> set[tuple[int, str]]:
        scan = self.detector.scan()
        for chunk in _read_chunks(fh):
            scan.feed(chunk)
        report.bytes_scanned += scan.total
        if scan.decompressed:
            report.files_decompressed += 1
        if scan.decode_cut:
            report.decode_limited.append(self._mask(member.name))
        if scan.nested_unsearched:
            report.nested_compressed.append(self._mask(member.name))
        return scan.close()

    def scan_layer(self, name: str, descriptor: dict[str, Any], report: LeakDetails) -> list[LeakFinding]:
        digest = descriptor["digest"]
        findings: list[LeakFinding] = []
        blob = self.registry.blob_to_file(name, digest)
        try:
            hits, _ = self.matcher.search_stream(_read_chunks(blob))
            findings += self._found({(i, "as is") for i in hits}, where="layer-blob", layer_digest=digest)
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
                        findings += self._found(self.detector.search(names.encode("utf-8", "surrogateescape"),
                                                                     decompress=False),
                                                where="layer", layer_digest=digest, path=member.name, in_name=True)
                        if member.isfile():
                            fh = tar.extractfile(member)
                            if fh is not None:
                                hits2 = self._scan_member(fh, member, report)
                                findings += self._found(hits2, where="layer", layer_digest=digest, path=member.name)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise InfraError(f"layer is not a readable tar ({exc}); cannot prove it free of secrets",
                                 where=f"{name}@{digest}") from exc
        finally:
            blob.close()
        report.layers_scanned += 1
        return findings

    def scan_image(self, repository: str, name: str, digest: str, secret_ids: list[str]) -> LeakDetails:
        t0 = time.monotonic()
        report = LeakDetails(image=f"{repository}@{digest}", digest=digest, secrets=secret_ids,
                            encodings=list(ENCODINGS) if self.detector.decode else ["as is"])
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


def public_lines_in_image(registry: OciRegistry, name: str, digest: str, secrets: dict[str, bytes]) -> set[bytes]:
    """Which candidate lines of the secrets occur in a reference image built without them."""
    candidates: list[Needle] = []
    for sid, value in secrets.items():
        candidates += [Needle(sid, f"line {n}", line) for n, line in candidate_lines(value)]
    if not candidates:
        return set()
    scanner = LeakScanner(registry, candidates, decode=False)  # public means present as is
    probe = LeakDetails(image=name, digest=digest, secrets=list(secrets))
    manifest = registry.image_manifest(name, digest)
    hits: list[LeakFinding] = []
    for layer in manifest.layers:
        hits += scanner.scan_layer(name, layer, probe)
    labels = {(f.secret_id, f.needle) for f in hits}
    return {c.data for c in candidates if (c.secret_id, c.label) in labels}


def check_image(registry: OciRegistry, repository: str, digest: str, secrets: dict[str, bytes], *,
                reference: str | None = None) -> LeakDetails:
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

