"""Hostile input, the leak class: a build secret written into a layer in a form a build step commonly
hides it in (base64, base64url, hex, gzip, zlib, reversed bytes, split across a line break or wrapped)
is found, named by its encoding, and never shown; clean look-alikes are not findings.

One synthetic image on the real local registry holds every form (one file each), and `check_image`
runs over it as the leak stage does; the decoding itself is also checked without a registry.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import secrets
import tarfile
import zlib

import pytest

from pipeline.adapters.registry import RegistryClient
from pipeline.supplychain.leak import build_needles, check_image

TOKEN = ("tok_" + secrets.token_hex(24)).encode()
PIP_LINE = b"index-url = https://ci:" + secrets.token_hex(16).encode() + b"@pypi.example/simple"
PIP_CONF = b"[global]\n" + PIP_LINE + b"\n"
SECRETS = {"token": TOKEN, "pip_conf": PIP_CONF}


def _wrap(text: bytes, width: int) -> bytes:
    return b"\n".join(text[i:i + width] for i in range(0, len(text), width))


# file name in the image -> (its content, the secret it hides)
HIDDEN: dict[str, tuple[bytes, str]] = {
    "base64": (b"Authorization: Basic " + base64.b64encode(b"ci:" + TOKEN) + b"\n", "token"),
    "base64url": (b"t=" + base64.urlsafe_b64encode(b"\xfb\xef" + TOKEN + b"\xff"), "token"),
    "hex": (b"secret_hex = " + TOKEN.hex().encode(), "token"),
    "HEX": (TOKEN.hex().upper().encode(), "token"),
    "gzip": (gzip.compress(b"token: " + TOKEN + b"\n", mtime=0), "token"),
    "gzip-two-members": (gzip.compress(b"x" * 1000, mtime=0) + gzip.compress(TOKEN, mtime=0), "token"),
    "zlib": (zlib.compress(b"token=" + TOKEN), "token"),
    "reversed": (b"echo " + TOKEN[::-1] + b" | rev", "token"),
    "split-newline": (TOKEN[:17] + b"\n" + TOKEN[17:], "token"),
    "split-continuation": (b"TOKEN=" + TOKEN[:9] + b"\\\n    " + TOKEN[9:], "token"),
    "base64-wrapped-76": (_wrap(base64.b64encode(PIP_CONF), 76), "pip_conf"),
    "hex-wrapped-64": (_wrap(PIP_CONF.hex().encode(), 64), "pip_conf"),
    "gzip-of-base64-wrapped": (gzip.compress(_wrap(base64.b64encode(b"!" + TOKEN), 20), mtime=0), "token"),
}
CLEAN = {  # look-alikes: the same shapes without the secret
    "clean-base64": base64.b64encode(secrets.token_bytes(200)),
    "clean-gzip": gzip.compress(b"nothing secret\n" * 100, mtime=0),
    "clean-hex": secrets.token_hex(300).encode(),
    "zlib-look-alike": b"x\x9cnot really zlib",
}


def test_every_hidden_form_is_found_without_a_registry() -> None:
    """The decoder on its own: each form is a match of the right secret, with its encoding named."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    det = _Detector(needles)
    for name, (content, secret) in HIDDEN.items():
        hits = {(needles[i].secret_id, enc) for i, enc in det.search(content)}
        assert any(sid == secret for sid, _ in hits), f"{name}: not found"
        assert all(enc != "as is" for _sid, enc in hits), f"{name}: {hits}"
    for name, content in CLEAN.items():
        assert det.search(content) == set(), name


def test_a_hidden_form_split_across_chunk_borders_is_found() -> None:
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    det = _Detector(needles)
    data = b"a" * 5000 + HIDDEN["base64-wrapped-76"][0] + b"z" * 100
    for step in (1, 7, 64, 4099):
        scan = det.scan()
        for i in range(0, len(data), step):
            scan.feed(data[i:i + step])
        assert {needles[i].secret_id for i, _e in scan.close()} == {"pip_conf"}, step


