"""The Kafka side of a service: one broker (producer + subscribers) configured on purpose.

Defaults that are wrong for us and are therefore set here, once:
* aiokafka's producer defaults to acks=1 without idempotence: we enable idempotence, which
  also means acks=all and per-partition ordering across retries;
* faststream's subscribers acknowledge on receipt and aiokafka auto-commits: our subscribers
  use `AckPolicy.MANUAL`, and the offset that matters is the one in the event store anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from pydantic import BaseModel

from backbone import metrics, tracing
from backbone.kafkasecurity import PLAINTEXT, KafkaSecurity
from backbone.logging import get_logger
from contracts import Message

log = get_logger(__name__)

# Header names carried by every message the relay publishes. The body is authoritative; these
# let operators and tools filter without decoding, and carry the upstream position.
H_TYPE = "message-type"
H_VERSION = "schema-version"
H_ID = "message-id"
H_SOURCE = "source"  # the service whose event store the message came from
H_SOURCE_POSITION = "source-position"  # its notification id there: what copies share
H_TENANT = "tenant-id"


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: where, under which key, and with which headers."""

    topic: str
    message: Message
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json_bytes(self.message)

    def all_headers(self) -> dict[str, str]:
        kind, version = _type_headers(type(self.message))
        return {
            "content-type": "application/json",
            H_TYPE: kind,
            H_VERSION: version,
            H_ID: str(self.message.message_id),
            H_TENANT: self.message.tenant_id,
            **self.headers,
        }


def json_bytes(model: BaseModel) -> bytes:
    """`model.model_dump_json().encode()`, the same bytes, straight from pydantic-core's
    serializer: `model_dump_json` passes on a dozen arguments and decodes the bytes to text,
    which the producer then encodes again (together half the cost of writing an event out)."""
    return type(model).__pydantic_serializer__.to_json(model)


@functools.cache
def _type_headers(model: type[Message]) -> tuple[str, str]:
    # Per class, once: pydantic's `model_fields` behind them cost more than the rest of a
    # record's headers.
    return model.type_name(), str(model.version())


def make_broker(bootstrap_servers: str, client_id: str, security: KafkaSecurity = PLAINTEXT) -> KafkaBroker:
    return KafkaBroker(
        bootstrap_servers,
        security=security.for_faststream(),
        client_id=client_id,
        enable_idempotence=True,  # implies acks="all"
        acks="all",
        # No lingering: every publisher of ours sends a whole batch and then awaits its
        # acknowledgements, and the producer has one request in flight per broker, so records
        # sent meanwhile batch up anyway; a linger would only delay every relayed event.
        linger_ms=0,
        request_timeout_ms=30_000,
        # A topic deleted and created again (or given partitions) is noticed within seconds, not
        # the client's default 5 minutes: its consumers rebalance and check their positions.
        metadata_max_age_ms=10_000,
        graceful_timeout=15.0,
        middlewares=[KafkaPrometheusMiddleware(registry=metrics.REGISTRY, app_name=client_id)],
        logger=logging.getLogger(f"faststream.{client_id}"),  # stdlib: rendered by our handler
    )


@dataclass(frozen=True)
class Record:
    """Raw bytes for one topic, as the producer takes them."""

    topic: str
    value: bytes
    key: bytes | None
    headers: dict[str, str]
    correlation_id: str | None = None


Sign = Callable[[Record], Record]
"""Adds the publisher's signature to a record (`backbone.signing.Signer.sign_record`)."""


