"""Receiving other services' subject keys (and erasures) from their compacted keys topics.

Keys are not effects in the event store, so no exactly-once machinery is needed here: applying
a record twice changes nothing (`Vault.accept` is idempotent and an erasure is final). Offsets
are committed after the vault has the records; a malformed record is dead-lettered. Any other
failure (the vault's database down, the broker gone) rewinds and retries the batch with a
growing pause: an outage never dead-letters or skips a key.

A service that keeps derived plaintext (a read model) gives `on_erased`, called with the
erased subjects after the vault has dropped their keys and before the offsets are committed:
at least once per erasure, so it must be idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from backbone import deadletters, metrics
from backbone.faults import cause_of, probe_all
from backbone.logging import get_logger
from backbone.personal import Vault
from contracts.personal import SubjectKey

log = get_logger(__name__)


class SubjectKeyReceiver:
    def __init__(
        self,
        *,
        name: str,
        vault: Vault,
        broker: KafkaBroker,
        topics: Sequence[str],
        dead_letter_topic: str,
        on_erased: Callable[[list[UUID]], None] | None = None,
    ):
        self.name = name
        self.topics = list(topics)
        self.vault = vault
        self.on_erased = on_erased
        self.broker = broker
        self.dead_letter_topic = dead_letter_topic
        self._failures = 0
        self.subscriber = broker.subscriber(
            *topics,
            group_id=name,
            batch=True,
            max_records=1000,
            batch_timeout_ms=200,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=lambda _: None,
            title=name,
            description="Subject keys and erasures of the services whose personal data we read.",
        )
        self.subscriber(self._receive)

    async def _receive(self, message: KafkaMessage) -> None:
        records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
        try:
            dead = await asyncio.to_thread(self.apply, records)
            if dead:
                await deadletters.send(self.broker, self.dead_letter_topic, self.name, dead)
            await message.ack()
            self._failures = 0
            metrics.stalled.labels(self.name).set(0)
        except Exception as error:
            # Nothing is skipped: the batch is taken again (nack rewinds), a store outage or not.
            self._failures += 1
            pause = min(30.0, 0.5 * 2**self._failures)
            cause = await asyncio.to_thread(cause_of, error, self._probe)
            metrics.stalled.labels(self.name).set(1)
            metrics.retries.labels(self.name, cause).inc()
            if cause == "outage":
                log.warning(
                    "the vault or the broker is unavailable; the subject keys will be retried",
                    receiver=self.name,
                    error=f"{type(error).__name__}: {error}",
                    pause_seconds=pause,
                )
            else:
                log.exception("could not store subject keys; will retry", receiver=self.name)
            await message.nack()
            await asyncio.sleep(pause)

    def _probe(self) -> list[str]:
        return probe_all({"vault": self.vault.ping})

    def apply(self, records: Sequence[Any]) -> list[deadletters.DeadLetter]:
        dead, keys = [], []
        for record in records:
            try:
                keys.append(SubjectKey.model_validate_json(record.value or b""))
            except ValidationError as error:
                dead.append(deadletters.DeadLetter(record, "schema_invalid", str(error)[:2000]))
        self.vault.accept_all(keys)  # one transaction for the batch
        erased = [key.subject_id for key in keys if key.key is None]
        if erased and self.on_erased is not None:
            self.on_erased(erased)
        return dead
