"""OpenTelemetry export of a run: one trace, one span per stage, over real OTLP/HTTP to an in-process
receiver that decodes the protobuf ExportTraceServiceRequest the way a collector does."""

from __future__ import annotations

import gzip
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline import telemetry

STAGES = [("build", "ok", {"build_s": 41.0}), ("leak", "ok", {"leaked": 0.0}), ("scan", "ok", {"critical": 0.0}),
          ("boot", "ok", {"load_time_s": 12.5}), ("bench", "failed", {"ttft_p99_s": 0.9}),
          ("gate", "ok", {"required_failed": 1.0})]


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (`POST /v1/traces`, application/x-protobuf, gzip or not)."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.paths.append(self.path)
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(415)
                    self.end_headers()
                    return
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                receiver.requests.append(req)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Any]:
        return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = v.string_value if v.HasField("string_value") else v.double_value if v.HasField(
            "double_value") else v.int_value if v.HasField("int_value") else v.bool_value
    return out


def run_shaped(tel: telemetry.Telemetry) -> None:
    trace = tel.start_run("r-20261201-abc", image_digest="sha256:" + "a" * 64, model_digest="sha256:" + "b" * 64,
                          plan="local")
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for name, status, metrics in STAGES:
        trace.record_stage(name, status=status, started_at=t, finished_at=t + timedelta(seconds=3), metrics=metrics,
                           reason="ttft above the bound" if status == "failed" else None)
        t += timedelta(seconds=3)
    trace.end(decision="blocked")
    tel.shutdown()


def test_a_run_is_one_trace_with_one_span_per_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    try:
        tel = telemetry.from_env()
        assert tel.enabled
        run_shaped(tel)
    finally:
        receiver.close()
    assert set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans()
    assert len({s.trace_id for s in spans}) == 1  # one trace
    (root,) = [s for s in spans if not s.parent_span_id]
    stages = [s for s in spans if s.parent_span_id]
    assert root.name == "llmgate run" and all(s.parent_span_id == root.span_id for s in stages)
    assert sorted(s.name for s in stages) == sorted(f"stage {n}" for n, _, _ in STAGES)
    ra = attrs(root)
    assert ra["llmgate.run_id"] == "r-20261201-abc" and ra["llmgate.decision"] == "blocked"
    assert ra["llmgate.image.digest"] == "sha256:" + "a" * 64 and ra["llmgate.model.digest"] == "sha256:" + "b" * 64
    bench = next(s for s in stages if s.name == "stage bench")
    ba = attrs(bench)
    assert ba["llmgate.stage.status"] == "failed" and ba["llmgate.metric.ttft_p99_s"] == 0.9
    assert ba["llmgate.run_id"] == "r-20261201-abc" and ba["llmgate.model.digest"] == "sha256:" + "b" * 64
    assert bench.status.code == 2 and bench.status.message == "ttft above the bound"  # STATUS_CODE_ERROR
    build = next(s for s in stages if s.name == "stage build")
    assert (build.end_time_unix_nano - build.start_time_unix_nano) == 3_000_000_000  # the stage's own times
    resource = receiver.requests[0].resource_spans[0].resource
    assert any(kv.key == "service.name" and kv.value.string_value == "llmgate" for kv in resource.attributes)


def test_nothing_happens_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    threads = threading.active_count()
    tel = telemetry.from_env()
    assert isinstance(tel, telemetry.NoopTelemetry) and not tel.enabled
    run_shaped(tel)
    assert threading.active_count() == threads
    assert not telemetry.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert telemetry.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"})