def test_a_copy_fed_in_pieces_shorter_than_the_needle_is_still_named_an_exact_copy() -> None:
    """A stream can arrive in pieces shorter than a needle (a slow pipe, a tar member read in small
    blocks): the exact search keeps enough of the earlier pieces to call an unbroken copy "as is", not
    "split"."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    det = _Detector(needles)
    data = b"token: " + TOKEN + b"\n"
    for step in (1, 5, len(TOKEN) - 1):
        scan = det.scan()
        for i in range(0, len(data), step):
            scan.feed(data[i:i + step])
        assert {(needles[i].secret_id, enc) for i, enc in scan.close()} == {("token", "as is")}, step


def test_a_file_counts_as_decompressed_once_its_stream_gave_a_byte() -> None:
    """The report's files_decompressed counts the files searched decompressed: a gzip or zlib stream of
    one byte is one; an empty stream and a gzip look-alike are none."""
    from pipeline.supplychain.leak import _Detector

    det = _Detector(build_needles(SECRETS)[0])
    for content, counted in ((gzip.compress(b"!", mtime=0), True), (zlib.compress(b"!"), True),
                             (gzip.compress(b"", mtime=0), False), (b"\x1f\x8bnot gzip at all", False)):
        scan = det.scan()
        scan.feed(content)
        assert scan.close() == set() and scan.decompressed is counted, content


def test_a_name_holding_a_secret_is_told_exact_from_split() -> None:
    """Names, link targets and JSON strings are searched without the stream machinery: a secret in one as
    is is named an exact copy, split by whitespace it is "split", and a secret that is mostly whitespace
    (too short without it to be searched split) is still found as is."""
    from pipeline.supplychain.leak import SPLIT, _Detector

    padded = b"ab   cd   ef"
    needles, _ = build_needles(SECRETS | {"padded": padded})
    det = _Detector(needles)

    def found(name: bytes) -> set[tuple[str, str]]:
        return {(needles[i].secret_id, enc) for i, enc in det.search(name, decompress=False)}

    assert found(b"var/cache/" + TOKEN) == {("token", "as is")}
    assert found(b"var/cache/" + TOKEN[:9] + b" " + TOKEN[9:]) == {("token", SPLIT)}
    assert found(b"etc/" + padded + b".txt") == {("padded", "as is")}
    assert found(b"etc/" + padded.replace(b" ", b"")) == set()


def test_a_name_holding_a_multi_line_secret_is_masked_as_one_value() -> None:
    """A finding's path keeps the place and masks the secret: a name holding a whole multi-line secret shows
    one mask, not a mask per line with the line break between them."""
    from pipeline.supplychain.leak import LeakScanner

    key = PIP_LINE + b"\nextra-index-url = https://ci:" + secrets.token_hex(16).encode() + b"@mirror.example/simple"
    needles, _ = build_needles({"pip_conf": key})
    assert [n.label for n in needles] == ["value", "line 1", "line 2"]
    findings = LeakScanner(None, needles).scan_json(b"{}", {"Labels": {key.decode(): "x"}},  # type: ignore[arg-type]
                                                     where="config")
    assert {(f.needle, f.path) for f in findings} == {(label, "Labels.[REDACTED]") for label in ("value", "line 1",
                                                                                                    "line 2")}


def test_a_gzip_file_that_refers_back_the_full_32_kib_window_is_searched_decompressed() -> None:
    """gzip's deflate refers back up to 32 KiB: a file repeating a 20 KiB block is inflated whole, so the
    secret between the copies is found (a smaller window fails on the far reference and sees nothing)."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    block = secrets.token_bytes(20_000)
    scan = _Detector(needles).scan()
    scan.feed(gzip.compress(block + b"token: " + TOKEN + block, mtime=0))
    assert {(needles[i].secret_id, enc) for i, enc in scan.close()} == {("token", "gzip")}
    assert scan.decoded == 2 * len(block) + len(b"token: ") + len(TOKEN)


def test_a_secret_of_the_minimum_length_split_by_a_line_break_is_found() -> None:
    """MIN_VALUE (8) bytes are enough to be searched in every form, split ones included."""
    from pipeline.supplychain.leak import MIN_VALUE, SPLIT, _Detector

    pin = b"k7#Qz9!w"
    assert len(pin) == MIN_VALUE
    needles, _ = build_needles({"pin": pin})
    hits = _Detector(needles).search(b"PIN=" + pin[:4] + b"\n" + pin[4:] + b"\n")
    assert {(needles[i].secret_id, enc) for i, enc in hits} == {("pin", SPLIT)}


