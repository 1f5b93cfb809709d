"""Every parser of outside input, fed hostile input (property-based, hypothesis): it either returns a
value of its type or raises the documented error naming the file, field or endpoint; never a
KeyError, TypeError, UnicodeDecodeError, RecursionError or any other exception a traceback would show.

- what a person writes (llmgate.yaml, a gate policy, ground-truth JSONL, label CSVs, a trivy report,
  a run id, a cosign key file) is BadInput (exit 2) naming the file (and the line or field);
- what a server sends (an SSE stream, an OCI manifest) is the server misbehaving: a stream's defect
  becomes the request's error (the sample records it, nothing raises), a manifest's defect is
  InfraError (exit 3) naming the registry URL.

Examples are derandomized (the same inputs on every run, so a failure here is reproducible and a CI
run is never flaky); `HYPOTHESIS_PROFILE=hostile-explore` draws new ones.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.errors import BadInput, InfraError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"

settings.register_profile("hostile", max_examples=60, derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("hostile-explore", max_examples=1000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HOSTILE = settings.get_profile("hostile-explore" if os.environ.get("HYPOTHESIS_PROFILE") == "hostile-explore"
                               else "hostile")

# -- strategies ----------------------------------------------------------------------------------------
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["[/x]", "[bold]", "../../etc/passwd", "", " ", "\x00", "é", "sha256:zz", "1e309", "-1"]),
)
VALUES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), kids, max_size=4)),
                      max_leaves=12)
RAW = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\xff\xfe\x00", b"[" * 5000 + b"]" * 5000, b"{" * 3000, b"a: &x [*x]",
                     b"!!python/object:os.system {}", b"- - - -", b"\xef\xbb\xbf{}", b"k: v\nk: w\n", b"\t: x",
                     b"%YAML 9.9\n---\n"]),
)


def _paths(value: Any) -> list[tuple[Any, ...]]:
    """Every path to a node of a JSON-like tree."""
    out: list[tuple[Any, ...]] = [()]
    if isinstance(value, dict):
        for k, v in value.items():
            out += [(k, *p) for p in _paths(v)]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += [(i, *p) for p in _paths(v)]
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """`base` with one to three nodes replaced by hostile values, or deleted."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            return draw(VALUES)
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(VALUES)
    return doc


def _write(path: Path, data: bytes | str | Any) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_text(yaml.safe_dump(data, allow_unicode=True) if path.suffix == ".yaml" else json.dumps(data))
    return path


def _names(exc: BadInput | InfraError, *fragments: str) -> None:
    where = exc.where or ""
    assert any(f in where for f in fragments), (where, exc.message)


# -- llmgate.yaml ---------------------------------------------------------------------------------------
def _default_config() -> dict[str, Any]:
    from pipeline.config import PipelineConfig

    return PipelineConfig().model_dump(mode="json")


@HOSTILE
@given(data=st.one_of(RAW, mutated(_default_config()), VALUES))
@example(data={"bench": {"requests": -1}})
@example(data={"bench": {"deadline_s": float("inf")}})
@example(data={"eval": {"concurrency": True}})
@example(data=b"bench: {requests: 1}\nbench: {requests: 2}\n")
def test_config_file(tmp_path_factory, data) -> None:
    from pipeline.config import PipelineConfig, load_config

    path = _write(tmp_path_factory.mktemp("cfg") / "llmgate.yaml", data)
    try:
        cfg = load_config(path)
    except BadInput as exc:
        _names(exc, str(path))
        return
    assert isinstance(cfg, PipelineConfig)
    assert (cfg.bench.requests or cfg.bench.max_requests) >= 1 and cfg.bench.concurrency >= 1 and 0 < cfg.bench.deadline_s < float("inf")


def test_config_path_that_is_not_a_file(tmp_path) -> None:
    from pipeline.config import load_config

    for path, fragment in ((tmp_path, "is a directory"), (tmp_path / "nope.yaml", "file not found")):
        with pytest.raises(BadInput) as exc:
            load_config(path)
        assert exc.value.where == str(path) and fragment in exc.value.message


# -- gate policy ------------------------------------------------------------------------------------------
def _policy_doc() -> dict[str, Any]:
    return yaml.safe_load((REPO / "gates.yaml").read_text())


