"""Which life of a topic a stored position belongs to, and what to do when it is another one.

An inbox stores "the next offset to apply" per partition with its effects. An offset only
means something in the log it was read from. When a topic is deleted and created again, when a
cluster is replaced or restored from a backup, or when retention deletes records a stopped
consumer had not read, the stored offset points into a log that no longer exists: seeking to
it (or letting the client reset to the earliest offset) silently skips or misplaces messages.

So the inbox checks each partition it is given before reading it (`check`):

* Kafka 4 gives every topic a **topic id** (a UUID, new for each creation of the same name).
  The id of the topic a partition's positions were read from is stored with them, as a
  `PartitionLife` in the service's event store; a different id now is another life.
* A stored position **beyond the log end** (the log went back: a restored or replaced
  cluster, a topic created again with the same id unknown) or **below the log start**
  (retention deleted what was not applied yet) does not fit either.

A partition that does not fit is *stalled*: paused, with an error in the log, the
`inbox_partition_stalled` gauge, `booking-accounts status`, and `/ready` answering 503. It is
never reset silently. The operator decides, per partition (`booking-accounts positions`):

* **replay from the start**: read the partition again from its log start, keeping the
  upstream dedupe marks (`source-position`): what was applied already is recognised and
  skipped, commands by their receipts; the rest is applied. Idempotent: the right choice when
  the upstream services kept their stores (a topic created again and re-filled, a cluster
  restored from an older backup, retention);
* **accept the log start**: the new log is the truth from its start, the upstream dedupe
  marks start afresh as well: for a bus whose producers started afresh too.

Either decision is an event of the `PartitionLife` (who, when, from which id and position to
which), so audit tooling sees it. A decision starts a new *life* of the partition's positions:
new position keys, so that positions still only ever move forward (they fence off stale
consumers, `backbone.eventstore`), and the old ones stay for the record.

aiokafka (0.14) speaks Metadata only up to v5, which has no topic ids; Metadata v12 (Kafka
2.8+, flexible encoding) is defined here with aiokafka's own protocol types. Where the broker
cannot answer it, the check falls back to the offsets alone (and says so in the log).

A running inbox's checks go over its client's coordination connection, not the one its fetches
use: Kafka answers a connection's requests in order, and the fetch in flight there waits at the
broker for new records (up to `fetch_max_wait_ms`, 500 ms), which the batch being checked would
otherwise sit out (`topic_ids`, `log_bounds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from aiokafka import TopicPartition
from aiokafka.client import ConnectionGroup
from aiokafka.errors import LeaderNotAvailableError, for_code
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from backbone.domain import Aggregate, event

# ------------------------------------------------------------------ topic ids from the broker

_ZERO = UUID(int=0)


class _Uuid(AbstractType[UUID]):
    @classmethod
    def encode(cls, value: UUID) -> bytes:
        return value.bytes

    @classmethod
    def decode(cls, data: BytesIO) -> UUID:
        raw = data.read(16)
        if len(raw) != 16:
            raise ValueError("Buffer underrun decoding a UUID")
        return UUID(bytes=raw)


class _MetadataResponseV12(Response):
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", _Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _MetadataRequestV12(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = _MetadataResponseV12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(("topic_id", _Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class _TopicIdsRequest(Request[_MetadataRequestV12]):
    API_KEY = 3
    _CLASSES: ClassVar[tuple[type[RequestStruct]]] = (_MetadataRequestV12,)

    def __init__(self, topics: list[str]):
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV12]) -> _MetadataRequestV12:
        return request_struct_class([(_ZERO, t, {}) for t in self._topics], False, False, {})


@dataclass(frozen=True)
class TopicIds:
    """Topic ids by name (None: the topic does not exist), and the cluster's id."""

    ids: dict[str, UUID | None]
    cluster_id: str | None


async def topic_ids(client: Any, topics: list[str]) -> TopicIds:
    """Ask the broker for the topic ids of `topics` through an aiokafka client (a consumer's
    `_client`, or an `AIOKafkaClient`). Raises aiokafka's errors, or `NotImplementedError` /
    `IncompatibleBrokerVersion` where the broker has no Metadata v12 (before Kafka 2.8)."""
    node = client.get_random_node()
    if node is None:
        await client.force_metadata_update()
        node = client.get_random_node()
    request = _TopicIdsRequest(sorted(set(topics)))
    response = await client.send(node, request, group=ConnectionGroup.COORDINATION)
    found: dict[str, UUID | None] = dict.fromkeys(topics)
    for error_code, name, topic_id, *_ in response.topics:
        if error_code == 0 and topic_id != _ZERO:
            found[name] = topic_id
    return TopicIds(found, response.cluster_id)


_EARLIEST, _LATEST = -2, -1  # ListOffsets' timestamps for the log start and the log end


async def log_bounds(
    client: Any, partitions: list[TopicPartition], isolation_level: int = 0
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The log start and log end of partitions (as the consumer's `beginning_offsets` and
    `end_offsets`), asked of their leaders on the client's coordination connection (see the
    module docstring). Raises aiokafka's errors; the caller may then ask the consumer."""
    by_leader: dict[int, dict[str, list[int]]] = {}
    for tp in partitions:
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader == -1:
            raise LeaderNotAvailableError(f"no leader known for {tp}")
        by_leader.setdefault(leader, {}).setdefault(tp.topic, []).append(tp.partition)
    bounds: tuple[dict[TopicPartition, int], dict[TopicPartition, int]] = ({}, {})
    for found, timestamp in zip(bounds, (_EARLIEST, _LATEST), strict=True):
        for leader, topics in by_leader.items():
            asked = [(topic, [(p, timestamp) for p in parts]) for topic, parts in topics.items()]
            request = OffsetRequest(-1, isolation_level, asked)
            response = await client.send(leader, request, group=ConnectionGroup.COORDINATION)
            for topic, answers in response.topics:
                for partition, error_code, *answer in answers:
                    if error_code:
                        raise for_code(error_code)(f"ListOffsets {topic}/{partition}")
                    offsets = answer[0] if response.API_VERSION == 0 else [answer[1]]
                    found[TopicPartition(topic, partition)] = offsets[0] if offsets else -1
    missing = set(partitions) - (set(bounds[0]) & set(bounds[1]))
    if missing:
        raise LeaderNotAvailableError(f"no offsets for {sorted(missing)}")
    return bounds


