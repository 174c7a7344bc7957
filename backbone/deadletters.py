"""Dead letters: messages a consumer could not decode or apply, kept with the reason.

A dead letter is the original record (same key, same bytes, same headers) published to the
consuming service's dead-letter topic, plus headers saying why and where it came from. The
partition it came from keeps flowing; nothing is dropped silently; operators can inspect,
retry or discard dead letters (`booking-accounts dlq ...`, see docs/operations.md); what they
did to each one is a `DeadLetterCase` in the consuming service's event store: who, when, what.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from faststream.kafka import KafkaBroker

from backbone import bus
from backbone.domain import Aggregate, DomainError, event

H_REASON = "dlq-reason"
H_DETAIL = "dlq-detail"
H_TOPIC = "dlq-original-topic"
H_PARTITION = "dlq-original-partition"
H_OFFSET = "dlq-original-offset"
H_CONSUMER = "dlq-consumer"
H_AT = "dlq-at"
H_RETRY_OF = "dlq-retry-of"  # on a retried message: the dead letter it came from

# Reasons a message can be dead-lettered for, beyond the decoding ones of contracts.catalog:
HANDLER_FAILED = "handler_failed"
UNKNOWN_SUBJECT = "unknown_subject"  # its subject's key never arrived (backbone.inbox)
# ... and those of backbone.signing.REFUSALS: not proven to come from the topic's owner.

SUFFIX = ".dead-letters"  # contracts.topics.dead_letters(service); retention: backbone.topics


@dataclass(frozen=True)
class DeadLetter:
    record: Any  # the aiokafka ConsumerRecord
    reason: str
    detail: str

    def headers(self, consumer: str) -> dict[str, str]:
        original = {key: value.decode(errors="replace") for key, value in self.record.headers}
        return {
            **original,
            H_REASON: self.reason,
            H_DETAIL: self.detail[:2000],
            H_TOPIC: self.record.topic,
            H_PARTITION: str(self.record.partition),
            H_OFFSET: str(self.record.offset),
            H_CONSUMER: consumer,
            H_AT: datetime.now(UTC).isoformat(),
        }


async def send(broker: KafkaBroker, topic: str, consumer: str, letters: list[DeadLetter]) -> None:
    """Publish dead letters and return once all are acknowledged."""
    await bus.send(
        broker,
        [
            bus.Record(topic, letter.record.value or b"", letter.record.key, letter.headers(consumer))
            for letter in letters
        ],
    )


_CASE_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:dead-letter-cases")


class DeadLetterCase(Aggregate):
    """What operators did about one dead letter, identified by where it sits in its topic.

    Retried: the message (as it was, or fixed) was published again to its original topic.
    Discarded: it will not be retried, and why. The actor, time and correlation of each action
    are the events' own (`meta`, `timestamp`), so audit tooling sees them like any other event.
    """

    OPEN = "open"
    RETRIED = "retried"
    DISCARDED = "discarded"

    @staticmethod
    def create_id(topic: str, partition: int, offset: int) -> UUID:
        return uuid5(_CASE_IDS, f"{topic}/{partition}/{offset}")

    @event("Opened")
    def __init__(self, topic: str, partition: int, offset: int, reason: str, original: str) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason
        self.original = original  # "topic/partition/offset" the consumer could not apply
        self.status = self.OPEN
        self.retries = 0

    def retry(self, republished_as: str, fixed: bool, body_sha256: str, note: str | None) -> None:
        if self.status == self.DISCARDED:
            raise DomainError("this dead letter was discarded", code="dead_letter_discarded")
        self.record_retry(republished_as=republished_as, fixed=fixed, body_sha256=body_sha256, note=note)

    @event("Retried")
    def record_retry(self, republished_as: str, fixed: bool, body_sha256: str, note: str | None) -> None:
        self.status = self.RETRIED
        self.retries += 1

    def discard(self, reason: str) -> None:
        if self.status == self.DISCARDED:
            return
        self.record_discard(reason=reason)

    @event("Discarded")
    def record_discard(self, reason: str) -> None:
        self.status = self.DISCARDED