def test_a_value_that_differs_from_the_secret_only_in_its_last_bytes_is_not_the_secret() -> None:
    """Every form stands for the whole secret: a rotated token that shares all but its last bytes with
    the planted one (the next value of a counter, a prod/test pair) is not reported in any encoding,
    while the secret itself is found in each."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles({"token": TOKEN})
    det = _Detector(needles)
    other = TOKEN[:-3] + bytes(b ^ 0x01 for b in TOKEN[-3:])
    for prefix in (b"", b"k", b"k:"):  # each base64 alignment
        for value, found in ((TOKEN, {("token", "base64")}), (other, set())):
            content = b"Authorization: Basic " + base64.b64encode(prefix + value) + b"\n"
            assert {(needles[i].secret_id, e) for i, e in det.search(content)} == found, (prefix, value)
    for content in (other, other.hex().encode(), other[::-1], base64.urlsafe_b64encode(b"x" + other)):
        assert det.search(content) == set(), content


def test_a_secret_longer_than_the_dfa_patterns_is_found_in_every_form() -> None:
    """A one-line secret of several KiB (a service-account key or a long JWT on one line) is searched by the
    compact automaton: found as is, hex and base64 like a short one."""
    from pipeline.supplychain.leak import _DFA_PATTERN_MAX, _Detector

    blob = base64.b64encode(secrets.token_bytes(4000))
    assert len(blob) > _DFA_PATTERN_MAX and b"\n" not in blob
    needles, _ = build_needles({"sa_key": blob})
    det = _Detector(needles)
    for content, enc in ((b"key=" + blob, "as is"), (blob.hex().encode(), "hex"),
                         (base64.b64encode(b"k:" + blob), "base64")):
        assert {(needles[i].secret_id, e) for i, e in det.search(content)} == {("sa_key", enc)}, enc


def test_a_gzip_file_arriving_in_pieces_is_inflated_across_them() -> None:
    """A compressed file larger than one read arrives in several pieces: each piece is inflated as it comes
    and the inflater waits for the next one, so a secret past the first piece is found."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    rows = b"".join(b"row %06d\n" % i for i in range(8000))  # compressible: deflate codes, no stored block
    content = rows + b"token: " + TOKEN + b"\n" + rows
    gz = gzip.compress(content, mtime=0)
    assert TOKEN not in gz and len(gz) > 4 * 1024
    scan = _Detector(needles).scan()
    for i in range(0, len(gz), 1024):
        scan.feed(gz[i:i + 1024])
    assert {(needles[i].secret_id, enc) for i, enc in scan.close()} == {("token", "gzip")}
    assert scan.decoded == len(content)


def test_what_a_compressed_stream_showed_stays_found_whatever_pieces_follow_it() -> None:
    """A file is read in pieces; only its first piece says whether it is compressed. A later piece that
    happens to start with the gzip magic (trailing data after the stream, another file's bytes) neither
    restarts the inflater nor drops what the stream already showed."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    gz = gzip.compress(b"token: " + TOKEN + b"\n", mtime=0)
    scan = _Detector(needles).scan()
    scan.feed(gz)
    scan.feed(b"\x1f\x8b" + bytes(64))
    assert {(needles[i].secret_id, enc) for i, enc in scan.close()} == {("token", "gzip")}


def test_a_zlib_stream_is_recognised_by_its_header_whatever_bytes_end_it() -> None:
    """A zlib stream is known by its two header bytes alone; its last bytes (the Adler-32 checksum, any
    value) have no say, so a stream ending in a high byte is searched decompressed like any other."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    streams = [zlib.compress(b"token=" + TOKEN + bytes([i])) for i in range(256)]  # every low checksum byte
    for z in (next(z for z in streams if z[-1] >= 0x80), next(z for z in streams if z[-1] < 0x80)):
        scan = _Detector(needles).scan()
        scan.feed(z)
        assert {(needles[i].secret_id, enc) for i, enc in scan.close()} == {("token", "zlib")}, z[-1]


