"""OpenTelemetry SDK setup. Spans are exported over OTLP only when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; otherwise spans are still created (so trace ids
propagate through ``traceparent`` headers) but go nowhere."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_configured = False


def setup_telemetry(service_name: str) -> None:
    """Install a TracerProvider for ``service_name`` once per process (idempotent)."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def setup_logging(service_name: str, level: str | None = None, *, environment: str | None = None) -> None:
    """The one logging setup of every service (:mod:`bsopt_common.logging_setup`): JSON
    lines outside dev/test (``BSOPT_LOG_FORMAT`` overrides), the active span's trace and
    span ids on every line, secrets redacted, uvicorn's loggers included."""
    from bsopt_common.logging_setup import setup_logging as install

    install(service_name, level, environment=environment)
