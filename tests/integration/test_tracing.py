"""One trace from a customer's first request to the emails, across the three services.

The three services run in this process (so that one in-memory span exporter sees every span),
each behind its own uvicorn server on a real port, on the real Kafka broker, SQLite stores of
their own and a real SMTP catcher. The test plays the customer's client (the portal, say): its
requests carry the W3C `traceparent` of one root span, and so does the booking command it
publishes as a storefront would. Then every hop must continue that trace:

* accounts: the HTTP requests, the store, the relay's publication (long after the request);
* bookings: the consumer applying the accounts events and the booking command, the customer's
  cancellation over HTTP, its relay;
* notifier: the consumer queueing the emails, and the SMTP transactions that deliver them
  (the sender is a follower: it works apart from any request).

And every line the services log on the way carries a correlation id, the HTTP latency
histogram has the routes' requests, and the email queue's depth is measured while it moves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
import structlog
import uvicorn
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from backbone import metrics, tracing
from backbone.logging import configure
from backbone.runtime import Service
from tests.support.otlp import Collector
from tests.support.system import (
    ADMIN_TOKEN,
    System,
    command_record,
    place_booking_command,
    publish,
    publisher,
)

pytestmark = pytest.mark.integration

TENANT = "lakeside-tours"
PASSWORD = "kayak-at-dawn-on-a-still-lake"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.off()
        provider.shutdown()


def build(name: str, env: dict[str, str]) -> Service:
    """The service as `python -m services.<name>` builds it from this environment."""
    with mock.patch.dict(os.environ, env):
        module = __import__(f"services.{name}.bootstrap", fromlist=["bootstrap"])
        return module.bootstrap()


async def serve(service: Service, port: int) -> tuple[uvicorn.Server, asyncio.Task[Any]]:
    config = uvicorn.Config(service.api, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if task.done():
                task.result()  # the start failed: say why
            try:
                if (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    return server, task
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{service.name} not ready")


def traced(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current span's context, as an instrumented client sends them."""
    headers = dict(headers or {})
    propagate.inject(headers)
    return headers


async def until(predicate: Any, seconds: float = 60, what: str = "condition") -> Any:
    for _ in range(int(seconds / 0.2)):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise TimeoutError(f"waited {seconds}s for {what}")


def chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """The span and its ancestors, up to the root of its trace."""
    found = [span]
    while found[-1].parent is not None and found[-1].parent.span_id in by_id:
        found.append(by_id[found[-1].parent.span_id])
    return found


def one(spans: list[ReadableSpan], predicate: Any, what: str) -> ReadableSpan:
    matching = [s for s in spans if predicate(s)]
    assert len(matching) == 1, f"{what}: {[s.name for s in matching]} of {sorted({s.name for s in spans})}"
    return matching[0]


@pytest.fixture
def log_lines(capsys) -> Iterator[Any]:
    saved_config, root = structlog.get_config(), logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level

    def start() -> Any:
        configure("trace-test", fmt="json")
        capsys.readouterr()
        return lambda: [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]

    try:
        yield start
    finally:
        structlog.configure(**saved_config)
        root.handlers[:], root.level = saved_handlers, saved_level


async def test_one_trace_from_the_customers_requests_through_the_bus_to_the_emails(
    tmp_path, kafka_bootstrap_servers, mail_server, spans, log_lines
):
    read_logs = log_lines()
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port)
    # The gauges measured every 0.2 s, not every 5 (what a deployment would measure by).
    services = {
        name: build(name, {**process.env, "LAG_INTERVAL_SECONDS": "0.2"})
        for name, process in system.services.items()
    }
    servers = []
    try:
        for name, service in services.items():
            servers.append(await serve(service, system.services[name].port))
        before = cancellations_timed()
        await journey(system, mail_server, kafka_bootstrap_servers, spans)
        await measured(before)
    finally:
        for server, _ in reversed(servers):
            server.should_exit = True
        for _, task in reversed(servers):
            await asyncio.wait_for(task, timeout=60)

    lines = read_logs()
    assert lines, "the services logged nothing"
    missing = [line for line in lines if not line.get("correlation_id")]
    assert not missing, missing[:5]


CANCELLATION = {"method": "POST", "route": "/v1/me/bookings/{booking_id}/cancellation", "status": "200"}