def test_a_compressed_file_exactly_at_the_limit_is_not_reported_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.supplychain import leak

    monkeypatch.setattr(leak, "MAX_DECODED_BYTES", 1 << 20)
    scan = leak._Detector(build_needles(SECRETS)[0]).scan()
    scan.feed(gzip.compress(bytes(1 << 20), mtime=0))
    assert scan.close() == set() and scan.decoded == 1 << 20 and not scan.decode_cut


def test_a_compressed_stream_inside_a_compressed_file_is_named_not_searched_twice_undone() -> None:
    """One level of compression is undone (docs/SUPPLY_CHAIN.md): a secret under two is not found there,
    and the scan says so instead of passing the file in silence; once-compressed files say nothing."""
    from pipeline.supplychain.leak import _Detector

    det = _Detector(build_needles(SECRETS)[0])
    for outer, inner in ((gzip.compress, zlib.compress), (zlib.compress, lambda b: gzip.compress(b, mtime=0))):
        scan = det.scan()
        scan.feed(outer(inner(b"token=" + TOKEN)))
        assert scan.close() == set() and scan.decompressed and scan.nested_unsearched
    once = det.scan()
    once.feed(gzip.compress(b"token=" + TOKEN, mtime=0))
    assert once.close() and not once.nested_unsearched


def test_a_stream_is_taken_for_zlib_exactly_when_its_header_is_one_rfc_1950_allows() -> None:
    """Every two-byte start: zlib when CM (low nibble) is 8, CINFO (high nibble, log2 of the window less 8)
    is at most 7 and the 16-bit header is a multiple of 31; gzip on its magic; nothing else."""
    from pipeline.supplychain.leak import _compression

    for first in range(256):
        for second in range(256):
            head = bytes((first, second))
            rfc1950 = first % 16 == 8 and first // 16 <= 7 and (first * 256 + second) % 31 == 0
            expected = ("gzip", 31) if head == b"\x1f\x8b" else ("zlib", 15) if rfc1950 else None
            assert _compression(head + b"rest") == expected, head
    assert _compression(b"x") is None and _compression(b"") is None


def test_the_leak_stage_names_a_file_under_two_compressions_by_its_masked_path(tmp_path) -> None:
    """The stage reason and report name such a file, with a secret in its path masked, over the registry
    seam (the in-memory registry that answers as distribution does)."""
    from pipeline.adapters.bundle import Adapters
    from pipeline.config import PipelineConfig, SecretSource
    from pipeline.models import ImageRef, RunRecord, StageStatus
    from pipeline.schemas import LeakDetails
    from pipeline.stages.leak import leak_stage
    from pipeline.workspace import Workspace
    from tests.doubles.oci_registry import OciRegistryDouble
    from tests.stage_helpers import stage_ctx

    host, name = "127.0.0.1:5000", "llmgate/test-nested"
    reg = RegistryClient(host, transport=OciRegistryDouble())
    nested = gzip.compress(gzip.compress(b"nothing to see", mtime=0), mtime=0)
    files = {"srv/logs.gz.gz": nested, f"srv/{TOKEN.decode()}.gz": nested, "srv/once.gz": gzip.compress(b"x"),
             "srv/empty.gz": gzip.compress(b"", mtime=0)}  # decompresses to nothing: nothing nested in it
    digest = _push(reg, name, files, [])
    (tmp_path / "t").write_bytes(TOKEN)
    cfg = PipelineConfig()
    cfg.build.secrets = {"token": SecretSource(file=str(tmp_path / "t"))}
    run = RunRecord(image=ImageRef(repository=f"{host}/{name}", digest=digest))
    res = leak_stage(run, stage_ctx(cfg, Workspace(tmp_path / "ws"), adapters=Adapters(registries={host: reg})))
    report = res.details_as(LeakDetails)
    assert report is not None and res.status is StageStatus.OK
    assert report.nested_compressed == ["srv/logs.gz.gz", "srv/[REDACTED].gz"] and report.files_decompressed == 3
    assert report.decode_limited == []  # nothing was cut at the decompressed-size limit
    assert "2 compressed file(s) hold another compressed stream, searched without undoing that second " \
           "compression: srv/logs.gz.gz, srv/[REDACTED].gz" in (res.reason or "")
    assert TOKEN.decode() not in (res.reason or "") and TOKEN.decode() not in report.model_dump_json()


