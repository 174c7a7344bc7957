"""Dead letters: messages a consumer could not decode or apply, kept with the reason.

A dead letter is the original record (same key, same bytes, same headers) published to the
consuming service's dead-letter topic, plus headers saying why and where it came from. The
partition it came from keeps flowing; nothing is dropped silently; operators can inspect,
retry or discard dead letters (see the ops CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker

from backbone import bus

H_REASON = "dlq-reason"
H_DETAIL = "dlq-detail"
H_TOPIC = "dlq-original-topic"
H_PARTITION = "dlq-original-partition"
H_OFFSET = "dlq-original-offset"
H_CONSUMER = "dlq-consumer"
H_AT = "dlq-at"

# Reasons a message can be dead-lettered for, beyond the decoding ones of contracts.catalog:
HANDLER_FAILED = "handler_failed"


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
