"""Receiving other services' subject keys (and erasures) from their compacted keys topics.

Keys are not effects in the event store, so no exactly-once machinery is needed here: applying
a record twice changes nothing (`Vault.accept` is idempotent and an erasure is final). Offsets
are committed after the vault has the records; a malformed record is dead-lettered. Any other
failure (the vault's database down, the broker gone) rewinds and retries the batch with a
growing pause: an outage never dead-letters or skips a key.

A record is believed only from the subject's owner: signed with the owner's bus key, on the
owner's own keys topic, naming that owner (`backbone.signing`); anything else is dead-lettered
with a final reason and counted, and an erasure (`key: null`) from anyone else erases nothing.
Keys never travel in the clear: the owner seals each one for every consumer's bus key
(`key_records`), and only this service's private key opens the copy meant for it.

A service that keeps derived plaintext (a read model) gives `on_erased`, called with the
erased subjects after the vault has dropped their keys and before the offsets are committed:
at least once per erasure, so it must be idempotent.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from backbone import bus, deadletters, metrics
from backbone.faults import cause_of, probe_all
from backbone.inbox import prompt_batches
from backbone.logging import get_logger
from backbone.personal import Vault
from backbone.signing import NOT_FROM_OWNER, Signer, TrustedKey, Verifier, open_subject_key
from contracts.personal import SubjectKey

NOT_SEALED_FOR_US = "not_sealed_for_us"
"""Dead-letter reason: a genuine key record holds no copy for this service's key (its public
key is missing from the owner's trusted keys: a deployment mistake, see docs/security.md)."""


def key_records(
    topic: str, records: Sequence[SubjectKey], recipients: Sequence[TrustedKey]
) -> list[bus.Record]:
    """Subject keys (plain, from the owner's vault) as the records of its keys topic: each key
    sealed for every recipient key; erasures as they are. Unsigned (the caller signs)."""
    wire = []
    for record in records:
        if record.key is not None:
            raw = base64.b64decode(record.key)
            sealed = {r.key_id: r.seal_for(raw) for r in recipients}
            record = record.model_copy(update={"key": None, "sealed_keys": sealed})
        wire.append(
            bus.Record(
                topic,
                bus.json_bytes(record),
                str(record.subject_id).encode(),
                {"content-type": "application/json"},
            )
        )
    return wire


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
        verifier: Verifier,
        signer: Signer,
        on_erased: Callable[[list[UUID]], None] | None = None,
    ):
        self.name = name
        self.verifier = verifier  # who owns which keys topic, and their public keys
        self.signer = signer  # this service's bus key: opens the copies sealed for it
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
        prompt_batches(self.subscriber)
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
                keys.append(self._opened(record))
            except _Refused as refused:
                metrics.refused.labels(self.name, refused.reason).inc()
                log.warning("refused a key record", receiver=self.name, reason=refused.reason)
                dead.append(deadletters.DeadLetter(record, refused.reason, refused.detail))
            except ValidationError as error:
                dead.append(deadletters.DeadLetter(record, "schema_invalid", str(error)[:2000]))
        self.vault.accept_all(keys)  # one transaction for the batch
        erased = [key.subject_id for key in keys if key.erased]
        if erased and self.on_erased is not None:
            self.on_erased(erased)
        return dead

    def _opened(self, record: Any) -> SubjectKey:
        """The record's key, opened (or its erasure), once it is proven to be the owner's."""
        refusal = self.verifier.refusal(record)
        if refusal is not None:
            raise _Refused(refusal.reason, refusal.detail)
        wire = SubjectKey.model_validate_json(record.value or b"")
        owner = self.verifier.owners.get(record.topic)
        if wire.owner != owner:
            raise _Refused(NOT_FROM_OWNER, f"a record of {record.topic} names {wire.owner!r} as the owner")
        if wire.erased:
            return wire
        if wire.key is not None:
            raise _Refused(NOT_FROM_OWNER, "a subject key in the clear: owners only publish sealed keys")
        raw = open_subject_key(self.signer, wire.sealed_keys)
        if raw is None:
            raise _Refused(
                NOT_SEALED_FOR_US,
                f"no copy sealed for our key {self.signer.key_id} (is it trusted by {owner}?)",
            )
        return wire.model_copy(update={"key": base64.b64encode(raw).decode(), "sealed_keys": {}})


class _Refused(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
