"""An operator's decision about an inbox partition whose stored position does not fit it.

See `backbone.topiclife` for when that happens and what the two decisions mean. The decision
is recorded on the partition's `PartitionLife` in the consuming service's event store, with
who (`staff:<operator>`), when, why (the check's verdict) and the positions and offsets it
was taken on; the running service sees it within seconds and resumes the partition.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

from backbone import context
from backbone.inbox import Inbox
from backbone.topiclife import DECISIONS, PartitionLife, topic_ids_at
from ops.config import OpsError
from ops.kafka import Kafka
from ops.registry import ServiceHandle


@dataclass(frozen=True)
class Decision:
    consumer: str
    partition: str
    decision: str
    reason: str
    detail: str
    position_before: int | None
    log_start: int
    log_end: int
    topic_id: str | None
    by: str
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_partition(handle: ServiceHandle, given: str) -> tuple[Inbox, tuple[str, int]]:
    """'<topic>/<partition>' (with or without the deployment's namespace) and the inbox that
    consumes that topic."""
    topic, _, number = given.rpartition("/")
    if not topic or not number.isdigit():
        raise OpsError(f"give the partition as <topic>/<partition>, e.g. accounts.events/0 (not {given!r})")
    for consumer in handle.consumers:
        if not isinstance(consumer, Inbox):
            continue
        for candidate in (topic, handle.settings.topic(topic)):
            if candidate in consumer.topics:
                return consumer, (candidate, int(number))
    topics = ", ".join(t for c in handle.consumers if isinstance(c, Inbox) for t in c.topics)
    raise OpsError(f"{handle.name} has no inbox on {topic!r} (its inboxes read: {topics})")


async def decide(
    handle: ServiceHandle,
    kafka: Kafka,
    given: str,
    decision: str,
    *,
    operator: str,
    note: str | None = None,
    dry_run: bool = False,
) -> Decision:
    if decision not in DECISIONS:
        raise OpsError(f"unknown decision {decision!r}")
    inbox, tp = parse_partition(handle, given)
    if tp not in kafka.partitions(tp[0]):
        raise OpsError(f"{tp[0]}/{tp[1]} does not exist on the broker: nothing to read from yet")
    ids = (await topic_ids_at(kafka.bootstrap_servers, [tp[0]])).ids
    starts, ends = await kafka.beginnings([tp]), await kafka.ends([tp])
    verdict = (await asyncio.to_thread(inbox.verdicts, {tp}, ids, starts, ends))[tp]
    if verdict.fits:
        raise OpsError(
            f"{inbox.name}'s position in {tp[0]}/{tp[1]} fits the partition: there is nothing to decide "
            "(to read again from a point in time, see `booking-accounts replay`)"
        )
    position = await asyncio.to_thread(inbox.stored_position, *tp) or None
    by = f"staff:{operator}"
    if not dry_run:
        await asyncio.to_thread(
            _record,
            handle,
            inbox,
            tp,
            decision,
            ids.get(tp[0]),
            verdict,
            position,
            starts[tp],
            ends[tp],
            note,
            by,
        )
    return Decision(
        inbox.name,
        f"{tp[0]}/{tp[1]}",
        decision,
        verdict.status,
        verdict.detail,
        position,
        starts[tp],
        ends[tp],
        str(ids[tp[0]]) if ids.get(tp[0]) else None,
        by,
        dry_run,
    )


def _record(
    handle: ServiceHandle,
    inbox: Inbox,
    tp: tuple[str, int],
    decision: str,
    topic_id: Any,
    verdict: Any,
    position: int | None,
    log_start: int,
    log_end: int,
    note: str | None,
    by: str,
) -> None:
    with context.caused_by(by):
        life = inbox.life(tp) or PartitionLife(inbox.name, tp[0], tp[1], None)
        life.decide(decision, topic_id, verdict.status, position, log_start, log_end, note)
    handle.app.save(life)
