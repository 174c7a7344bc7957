"""Traces are off unless the deployment asks, and then go to its collector over OTLP/HTTP.

The collector here is a real HTTP server on a local port that keeps what it receives: the
exporter posts protobuf to its `/v1/traces`, as it would to an OpenTelemetry Collector.
"""

from __future__ import annotations

import pytest

from backbone import context, tracing
from tests.support.otlp import Collector

OTEL = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
)


@pytest.mark.parametrize(
    ("environ", "setting", "exporter"),
    [
        ({}, "off", None),  # the default: off
        ({}, "otlp", "otlp"),
        ({}, "console", "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "off", "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "off", "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "off", "console"),
        ({"OTEL_TRACES_EXPORTER": "none"}, "otlp", None),  # the standard variable wins
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "off", None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, "otlp", None),
    ],
)
def test_what_turns_tracing_on(environ, setting, exporter):
    assert tracing.wanted(setting, environ) == exporter


def test_off_by_default_nothing_is_recorded(monkeypatch):
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    assert not tracing.from_environment("accounts")
    assert not tracing.enabled() and tracing.traceparent() is None
    with tracing.span("nothing") as span:
        assert span is None
    with context.caused_by("customer:1"):
        assert "traceparent" not in context.current().as_meta()  # events' meta as before


def test_otlp_endpoint_in_the_environment_sends_spans_to_the_collector(monkeypatch):
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    with Collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        try:
            assert tracing.from_environment("accounts")
            with tracing.span("a unit of work"), context.caused_by("customer:1") as cause:
                assert cause.traceparent == tracing.traceparent() is not None
            tracing.shutdown()  # flushes the batch
        finally:
            tracing.off()
    [(path, content_type, body)] = collector.received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"a unit of work" in body and b"accounts" in body  # the span, the service's name


def test_only_the_http_exporter_is_installed(monkeypatch):
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match="only http/protobuf"):
        tracing.from_environment("accounts")
    assert not tracing.enabled()
