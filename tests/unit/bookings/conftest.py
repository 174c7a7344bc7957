"""The bookings service in memory: its application on eventsourcing's POPO store, its inbox fed
by hand-built Kafka records (through faststream's TestKafkaBroker for dead letters), its read
model in an in-memory SQLite, and a clock the test moves. The same behaviour is proven on a
real broker, store and processes in tests/integration."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from backbone.commands import CommandReceipt
from backbone.credentials import Session
from backbone.eventstore import store_env
from backbone.follower import read_log
from backbone.inbox import Inbox
from backbone.readmodel import ReadModel
from backbone.settings import StoreSettings
from contracts.catalog import ALL_COMMANDS, ALL_EVENTS, Catalog
from services.bookings import views
from services.bookings.application import Bookings
from services.bookings.handlers import HANDLERS
from services.bookings.reads import CustomerReads, ReadCache
from tests.support.bookings import AccountsFeed

TENANT = "lakeside"
COMMANDS, ACCOUNTS, DLQ = "bookings.commands", "accounts.events", "bookings.dead-letters"


class Harness:
    def __init__(self, broker: KafkaBroker, dead: list[Any]):
        self.now = datetime.now(UTC).replace(microsecond=0)  # tests move it forward
        self.app = Bookings(env=store_env(StoreSettings(kind="memory"), "bookings"), clock=lambda: self.now)
        self.inbox = Inbox(
            service="bookings",
            name="bookings.inbox",
            app=self.app,
            broker=broker,
            topics=[COMMANDS, ACCOUNTS],
            catalog=Catalog((*ALL_COMMANDS, *ALL_EVENTS)),
            handlers=HANDLERS,
            dead_letter_topic=DLQ,
        )
        self.dead = dead
        self.read_model = ReadModel("sqlite+pysqlite:///:memory:", views.metadata)
        self.read_model.create()
        # The service's wiring: the customers' reads cached, the projection keeping them current.
        self.reads = CustomerReads(self.read_model, self.app.clock, ReadCache(), vault=self.app.vault)
        self.projection = self.reads.projection(self.app, "bookings.views")
        self.app.add_listener(self.project)  # at once after every save, as the service's wakes up
        self.accounts = AccountsFeed(TENANT)
        self._offsets: Counter[str] = Counter()

    # ------------------------------------------------------------------ feeding the inbox

    async def send(self, *bodies: dict | bytes) -> None:
        await self.inbox.apply([self._record(COMMANDS, body) for body in bodies])
        self.project()

    async def hear(self, *records: tuple[bytes, bytes, dict[str, str]]) -> None:
        """Events of the accounts service (its keys handed over first, as its relay does)."""
        for key in self.accounts.vault.unpublished():
            self.app.vault.accept(key)
        self.accounts.vault.mark_published(self.accounts.vault.unpublished())
        await self.inbox.apply(
            [self._record(ACCOUNTS, value, tuple(headers.items())) for _, value, headers in records]
        )
        self.project()

    def _record(self, topic: str, body: dict | bytes, headers: tuple = ()) -> ConsumerRecord:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        offset = self._offsets[topic]
        self._offsets[topic] += 1
        encoded = tuple((k, v.encode()) for k, v in headers)
        return ConsumerRecord(topic, 0, offset, 0, 0, b"k", raw, None, 1, len(raw), encoded)

    def project(self) -> None:
        batch = read_log(self.app, self.read_model.position("bookings.views"), 10_000)
        if batch:
            self.projection.apply(batch)

    # ------------------------------------------------------------------ reading

    def outcomes(self, command: dict) -> list[dict[str, Any]]:
        """Every answer recorded for a command, in order."""
        receipt_id = CommandReceipt.create_id(uuid.UUID(command["command_id"]))
        return [e.outcome for e in self.app.events.get(receipt_id)]

    def outcome(self, command: dict) -> dict[str, Any]:
        return self.outcomes(command)[-1]

    def booking(self, booking_id: Any) -> Any:
        return self.app.repository.get(uuid.UUID(str(booking_id)))

    def events(self, booking_id: Any) -> list[Any]:
        return list(self.app.events.get(uuid.UUID(str(booking_id))))

    async def customer(self, email: str = "ada@example.com") -> Session:
        """A verified customer of the tenant, and a session of theirs."""
        account_id = uuid.uuid4()
        await self.hear(*self.accounts.claimed_and_verified(account_id, email))
        issued = self.now - timedelta(minutes=1)
        return Session(account_id, TENANT, uuid.uuid4().hex, issued, issued + timedelta(hours=12))


@pytest.fixture
async def harness():
    broker = KafkaBroker()
    dead: list[Any] = []

    @broker.subscriber(DLQ)
    async def capture(message: KafkaMessage) -> None:
        dead.append(message.raw_message)

    harness = Harness(broker, dead)
    async with TestKafkaBroker(broker):
        yield harness
    harness.read_model.close()


@pytest.fixture
async def http(harness):
    """The customer HTTP API over the harness (in process; sessions signed with a test key)."""
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from backbone.auth import customer_session
    from backbone.credentials import SessionSigner, SessionVerifier
    from backbone.http import create_api
    from services.bookings import api
    from services.bookings.api_errors import REFUSALS

    key = Ed25519PrivateKey.generate()
    app = create_api("bookings", "test", "test")
    # As services/bookings/bootstrap.py gives them.
    app.state.bookings, app.state.reads = harness.app, harness.reads
    sessions = SessionVerifier(key.public_key())
    app.state.customer_session = customer_session(sessions)
    REFUSALS.install(app)
    app.include_router(api.router)
    app.state.shortcuts.add(api.FastReads(harness.reads, sessions))
    signer = SessionSigner(key)

    def headers(session: Session) -> dict[str, str]:
        token, _ = signer.issue(session.account_id, session.tenant_id, session.issued_at)
        return {"Authorization": f"Bearer {token}"}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bookings"
    ) as client:
        client.headers_for = headers  # type: ignore[attr-defined]
        client.shortcuts = app.state.shortcuts  # type: ignore[attr-defined]
        yield client
