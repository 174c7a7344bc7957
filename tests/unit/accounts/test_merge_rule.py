"""The merge rule: details that arrive with a booking fill empty profile fields, never
overwrite; and only for the account the booking belongs to (in its tenant, verified)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from backbone.personal import Vault
from backbone.unitofwork import UnitOfWork
from contracts.bookings import BookingPlaced, SealedCustomer
from services.accounts.handlers import when_booking_placed
from tests.unit.accounts.conftest import TENANT

BOOKINGS_VAULT = Vault("sqlite+pysqlite:///:memory:", "bookings")


def booking_placed(world, email, name="Booked Name", phone="+43 660 1234567", account_id=None, tenant=TENANT):
    booking_id = uuid.uuid4()
    customer = SealedCustomer(
        email=BOOKINGS_VAULT.seal(booking_id, email),
        name=BOOKINGS_VAULT.seal(booking_id, name),
        phone=BOOKINGS_VAULT.seal(booking_id, phone) if phone else None,
    )
    for key in BOOKINGS_VAULT.unpublished():  # what the keys topic brings to accounts
        world.app.vault.accept(key)
    start = datetime(2030, 6, 1, 10, tzinfo=UTC)
    return BookingPlaced(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        tenant_id=tenant,
        correlation_id=uuid.uuid4(),
        booking_id=booking_id,
        booking_code="ABC-123",
        account_id=account_id,
        customer=customer,
        lines=[
            {
                "kind": "item",
                "ref": "kayak",
                "name": "Kayak",
                "starts_at": start,
                "ends_at": start + timedelta(hours=2),
                "unit_price": "30.00",
            }
        ],
        currency="EUR",
        total="30.00",
        amount_paid="0.00",
        status="PEND",
        terms={
            "settings_version": 1,
            "allow_cancel": False,
            "cancel_cutoff": {"amount": 0, "unit": "days"},
            "allow_modify": False,
            "modify_cutoff": {"amount": 0, "unit": "days"},
            "blocking_statuses": [],
            "timezone": "UTC",
        },
        placed_by={"kind": "service", "id": "storefront"},
    )


def handle(world, event) -> None:
    uow = UnitOfWork(world.app)
    when_booking_placed(event, uow)
    world.app.save(*uow.changed())


def test_a_booking_fills_empty_fields_and_never_overwrites(world):
    account = world.claimed("ana@example.com")
    handle(world, booking_placed(world, "ana@example.com", name="Someone Else", phone="+43 660 1234567"))
    after = world.app.account(account.id)
    assert str(after.name) == "Ada Lovelace"  # kept
    assert after.phone.value == "+43 660 1234567"  # filled
    assert after.phone.subject_id == account.id  # the account's own copy, erased with it

    handle(world, booking_placed(world, "ana@example.com", phone="+1 555 0199", account_id=account.id))
    assert world.app.account(account.id).phone.value == "+43 660 1234567"  # never overwritten
    changes = [
        e for e in world.app.repository.event_store.get(account.id) if type(e).__name__ == "ProfileChanged"
    ]
    assert len(changes) == 1 and changes[0].source == "booking"


def test_only_the_verified_owner_or_the_account_named_by_the_booking_gets_details(world):
    world.app.claim_account(TENANT, "ben@example.com", "Ben", None)  # not verified
    handle(world, booking_placed(world, "ben@example.com"))
    assert world.app.account_by_email(TENANT, "ben@example.com").phone is None

    account = world.claimed("cal@example.com")
    handle(world, booking_placed(world, "cal@example.com", tenant="another-tenant"))
    handle(world, booking_placed(world, "x@example.com", tenant="another-tenant", account_id=account.id))
    handle(world, booking_placed(world, "x@example.com", account_id=uuid.uuid4()))
    assert world.app.account(account.id).phone is None

    handle(world, booking_placed(world, "somebody@example.com", account_id=account.id))
    assert world.app.account(account.id).phone is not None


def test_nothing_comes_back_to_a_redacted_account(world):
    account = world.claimed("dan@example.com")
    world.app.redact(TENANT, account.id)
    handle(world, booking_placed(world, "dan@example.com", account_id=account.id))
    assert world.app.account(account.id).phone is None