def test_a_copy_straddling_a_long_first_piece_is_an_exact_copy() -> None:
    """The exact search keeps the last bytes of a piece longer than its overlap, so a copy that starts near
    the end of such a piece and ends in the next is still called "as is"."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    det = _Detector(needles)
    first = det.exact_overlap + 5  # longer than the overlap, by less than the copy before its end
    data = b"x" * (first - 10) + TOKEN + b"\n"
    scan = det.scan()
    scan.feed(data[:first])
    scan.feed(data[first:])
    assert {(needles[i].secret_id, enc) for i, enc in scan.close()} == {("token", "as is")}


def test_every_form_split_one_byte_before_its_end_by_a_chunk_border_is_found() -> None:
    """A match that ends one byte into the next chunk needs all but one of its bytes carried over: the
    longest form of a needle is found across a border at that point, as is the blob's exact needle."""
    from pipeline.supplychain.leak import _Detector, _Matcher

    needles, _ = build_needles({"token": TOKEN})
    det = _Detector(needles)
    for form in det.forms:  # the longest of them needs the whole overlap
        scan = det.scan()
        scan.feed(b"." * 7 + form.data[:-1])
        scan.feed(form.data[-1:] + b".")
        assert scan.close() == {(0, form.encoding)}, (form.encoding, len(form.data))
    assert _Matcher(needles).search_stream([b"." * 3 + TOKEN[:-1], TOKEN[-1:]]) == ({0}, len(TOKEN) + 3)


def test_a_name_holding_a_secret_as_is_is_labelled_as_is_and_a_split_one_as_split() -> None:
    """Names, link targets and PAX headers are searched without the stream machinery; the exact search
    still runs where the loose one found something, so an exact copy is never called split."""
    from pipeline.supplychain.leak import SPLIT, _Detector

    needles, _ = build_needles({"token": TOKEN})
    det = _Detector(needles)
    assert det.search(b"etc/app/" + TOKEN + b".conf", decompress=False) == {(0, "as is")}
    assert det.search(b"etc/" + TOKEN[:20] + b"\n" + TOKEN[20:], decompress=False) == {(0, SPLIT)}
    assert det.search(b"etc/" + TOKEN[::-1], decompress=False) == {(0, "reversed")}
    assert det.search(b"etc/app.conf", decompress=False) == set()


def test_a_config_string_after_the_history_is_named_by_its_own_path() -> None:
    """The history entries are named by their index and skipped in the walk over the rest of the
    config, which goes on past them: a secret in a field that comes after the history keeps its path."""
    from pipeline.supplychain.leak import LeakScanner

    needles, _ = build_needles(SECRETS)
    config = {"history": [{"created_by": "/bin/sh -c make"}], "config": {"Env": ["TOKEN=" + TOKEN.decode()]}}
    raw = json.dumps(config).encode()
    findings = LeakScanner(None, needles).scan_json(raw, config, where="config")  # type: ignore[arg-type]
    assert {(f.secret_id, f.where, f.path) for f in findings} == {("token", "config", "config.Env[0]")}


def test_a_line_of_a_multi_line_secret_is_found_encoded_on_its_own() -> None:
    """A pip.conf line base64-encoded alone (a `Basic` header built from it), inside other text, is found
    through the line's own encodings."""
    from pipeline.supplychain.leak import _Detector

    needles, _ = build_needles(SECRETS)
    hits = _Detector(needles).search(b"auth: " + base64.b64encode(b"u:" + PIP_LINE + b"\nmore: text") + b" trailing")
    assert {(needles[i].secret_id, needles[i].label, enc) for i, enc in hits} == {("pip_conf", "line 2", "base64")}


def test_a_secret_in_a_json_list_is_named_by_its_index() -> None:
    from pipeline.supplychain.leak import LeakScanner

    needles, _ = build_needles(SECRETS)
    config = {"config": {"Env": ["PATH=/usr/bin", "TOKEN=" + TOKEN.decode()]}}
    findings = LeakScanner(None, needles).scan_json(b"{}", config, where="config")  # type: ignore[arg-type]
    assert {(f.secret_id, f.path) for f in findings} == {("token", "config.Env[1]")}


