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
   fault: the batch is retried with backoff until the store is back (`backbone.faults`), and
   a handler's write that lost a race with another instance's is applied again
   (`CONFLICT_ATTEMPTS`);
4. saves every changed aggregate together with the new positions in ONE transaction.

Before applying a batch the inbox reads every aggregate it will need in one query (the unit of
work's `preload`): each command's receipt, and what the service's `prefetch(body)` names for a
message (its booking, its tenant's rules). Aggregates as committed are kept in a bounded cache
between batches; one that changed in the store since (another instance, the HTTP API) is
brought forward from the store, and one touched by a batch that was not stored is dropped.

Kafka's own committed offsets are only a hint for monitoring: on start and on every
rebalance the consumer seeks to the positions in its store. A write that loses a race with
another instance (same partition, after a rebalance) fails and changes nothing: each
partition's position is stored only if it is still the one the batch started from.

Before it seeks, the inbox checks that each stored position belongs to the partition as it is
now (same topic id, within the log; `backbone.topiclife`). One that does not (the topic was
created again, the cluster replaced, retention passed it) stalls that partition, paused,
until an operator decides (`booking-accounts positions`); it is never reset silently. A batch
that shows the client reset a position on its own (records below the stored position) is
checked the same way before anything of it is applied.

eventsourcing is synchronous, so decoding, handlers and the store run in a worker thread;
only Kafka I/O happens on the event loop.

A record is handed over as soon as the broker has it: the fetch waits at the broker (long
poll, answered when data arrives), and the subscriber does not pause after an empty poll
(`prompt_batches`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any
from uuid import UUID

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Tracking
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber

from backbone import context, deadletters, metrics, signing, tracing
from backbone.bus import H_SOURCE, H_SOURCE_POSITION
from backbone.commands import CommandHandler, CommandReceipt, apply_command, record_failure, refuse_command
from backbone.domain import DomainError
from backbone.eventstore import ServiceApplication
from backbone.faults import classify, is_conflict, is_denied, is_infrastructure
from backbone.logging import get_logger
from backbone.personal import UnknownSubject
from backbone.topiclife import PartitionLife, Verdict, check, life_suffix, log_bounds, topic_ids
from backbone.unitofwork import UnitOfWork
from contracts.catalog import Catalog, DecodeError
from contracts.envelope import Command, Message

log = get_logger(__name__)

Handler = Callable[[Any, UnitOfWork], Any]
Prefetch = Callable[[dict[str, Any]], Iterable[UUID]]
"""The ids of the aggregates a message's handler will get, read from its raw body (a hint:
anything missing is read when asked for, anything malformed is ignored)."""

CACHE_SIZE = 20_000  # aggregates kept between batches, least recently committed out first
# A record whose handler lost a race on a unique key is applied again (the whole batch, after
# the usual pause) this many times in all before it is believed to be the cause: dead-lettered.
CONFLICT_ATTEMPTS = 3
Authorize = Callable[[Any, Command, UnitOfWork], "tuple[str, str] | None"]
"""(record, command, uow) -> (reason code, detail) if its publisher may not send it."""

TP = tuple[str, int]


@dataclass
class _Plan:
    """The outcome of applying one batch in memory, before it is made durable."""

    uow: UnitOfWork
    positions: dict[TP, int] = field(default_factory=dict)  # next offset per partition
    started: dict[TP, int] = field(default_factory=dict)  # the stored one the batch started from
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
        prefetch: Prefetch | None = None,
        verifier: signing.Verifier | None = None,
        authorize: Authorize | None = None,
        key_patience_seconds: float = 120.0,
    ):
        self.service = service
        self.name = name  # e.g. "bookings.inbox"; also the consumer group id
        self.app = app
        self.broker = broker
        self.topics = list(topics)
        self.catalog = catalog
        self.handlers = {model: self._wrap(model, h) for model, h in handlers.items()}
        self.dead_letter_topic = dead_letter_topic
        self.prefetch = prefetch
        self._cache: _LRU = _LRU(CACHE_SIZE)
        app.add_cache(self._cache)
        # Who may write each topic (backbone.signing); None only in in-memory tests.
        self.verifier = verifier
        self.authorize = authorize  # may a command's (verified) publisher send it?
        # How long a message may wait for its subject's key before it is dead-lettered.
        self.key_patience_seconds = key_patience_seconds
        self._key_waits: dict[tuple[str, int, int], float] = {}
        self._conflicts: dict[tuple[str, int, int], int] = {}  # attempts that lost a race, per record
        self._next: dict[TP, int] = {}
        self._sources: dict[tuple[str, TP], int] = {}
        self._lock = asyncio.Lock()
        self._failures = 0
        self._lives: dict[TP, PartitionLife | None] = {}  # cached; see `backbone.topiclife`
        self.stalled: dict[TP, Verdict] = {}  # paused partitions whose positions do not fit
        self.recheck_seconds = 2.0  # how often a stalled partition looks for a decision
        self._watcher: asyncio.Task[None] | None = None
        self._checked_at = 0.0  # monotonic time of the last check (`_check_positions`)
        self._lag_labels: set[TP] = set()  # partitions `inbox_lag_messages` reports
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
        prompt_batches(self.subscriber)
        self.subscriber(self._consume)

    # ------------------------------------------------------------------ the Kafka side

    async def _consume(self, message: KafkaMessage) -> None:
        # The lines about the batch as a whole share a correlation id of their own; each
        # message's handler runs under the message's (`context.caused_by`, in `_apply_one`).
        with context.working():
            await self._consume_batch(message)

    async def _consume_batch(self, message: KafkaMessage) -> None:
        records = message.raw_message
        if not isinstance(records, tuple):
            records = (records,)
        consumer = message.consumer
        async with self._lock:
            records = await self._fitting(records, consumer)
            if not records:
                return
            try:
                await self.apply(records, consumer)
                self._failures = 0
                metrics.stalled.labels(self.name).set(0)
            except Exception as error:
                # Nothing of the batch was stored: go back to the stored positions and retry
                # after a pause (a store or broker outage stalls the partition; never skips).
                self._failures += 1
                pause = min(30.0, 0.2 * 2**self._failures)
                metrics.stalled.labels(self.name).set(1)
                cause = (
                    "denied"
                    if is_denied(error)
                    else "outage"
                    if is_infrastructure(error)
                    else "conflict"
                    if is_conflict(error)
                    else "failure"
                )
                metrics.retries.labels(self.name, cause).inc()
                if isinstance(error, UnknownSubject):  # its key is on the way: not an error
                    pause = min(pause, 2.0)
                    log.info("waiting for a subject key", inbox=self.name, detail=str(error))
                elif cause == "denied":  # an ACL (say, its dead letters' topic): for an operator to grant
                    log.error(
                        "Kafka denies this service; the batch will be retried until it is granted",
                        inbox=self.name,
                        pause_seconds=pause,
                        error=f"{type(error).__name__}: {error}",
                    )
                elif cause == "conflict":  # a race with another instance: the retry reads its row
                    log.warning(
                        "a write conflicted with another instance's; the batch will be applied again",
                        inbox=self.name,
                        pause_seconds=pause,
                        error=f"{type(error).__name__}: {error}",
                    )
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

    async def measure_lag(self) -> None:
        """`inbox_lag_messages` of the partitions this instance holds: the end of each one
        (asked of the broker) beyond the position applied (`backbone.runtime` calls it on a
        timer, so a stalled partition's lag grows on the dashboard)."""
        consumer = self.subscriber.consumer
        held = set(consumer.assignment()) if consumer is not None else set()
        for topic, partition in self._lag_labels - {(tp.topic, tp.partition) for tp in held}:
            with contextlib.suppress(KeyError):  # given up since the last measure
                metrics.inbox_lag.remove(self.name, topic, str(partition))
        self._lag_labels = {(tp.topic, tp.partition) for tp in held}
        if not held:
            return
        ends = await consumer.end_offsets(list(held))
        for tp, end in ends.items():
            key = (tp.topic, tp.partition)
            applied = self._next.get(key)
            if applied is None:
                applied = await asyncio.to_thread(self.stored_position, *key)
            metrics.inbox_lag.labels(self.name, tp.topic, str(tp.partition)).set(max(0, end - applied))

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
        # Under the batch lock: a batch the client fetched meanwhile (from wherever it reset
        # to) waits, and then finds the partitions that do not fit already stalled.
        async with self._lock:
            self._forget(tps)
            for tp in tps:
                self._lives.pop(tp, None)
            await self._check_positions(tps, consumer)
            await self._seek_to_stored(tps - set(self.stalled), consumer)
        log.info("partitions assigned", inbox=self.name, partitions=sorted(tps))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # let the batch in flight finish before the partitions go
            tps = {(tp.topic, tp.partition) for tp in revoked}
            self._forget(tps)
            for tp in tps & set(self.stalled):  # another instance checks it now
                self._unstall(tp)

    # ------------------------------------------------ positions of another life (topiclife)

    def verdicts(
        self,
        tps: set[TP],
        ids: Mapping[str, Any],
        starts: Mapping[TP, int],
        ends: Mapping[TP, int],
        bind: bool = False,
    ) -> dict[TP, Verdict]:
        """Does each partition's stored position fit the partition as the broker has it
        (topic ids by topic, log starts and ends)? With `bind`, the topic id is stored for
        positions that fit and have none yet (blocking)."""
        found = {}
        for tp in tps:
            life = self._life(tp)
            topic_id = ids.get(tp[0])
            position = self.app.position(self._offset_key(tp))
            verdict = check(position, life.topic_id if life else None, topic_id, starts[tp], ends[tp])
            if bind and verdict.fits and topic_id is not None and (life is None or life.topic_id is None):
                self._bind(tp, life, topic_id)
            found[tp] = verdict
        return found

    def life(self, tp: TP) -> PartitionLife | None:
        """The record of a partition's positions: topic id and decisions (blocking; fresh)."""
        self._lives.pop(tp, None)
        return self._life(tp)

    def _life(self, tp: TP) -> PartitionLife | None:
        if tp not in self._lives:
            try:
                life = self.app.repository.get(PartitionLife.create_id(self.name, *tp))
            except AggregateNotFoundError:
                life = None
            self._lives[tp] = life
        return self._lives[tp]

    def _bind(self, tp: TP, life: PartitionLife | None, topic_id: Any) -> None:
        with context.caused_by(f"service:{self.service}"):
            if life is None:
                life = PartitionLife(self.name, tp[0], tp[1], topic_id)
            else:
                life.bind(topic_id)
        try:
            self.app.save(life)
        except IntegrityError:  # another instance bound it first
            self._lives.pop(tp, None)
            return
        self._lives[tp] = life

    async def _check_positions(self, tps: set[TP], consumer: Any) -> set[TP]:
        """Stall (pause) the partitions whose stored position does not fit; resume those that
        fit again after an operator's decision. Returns the partitions that fit."""
        if not tps or not isinstance(consumer, AIOKafkaConsumer):
            return set(tps)
        self._checked_at = time.monotonic()
        try:
            ids = (await topic_ids(consumer._client, sorted({t for t, _ in tps}))).ids
        except Exception as error:  # an older broker, or the broker busy: offsets only
            log.warning(
                "topic ids unavailable; checking stored positions against the log's offsets only",
                inbox=self.name,
                error=f"{type(error).__name__}: {error}",
            )
            ids = {}
        parts = [TopicPartition(*tp) for tp in tps]
        try:
            try:  # not behind the fetch in flight (`backbone.topiclife`)
                first, after = await log_bounds(consumer._client, parts)
            except (KafkaError, OSError):  # the consumer's own calls retry what can be retried
                first, after = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
            starts = {(k.topic, k.partition): v for k, v in first.items()}
            ends = {(k.topic, k.partition): v for k, v in after.items()}
        except (KafkaError, OSError) as error:  # seeking will fail too; the next rebalance checks
            log.warning("cannot read the partitions' offsets", inbox=self.name, error=str(error))
            return set(tps)
        verdicts = await asyncio.to_thread(self.verdicts, set(tps), ids, starts, ends, True)
        for tp, verdict in verdicts.items():
            if verdict.fits:
                if tp in self.stalled:
                    self._unstall(tp, consumer)
                    log.info("stalled partition fits again; resuming", inbox=self.name, partition=tp)
            else:
                self._stall(tp, verdict, consumer)
        return {tp for tp, verdict in verdicts.items() if verdict.fits}

    def _stall(self, tp: TP, verdict: Verdict, consumer: Any) -> None:
        with contextlib.suppress(IllegalStateError):
            consumer.pause(TopicPartition(*tp))
        if tp not in self.stalled:
            partition = f"{tp[0]}/{tp[1]}"
            log.error(
                "stored position does not fit the partition: partition stalled until an operator decides",
                inbox=self.name,
                partition=partition,
                reason=verdict.status,
                detail=verdict.detail,
                decide=f"booking-accounts positions replay-from-start|accept-log-start {self.service} "
                f"{partition}",
            )
        self.stalled[tp] = verdict
        metrics.partition_stalled.labels(self.name, tp[0], str(tp[1])).set(1)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_stalled(consumer), name=f"{self.name}.stalled")

    def _unstall(self, tp: TP, consumer: Any = None) -> None:
        self.stalled.pop(tp, None)
        metrics.partition_stalled.labels(self.name, tp[0], str(tp[1])).set(0)
        if consumer is not None:
            with contextlib.suppress(IllegalStateError):
                consumer.resume(TopicPartition(*tp))

    async def _watch_stalled(self, consumer: Any) -> None:
        """While partitions are stalled, look every few seconds for an operator's decision
        (recorded in the store by `booking-accounts positions`) and resume those that fit."""
        while self.stalled:
            await asyncio.sleep(self.recheck_seconds)
            async with self._lock:
                assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
                tps = set(self.stalled) & assigned
                for tp in set(self.stalled) - assigned:
                    self._unstall(tp)
                for tp in tps:
                    self._lives.pop(tp, None)
                    self._forget({tp})
                try:
                    fitting = await self._check_positions(tps, consumer)
                except Exception:  # the store or the broker is down: look again later
                    log.warning("cannot check stalled partitions yet", inbox=self.name, exc_info=True)
                    continue
                await self._seek_to_stored(fitting & tps, consumer)

    async def _fitting(self, records: Sequence[Any], consumer: Any) -> Sequence[Any]:
        """The records of partitions that are not stalled. A partition whose first record
        here is below the position this inbox holds was reset by the client on its own (its
        position was out of range): it is checked, and stalled if it no longer fits. Every ten
        seconds or so, the partitions of a batch are checked anyway (a topic created again
        faster than the client refreshes its metadata, and already past the stored position)."""
        firsts: dict[TP, int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            firsts[tp] = min(record.offset, firsts.get(tp, record.offset))
        suspect = {tp for tp, first in firsts.items() if tp in self._next and first < self._next[tp]}
        if time.monotonic() - self._checked_at > self.recheck_seconds * 5:  # a topic created again
            suspect = set(firsts)  # between two metadata refreshes, and already past our position
        if suspect - set(self.stalled):
            await self._check_positions(suspect - set(self.stalled), consumer)
        if not self.stalled:
            return records
        return [r for r in records if (r.topic, r.partition) not in self.stalled]

    # ------------------------------------------------------------ the store side (threads)

    def _prepare(self, records: Sequence[Any]) -> _Plan:
        plan = _Plan(UnitOfWork(self.app, self._cache))
        fresh = []
        for record in records:
            tp = (record.topic, record.partition)
            if record.offset < plan.positions.get(tp, self._stored_next(tp)):
                plan.redelivered += 1
                continue
            plan.started.setdefault(tp, self._stored_next(tp))
            plan.positions[tp] = record.offset + 1
            if not self._authentic(record, plan):  # before any header is believed
                continue
            source = _upstream(record)
            if source is not None:
                key = (source[0], tp)
                if source[1] <= plan.sources.get(key, self._stored_source(key)):
                    plan.duplicates += 1
                    continue
                plan.sources[key] = source[1]
            fresh.append(record)
        plan.uow.preload(self._needs(fresh))
        for record in fresh:
            self._apply_one(record, plan)
        return plan

    def _needs(self, records: Sequence[Any]) -> set[UUID]:
        """What the batch's handlers will get (see `Prefetch`): read from the raw bodies only
        to know which ids to load; each message is still decoded and checked on its own."""
        ids: set[UUID] = set()
        for record in records:
            try:
                body = orjson.loads(record.value)
            except (orjson.JSONDecodeError, TypeError):
                continue
            if not isinstance(body, dict):
                continue
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                if body.get("command_id") is not None:
                    ids.add(CommandReceipt.create_id(UUID(str(body["command_id"]))))
                if self.prefetch is not None:
                    ids.update(self.prefetch(body))
        return ids

    def _authentic(self, record: Any, plan: _Plan) -> bool:
        """Is the record proven to come from its topic's owner (`backbone.signing`)? If not,
        it is dead-lettered with a final reason and counted, and nothing of it is applied: not
        even its `source-position`, which would poison deduplication."""
        if self.verifier is None:
            return True
        refusal = self.verifier.refusal(record)
        if refusal is None:
            return True
        self._refuse(record, plan, refusal.reason, refusal.detail)
        return False

    def _authorised(self, record: Any, command: Command, plan: _Plan) -> bool:
        """May the (authenticated) publisher send this command? (`authorize`: its tenants
        and capabilities.) If not, refused like an unauthenticated record."""
        if self.authorize is None or (self.verifier is not None and self.verifier.operator_retry(record)):
            return True
        refusal = self.authorize(record, command, plan.uow)
        if refusal is None:
            return True
        self._refuse(record, plan, *refusal)
        return False

    def _refuse(self, record: Any, plan: _Plan, reason: str, detail: str) -> None:
        log.warning("refused a record", inbox=self.name, reason=reason, detail=detail)
        metrics.refused.labels(self.name, reason).inc()
        plan.dead.append(deadletters.DeadLetter(record, reason, detail))
        if self.verifier is not None and self.verifier.carries_commands(record.topic):
            with plan.uow.scope():  # answered, final: resending the same changes nothing
                refuse_command(plan.uow, _json_object(record.value), reason, detail)

    def _out_of_patience(self, record: Any, error: UnknownSubject, plan: _Plan) -> bool:
        """A subject's key normally arrives moments after its data (another consumer): wait,
        but not forever (a forged or orphaned message would stall its partition). True once
        the message was dead-lettered."""
        coords = _coords(record)
        first = self._key_waits.setdefault(coords, time.monotonic())
        if time.monotonic() - first < self.key_patience_seconds:
            return False
        self._key_waits.pop(coords, None)
        log.warning("no key arrived for a subject; dead-lettering", inbox=self.name, detail=str(error))
        metrics.unknown_subjects.labels(self.name).inc()
        plan.dead.append(deadletters.DeadLetter(record, deadletters.UNKNOWN_SUBJECT, str(error)))
        return True

    def _may_retry_conflict(self, record: Any) -> bool:
        """A handler lost a race on a unique key (`backbone.faults.is_conflict`): the batch is
        applied again, up to CONFLICT_ATTEMPTS times for the same record, before the record is
        believed to be the cause (a conflict it makes on every attempt) and dead-lettered."""
        coords = _coords(record)
        attempts = self._conflicts.get(coords, 0) + 1
        if attempts < CONFLICT_ATTEMPTS:
            self._conflicts[coords] = attempts
            return True
        self._conflicts.pop(coords, None)
        return False

    def _apply_one(self, record: Any, plan: _Plan) -> None:
        try:
            message = self.catalog.decode(record.value)
        except DecodeError as error:
            log.warning(
                "undecodable record dead-lettered",
                inbox=self.name,
                reason=error.reason,
                partition=f"{record.topic}/{record.partition}",
                offset=record.offset,
            )
            plan.dead.append(deadletters.DeadLetter(record, error.reason, error.detail))
            with plan.uow.scope():
                record_failure(plan.uow, error.body, error.reason, error.detail)
            return
        if isinstance(message, Command) and not self._authorised(record, message, plan):
            return
        handler = self.handlers.get(type(message))
        if handler is None:
            plan.applied += 1  # a known message this service has no use for
            return
        actor = f"service:{getattr(message, 'issued_by', None) or _source_name(record)}"
        with (
            tracing.span(f"{self.name} apply {type(message).__name__}", tracing.header(record.headers))
            if tracing.enabled()
            else _NO_SPAN,
            context.caused_by(actor, message.tenant_id, message.correlation_id, message.message_id),
        ):
            try:
                with plan.uow.scope():
                    handler(message, plan.uow)
                plan.applied += 1
                self._key_waits.pop(_coords(record), None)
                self._conflicts.pop(_coords(record), None)
            except UnknownSubject as error:
                if not self._out_of_patience(record, error, plan):
                    raise
            except Exception as error:
                outage = classify(error, self.app.unreachable_stores)
                if outage is error:
                    raise
                if outage is not None:  # a store is down: stall and retry, never blame the message
                    raise outage from error
                if is_conflict(error) and self._may_retry_conflict(record):
                    raise  # another instance wrote the same row a moment ago: read again
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
        # The fence: each partition's position moves only from where this batch started, checked
        # in the same transaction (a higher mark alone would let a stale consumer whose batch
        # started below the new owner's position commit, and apply messages twice).
        moves = [(Tracking(self._offset_key(tp), n), plan.started[tp]) for tp, n in plan.positions.items()]
        positions = [Tracking(self._source_key(k), n) for k, n in plan.sources.items()]
        if moves or positions or plan.uow.changed():
            self.app.save_with_positions(plan.uow.changed(), positions, moves)
        plan.uow.committed()

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
        life = self._life(tp)
        return f"{self.name}@{tp[0]}/{tp[1]}" + life_suffix(life.offsets_life if life else 0)

    def _source_key(self, key: tuple[str, TP]) -> str:
        source, (topic, partition) = key
        life = self._life((topic, partition))
        return f"{self.name}<{source}@{topic}/{partition}" + life_suffix(life.marks_life if life else 0)

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


class _PromptBatchSubscriber(BatchSubscriber):
    __slots__ = ()

    async def get_msg(self, consumer: AIOKafkaConsumer) -> tuple[Any, ...]:
        # `getmany` waits up to the timeout and returns as soon as any record is there; after
        # an empty one faststream's own version sleeps as long again, so a record arriving
        # then waited up to `batch_timeout_ms` more.
        batches = await consumer.getmany(timeout_ms=self.batch_timeout_ms, max_records=self.max_records)
        return tuple(chain(*batches.values()))


def prompt_batches(subscriber: Any) -> None:
    """Make a faststream batch subscriber hand over records as soon as they are fetched (see
    `_PromptBatchSubscriber`). Its class is swapped: faststream's subscribers have no hook
    for this, and the subclass adds no state."""
    if type(subscriber) is BatchSubscriber:
        subscriber.__class__ = _PromptBatchSubscriber


class _LRU(OrderedDict[UUID, Any]):
    """A dict that keeps at most `maxsize` entries, dropping the least recently set."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def __setitem__(self, key: UUID, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.maxsize:
            self.popitem(last=False)


class _SeekToStoredPositions(ConsumerRebalanceListener):
    def __init__(self, inbox: Inbox):
        self.inbox = inbox

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.inbox.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.inbox.on_assigned(assigned, self.inbox.subscriber.consumer)


_NO_SPAN = contextlib.nullcontext()


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


def _json_object(value: bytes | None) -> dict[str, Any] | None:
    try:
        body = json.loads(value or b"")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _source_name(record: Any) -> str:
    upstream = _upstream(record)
    return upstream[0] if upstream else "unknown"


def _coords(record: Any) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)