@HOSTILE
@given(data=st.one_of(RAW, mutated(_policy_doc()), VALUES))
@example(data=b"gates:\n  x: {threshold: .inf}\n")
@example(data=b"gates:\n  x: {threshold: 0.01}\n  x: {threshold: 0.99}\n")
def test_policy_file(tmp_path_factory, data) -> None:
    from pipeline.gates.policy import Policy, load_policy
    from pipeline.supplychain.gate_sections import SECTIONS

    path = _write(tmp_path_factory.mktemp("pol") / "gates.yaml", data)
    try:
        policy = load_policy(path, sections=SECTIONS)
    except BadInput as exc:
        _names(exc, str(path), "gates.yaml")
        return
    assert isinstance(policy, Policy)


# -- ground truth JSONL -----------------------------------------------------------------------------------
GT_ROW = {"id": "q1", "question": "What is a pod?", "contexts": ["A pod is..."], "reference": "A group of containers.",
          "expected_behaviour": "answer", "category": "k8s"}


@HOSTILE
# Invalid UTF-8 and deep nesting have their own (expected-failure) cases below, with the repro for their owner.
@given(lines=st.lists(st.one_of(RAW.filter(lambda b: b.count(b"[") + b.count(b"{") < 500)
                                .map(lambda b: b.decode("utf-8", "replace").replace("\n", " ").encode()),
                                mutated(GT_ROW).map(lambda d: json.dumps(d).encode())), min_size=1, max_size=4))
def test_ground_truth_rows(tmp_path_factory, lines) -> None:
    from evals.ground_truth import validate_file

    path = tmp_path_factory.mktemp("gt") / "test.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        validate_file(path)
    except BadInput as exc:
        _names(exc, str(path))


def test_ground_truth_deeply_nested_row_is_bad_input(tmp_path) -> None:
    from evals.ground_truth import validate_file

    path = tmp_path / "test.jsonl"
    path.write_bytes(b"[" * 100_000 + b"\n")
    with pytest.raises(BadInput) as exc:
        validate_file(path)
    assert str(path) in (exc.value.where or "")


def test_ground_truth_invalid_utf8_is_bad_input(tmp_path) -> None:
    from evals.ground_truth import validate_file

    path = tmp_path / "test.jsonl"
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(BadInput) as exc:
        validate_file(path)
    assert str(path) in (exc.value.where or "")


# -- label CSVs -----------------------------------------------------------------------------------------------
CSV_ROWS = st.lists(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(["1_full_compliance", "0", "1", '"',
                                                                                '[\"a\"]', "[", "\r"])),
                             max_size=5), max_size=5)


@HOSTILE
@given(data=st.one_of(RAW, CSV_ROWS.map(lambda rows: "\n".join(",".join(r) for r in rows).encode()),
                      CSV_ROWS.map(lambda rows: ("question,response,label,contexts\n"
                                                 + "\n".join(",".join(r) for r in rows)).encode())))
def test_label_csvs(tmp_path_factory, data) -> None:
    from evals.calibration import read_judge_labels, read_refusal_labels

    path = _write(tmp_path_factory.mktemp("csv") / "labels.csv", data)
    for read in (read_refusal_labels, lambda p: read_judge_labels(p, "faithfulness"),
                 lambda p: read_judge_labels(p, "answer_relevance")):
        try:
            rows, digest = read(path)
        except BadInput as exc:
            _names(exc, str(path))
        else:
            assert len(digest) == 64 and all(isinstance(r.label, bool) for r in rows)


# -- trivy JSON and SARIF ------------------------------------------------------------------------------------
def _trivy(name: str) -> Any:
    path = FIXTURES / "trivy" / name
    return json.loads(path.read_text()) if path.is_file() else {"SchemaVersion": 2}


@HOSTILE
@given(data=st.one_of(RAW, mutated(_trivy("alpine-310.json")), mutated(_trivy("alpine-310.sarif.json")),
                      mutated(_trivy("secrets.json")), mutated(_trivy("dockerfile.json")), VALUES))
@example(data=b"[" * 100_000)
def test_trivy_report(tmp_path_factory, data) -> None:
    from pipeline.supplychain.trivy_report import TrivyReport, load_report

    path = _write(tmp_path_factory.mktemp("trivy") / "report.json", data)
    try:
        report = load_report(path)
    except BadInput as exc:
        _names(exc, str(path))
        return
    assert isinstance(report, TrivyReport)


