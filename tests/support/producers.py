"""Playing the producing side of a service in a test: its events, exactly as its relay sends them.

A consumer's tests often need events whose real producer is not there (yet): a `Producer`
builds them from the contract models (so they are valid by construction), seals personal data
with a vault of its own (the producer's subject keys), seals links for the notifier, and
publishes the way `backbone.outbox.OutboxRelay` does: new subject keys (and erasures) first on
`<service>.subject-keys` (sealed for the other services), then the events on their topic,
keyed by aggregate, with the `source`/`source-position` headers that consumers deduplicate on,
signed with the service's bus key (`backbone.signing`).

    accounts = Producer(system, kafka, "accounts")
    account_id = uuid4()
    await accounts.publish(AccountClaimed(**accounts.envelope("lakeside"), account_id=account_id,
                                          email=accounts.seal(account_id, "ada@example.com"), ...))
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from backbone.bus import H_SOURCE, H_SOURCE_POSITION, Outgoing
from backbone.credentials import load_or_create_sealing_keys, new_token, seal, staff_api_key, token_hash
from backbone.personal import Vault
from contracts.accounts import StaffMemberAdded
from contracts.envelope import IntegrationEvent
from contracts.personal import Sealed
from tests.support.system import System, admitted_by_notifier, publish, publish_subject_keys


class Producer:
    def __init__(self, system: System, kafka: str, service: str):
        self.system = system
        self.kafka = kafka
        self.service = service
        self.vault = Vault("sqlite+pysqlite:///:memory:", service)
        self.position = 0  # the notification id of our pretend event store
        self.signer = system.signer(service)  # we play the service: its bus key signs
        _, self.notifier_public_key = load_or_create_sealing_keys(system.root / "notifier" / "sealing.key")

    def envelope(self, tenant_id: str, **fields: Any) -> dict[str, Any]:
        return {
            "event_id": uuid.uuid4(),
            "occurred_at": datetime.now(UTC),
            "tenant_id": tenant_id,
            "correlation_id": uuid.uuid4(),
            **fields,
        }

    def seal(self, subject_id: UUID, value: str) -> Sealed:
        return self.vault.seal(subject_id, value)

    def link(self, url: str) -> str:
        """A link sealed for the notifier, as accounts puts it in its events."""
        return seal(self.notifier_public_key, url)

    def erase(self, subject_id: UUID) -> None:
        self.vault.erase(subject_id)

    async def publish_keys(self) -> None:
        await publish_subject_keys(self.kafka, self.system, self.vault)

    async def publish(self, *events: IntegrationEvent, topic: str | None = None) -> list[IntegrationEvent]:
        """Keys first, then the events (in order, each with the next source position)."""
        await self.publish_keys()
        records = []
        for event in events:
            self.position += 1
            records.append(self.record(event, self.position))
        await publish(self.kafka, self.system.topic(topic or f"{self.service}.events"), records)
        return list(events)

    def record(self, event: IntegrationEvent, position: int) -> tuple[bytes, bytes, dict[str, str]]:
        """(key, value, headers) of an event as the relay sends it: signed with our bus key."""
        headers = Outgoing(
            "", event, {H_SOURCE: self.service, H_SOURCE_POSITION: str(position)}
        ).all_headers()
        body = event.model_dump_json().encode()
        return event.key.encode(), body, self.signer.sign(body, headers)

    def announce_staff_member(self, tenant_id: str) -> dict[str, str]:
        """As accounts: a staff member of the tenant gets an API key. Returns their headers
        once the notifier accepts them."""
        staff_id, secret = uuid.uuid4(), new_token()
        added = StaffMemberAdded(**self.envelope(tenant_id), staff_id=staff_id, key_hash=token_hash(secret))
        asyncio.run(self.publish(added))
        headers = {"Authorization": f"Bearer {staff_api_key(staff_id, secret)}"}
        return admitted_by_notifier(self.system, tenant_id, headers)

    async def republish(self, event: IntegrationEvent, position: int) -> None:
        """The same event again at a new offset, as a relay that crashed before recording its
        position publishes it (same event id, same source position)."""
        await publish(self.kafka, self.system.topic(f"{self.service}.events"), [self.record(event, position)])


def body(event: IntegrationEvent) -> dict[str, Any]:
    return json.loads(event.model_dump_json())
