"""The tracking consumer ("inbox"): applies every message from the bus exactly once.

Exactly once here means exactly-once *effect* in the service's event store, the only place
effects live. For each batch taken from Kafka the inbox:

1. skips records below the stored position of their partition (a redelivery after a crash or
   a rebalance) and events whose upstream position (`source-position` header) is not above the
   highest one stored for that source and partition (an upstream relay re-publishing the same
   event at a new offset after its own crash: offsets alone would not catch it);
2. decodes each record against the consumer's catalog (an allow-list of contract models; the
   eventsourcing topic resolver is never involved) and hands it to its handler, a plain
   function `(message, uow)`; commands go through their receipt (`backbone.commands`);
3. dead-letters what cannot be decoded or applied while every store answers (the partition
   keeps flowing); a failure while a store does not answer is an outage, never the message's
   fault: the batch is retried with backoff until the store is back (`backbone.faults`);
4. saves every changed aggregate together with the new positions in ONE transaction.

Kafka's own committed offsets are only a hint for monitoring: on start and on every
rebalance the consumer seeks to the positions in its store. A write that loses a race with
another instance (same partition, after a rebalance) fails on the position high-water mark
and changes nothing.

eventsourcing is synchronous, so decoding, handlers and the store run in a worker thread;
only Kafka I/O happens on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from eventsourcing.persistence import IntegrityError, Tracking
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from backbone import context, deadletters, metrics
from backbone.bus import H_SOURCE, H_SOURCE_POSITION
from backbone.commands import CommandHandler, apply_command, record_failure
from backbone.domain import DomainError
from backbone.eventstore import ServiceApplication
from backbone.faults import classify, is_infrastructure
from backbone.logging import get_logger
from backbone.personal import UnknownSubject
from backbone.unitofwork import UnitOfWork
from contracts.catalog import Catalog, DecodeError
from contracts.envelope import Command, Message

log = get_logger(__name__)

Handler = Callable[[Any, UnitOfWork], Any]

TP = tuple[str, int]


@dataclass
class _Plan:
    """The outcome of applying one batch in memory, before it is made durable."""

    uow: UnitOfWork
    positions: dict[TP, int] = field(default_factory=dict)  # next offset per partition
    sources: dict[tuple[str, TP], int] = field(default_factory=dict)  # upstream high-water marks
    dead: list[deadletters.DeadLetter] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one batch: counts by outcome. `stored` is False when nothing was made
    durable (a dry run, or another consumer stored these partitions' positions first)."""

    applied: int
    duplicates: int
    redelivered: int
    dead_lettered: int
    stored: bool = True