# -- run ids ------------------------------------------------------------------------------------------------
@HOSTILE
@given(value=st.one_of(st.text(max_size=80), st.sampled_from(["../x", "a/b", ".", "..", "-x", "a" * 65, "a\x00",
                                                            "[/x]", "c", "é", " a", "a\n"])))
def test_run_ids(value: str) -> None:
    from pipeline.models import RUN_ID_RE, check_run_id

    try:
        assert check_run_id(value, where="--run") == value
    except BadInput as exc:
        assert exc.where == "--run" and repr(value) in exc.message
        return
    assert RUN_ID_RE.match(value) and "/" not in value and not value.startswith(".")


@HOSTILE
@given(value=st.text(max_size=70))
def test_run_ids_against_a_store(tmp_path_factory, value: str) -> None:
    ws = _empty_workspace(tmp_path_factory)
    with pytest.raises(BadInput) as exc:
        ws.load_run(value)
    assert exc.value.where == "--run" or "no run" in exc.value.message


_WS: dict[str, Any] = {}


def _empty_workspace(factory: Any) -> Any:
    from pipeline.workspace import Workspace

    if "ws" not in _WS:
        _WS["ws"] = Workspace(factory.mktemp("ws"))
    return _WS["ws"]


# -- image references -------------------------------------------------------------------------------------
@HOSTILE
@given(value=st.one_of(st.text(max_size=60), st.sampled_from(["a/b@sha256:zz", "@", "a@", ":x", "a/b:[/x]",
                                                            "127.0.0.1:5000/x@sha256:" + "0" * 64])))
def test_image_references(value: str) -> None:
    from pipeline.models import ImageRef

    try:
        ref = ImageRef.parse(value)
    except BadInput as exc:
        assert exc.where
        return
    assert ref.repository and (ref.digest is None or ref.digest.startswith("sha256:"))


# -- SSE streams (pipeline/bench/client.py) --------------------------------------------------------------
CHUNK = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": " x"},
                                                                    "finish_reason": None}]}
SSE_EVENTS = st.one_of(
    RAW,
    mutated(CHUNK).map(lambda d: b"data: " + json.dumps(d).encode() + b"\n\n"),
    VALUES.map(lambda v: b"data: " + json.dumps(v).encode() + b"\n\n"),
    st.sampled_from([b": keep-alive\n\n", b"data: [DONE]\n\n", b"event: x\ndata: {}\n\n", b"data:\n\n", b"\r\n\r\n",
                     b'data: {"error": {"message": "[/boom]"}}\n\n', b"garbage\n\n", b"data: {\"choices\": 5}\n\n"]),
)


@HOSTILE
@given(events=st.lists(SSE_EVENTS, max_size=6), split=st.integers(1, 64))
def test_sse_parser_raises_only_its_stream_error(events: list[bytes], split: int) -> None:
    from pipeline.bench.client import RequestSample, _SseParser, _StreamError

    parser = _SseParser(RequestSample(index=0), None)
    stream = b"".join(events)
    try:
        for i in range(0, len(stream), split):
            parser.feed(stream[i:i + split], float(i))
    except _StreamError as exc:
        assert str(exc)


@HOSTILE
@given(events=st.lists(SSE_EVENTS, max_size=6), status=st.sampled_from([200, 200, 200, 400, 500]),
       ctype=st.sampled_from(["text/event-stream", "text/event-stream; charset=utf-8", "application/json", ""]))
