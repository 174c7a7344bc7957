"""Replaying a range of a topic through one of a service's consumers, exactly once.

A replay reads a topic from an offset or a point in time up to its end (as it is when the
replay starts) and hands every record to the service's own consumer code, in this process:
an inbox (`backbone.inbox.Inbox.apply`) or a subject-key receiver. So it is exactly as safe as
the running service consuming the same records:

* a record below the position stored for its partition was applied already: skipped
  ("redelivered");
* an event whose upstream position is not above the one stored for its source was applied
  already under another offset (a relay re-publication, a `republish`): skipped ("duplicate");
* anything else is applied, and its effects are stored together with the new positions.

What that means for an operator:

* Replaying what a consumer already applied does nothing (a replay from offset 0 of a healthy
  service changes nothing and says so): effects are never duplicated.
* After the consumed state was lost or reset (a store restored from an older backup, a fresh
  store), a replay applies again exactly what the store no longer has.
* A consumer is never made to skip what it has not applied: where its stored position is
  before the requested start, the replay starts there instead. Only a partition where it has
  applied nothing at all (a new consumer, a lost store) starts where the operator says; the
  summary lists what was left out, and the position is recorded so that the service goes on
  from there too. (Effects outside the store do happen again for what is replayed into an empty
  store: the notifier would send those emails again. Choose the starting time accordingly.)

The service may keep running meanwhile: positions are high-water marks, so of the replay and
the service, whoever stores a batch first wins and the other changes nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.persistence import IntegrityError
from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from backbone import deadletters
from backbone.inbox import Inbox
from backbone.personal import UnknownSubject
from backbone.subjectkeys import SubjectKeyReceiver
from contracts.personal import SubjectKey
from ops.config import OpsError
from ops.kafka import TP, Kafka
from ops.registry import Consumer

KEY_PATIENCE = 30  # attempts, one second apart, for a subject key to arrive


@dataclass
class PartitionRange:
    topic: str
    partition: int
    start: int
    end: int
    stored: int | None  # the consumer's stored position before the replay (inboxes)


@dataclass
class ReplayReport:
    consumer: str
    kind: str
    dry_run: bool
    partitions: list[PartitionRange] = field(default_factory=list)
    read: int = 0
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
    raced: int = 0  # batches the running service stored first (it applied them)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "messages_per_second": round(self.read / self.seconds, 1) if self.seconds else 0,
        }


async def replay(
    consumer: Consumer,
    kafka: Kafka,
    broker: KafkaBroker | None,
    *,
    topics: Sequence[str] = (),
    from_offset: int | None = None,
    from_time: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    if (from_offset is None) == (from_time is None):
        raise OpsError("give exactly one of --from-offset and --from-time")
    inbox = isinstance(consumer, Inbox)
    report = ReplayReport(consumer.name, "inbox" if inbox else "subject keys", dry_run)
    chosen = _topics(consumer, topics)
    tps = [tp for topic in chosen for tp in kafka.partitions(topic)]
    if not tps:
        raise OpsError(f"none of {chosen} exists on the cluster")
    begins, ends = await kafka.beginnings(tps), await kafka.ends(tps)
    if from_time is not None:
        requested = await kafka.offsets_at(tps, from_time)
    else:
        requested = {tp: min(max(from_offset or 0, begins[tp]), ends[tp]) for tp in tps}
    stored = await asyncio.to_thread(lambda: {tp: _stored(consumer, tp) for tp in tps})
    starts = await asyncio.to_thread(_starts, consumer, tps, begins, requested, report, dry_run)
    report.partitions = [PartitionRange(tp[0], tp[1], starts[tp], ends[tp], stored[tp]) for tp in tps]
    total = sum(max(ends[tp] - starts[tp], 0) for tp in tps)
    started = time.perf_counter()
    if isinstance(consumer, Inbox) and broker is not None:
        consumer.broker = broker  # dead letters go out through the tool's producer
    async for batch in kafka.read(starts, ends):
        report.read += len(batch)
        if isinstance(consumer, Inbox):
            await _through_inbox(consumer, batch, report, dry_run)
        else:
            await _through_receiver(consumer, batch, report, broker, dry_run)
        if progress is not None:
            progress(report.read, total)
    report.seconds = time.perf_counter() - started
    if report.raced:
        report.notes.append(
            f"the running service stored {report.raced} batch(es) of this range first: it applied them"
        )
    return report


def _topics(consumer: Consumer, wanted: Sequence[str]) -> list[str]:
    """The consumer's topics, or those of them asked for (full names, namespace included)."""
    if not wanted:
        return list(consumer.topics)
    chosen = [t for t in consumer.topics if t in wanted]
    if len(chosen) < len(set(wanted)):
        raise OpsError(f"{consumer.name} does not consume {list(wanted)} (it consumes {consumer.topics})")
    return chosen


