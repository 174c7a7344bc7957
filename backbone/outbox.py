"""The outbox relay: publishes a service's integration events from its event store to Kafka.

The event store *is* the outbox (eventsourcing's notification log): a use case records its
domain events and nothing else, in one transaction; no dual write. The relay follows the log,
asks the service which integration events each domain event means (`translate`), publishes
them with the idempotent producer, waits for every acknowledgement, and only then records its
position. At least once, in order per aggregate.

A crash between the acknowledgement and the position record makes the relay publish the same
events again after restart, at new offsets (and so does a relay that loses its leadership
between publishing and recording: `backbone.leadership`). They are the same messages: same `event_id`
(derived from the stored event, not drawn at random) and the same `source-position` header,
which is what consumers deduplicate on (see `backbone.inbox`).

Everything the relay publishes is signed with the service's bus key (`backbone.signing`):
consumers believe nothing else. Subject keys are sealed for each consuming service's key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from faststream.kafka import KafkaBroker

from backbone import metrics
from backbone.bus import H_SOURCE, H_SOURCE_POSITION, Outgoing, Record, records_of, send
from backbone.context import Cause
from backbone.eventstore import ServiceApplication
from backbone.follower import Follower, Recorded
from backbone.logging import get_logger
from backbone.signing import Keyring, Signer
from backbone.subjectkeys import key_records
from backbone.tracing import TRACEPARENT
from contracts.personal import SubjectKey, subject_keys_topic

log = get_logger(__name__)

Translate = Callable[[Recorded], Iterable[Outgoing]]
"""Maps one recorded domain event to the integration events it means (often none)."""

_EVENT_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:event-ids")


def event_id_for(service: str, domain_event: object, index: int = 0) -> UUID:
    """A stable id for the `index`-th integration event derived from one stored domain event."""
    originator_id = domain_event.originator_id  # type: ignore[attr-defined]
    version = domain_event.originator_version  # type: ignore[attr-defined]
    return uuid5(_EVENT_IDS, f"{service}/{originator_id}/{version}/{index}")


def envelope(
    recorded: Recorded, service: str, index: int = 0, tenant_id: str | None = None
) -> dict[str, Any]:
    """The envelope fields of an integration event derived from a recorded domain event: a
    stable id, when it happened, and the cause (tenant, correlation, causation) it carries."""
    cause = Cause.from_meta(getattr(recorded.event, "meta", None))
    return {
        "event_id": event_id_for(service, recorded.event, index),
        "occurred_at": recorded.event.timestamp,
        "tenant_id": tenant_id or cause.tenant_id,
        "correlation_id": UUID(cause.correlation_id),
        "causation_id": UUID(cause.causation_id) if cause.causation_id else None,
    }


class OutboxRelay(Follower):
    def __init__(
        self,
        app: ServiceApplication,
        broker: KafkaBroker,
        service: str,
        translate: Translate,
        batch_size: int = 500,
        topic_for: Callable[[str], str] = lambda name: name,
        *,
        signer: Signer,
        keyring: Keyring,
    ):
        super().__init__(app, batch_size)
        self.signer = signer  # everything published is signed with the service's bus key
        self.keyring = keyring  # subject keys are sealed for every other service's keys
        self.name = f"{service}.outbox"
        self.service = service
        self.broker = broker
        self.translate = translate
        self.topic_for = topic_for
        self._keys_looked_at = False  # by the last batch, finding none (see `idle`)

    def report_lag(self, lag: int) -> None:
        super().report_lag(lag)
        metrics.outbox_lag.set(lag)

    async def idle(self) -> None:
        # Erasures happen without new events too. Not again right after a batch whose own pass
        # found none (each batch at 50 cancels/s: a store read and two hops through the loop);
        # the next idle look, at the latest after `poll_interval`, publishes them.
        if self._keys_looked_at:
            self._keys_looked_at = False
            return
        await self.publish_subject_keys()

    async def publish_subject_keys(self, first: tuple[list[SubjectKey], list[Record]] | None = None) -> None:
        """Publish this service's new subject keys and erasures on its compacted keys topic.

        One pass over the unpublished keys, in subject id order: every key an event of the
        batch being relayed uses was stored before that event, so it is in this pass (or on
        the topic already). Keys made meanwhile wait for the next pass; looping until none is
        left never ended while the inbox made them faster than they were published, and the
        relay published no event at all (found by tests/integration/test_scale_out.py).
        `first`: the pass's first keys and their records, already read and sealed (`handle`)."""
        topic = self.topic_for(subject_keys_topic(self.service))
        after = None
        while True:
            if first is not None:
                (keys, wire), first = first, None
            elif keys := await self.blocking(self.app.vault.unpublished, 500, after):
                wire = await self.blocking(self._sealed_keys, topic, keys)
            if not keys:
                return
            await send(self.broker, wire)
            await self.blocking(self.app.vault.mark_published, keys)
            after = keys[-1].subject_id

    def _sealed_keys(self, topic: str, keys: Sequence[SubjectKey]) -> list[Record]:
        recipients = self.keyring.others(self.service)
        return [self.signer.sign_record(record) for record in key_records(topic, keys, recipients)]

    def messages(self, batch: Sequence[Recorded]) -> list[Outgoing]:
        """The messages a batch of recorded events means, as the relay publishes them: same
        `event_id`s, same `source-position` headers (blocking; operators' republish uses it)."""
        return self._translate_all(batch)

    def _translate_all(self, batch: Sequence[Recorded]) -> list[Outgoing]:
        # In a worker thread: a translation may read an aggregate's state from the store.
        outgoing = []
        for recorded in batch:
            source = {H_SOURCE: self.service, H_SOURCE_POSITION: str(recorded.position)}
            traceparent = (getattr(recorded.event, "meta", None) or {}).get(TRACEPARENT)
            if traceparent:  # the request's trace goes on (`backbone.tracing`)
                source[TRACEPARENT] = traceparent
            for out in self.translate(recorded):
                topic = self.topic_for(out.topic)
                outgoing.append(Outgoing(topic, out.message, {**out.headers, **source}))
        return outgoing

    def _signed(self, batch: Sequence[Recorded]) -> list[Record]:
        # In the relay's thread, not on the event loop: signing releases the GIL (libsodium
        # through cffi), and an event loop that gives it up once per record waits to get it
        # back behind every busy thread of the service (the inbox's, the projections').
        return [self.signer.sign_record(record) for record in records_of(self._translate_all(batch))]

    def _prepared(self, batch: Sequence[Recorded]) -> tuple[list[Record], list[SubjectKey], list[Record]]:
        """The batch's records, signed, and the first unpublished subject keys with theirs:
        one hop to the relay's thread, not three (read after the batch: every key its events
        use is among them, or published already)."""
        signed = self._signed(batch)
        keys = self.app.vault.unpublished(500, None)
        topic = self.topic_for(subject_keys_topic(self.service))
        return signed, keys, self._sealed_keys(topic, keys) if keys else []

    def _committed(self, position: int) -> int:
        """`commit_position`, then the log's head (for the lag gauge): one hop, not two."""
        self.commit_position(position)
        return self.app.head()

    async def handle(self, batch: Sequence[Recorded]) -> None:
        signed, keys, wire = await self.blocking(self._prepared, batch)
        # Keys first: no consumer may receive data sealed with a key it cannot get.
        await self.publish_subject_keys(first=(keys, wire))
        self._keys_looked_at = not keys
        if signed:
            await send(self.broker, signed)
            for topic, count in Counter(record.topic for record in signed).items():  # labels() once a topic
                metrics.published.labels(topic).inc(count)
        head = await self.blocking(self._committed, batch[-1].position)
        metrics.outbox_lag.set(head - batch[-1].position)
        log.debug("relayed", relay=self.name, events=len(signed), position=batch[-1].position)