class Inbox:
    """One consumer group of one service over some topics, with its handlers."""

    def __init__(
        self,
        *,
        service: str,
        name: str,
        app: ServiceApplication,
        broker: KafkaBroker,
        topics: Sequence[str],
        catalog: Catalog,
        handlers: Mapping[type[Message], Handler],
        dead_letter_topic: str,
        batch_size: int = 500,
    ):
        self.service = service
        self.name = name  # e.g. "bookings.inbox"; also the consumer group id
        self.app = app
        self.broker = broker
        self.topics = list(topics)
        self.catalog = catalog
        self.handlers = {model: self._wrap(model, h) for model, h in handlers.items()}
        self.dead_letter_topic = dead_letter_topic
        self._next: dict[TP, int] = {}
        self._sources: dict[tuple[str, TP], int] = {}
        self._lock = asyncio.Lock()
        self._failures = 0
        self.subscriber = broker.subscriber(
            *self.topics,
            group_id=name,
            batch=True,
            max_records=batch_size,
            batch_timeout_ms=200,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            listener=_SeekToStoredPositions(self),
            decoder=_undecoded,
            title=f"{name}",
            description=f"The {service} service's tracking consumer (exactly-once effects).",
        )
        self.subscriber(self._consume)

    # ------------------------------------------------------------------ the Kafka side

    async def _consume(self, message: KafkaMessage) -> None:
        records = message.raw_message
        if not isinstance(records, tuple):
            records = (records,)
        consumer = message.consumer
        async with self._lock:
            try:
                await self.apply(records, consumer)
                self._failures = 0
            except Exception as error:
                # Nothing of the batch was stored: go back to the stored positions and retry
                # after a pause (a store or broker outage stalls the partition; never skips).
                self._failures += 1
                pause = min(30.0, 0.2 * 2**self._failures)
                if isinstance(error, UnknownSubject):  # its key is on the way: not an error
                    pause = min(pause, 2.0)
                    log.info("waiting for a subject key", inbox=self.name, detail=str(error))
                elif is_infrastructure(error):  # an outage: no traceback at every retry
                    log.warning(
                        "a store or the broker is unavailable; the batch will be retried",
                        inbox=self.name,
                        pause_seconds=pause,
                        error=f"{type(error).__name__}: {error}",
                    )
                else:
                    log.exception("batch failed; will retry", inbox=self.name, pause_seconds=pause)
                self._forget({(r.topic, r.partition) for r in records})
                await self._seek_to_stored({(r.topic, r.partition) for r in records}, consumer)
                await asyncio.sleep(pause)

    async def apply(
        self, records: Sequence[Any], consumer: Any = None, dry_run: bool = False
    ) -> BatchOutcome:
        """Apply one batch of consumer records exactly once (see the module docstring).

        With `dry_run`, the handlers run on a throw-away unit of work and nothing is stored or
        dead-lettered: the outcome says what applying the batch would do (operators' replays).
        """
        started = time.perf_counter()
        sent: set[tuple[str, int, int]] = set()
        for attempt in range(1, 6):
            plan = await asyncio.to_thread(self._prepare, records)
            if dry_run:
                self._next.update(plan.positions)  # the next batch of the dry run follows this one
                self._sources.update(plan.sources)
                return _outcome(plan, stored=False)
            letters = [d for d in plan.dead if _coords(d.record) not in sent]
            if letters:
                await deadletters.send(self.broker, self.dead_letter_topic, self.name, letters)
                sent.update(_coords(d.record) for d in letters)
            try:
                await asyncio.to_thread(self._commit, plan)
                break
            except IntegrityError:
                if await asyncio.to_thread(self._lost_race, plan):
                    log.warning("another consumer stored these positions first", inbox=self.name)
                    self._forget(set(plan.positions))
                    await self._seek_to_stored(set(plan.positions), consumer)
                    return _outcome(plan, stored=False)
                log.info("concurrent change of an aggregate; reapplying batch", attempt=attempt)
        else:
            raise RuntimeError(f"{self.name}: batch kept conflicting with concurrent writes")
        self._next.update(plan.positions)
        self._sources.update(plan.sources)
        metrics.batch_seconds.labels(self.name).observe(time.perf_counter() - started)
        for outcome in ("applied", "duplicates", "redelivered"):
            metrics.consumed.labels(self.name, outcome).inc(getattr(plan, outcome))
        metrics.consumed.labels(self.name, "dead_lettered").inc(len(plan.dead))
        await self._commit_hint(plan.positions, consumer)
        return _outcome(plan, stored=True)

    def stored_position(self, topic: str, partition: int) -> int:
        """The next offset to apply in a partition, as stored with the effects (blocking)."""
        return self.app.position(self._offset_key((topic, partition))) or 0

    def start_at(self, topic: str, partition: int, offset: int) -> None:
        """Make this consumer start at `offset` in a partition where it has applied nothing
        (an operator's replay from a point in time). Like any position, it only moves forward:
        IntegrityError if the consumer is already there or further (blocking)."""
        self.app.record_position(Tracking(self._offset_key((topic, partition)), offset))
        self._forget({(topic, partition)})

    async def on_assigned(self, assigned: set[TopicPartition], consumer: Any) -> None:
        tps = {(tp.topic, tp.partition) for tp in assigned}
        self._forget(tps)
        await self._seek_to_stored(tps, consumer)
        log.info("partitions assigned", inbox=self.name, partitions=sorted(tps))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # let the batch in flight finish before the partitions go
            self._forget({(tp.topic, tp.partition) for tp in revoked})

    # ------------------------------------------------------------ the store side (threads)

    def _prepare(self, records: Sequence[Any]) -> _Plan:
        plan = _Plan(UnitOfWork(self.app))
        for record in records:
            tp = (record.topic, record.partition)
            if record.offset < plan.positions.get(tp, self._stored_next(tp)):
                plan.redelivered += 1
                continue
            plan.positions[tp] = record.offset + 1
            source = _upstream(record)
            if source is not None:
                key = (source[0], tp)
                if source[1] <= plan.sources.get(key, self._stored_source(key)):
                    plan.duplicates += 1
                    continue
                plan.sources[key] = source[1]
            self._apply_one(record, plan)
        return plan

    def _apply_one(self, record: Any, plan: _Plan) -> None:
        try:
            message = self.catalog.decode(record.value)
        except DecodeError as error:
            plan.dead.append(deadletters.DeadLetter(record, error.reason, error.detail))
            with plan.uow.scope():
                record_failure(plan.uow, error.body, error.reason, error.detail)
            return
        handler = self.handlers.get(type(message))
        if handler is None:
            plan.applied += 1  # a known message this service has no use for
            return
        actor = f"service:{getattr(message, 'issued_by', None) or _source_name(record)}"
        with context.caused_by(actor, message.tenant_id, message.correlation_id, message.message_id):
            try:
                with plan.uow.scope():
                    handler(message, plan.uow)
                plan.applied += 1
            except Exception as error:
                outage = classify(error, self.app.unreachable_stores)
                if outage is error:
                    raise
                if outage is not None:  # a store is down: stall and retry, never blame the message
                    raise outage from error
                # Every store answers: a bug or a broken invariant, this message only.
                log.exception("handler failed; dead-lettering", inbox=self.name)
                detail = f"{type(error).__name__}: {error}"
                plan.dead.append(deadletters.DeadLetter(record, deadletters.HANDLER_FAILED, detail))
                if isinstance(message, Command):
                    with plan.uow.scope():
                        record_failure(
                            plan.uow,
                            message.model_dump(mode="json"),
                            "internal_error",
                            "the command could not be applied; it was dead-lettered for operators",
                        )

    def _commit(self, plan: _Plan) -> None:
        positions = [Tracking(self._offset_key(tp), n) for tp, n in plan.positions.items()]
        positions += [Tracking(self._source_key(k), n) for k, n in plan.sources.items()]
        if positions or plan.uow.changed():
            self.app.save_with_positions(plan.uow.changed(), positions)

    def _lost_race(self, plan: _Plan) -> bool:
        """After a failed save: did another consumer move these positions since we read them?
        (If not, the conflict was on an aggregate changed concurrently, e.g. over HTTP.)"""
        return any(
            (self.app.position(self._offset_key(tp)) or 0) != self._next.get(tp, 0) for tp in plan.positions
        ) or any(
            (self.app.position(self._source_key(key)) or 0) != self._sources.get(key, 0)
            for key in plan.sources
        )

    def _stored_next(self, tp: TP) -> int:
        if tp not in self._next:
            self._next[tp] = self.app.position(self._offset_key(tp)) or 0
        return self._next[tp]

    def _stored_source(self, key: tuple[str, TP]) -> int:
        if key not in self._sources:
            self._sources[key] = self.app.position(self._source_key(key)) or 0
        return self._sources[key]

    def _offset_key(self, tp: TP) -> str:
        return f"{self.name}@{tp[0]}/{tp[1]}"

    def _source_key(self, key: tuple[str, TP]) -> str:
        source, (topic, partition) = key
        return f"{self.name}<{source}@{topic}/{partition}"

    def _forget(self, tps: set[TP]) -> None:
        for tp in tps:
            self._next.pop(tp, None)
        for key in [k for k in self._sources if k[1] in tps]:
            self._sources.pop(key, None)

    async def _seek_to_stored(self, tps: set[TP], consumer: Any) -> None:
        if not isinstance(consumer, AIOKafkaConsumer):
            return  # the in-memory test broker has nothing to seek
        stored = await asyncio.to_thread(lambda: {tp: self._stored_next(tp) for tp in tps})
        for tp, offset in stored.items():
            try:
                if offset:
                    consumer.seek(TopicPartition(*tp), offset)
                else:
                    await consumer.seek_to_beginning(TopicPartition(*tp))
            except (IllegalStateError, KafkaError) as error:  # no longer assigned
                log.info("not seeking", partition=tp, reason=str(error))

    async def _commit_hint(self, positions: dict[TP, int], consumer: Any) -> None:
        if not positions or not isinstance(consumer, AIOKafkaConsumer):
            return
        try:
            await consumer.commit({TopicPartition(*tp): n for tp, n in positions.items()})
        except (CommitFailedError, IllegalStateError, KafkaError) as error:
            log.info("offset commit (monitoring hint) skipped", reason=str(error))

    def _wrap(self, model: type[Message], handler: Handler) -> Handler:
        if issubclass(model, Command):
            command_handler: CommandHandler = handler

            def handle_command(command: Command, uow: UnitOfWork) -> None:
                apply_command(command, uow, command_handler)

            return handle_command

        def handle_event(event: Message, uow: UnitOfWork) -> None:
            try:
                handler(event, uow)
            except DomainError as error:  # an event is a fact: refusing it is a bug here
                raise RuntimeError(f"event refused by the domain: {error}") from error

        return handle_event


class _SeekToStoredPositions(ConsumerRebalanceListener):
    def __init__(self, inbox: Inbox):
        self.inbox = inbox

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.inbox.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.inbox.on_assigned(assigned, self.inbox.subscriber.consumer)


def _outcome(plan: _Plan, stored: bool) -> BatchOutcome:
    return BatchOutcome(plan.applied, plan.duplicates, plan.redelivered, len(plan.dead), stored)


def _undecoded(message: Any) -> None:
    # faststream would json-decode bodies before our handler runs and swallow the error of a
    # malformed one; decoding is the inbox's job (with dead-lettering), so skip it here.
    return None


def _upstream(record: Any) -> tuple[str, int] | None:
    headers = dict(record.headers or ())
    source = headers.get(H_SOURCE)
    position = headers.get(H_SOURCE_POSITION)
    if not source or not position:
        return None
    try:
        return source.decode(), int(position)
    except (UnicodeDecodeError, ValueError):
        return None


def _source_name(record: Any) -> str:
    upstream = _upstream(record)
    return upstream[0] if upstream else "unknown"


def _coords(record: Any) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)