async def send(broker: KafkaBroker, records: list[Record], sign: Sign | None = None) -> None:
    """Publish records and return once the broker acknowledged every one of them. With `sign`,
    each is signed first (what a service publishes for others to believe always is).

    Every record is handed to the producer before any acknowledgement is awaited: they go out
    in as few requests as the producer can make of them, and the idempotent producer keeps
    each partition's order even when it retries. Straight to aiokafka's producer (faststream's
    publish costs more than the send itself: its middlewares, a correlation id drawn per
    record), unless tracing is on: faststream's telemetry middleware then writes each
    publication's span into its `traceparent` header. (faststream's Prometheus metrics of
    publications therefore no longer count them; the relay's `outbox_published_total` does.)
    """
    if sign is not None:
        records = [sign(record) for record in records]
    producer = _aiokafka_producer(broker)
    if producer is None or tracing.enabled():
        await _send_through_faststream(broker, records)
        return
    pending = [
        await producer.send(record.topic, record.value, key=record.key, headers=_wire_headers(record))
        for record in records
    ]
    await asyncio.gather(*pending)


def _wire_headers(record: Record) -> list[tuple[str, bytes]]:
    """A record's headers as the producer takes them: the same ones faststream's publish
    writes (its `content-type` and `correlation_id` first, then the record's own)."""
    headers = {
        "content-type": "",
        **({"correlation_id": record.correlation_id} if record.correlation_id else {}),
    }
    headers.update(record.headers)
    return [(name, value.encode()) for name, value in headers.items()]


def _aiokafka_producer(broker: KafkaBroker) -> AIOKafkaProducer | None:
    """The broker's running aiokafka producer; None for the in-memory test broker (whose
    producer delivers to its subscribers itself) or a broker not started."""
    producer = getattr(getattr(getattr(broker, "config", None), "producer", None), "_producer", None)
    producer = getattr(producer, "producer", None)
    return producer if isinstance(producer, AIOKafkaProducer) else None


async def _send_through_faststream(broker: KafkaBroker, records: list[Record]) -> None:
    pending = []
    for record in records:
        # With tracing on, a record's `traceparent` (the request that caused it, stored with
        # its event) is the parent of the publication: faststream's telemetry middleware then
        # writes the publication's own span into the header, and the consumer continues it.
        with tracing.continuing(record.headers.get(tracing.TRACEPARENT)):
            pending.append(
                await broker.publish(
                    record.value,
                    record.topic,
                    key=record.key,
                    headers=record.headers,
                    correlation_id=record.correlation_id,
                    no_confirm=True,
                )
            )
    # The in-memory test broker delivers at once and returns no future.
    await asyncio.gather(*(p for p in pending if inspect.isawaitable(p)))


def records_of(outgoing: list[Outgoing]) -> list[Record]:
    """Contract messages as the records that carry them (unsigned)."""
    return [
        Record(
            out.topic,
            out.encode(),
            out.message.key.encode(),
            out.all_headers(),
            str(out.message.correlation_id),
        )
        for out in outgoing
    ]


async def publish(broker: KafkaBroker, outgoing: list[Outgoing], sign: Sign | None = None) -> None:
    """Publish contract messages (see `send`)."""
    await send(broker, records_of(outgoing), sign)


async def ensure_topics(
    bootstrap_servers: str,
    names: list[str],
    partitions: int,
    replication_factor: int = 1,
    compacted: tuple[str, ...] = (),
    compacted_segment_ms: int = 3_600_000,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create the topics a service writes or reads, if missing (idempotent)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=30_000, **security.for_aiokafka()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=_compacted(compacted_segment_ms) if name in compacted else {},
            )
            for name in names
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another service was first
                await admin.create_topics(missing)
            log.info("topics created", topics=[t.name for t in missing])
        await _until_led(admin, names)
    finally:
        await admin.close()


def _compacted(segment_ms: int) -> dict[str, str]:
    # Only the latest record per key is kept; an overwritten one (an erased subject key) is
    # removed once its segment is closed (segment.ms) and the cleaner has run.
    return {
        "cleanup.policy": "compact",
        "segment.ms": str(segment_ms),
        "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": str(segment_ms),
    }


async def _until_led(admin: AIOKafkaAdminClient, names: list[str], patience: float = 30) -> None:
    """Wait until every partition of the topics has a leader: a consumer subscribing before
    that only logs errors and retries, a producer fails its first sends."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            topic.get("error_code", 0) == 0
            and topic.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in topic["partitions"])
            for topic in described
        )
        if ready or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.1)
