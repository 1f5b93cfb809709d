"""OpenTelemetry traces of pipeline runs: one trace per run, one span per stage.

Exported over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with the SDK's standard environment variables for headers,
timeouts and compression; when neither is set, or `OTEL_SDK_DISABLED=true`, every call is a no-op: the
SDK is not even imported and no thread starts.

The runner calls:

    tel = telemetry.from_env()
    run_trace = tel.start_run(run.run_id, image_digest=..., model_digest=..., plan="local")
    run_trace.record_stage("build", status="ok", started_at=..., finished_at=..., metrics={...})
    ...
    run_trace.end(decision="pass")
    tel.shutdown()   # flushes the batch exporter

Stage spans take the stage's own start and end times (a reused or parallel stage is placed where it
ran), and are children of the run's root span. Attributes: `llmgate.run_id`, `llmgate.image.digest`,
`llmgate.model.digest` on every span; `llmgate.stage`, `llmgate.stage.status`, `llmgate.stage.reason`
and `llmgate.metric.<name>` (the stage's key metrics) on stage spans; `llmgate.decision` on the root.
A failed or errored stage sets the span status to ERROR.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

SERVICE_NAME = "llmgate"
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
FAILED_STATUSES = {"failed", "error"}
# Metrics per span: the stage's key figures, not every per-request series.
MAX_METRICS = 32


class RunTrace(Protocol):
    def record_stage(self, stage: str, *, status: str, started_at: datetime | None = None,
                     finished_at: datetime | None = None, metrics: Mapping[str, float | None] | None = None,
                     reason: str | None = None, attributes: Mapping[str, Any] | None = None) -> None: ...

    def end(self, decision: str | None = None) -> None: ...


class Telemetry(Protocol):
    @property
    def enabled(self) -> bool: ...

    def start_run(self, run_id: str, *, image_digest: str | None = None, model_digest: str | None = None,
                  plan: str | None = None, attributes: Mapping[str, Any] | None = None) -> RunTrace: ...

    def shutdown(self) -> None: ...


class _NoopRunTrace:
    def record_stage(self, stage: str, **_: Any) -> None:
        return None

    def end(self, decision: str | None = None) -> None:
        return None


class NoopTelemetry:
    """What runs when no OTLP endpoint is configured: nothing."""

    enabled = False

    def start_run(self, run_id: str, **_: Any) -> RunTrace:
        return _NoopRunTrace()

    def shutdown(self) -> None:
        return None


def _ns(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1e9) if when is not None else None


def _attr(value: Any) -> Any:
    """OTel attributes are str/bool/int/float (or lists of them); anything else is sent as text."""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


class _OtelRunTrace:
    def __init__(self, tracer: Any, run_id: str, common: dict[str, Any], attributes: Mapping[str, Any]) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._common = common
        self._root = tracer.start_span("llmgate run", attributes={**common, **{k: _attr(v) for k, v in attributes.items()}})
        self._ctx = trace.set_span_in_context(self._root)
        self._ended = False

    def record_stage(self, stage: str, *, status: str, started_at: datetime | None = None,
                     finished_at: datetime | None = None, metrics: Mapping[str, float | None] | None = None,
                     reason: str | None = None, attributes: Mapping[str, Any] | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        attrs: dict[str, Any] = {**self._common, "llmgate.stage": stage, "llmgate.stage.status": status}
        if reason:
            attrs["llmgate.stage.reason"] = reason[:500]
        for i, (name, value) in enumerate((metrics or {}).items()):
            if i >= MAX_METRICS:
                break
            if value is not None:
                attrs[f"llmgate.metric.{name}"] = float(value)
        attrs.update({k: _attr(v) for k, v in (attributes or {}).items()})
        span = self._tracer.start_span(f"stage {stage}", context=self._ctx, attributes=attrs,
                                       start_time=_ns(started_at))
        if status in FAILED_STATUSES:
            span.set_status(Status(StatusCode.ERROR, reason or status))
        span.end(end_time=_ns(finished_at))

    def end(self, decision: str | None = None) -> None:
        if self._ended:
            return
        from opentelemetry.trace import Status, StatusCode

        if decision is not None:
            self._root.set_attribute("llmgate.decision", decision)
            if decision in ("error", "interrupted"):
                self._root.set_status(Status(StatusCode.ERROR, decision))
        self._root.end()
        self._ended = True


class OtlpTelemetry:
    """Traces to an OTLP/HTTP collector. Its own TracerProvider: nothing global is touched."""

    enabled = True

    def __init__(self, *, exporter: Any = None, service_version: str | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attrs = {"service.name": os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)}
        if service_version:
            attrs["service.version"] = service_version
        # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES, as every OTel SDK does.
        self._provider = TracerProvider(resource=Resource.create(attrs))
        self._provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("llmgate.pipeline")

    def start_run(self, run_id: str, *, image_digest: str | None = None, model_digest: str | None = None,
                  plan: str | None = None, attributes: Mapping[str, Any] | None = None) -> RunTrace:
        common: dict[str, Any] = {"llmgate.run_id": run_id}
        if image_digest:
            common["llmgate.image.digest"] = image_digest
        if model_digest:
            common["llmgate.model.digest"] = model_digest
        extra = dict(attributes or {})
        if plan:
            extra["llmgate.plan"] = plan
        return _OtelRunTrace(self._tracer, run_id, common, extra)

    def shutdown(self) -> None:
        self._provider.force_flush()
        self._provider.shutdown()


def configured(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARS)


def from_env(env: Mapping[str, str] | None = None, *, service_version: str | None = None) -> Telemetry:
    """OTLP export when an endpoint is configured, else the no-op."""
    if not configured(env):
        return NoopTelemetry()
    return OtlpTelemetry(service_version=service_version)