def _stored(consumer: Consumer, tp: TP) -> int | None:
    return (consumer.stored_position(*tp) or None) if isinstance(consumer, Inbox) else None


def _starts(
    consumer: Consumer,
    tps: list[TP],
    begins: dict[TP, int],
    requested: dict[TP, int],
    report: ReplayReport,
    dry_run: bool,
) -> dict[TP, int]:
    """Where each partition's replay starts: never after what the consumer has not applied."""
    if not isinstance(consumer, Inbox):
        return dict(requested)
    starts = {}
    for tp in tps:
        stored, wanted = consumer.stored_position(*tp), requested[tp]
        if stored and stored < wanted:
            report.notes.append(
                f"{tp[0]}/{tp[1]}: not yet applied from offset {stored}: replaying from there, not "
                f"from {wanted} (a consumer never skips what it has not applied)"
            )
            starts[tp] = stored
        elif not stored and wanted > begins[tp]:
            report.notes.append(
                f"{tp[0]}/{tp[1]}: this consumer had applied nothing here; offsets {begins[tp]}.."
                f"{wanted - 1} are left out and it goes on from {wanted}"
            )
            if not dry_run:
                with contextlib.suppress(IntegrityError):  # the running service got further
                    consumer.start_at(tp[0], tp[1], wanted)
            starts[tp] = wanted
        else:
            starts[tp] = wanted
    return starts


async def _through_inbox(inbox: Inbox, batch: list[Any], report: ReplayReport, dry_run: bool) -> None:
    for attempt in range(1, KEY_PATIENCE + 1):
        try:
            outcome = await inbox.apply(batch, dry_run=dry_run)
            break
        except UnknownSubject as waiting:
            if attempt == KEY_PATIENCE or dry_run:
                raise OpsError(
                    f"{waiting}: replay the service's subject-keys consumer first, or check the "
                    "owner's keys topic"
                ) from None
            await asyncio.sleep(1)
    report.applied += outcome.applied
    report.duplicates += outcome.duplicates
    report.redelivered += outcome.redelivered
    report.dead_lettered += outcome.dead_lettered
    if not dry_run and not outcome.stored:
        report.raced += 1


async def _through_receiver(
    receiver: SubjectKeyReceiver,
    batch: list[Any],
    report: ReplayReport,
    broker: KafkaBroker | None,
    dry_run: bool,
) -> None:
    known = await asyncio.to_thread(_already_held, receiver, batch)
    dead = []
    if dry_run:
        dead = [r for r in batch if _invalid_key(r)]
    else:
        dead = await asyncio.to_thread(receiver.apply, batch)  # idempotent: keys and erasures
        if dead and broker is not None:
            await deadletters.send(broker, receiver.dead_letter_topic, receiver.name, dead)
    report.redelivered += known
    report.dead_lettered += len(dead)
    report.applied += len(batch) - known - len(dead)


def _already_held(receiver: SubjectKeyReceiver, batch: list[Any]) -> int:
    """How many of these records the vault holds already (the key, or the erasure)."""
    held = 0
    for record in batch:
        try:
            key = SubjectKey.model_validate_json(record.value or b"")
            stored = receiver.vault.key(key.subject_id)
        except (ValidationError, UnknownSubject):
            continue
        held += stored is None or not key.erased  # an erasure is final; a key (sealed or not), a key
    return held


def _invalid_key(record: Any) -> bool:
    try:
        SubjectKey.model_validate_json(record.value or b"")
    except ValidationError:
        return True
    return False
