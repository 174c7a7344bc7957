"""Commands, as a publisher that oversteps (or an attacker who can write `bookings.commands`)
sends them: no signature, a key nobody registered, another tenant, a capability it lacks,
another publisher's name, a revoked key, a service's key. Each is refused with a final reason
on its receipt (what bookings.command-outcomes says) and dead-lettered; nothing is applied.
The same against the real service: tests/security/test_bus_services.py.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.structs import ConsumerRecord
from eventsourcing.application import AggregateNotFoundError
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from backbone.commands import CommandReceipt
from backbone.eventstore import store_env
from backbone.inbox import Inbox
from backbone.settings import StoreSettings
from backbone.signing import Keyring, Signer, TrustedKey, Verifier
from contracts.catalog import ALL_COMMANDS, ALL_EVENTS, Catalog
from contracts.topics import owners
from services.bookings import publishers
from services.bookings.application import Bookings
from services.bookings.domainmodel import Booking
from services.bookings.handlers import HANDLERS
from services.bookings.publishers import PublisherRequest

CMDS, DLQ = "bookings.commands", "bookings.dead-letters"
ACCOUNTS, BOOKINGS = Signer.generate("accounts"), Signer.generate("bookings")
KEYRING = Keyring([TrustedKey(s.identity, s.key_id, s.public_key) for s in (ACCOUNTS, BOOKINGS)])
STOREFRONT = Signer.generate("storefront")  # registered for lakeside: place and pay
BACKOFFICE = Signer.generate("backoffice")  # registered for every tenant: everything
STRANGER = Signer.generate("storefront")  # calls itself storefront; never registered


def place(tenant="lakeside", issued_by="storefront", **fields):
    start = datetime.now(UTC) + timedelta(days=10)
    return {
        "command_type": "PlaceBooking",
        "schema_version": 1,
        "command_id": str(uuid.uuid4()),
        "issued_at": datetime.now(UTC).isoformat(),
        "issued_by": issued_by,
        "tenant_id": tenant,
        "correlation_id": str(uuid.uuid4()),
        "booking_id": str(uuid.uuid4()),
        "booking_code": "ABC-123",
        "customer": {"email": "jo@example.com", "name": "Jo"},
        "lines": [
            {
                "kind": "item",
                "ref": "kayak",
                "name": "Kayak",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=2)).isoformat(),
                "unit_price": "30.00",
            }
        ],
        "currency": "EUR",
        **fields,
    }


def cancel(booking_id, issued_by="storefront", **fields):
    return {
        "command_type": "CancelBooking",
        "schema_version": 1,
        "command_id": str(uuid.uuid4()),
        "issued_at": datetime.now(UTC).isoformat(),
        "issued_by": issued_by,
        "tenant_id": "lakeside",
        "correlation_id": str(uuid.uuid4()),
        "booking_id": booking_id,
        **fields,
    }


def pay(**fields):
    """A payment for a booking: storefront may pay, but not for a customer."""
    body = cancel(str(uuid.uuid4()), **fields)
    body.update(command_type="RecordPayment", payment_id="p1", amount="10.00", currency="EUR")
    return body


def record(offset, body, signer: Signer | None):
    raw = json.dumps(body).encode()
    headers = signer.sign(raw, {}) if signer else {}
    return ConsumerRecord(
        CMDS,
        0,
        offset,
        0,
        0,
        b"k",
        raw,
        None,
        1,
        len(raw),
        tuple((k, v.encode()) for k, v in headers.items()),
    )


@pytest.fixture
async def bookings():
    app = Bookings(env=store_env(StoreSettings(kind="memory"), "bookings"))
    for signer, tenants, capabilities in (
        (STOREFRONT, ["lakeside"], ["place", "pay"]),
        (BACKOFFICE, ["*"], list(publishers.CAPABILITIES)),
    ):
        key = base64.b64encode(signer.public_key).decode()
        request = PublisherRequest(
            name=signer.identity, public_key=key, tenants=tenants, capabilities=capabilities
        )
        publishers.register(app, request)
    broker = KafkaBroker()
    dead = []

    @broker.subscriber(DLQ)
    async def capture(message: KafkaMessage) -> None:
        dead.append(message.raw_message)

    def inbox(accept_unsigned=False):
        verifier = Verifier(KEYRING, owners(), "bookings", publishers.lookup(app), accept_unsigned)
        return Inbox(
            service="bookings",
            name="bookings.inbox",
            app=app,
            broker=broker,
            topics=[CMDS],
            catalog=Catalog((*ALL_COMMANDS, *ALL_EVENTS)),
            handlers=HANDLERS,
            dead_letter_topic=DLQ,
            verifier=verifier,
            authorize=publishers.authorize,
        )

    async with TestKafkaBroker(broker):
        yield app, inbox, dead


def outcome(app, command):
    return app.repository.get(CommandReceipt.create_id(uuid.UUID(command["command_id"]))).outcome


def placed(app, command) -> bool:
    try:
        return isinstance(app.repository.get(uuid.UUID(command["booking_id"])), Booking)
    except AggregateNotFoundError:
        return False


@pytest.mark.parametrize(
    ("attack", "signer", "command", "reason"),
    [
        ("no signature at all", None, place(), "unsigned"),
        ("a key nobody registered", STRANGER, place(), "unknown_signing_key"),
        ("a service's own bus key", ACCOUNTS, place(), "not_from_owner"),
        ("another tenant than its own", STOREFRONT, place(tenant="harbour"), "tenant_not_allowed"),
        ("another publisher's name", STOREFRONT, place(issued_by="backoffice"), "issuer_mismatch"),
        (
            "acting for a customer without the capability",
            STOREFRONT,
            pay(on_behalf_of={"kind": "customer", "id": str(uuid.uuid4())}),
            "capability_missing",
        ),
    ],
)
async def test_a_command_from_a_publisher_not_allowed_to_send_it_is_refused_and_dead_lettered(
    bookings, attack, signer, command, reason
):
    app, inbox, dead = bookings
    result = await inbox().apply([record(0, command, signer)])
    assert result.applied == 0 and result.dead_lettered == 1, attack
    assert [dict(r.headers)["dlq-reason"].decode() for r in dead] == [reason]
    answer = outcome(app, command)
    assert answer["outcome"] == "rejected" and answer["final"] and answer["reason_code"] == reason
    assert not placed(app, command) and not placed(app, {"booking_id": command["booking_id"]})


async def test_a_tampered_command_does_not_verify(bookings):
    app, inbox, dead = bookings
    command = place()
    genuine = record(0, command, STOREFRONT)
    tampered = json.dumps({**command, "tenant_id": "harbour"}).encode()
    forged = ConsumerRecord(CMDS, 0, 0, 0, 0, b"k", tampered, None, 1, len(tampered), genuine.headers)
    await inbox().apply([forged])
    assert [dict(r.headers)["dlq-reason"].decode() for r in dead] == ["bad_signature"]
    assert not placed(app, command)


async def test_overriding_the_customer_rules_takes_the_override_capability(bookings):
    app, inbox, _ = bookings
    booking = place()
    await inbox().apply([record(0, booking, STOREFRONT)])
    assert placed(app, booking)
    overriding = cancel(booking["booking_id"], override_customer_rules=True, issued_by="storefront")
    await inbox().apply([record(1, overriding, STOREFRONT)])
    assert outcome(app, overriding)["reason_code"] == "capability_missing"  # storefront may not cancel
    allowed = cancel(booking["booking_id"], override_customer_rules=True, issued_by="backoffice")
    await inbox().apply([record(2, allowed, BACKOFFICE)])
    assert outcome(app, allowed)["outcome"] == "accepted"


async def test_a_revoked_publisher_key_is_refused_from_then_on(bookings):
    app, inbox, _ = bookings
    first, second = place(), place()
    await inbox().apply([record(0, first, STOREFRONT)])
    publishers.revoke(app, STOREFRONT.key_id)
    await inbox().apply([record(1, second, STOREFRONT)])
    assert placed(app, first) and not placed(app, second)
    assert outcome(app, second)["reason_code"] == "unknown_signing_key"


async def test_a_forged_copy_of_an_applied_command_changes_nothing(bookings):
    app, inbox, _ = bookings
    command = place()
    await inbox().apply([record(0, command, STOREFRONT)])
    await inbox().apply([record(1, command, None)])  # the same command_id, unsigned
    assert outcome(app, command)["outcome"] == "accepted"  # the receipt keeps its final outcome


async def test_unsigned_commands_are_applied_only_with_the_local_development_setting(bookings):
    app, inbox, _ = bookings
    refused, applied = place(), place()
    await inbox().apply([record(0, refused, None)])
    await inbox(accept_unsigned=True).apply([record(1, applied, None)])
    assert not placed(app, refused) and placed(app, applied)
