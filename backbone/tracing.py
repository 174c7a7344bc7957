"""OpenTelemetry traces across the services: off unless the deployment turns them on.

One trace follows the work a request or a command causes, wherever it goes: the HTTP request
(FastAPI instrumentation), the store transaction that records its events, the outbox relay's
publication (faststream's Kafka telemetry middleware: W3C `traceparent` header), the consumer
that applies the message in another service, and on to the email the notifier sends.

The relay publishes long after the request has ended (the event store is the outbox), so the
trace context travels *with the event*: `backbone.context.caused_by` stamps the current span's
`traceparent` on the cause, the domain base class stores the cause in every event's `meta`,
and the relay makes it the parent of the message it publishes. The inbox applies each message
in a span whose parent is the message's `traceparent` header (faststream's own span of a batch
starts a trace of its own, linked to the messages'), and the events a handler records carry
that span on. The notifier's emails remember the cause of their queueing in the same way, so
the SMTP transaction joins the trace of the booking or the account it is about.

The `traceparent` header is not signed (`backbone.signing`): nothing is believed from it, it
only places spans in a trace.

Turned on by the standard OpenTelemetry environment (`OTEL_TRACES_EXPORTER=otlp|console`, or
an `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), or by the service
setting `TRACING=otlp|console`; `OTEL_SDK_DISABLED=true` wins over all. The exporter reads
the rest of the standard variables itself (endpoint, headers, timeout, sampler:
`OTEL_TRACES_SAMPLER`, service name: `OTEL_SERVICE_NAME`, default the service's). When off,
no provider exists and every hook here is a check of one module variable.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
"""The W3C header (and `meta` key of a stored event's cause) that carries a span's context."""

_PROPAGATOR = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None  # None: tracing is off
_NOOP = contextlib.nullcontext()


def enabled() -> bool:
    return _tracer is not None


def use(provider: TracerProvider) -> None:
    """Trace with this provider from now on (tests give one with an in-memory exporter)."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer("booking-accounts")


def off() -> None:
    """No more tracing from here on (what was instrumented keeps its provider)."""
    global _provider, _tracer
    _provider = _tracer = None


def provider() -> TracerProvider | None:
    return _provider


def wanted(setting: str = "off", environ: Mapping[str, str] = os.environ) -> str | None:
    """The exporter the deployment asks for ("otlp" or "console"), or None: tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return None if exporter == "none" else exporter.split(",")[0].strip()
    if setting and setting != "off":
        return setting
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return None


def from_environment(service: str, setting: str = "off") -> bool:
    """Turn tracing on (once per process) if the deployment asks for it; True if it is on."""
    if _tracer is not None:
        return True
    exporter_name = wanted(setting)
    if exporter_name is None:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter_name == "console":
        exporter: Any = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        )
        if protocol != "http/protobuf":
            raise ValueError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only http/protobuf is installed "
                "(OTLP over HTTP, port 4318 of a collector)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter_name}: use otlp, console or none")
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over the default name (Resource.create).
    sdk = SdkTracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    sdk.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(sdk)  # libraries that ask the global provider trace too
    use(sdk)
    return True


def flush(timeout_millis: int = 5_000) -> None:
    """Export what is buffered now: a service that stops calls it, because uvicorn ends the
    process by re-raising the SIGTERM it handled (no `atexit`, no code after `run`)."""
    if _provider is not None and hasattr(_provider, "force_flush"):
        _provider.force_flush(timeout_millis)


def shutdown() -> None:
    """Flush what is buffered and stop exporting (at the end of the process)."""
    if _provider is not None and hasattr(_provider, "shutdown"):
        _provider.shutdown()


# ------------------------------------------------------------------- trace context


def traceparent() -> str | None:
    """The current span's context as a W3C traceparent, if tracing is on and a span records."""
    if _tracer is None:
        return None
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def _parent(value: str | None) -> otel_context.Context | None:
    if not value:
        return None
    return _PROPAGATOR.extract({TRACEPARENT: value})


def span(
    name: str,
    parent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around a piece of work, child of `parent` (a traceparent) if given, else of the
    current span. Nothing at all when tracing is off."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(name, context=_parent(parent), kind=kind, attributes=attributes)


@contextlib.contextmanager
def _attached(ctx: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def continuing(parent: str | None) -> contextlib.AbstractContextManager[Any]:
    """Make `parent` (a traceparent) the current context, so that what starts spans inside
    (faststream's publisher) continues that trace. Nothing when off or without a parent."""
    if _tracer is None or not parent:
        return _NOOP
    ctx = _parent(parent)
    return _attached(ctx) if ctx is not None else _NOOP


def header(headers: Any) -> str | None:
    """The traceparent of a record's headers (aiokafka's list of (name, bytes) pairs, or a
    mapping), if tracing is on."""
    if _tracer is None or not headers:
        return None
    if isinstance(headers, Mapping):
        value = headers.get(TRACEPARENT)
    else:
        value = next((v for k, v in headers if k == TRACEPARENT), None)
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------- instrumentation


def instrument(api: Any, broker: Any) -> None:
    """Trace a service's HTTP API and its Kafka publishers and subscribers (when on)."""
    if _tracer is None:
        return
    from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        api,
        tracer_provider=_provider,
        excluded_urls="/health,/ready,/metrics",
        exclude_spans=["receive", "send"],
    )
    # Outermost: its consume span is current in the other middlewares and the handler.
    broker.insert_middleware(
        KafkaTelemetryMiddleware(tracer_provider=_provider, include_messages_counters=False)
    )