async def topic_ids_at(bootstrap_servers: str, topics: list[str]) -> TopicIds:
    """`topic_ids` through a client of its own (operators' tools, tests)."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers)
    await client.bootstrap()
    try:
        return await topic_ids(client, topics)
    finally:
        await client.close()


# -------------------------------------------------------------------------------- the check

FITS = "fits"
TOPIC_CHANGED = "topic_changed"  # the topic id differs from the one the positions were read from
BEYOND_END = "beyond_log_end"  # the log went back (a restored/replaced cluster, a new topic)
BELOW_START = "below_log_start"  # retention deleted records not applied yet


@dataclass(frozen=True)
class Verdict:
    status: str  # FITS | TOPIC_CHANGED | BEYOND_END | BELOW_START
    detail: str = ""

    @property
    def fits(self) -> bool:
        return self.status == FITS


def check(
    position: int | None,
    bound_to: UUID | None,
    topic_id: UUID | None,
    log_start: int,
    log_end: int,
) -> Verdict:
    """Does a stored position (the next offset to apply; None if nothing was ever applied in
    this life) fit the partition as the broker has it now? `bound_to` is the topic id stored
    with the positions (None: not known yet), `topic_id` the broker's (None: not known)."""
    if bound_to is not None and topic_id is not None and bound_to != topic_id:
        return Verdict(
            TOPIC_CHANGED,
            f"the positions were read from topic id {bound_to}; the topic now has id {topic_id} "
            "(deleted and created again, or another cluster)",
        )
    if position is None:
        return Verdict(FITS)
    if position > log_end:
        return Verdict(
            BEYOND_END,
            f"the stored position {position} is beyond the log end {log_end} "
            "(the log went back: a topic created again, a cluster replaced or restored)",
        )
    if position < log_start:
        return Verdict(
            BELOW_START,
            f"the stored position {position} is below the log start {log_start} "
            f"(retention deleted {log_start - position} records not applied yet)",
        )
    return Verdict(FITS)


# --------------------------------------------------------------- the record in the event store

REPLAY_FROM_START = "replay_from_start"
ACCEPT_LOG_START = "accept_log_start"
DECISIONS = (REPLAY_FROM_START, ACCEPT_LOG_START)

_LIFE_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:partition-lives")


class PartitionLife(Aggregate):
    """One consumer's positions in one partition: the topic id they were read from, and every
    decision an operator took when they stopped fitting (see the module docstring).

    `offsets_life` names the key of the partition's offset position, `marks_life` the keys of
    its upstream dedupe marks; 0 is the first life (the keys as they always were)."""

    @staticmethod
    def create_id(consumer: str, topic: str, partition: int) -> UUID:
        return uuid5(_LIFE_IDS, f"{consumer}@{topic}/{partition}")

    @event("Bound")
    def __init__(self, consumer: str, topic: str, partition: int, topic_id: UUID | None) -> None:
        self.consumer = consumer
        self.topic = topic
        self.partition = partition
        self.topic_id = topic_id
        self.offsets_life = 0
        self.marks_life = 0

    def bind(self, topic_id: UUID) -> None:
        """Positions of the first life kept before topic ids were stored: bind them now."""
        if self.topic_id is None:
            self.record_binding(topic_id=topic_id)

    @event("TopicIdBound")
    def record_binding(self, topic_id: UUID) -> None:
        self.topic_id = topic_id

    def decide(
        self,
        decision: str,
        topic_id: UUID | None,
        reason: str,
        position_before: int | None,
        log_start: int,
        log_end: int,
        note: str | None,
    ) -> None:
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}: one of {', '.join(DECISIONS)}")
        self.record_decision(
            decision=decision,
            topic_id_before=self.topic_id,
            topic_id=topic_id,
            reason=reason,
            position_before=position_before,
            log_start=log_start,
            log_end=log_end,
            note=note,
        )

    @event("Decided")
    def record_decision(
        self,
        decision: str,
        topic_id_before: UUID | None,
        topic_id: UUID | None,
        reason: str,
        position_before: int | None,
        log_start: int,
        log_end: int,
        note: str | None,
    ) -> None:
        self.topic_id = topic_id
        self.offsets_life += 1
        if decision == ACCEPT_LOG_START:
            self.marks_life = self.offsets_life


def life_suffix(life: int) -> str:
    """Appended to a position key: nothing for the first life (the keys as they always were)."""
    return f"~{life}" if life else ""


__all__ = [
    "ACCEPT_LOG_START",
    "BELOW_START",
    "BEYOND_END",
    "DECISIONS",
    "FITS",
    "REPLAY_FROM_START",
    "TOPIC_CHANGED",
    "PartitionLife",
    "TopicIds",
    "Verdict",
    "check",
    "life_suffix",
    "topic_ids",
    "topic_ids_at",
]
