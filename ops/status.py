"""Where each service stands: its log, what follows it, what it consumes, its dead letters.

* events: the head of the service's event log (its last notification id);
* followers: the outbox relay's and each projection's stored position, and how far behind the
  head they are;
* consumers: per partition, the position stored with the effects (inboxes) or the consumer
  group's committed offset (subject-key receivers, whose effects are idempotent), against the
  end of the topic: the lag; an inbox position that does not fit its partition (another life
  of the topic, beyond the log end, below the log start: `backbone.topiclife`) is a problem,
  with the command that decides it;
* dead letters: records in each dead-letter topic, and how many no operator has handled yet;
* an unfinished rebuild, if any.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from backbone.deadletters import DeadLetterCase
from backbone.inbox import Inbox
from backbone.topiclife import Verdict, topic_ids_at
from ops.kafka import Kafka
from ops.rebuild import Rebuild
from ops.registry import ServiceHandle

OPEN_COUNT_LIMIT = 10_000  # beyond this many dead letters, `open` is not counted


@dataclass
class Lag:
    topic: str
    partition: int
    position: int | None  # None: nothing stored or committed yet
    end: int
    stalled: str | None = None  # why an inbox's stored position does not fit (topiclife)

    @property
    def lag(self) -> int:
        return self.end - (self.position or 0)


@dataclass
class ConsumerStatus:
    name: str
    kind: str  # "inbox" | "subject keys"
    positions: str  # where its positions live: "event store" | "kafka group"
    partitions: list[Lag] = field(default_factory=list)
    missing_topics: list[str] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass
class FollowerStatus:
    name: str
    kind: str  # "outbox relay" | "projection"
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


@dataclass
class DeadLetterStatus:
    topic: str
    size: int
    open: int | None  # not handled by an operator yet (None: not counted, too many)


@dataclass
class ServiceStatus:
    service: str
    store: str
    events: int
    followers: list[FollowerStatus] = field(default_factory=list)
    consumers: list[ConsumerStatus] = field(default_factory=list)
    dead_letters: list[DeadLetterStatus] = field(default_factory=list)
    rebuilds: dict[str, int] = field(default_factory=dict)  # unfinished: read model -> position
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for follower, raw in zip(self.followers, data["followers"], strict=True):
            raw["lag"] = follower.lag
        for consumer, raw in zip(self.consumers, data["consumers"], strict=True):
            raw["lag"] = consumer.lag
            for lag, part in zip(consumer.partitions, raw["partitions"], strict=True):
                part["lag"] = lag.lag
        return data


def store_status(handle: ServiceHandle) -> ServiceStatus:
    """What the service's own stores say (blocking)."""
    app = handle.app
    head = app.recorder.max_notification_id() or 0
    status = ServiceStatus(handle.name, handle.settings.store, head)
    for relay in handle.relays:
        status.followers.append(FollowerStatus(relay.name, "outbox relay", relay.load_position(), head))
    for read_model, projections in handle.read_models:
        for projection in projections:
            position = projection.load_position()
            status.followers.append(FollowerStatus(projection.name, "projection", position, head))
        unfinished = Rebuild(app, read_model, projections).shadow_position()
        if unfinished is not None:
            status.rebuilds[", ".join(p.name for p in projections)] = unfinished
    return status


async def kafka_status(handle: ServiceHandle, status: ServiceStatus, kafka: Kafka) -> None:
    """Add what Kafka says: consumer lags and dead letters."""
    for consumer in handle.consumers:
        inbox = isinstance(consumer, Inbox)
        found = ConsumerStatus(
            consumer.name, "inbox" if inbox else "subject keys", "event store" if inbox else "kafka group"
        )
        topics = consumer.topics
        tps = [tp for topic in topics for tp in kafka.partitions(topic)]
        found.missing_topics = [t for t in topics if not kafka.partitions(t)]
        ends = await kafka.ends(tps)
        verdicts: dict[Any, Verdict] = {}
        if inbox:
            stored = await asyncio.to_thread(_stored_positions, consumer, tps)
            positions: dict[Any, int | None] = {tp: n or None for tp, n in stored.items()}
            verdicts = await _verdicts(consumer, kafka, tps, ends)
        else:
            positions = await kafka.committed(consumer.name, tps)
        found.partitions = [
            Lag(tp[0], tp[1], positions.get(tp), ends[tp], _stalled(verdicts.get(tp))) for tp in tps
        ]
        for tp, verdict in sorted(verdicts.items()):
            if not verdict.fits:
                status.problems.append(
                    f"{consumer.name} {tp[0]}/{tp[1]} is stalled: {verdict.detail}; decide with "
                    f"`booking-accounts positions replay-from-start {handle.name} {tp[0]}/{tp[1]}` "
                    "(or accept-log-start)"
                )
        status.consumers.append(found)
    for topic in handle.dead_letter_topics:
        tps = kafka.partitions(topic)
        begins, ends = await kafka.beginnings(tps), await kafka.ends(tps)
        size = sum(ends[tp] - begins[tp] for tp in tps)
        status.dead_letters.append(
            DeadLetterStatus(topic, size, await _open_count(handle, kafka, topic, size))
        )


async def _open_count(handle: ServiceHandle, kafka: Kafka, topic: str, size: int) -> int | None:
    if size > OPEN_COUNT_LIMIT:
        return None
    tps = kafka.partitions(topic)
    begins, ends = await kafka.beginnings(tps), await kafka.ends(tps)
    handled = 0
    async for batch in kafka.read(begins, ends):
        for record in batch:
            case_id = DeadLetterCase.create_id(record.topic, record.partition, record.offset)
            handled += await asyncio.to_thread(_handled, handle, case_id)
    return size - handled


async def _verdicts(inbox: Inbox, kafka: Kafka, tps: list[Any], ends: dict[Any, int]) -> dict[Any, Verdict]:
    if not tps:
        return {}
    try:
        ids = (await topic_ids_at(kafka.bootstrap_servers, sorted({t for t, _ in tps}))).ids
    except Exception:  # an older broker: offsets only
        ids = {}
    starts = await kafka.beginnings(tps)
    return await asyncio.to_thread(inbox.verdicts, set(tps), ids, starts, ends)


def _stalled(verdict: Verdict | None) -> str | None:
    return None if verdict is None or verdict.fits else f"{verdict.status}: {verdict.detail}"


def _stored_positions(inbox: Inbox, tps: list[Any]) -> dict[Any, int]:
    return {tp: inbox.stored_position(*tp) for tp in tps}


def _handled(handle: ServiceHandle, case_id: Any) -> bool:
    """An operator acted on it: a case exists only once it was retried or discarded."""
    return bool(handle.app.recorder.select_events(case_id, limit=1))
