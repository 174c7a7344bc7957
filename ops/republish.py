"""Re-sending a range of a service's stored events to Kafka, idempotently.

For when a topic was lost, or a new consumer needs history that retention already removed.
The messages are made by the service's own outbox relay translation (`OutboxRelay.messages`),
so they are the very messages the relay published: same `event_id`s, same `source-position`
headers, same keys and partitions. A consumer that already applied them drops them (its stored
upstream position is past them, see `backbone.inbox`); one that never saw them applies them,
in order per aggregate.

Personal data in them is sealed with each subject's key. If the subject-keys topic was lost
too, `keys=True` first publishes every key this service owns (and every erasure) again, as
the relay does before any data: a consumer never receives data it cannot get the key for.
It is also how keys reach a consumer whose bus key changed (sealed anew for the keys trusted
now). Everything is signed with the service's bus key, as its relay signs.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from faststream.kafka import KafkaBroker

from backbone import bus
from backbone.follower import Recorded, read_log
from backbone.personal import Vault, subject_keys
from backbone.subjectkeys import key_records
from contracts.personal import SubjectKey, subject_keys_topic
from ops.config import OpsError
from ops.registry import ServiceHandle


@dataclass
class RepublishReport:
    service: str
    from_position: int
    to_position: int
    dry_run: bool
    events: int = 0
    messages: dict[str, int] = field(default_factory=dict)  # per topic
    keys: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        rate = round(self.events / self.seconds, 1) if self.seconds else 0
        return {**asdict(self), "events_per_second": rate}


async def republish(
    handle: ServiceHandle,
    broker: KafkaBroker | None,
    *,
    from_position: int = 1,
    to_position: int | None = None,
    topics: Sequence[str] = (),
    keys: bool = False,
    dry_run: bool = False,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> RepublishReport:
    if not handle.relays:
        raise OpsError(f"{handle.name} publishes nothing: it has no outbox relay")
    head = await asyncio.to_thread(handle.app.head)
    upto = min(to_position or head, head)
    if from_position < 1 or from_position > max(upto, 1):
        raise OpsError(f"the range {from_position}..{upto} is not in the log (1..{head})")
    report = RepublishReport(handle.name, from_position, upto, dry_run)
    started = time.perf_counter()
    if keys:
        report.keys = await _republish_keys(handle, broker, dry_run)
    position, total = from_position - 1, upto - from_position + 1
    while position < upto:
        batch = [
            r
            for r in await asyncio.to_thread(read_log, handle.app, position, batch_size)
            if r.position <= upto
        ]
        if not batch:
            break
        outgoing = await asyncio.to_thread(_messages, handle, batch)
        if topics:
            outgoing = [out for out in outgoing if out.topic in topics]
        if outgoing and not dry_run:
            assert broker is not None
            await bus.publish(broker, outgoing, handle.relays[0].signer.sign_record)
        for out in outgoing:
            report.messages[out.topic] = report.messages.get(out.topic, 0) + 1
        report.events += len(batch)
        position = batch[-1].position
        if progress is not None:
            progress(report.events, total)
    report.seconds = time.perf_counter() - started
    return report


def _messages(handle: ServiceHandle, batch: Sequence[Recorded]) -> list[bus.Outgoing]:
    return [out for relay in handle.relays for out in relay.messages(batch)]


async def _republish_keys(handle: ServiceHandle, broker: KafkaBroker | None, dry_run: bool) -> int:
    topic = handle.settings.topic(subject_keys_topic(handle.name))
    sent, after = 0, ""
    while records := await asyncio.to_thread(_own_keys, handle.app.vault, after):
        if not dry_run:
            assert broker is not None
            relay = handle.relays[0]  # as the relay publishes them: sealed, signed
            recipients = relay.keyring.others(handle.name)
            await bus.send(broker, key_records(topic, records, recipients), relay.signer.sign_record)
        sent += len(records)
        after = str(records[-1].subject_id)
    return sent


def _own_keys(vault: Vault, after: str, limit: int = 500) -> list[SubjectKey]:
    """The keys (or erasures) of the subjects this service owns, in subject id order."""
    with vault.engine.connect() as conn:
        rows = conn.execute(
            sa.select(subject_keys)
            .where(
                subject_keys.c.service == vault.service,
                subject_keys.c.owner == vault.service,
                subject_keys.c.subject_id > after,
            )
            .order_by(subject_keys.c.subject_id)
            .limit(limit)
        ).all()
    return [
        SubjectKey(
            subject_id=row.subject_id,
            owner=row.owner,
            key=base64.b64encode(row.key).decode() if row.key is not None else None,
            erased_at=row.erased_at,
        )
        for row in rows
    ]