def test_a_streamed_request_never_raises_on_what_the_server_sends(events: list[bytes], status: int, ctype: str) -> None:
    """Whatever comes back, the request ends as a sample: ok, or its error says why."""
    from pipeline.bench.client import stream_request

    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            for chunk in events:
                yield chunk

    class Server(httpx.AsyncBaseTransport):
        """The server's answer, streamed event by event as it would arrive (httpx's MockTransport reads
        the whole body before the client sees it)."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, headers={"content-type": ctype}, stream=Chunks())

    async def go() -> Any:
        async with httpx.AsyncClient(transport=Server()) as client:
            return await stream_request(client, "http://server.invalid/v1/chat/completions",
                                        {"max_tokens": 4, "messages": []}, timeout_s=5)

    sample = asyncio.run(go())
    assert sample.ok or sample.error
    if sample.ok:
        assert sample.first_content_s is not None and sample.output_tokens is not None


# -- OCI manifests (pipeline/adapters/registry.py) ----------------------------------------------------------
D = "sha256:" + "ab" * 32
IMAGE_MANIFEST = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 100},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D, "size": 5}]}
INDEX = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D, "size": 7,
                        "platform": {"os": "linux", "architecture": "amd64"}}]}
WHERE = "http://127.0.0.1:5000/v2/x/manifests/t"


@HOSTILE
@given(data=st.one_of(RAW, mutated(IMAGE_MANIFEST).map(lambda d: json.dumps(d).encode()),
                      mutated(INDEX).map(lambda d: json.dumps(d).encode()),
                      VALUES.map(lambda v: json.dumps(v).encode())),
       header=st.sampled_from(["", "application/vnd.oci.image.index.v1+json", "text/plain"]))
def test_oci_manifest(data: bytes, header: str) -> None:
    from pipeline.adapters.registry import parse_manifest

    try:
        m = parse_manifest(data, header_type=header, where=WHERE)
    except InfraError as exc:
        assert (exc.where or "").startswith(WHERE), exc.where
        return
    # everything the leak check, the build stage and the signer read works on what was accepted
    assert m.digest.startswith("sha256:") and isinstance(m.is_index, bool)
    assert isinstance(m.total_bytes, int) and all(isinstance(layer["digest"], str) for layer in m.layers)
    if m.is_index:
        assert all(isinstance(e["digest"], str) for e in m.data["manifests"])


# -- cosign key files ----------------------------------------------------------------------------------------
def _key_doc() -> dict[str, Any]:
    pem = (FIXTURES / "cosign" / "cosign_generated_encrypted_empty_private.key").read_text()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return json.loads(base64.b64decode(body))


def _pem(label: str, body: bytes) -> str:
    b64 = base64.b64encode(body).decode()
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


@HOSTILE
@given(data=st.one_of(
    RAW.map(lambda b: b.decode("utf-8", "replace")),
    RAW.map(lambda b: _pem("ENCRYPTED SIGSTORE PRIVATE KEY", b)),
    mutated(_key_doc()).map(lambda d: _pem("ENCRYPTED SIGSTORE PRIVATE KEY", json.dumps(d).encode())),
    st.sampled_from(["-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
                     "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]),
))
@example(data=_pem("ENCRYPTED SIGSTORE PRIVATE KEY", json.dumps(
    {**_key_doc(), "kdf": {**_key_doc()["kdf"], "params": {"N": 1 << 20, "r": 32, "p": 16}}}).encode()))
def test_cosign_private_key_file(data: str) -> None:
    from pipeline.supplychain.cosign_keys import SigningKey, load_private_key

    try:
        key = load_private_key(data, b"", where="sign.key.file: k.key")
    except BadInput as exc:
        assert exc.where == "sign.key.file: k.key"
        return
    assert isinstance(key, SigningKey)


@HOSTILE
@given(data=st.one_of(RAW.map(lambda b: b.decode("utf-8", "replace")), RAW.map(lambda b: _pem("PUBLIC KEY", b)),
                      RAW.map(lambda b: _pem("CERTIFICATE", b))))
def test_cosign_public_key_file(data: str) -> None:
    from pipeline.supplychain.cosign_keys import load_public_key

    try:
        load_public_key(data, where="cosign.pub")
    except BadInput as exc:
        assert exc.where == "cosign.pub"


@HOSTILE
@given(events=st.lists(SSE_EVENTS, max_size=6), split=st.integers(1, 64),
       eol=st.sampled_from([b"\r\n", b"\r"]))
def test_sse_line_endings_do_not_change_what_is_parsed(events: list[bytes], split: int, eol: bytes) -> None:
    """CRLF, LF and a lone CR end a line alike (the SSE spec): the same stream written with either parses
    to the same sample, however it is cut into reads (a CR and its LF may arrive in different reads)."""
    from pipeline.bench.client import RequestSample, _SseParser, _StreamError

    def parse(stream: bytes) -> tuple[Any, ...]:
        s = RequestSample(index=0)
        parser = _SseParser(s, None)
        try:
            for i in range(0, len(stream), split):
                parser.feed(stream[i:i + split], 0.0)
        except _StreamError as exc:
            return ("error", str(exc).split(":")[0])
        return ("ok", tuple(parser.parts), s.finish_reason, s.output_tokens, parser.done, bytes(parser.buf).strip())

    lf = b"".join(e.replace(b"\r\n", b"\n").replace(b"\r", b"\n") for e in events)
    assert parse(lf.replace(b"\n", eol)) == parse(lf)
