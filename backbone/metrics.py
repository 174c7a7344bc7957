"""Prometheus metrics of the backbone, exposed by every service at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

published = Counter(
    "outbox_published_total",
    "Integration events the outbox relay published (acknowledged by all in-sync replicas).",
    ["topic"],
    registry=REGISTRY,
)
outbox_lag = Gauge(
    "outbox_lag_notifications",
    "Notifications recorded in the event store but not yet published.",
    registry=REGISTRY,
)
consumed = Counter(
    "inbox_messages_total",
    "Messages taken from the bus, by what became of them.",
    ["consumer", "outcome"],  # applied | duplicate | dead_lettered | redelivered
    registry=REGISTRY,
)
batch_seconds = Histogram(
    "inbox_batch_seconds",
    "Time to apply one batch of messages, store transaction included.",
    ["consumer"],
    registry=REGISTRY,
)
projection_lag = Gauge(
    "projection_lag_notifications",
    "Notifications recorded but not yet applied to a read model.",
    ["projection"],
    registry=REGISTRY,
)
stalled = Gauge(
    "consumer_stalled",
    "1 while a consumer, follower or worker retries the same work because a store, the broker or "
    "the SMTP server does not answer (or the work keeps failing); 0 once it moves again.",
    ["consumer"],
    registry=REGISTRY,
)
retries = Counter(
    "consumer_retries_total",
    "Retries of the same work after a failure, by cause: outage (a store or the broker did not "
    "answer), denied (the broker refuses this service), conflict (a write lost a race with "
    "another instance's) or failure (everything answered; see the logs).",
    ["consumer", "cause"],
    registry=REGISTRY,
)
partition_stalled = Gauge(
    "inbox_partition_stalled",
    "1 while an inbox holds a partition paused because its stored position does not fit the "
    "partition (another life of the topic, or retention passed it): an operator decides "
    "(`booking-accounts positions`).",
    ["consumer", "topic", "partition"],
    registry=REGISTRY,
)
refused = Counter(
    "bus_refused_total",
    "Records refused because they are not proven to come from their topic's owner (unsigned, "
    "unknown key, bad signature, not the owner, unauthorised publisher); dead-lettered.",
    ["consumer", "reason"],
    registry=REGISTRY,
)
unknown_subjects = Counter(
    "inbox_unknown_subject_total",
    "Messages dead-lettered because the key of their subject never arrived (patience exhausted).",
    ["consumer"],
    registry=REGISTRY,
)
http_seconds = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route (its template) and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
follower_lag = Gauge(
    "follower_lag_notifications",
    "Notifications recorded but not yet handled by a follower of the event log (relay, "
    "projection, eraser), measured every few seconds whether or not it moves.",
    ["follower"],
    registry=REGISTRY,
)
inbox_lag = Gauge(
    "inbox_lag_messages",
    "Messages in a partition beyond the position its inbox has applied (Kafka consumer lag), "
    "measured every few seconds whether or not batches succeed; per partition this instance holds.",
    ["consumer", "topic", "partition"],
    registry=REGISTRY,
)