def test_a_gzip_bomb_is_searched_only_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed file whose content is far larger than the limit: searched up to the limit, the cut
    is reported, memory stays near one chunk."""
    from pipeline.supplychain import leak

    monkeypatch.setattr(leak, "MAX_DECODED_BYTES", 4 << 20)
    needles, _ = build_needles(SECRETS)
    scan = leak._Detector(needles).scan()
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB in ~64 KiB
    scan.feed(bomb)
    assert scan.close() == set() and scan.decode_cut and scan.decoded == 4 << 20


def test_a_compressed_file_is_searched_to_256_mib_exactly_and_a_byte_more_is_named_as_cut() -> None:
    """docs/SUPPLY_CHAIN.md promises a compressed file is searched decompressed up to 256 MiB: a secret
    ending at that byte is found, and the byte after it makes the file reported as cut."""
    from pipeline.supplychain import leak

    needles, _ = build_needles(SECRETS)
    limit = 256 * 1024 * 1024
    z, block = zlib.compressobj(1, wbits=31), bytes(8 << 20)
    gz = b"".join(z.compress(block) for _ in range(limit // len(block) - 1))
    gz += z.compress(block[len(TOKEN):] + TOKEN + b"!") + z.flush()
    scan = leak._Detector(needles).scan()
    scan.feed(gz)
    assert {(needles[i].secret_id, enc) for i, enc in scan.close()} == {("token", "gzip")}
    assert scan.decode_cut and scan.decoded == limit


# -- on the registry, as the leak stage runs it -------------------------------------------------------------
def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _push(reg: RegistryClient, name: str, files: dict[str, bytes], history: list[dict[str, str]]) -> str:
    tar = _tar(files)
    blob = gzip.compress(tar, mtime=0)
    cfg = {"architecture": "amd64", "os": "linux", "history": history,
           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}
    raw_cfg = json.dumps(cfg).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": reg.upload_blob(name, raw_cfg), "size": len(raw_cfg)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": reg.upload_blob(name, blob), "size": len(blob)}]}
    return reg.put_manifest(name, "hidden", json.dumps(manifest).encode(), manifest["mediaType"])


@pytest.mark.docker
def test_a_secret_hidden_in_a_layer_is_found_in_every_form(local_stack) -> None:
    name = "llmgate/test-hostile-leak"
    files = {f"srv/{k}": v for k, (v, _s) in HIDDEN.items()} | {f"srv/{k}": v for k, v in CLEAN.items()}
    history = [{"created_by": "/bin/sh -c echo " + base64.b64encode(TOKEN).decode() + " > /dev/null"}]
    with RegistryClient(local_stack.registry) as reg:
        digest = _push(reg, name, files, history)
        try:
            report = check_image(reg, f"{local_stack.registry}/{name}", digest, SECRETS)
        finally:
            reg.delete_manifest(name, digest)
    found = {f.path: f for f in report.findings if f.where == "layer"}
    for k, (_content, secret) in HIDDEN.items():
        assert f"srv/{k}" in found, f"{k}: not found in {sorted(found)}"
        assert found[f"srv/{k}"].secret_id == secret and found[f"srv/{k}"].encoding, k
    assert not any(p.startswith("srv/clean") or p.endswith("look-alike") for p in found)
    assert any(f.where == "history" and f.encoding == "base64" for f in report.findings)
    assert found["srv/gzip"].encoding == "gzip" and found["srv/reversed"].encoding == "reversed"
    assert "split" in (found["srv/split-newline"].encoding or "")
    # gzip, gzip-two-members, zlib, gzip-of-base64-wrapped and clean-gzip; the zlib look-alike fails to inflate
    assert report.files_decompressed == 5 and "base64" in report.encodings
    dumped = report.model_dump_json()
    for form in (TOKEN, base64.b64encode(TOKEN), TOKEN.hex().encode(), PIP_LINE):
        assert form.decode() not in dumped
    assert "(token" not in "; ".join(f.describe() for f in report.findings)  # named by id, never by value
    assert "secret 'token' (value, base64)" in "; ".join(f.describe() for f in report.findings)