def cancellations_timed() -> tuple[float, float]:
    """(requests, those under 10 s) of the customers' cancellations in the latency histogram
    (one registry for the whole test session: what other tests left counts too)."""
    sample = metrics.REGISTRY.get_sample_value
    return (
        sample("http_request_duration_seconds_count", CANCELLATION) or 0,
        sample("http_request_duration_seconds_bucket", {**CANCELLATION, "le": "10.0"}) or 0,
    )


async def measured(before: tuple[float, float]) -> None:
    """What the journey left in the metrics: its cancellation timed, the email queue measured
    empty once both emails were sent."""
    assert [after - earlier for after, earlier in zip(cancellations_timed(), before, strict=True)] == [1, 1]
    sample = metrics.REGISTRY.get_sample_value

    async def queue_emptied() -> bool:
        return (
            sample("notifier_email_queue_depth") == 0
            and sample("notifier_emails_in_log", {"status": "sent"}) >= 2
        )

    await until(queue_emptied, seconds=30, what="the email queue gauges")


async def journey(system: System, mail_server: Any, kafka: str, spans: InMemorySpanExporter) -> None:
    accounts = httpx.AsyncClient(base_url=system.accounts.url, timeout=30)
    bookings = httpx.AsyncClient(base_url=system.bookings.url, timeout=30)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    # The storefront that publishes the booking command, registered with bookings.
    storefront = publisher("storefront")
    registered = await bookings.post(
        "/v1/admin/publishers",
        headers=admin,
        json={
            "name": "storefront",
            "public_key": base64.b64encode(storefront.public_key).decode(),
            "tenants": ["*"],
            "capabilities": ["place", "cancel"],
        },
    )
    assert registered.status_code == 201, registered.text
    staff_key = await accounts.post(f"/v1/admin/tenants/{TENANT}/staff", headers=admin, json={"label": "t"})
    assert staff_key.status_code == 201, staff_key.text
    staff = {"Authorization": f"Bearer {staff_key.json()['api_key']}"}
    settings = await accounts.patch(
        f"/v1/staff/tenants/{TENANT}/settings",
        headers=staff,
        json={
            "customer_logins_enabled": True,
            "allow_cancel": True,
            "cancel_cutoff": {"amount": 2, "unit": "days"},
            "timezone": "Europe/Vienna",
        },
    )
    assert settings.status_code == 200, settings.text

    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    client = tracing.provider().get_tracer("tests").start_span("customer journey", kind=SpanKind.CLIENT)
    with trace.use_span(client, end_on_exit=True):
        claimed = await accounts.post(
            f"/v1/tenants/{TENANT}/accounts",
            headers=traced(),
            json={"email": email, "name": "Ada", "password": PASSWORD},
        )
        assert claimed.status_code == 202, claimed.text
        verify = await mail_server.wait_for_async(lambda m: email in m.rcpt_tos, timeout=60)
        [link] = [url for url in verify.links if "token=" in url]
        verified = await accounts.post(
            "/v1/email-verifications",
            headers=traced(),
            json={"token": link.split("token=", 1)[1], "password": PASSWORD},
        )
        assert verified.status_code == 200, verified.text
        session = await accounts.post(
            f"/v1/tenants/{TENANT}/sessions", headers=traced(), json={"email": email, "password": PASSWORD}
        )
        assert session.status_code == 200, session.text
        customer = {"Authorization": f"Bearer {session.json()['token']}"}

        # A storefront places the booking, its command carrying the trace context.
        command = place_booking_command(TENANT, email, paid="30.00")
        key, value, headers = command_record(command)
        await publish(kafka, system.topic("bookings.commands"), [(key, value, traced(headers))])

        async def listed() -> Any:
            answer = await bookings.get("/v1/me/bookings", headers=traced(customer))
            return answer.status_code == 200 and answer.json()

        await until(listed, what="the booking in the customer's list")
        quote = await bookings.get(
            f"/v1/me/bookings/{command['booking_id']}/cancellation-quote", headers=traced(customer)
        )
        assert quote.status_code == 200, quote.text
        confirm = quote.json()["confirm"]
        cancelled = await bookings.post(confirm["href"], headers=traced(customer), json=confirm["body"])
        assert cancelled.status_code == 200, cancelled.text
    await mail_server.wait_for_async(lambda m: email in m.rcpt_tos and "cancelled" in m.subject, timeout=60)
    await accounts.aclose()
    await bookings.aclose()

    async def all_sent() -> list[ReadableSpan]:
        done = [s for s in spans.get_finished_spans() if s.name == "notifier send email"]
        return (
            done
            if {"verify_email", "booking_cancelled"} <= {s.attributes["email.template"] for s in done}
            else []
        )

    await until(all_sent, what="the email spans")
    finished = list(spans.get_finished_spans())
    by_id = {s.context.span_id: s for s in finished}
    root = client.get_span_context()
    in_trace = [s for s in finished if s.context.trace_id == root.trace_id]

    def http(method: str, route: str) -> ReadableSpan:
        return one(
            in_trace,
            lambda s: s.kind == SpanKind.SERVER and s.name == f"{method} {route}",
            f"the server span of {method} {route}",
        )

    def applied(consumer: str, message: str) -> list[ReadableSpan]:
        """A consumer's spans of applying a message: more than one if its batch was retried
        (a subject's key still on its way), each a child of the message's publication."""
        name = f"{system.topic(consumer)} apply {message}"
        found = [s for s in in_trace if s.name == name]
        assert found, f"{name} is not in the trace: {sorted({s.name for s in in_trace})}"
        return found

    def sent(template: str) -> ReadableSpan:
        return one(
            in_trace,
            lambda s: s.name == "notifier send email" and s.attributes["email.template"] == template,
            f"the SMTP transaction of {template}",
        )

    def leads_to(
        spans: ReadableSpan | list[ReadableSpan], *ancestors: ReadableSpan | list[ReadableSpan]
    ) -> None:
        """The span (each one, for a list) descends from each ancestor (one of them, for a
        list), and the chain ends at the client's root span."""
        for span in spans if isinstance(spans, list) else [spans]:
            path = chain(span, by_id)
            names = [s.name for s in path]
            for ancestor in ancestors:
                options = ancestor if isinstance(ancestor, list) else [ancestor]
                assert any(a in path for a in options), f"{options[0].name} not above {span.name}: {names}"
            assert path[-1].context.span_id == root.span_id, names

    claim = http("POST", "/v1/tenants/{tenant_id}/accounts")
    verification = http("POST", "/v1/email-verifications")
    cancellation = http("POST", "/v1/me/bookings/{booking_id}/cancellation")

    # accounts -> notifier: the claim, stored, relayed, queued as an email, sent over SMTP.
    accounts_stored = [s for s in in_trace if s.name.endswith("store save") and claim in chain(s, by_id)]
    assert accounts_stored, "the claim's store transaction is not in the trace"
    leads_to(sent("verify_email"), applied("notifier.inbox", "AccountClaimed"), claim)
    # accounts -> bookings: the claim and the verification reach bookings' consumer.
    leads_to(applied("bookings.inbox", "AccountClaimed"), claim)
    leads_to(applied("bookings.inbox", "EmailVerified"), verification)
    # a command -> bookings: the storefront's command continues the client's trace.
    leads_to(applied("bookings.inbox", "PlaceBooking"))
    # bookings -> notifier: the cancellation, relayed, queued and sent as an email.
    cancelled_email = sent("booking_cancelled")
    leads_to(cancelled_email, applied("notifier.inbox", "BookingCancelled"), cancellation)
    # Through Kafka: faststream's producer spans, with the topic, between them.
    producers = [s for s in chain(cancelled_email, by_id) if s.kind == SpanKind.PRODUCER]
    assert any(system.topic("bookings.events") in s.name for s in producers), [s.name for s in producers]
    assert cancelled_email.attributes["smtp.accepted"] is True


def test_a_service_process_exports_its_spans_to_the_collector_its_environment_names(
    tmp_path, kafka_bootstrap_servers, mail_server
):
    """As deployed: `python -m services.accounts` with `OTEL_EXPORTER_OTLP_ENDPOINT` set sends
    its spans over OTLP/HTTP; a request's trace id is the one its client sent."""
    with Collector() as collector:
        system = System(
            tmp_path,
            kafka_bootstrap_servers,
            mail_server.port,
            overrides={"accounts": {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint}},
        )
        system.start("accounts")
        trace_id = uuid.uuid4().hex
        try:
            answer = httpx.get(
                f"{system.accounts.url}/v1/me",
                headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
            )
            assert answer.status_code == 401  # no session: still a request, still traced
        finally:
            system.stop()  # the spans still buffered are sent on the way out
        exported = collector.bodies()
    assert bytes.fromhex(trace_id) in exported  # (protobuf: the trace id's 16 raw bytes)
    assert b"GET /v1/me" in exported and b"accounts" in exported
