"""The inbox reads what a batch needs in one query and keeps aggregates between batches: the
same answers as reading each aggregate on its own, whatever else changed them meanwhile.

On the SQLite store (the bulk query is SQL) and on the in-memory one.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
import sqlalchemy.exc
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker

from backbone.domain import DomainError
from backbone.eventstore import store_env
from backbone.inbox import Inbox
from backbone.personal import Vault
from backbone.settings import StoreSettings
from contracts import bookings as contract
from contracts.catalog import ALL_COMMANDS, ALL_EVENTS, Catalog
from services.bookings.application import Bookings
from services.bookings.domainmodel import Booking
from services.bookings.handlers import HANDLERS, prefetch
from tests.support.bookings import command, pay, place

CMDS, DLQ, TENANT = "bookings.commands", "bookings.dead-letters", "acme"


@pytest.fixture(params=["sqlite", "memory"])
async def setup(request, tmp_path):
    store = StoreSettings(kind=request.param, data_dir=tmp_path)
    vault = Vault(store.vault_url("bookings"), "bookings") if request.param == "sqlite" else None
    app = Bookings(env=store_env(store, "bookings"), vault=vault)
    broker = KafkaBroker()
    inbox = Inbox(
        service="bookings",
        name="bookings.inbox",
        app=app,
        broker=broker,
        topics=[CMDS],
        catalog=Catalog((*ALL_COMMANDS, *ALL_EVENTS)),
        handlers=HANDLERS,
        dead_letter_topic=DLQ,
        prefetch=prefetch,
    )
    offsets = iter(range(10_000))

    async def send(*bodies):
        records = []
        for body in bodies:
            raw = json.dumps(body).encode()
            records.append(ConsumerRecord(CMDS, 0, next(offsets), 0, 0, b"k", raw, None, 1, len(raw), ()))
        return await inbox.apply(records)

    async with TestKafkaBroker(broker):
        yield app, inbox, send
    app.close()


def booking(app, body) -> Booking:
    return app.repository.get(uuid.UUID(body["booking_id"]))


async def test_one_batch_places_pays_and_answers_a_repeat(setup):
    app, _, send = setup
    placed = place(TENANT, "jo@example.com")
    payment = pay(TENANT, placed["booking_id"], "30.00")
    outcome = await send(placed, payment, placed, payment)
    assert (outcome.applied, outcome.dead_lettered) == (4, 0)
    paid = booking(app, placed)
    assert paid.amount_paid == Decimal("30.00") and len(paid.payments) == 1
    assert paid.customer["email"].value == "jo@example.com"


async def test_a_change_made_outside_the_inbox_is_seen_by_the_next_batch(setup):
    app, inbox, send = setup
    placed = place(TENANT, "jo@example.com")
    await send(placed)
    assert uuid.UUID(placed["booking_id"]) in inbox._cache

    outside = booking(app, placed)  # e.g. the HTTP API, or another instance
    outside.record_payment("at-the-desk", Decimal("10.00"), "EUR", "cash")
    app.save(outside)

    await send(pay(TENANT, placed["booking_id"], "20.00"))
    paid = booking(app, placed)
    assert paid.amount_paid == Decimal("30.00") and set(paid.payments) >= {"at-the-desk"}
    assert len(paid.payments) == 2


async def test_a_batch_that_was_not_stored_leaves_nothing_in_the_cache(setup, monkeypatch):
    app, _, send = setup
    placed = place(TENANT, "jo@example.com")
    await send(placed)
    payment = pay(TENANT, placed["booking_id"], "30.00")
    stored = app.save_with_positions

    def outage(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("INSERT", {}, ConnectionRefusedError("store down"))

    monkeypatch.setattr(app, "save_with_positions", outage)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        await send(payment)
    monkeypatch.setattr(app, "save_with_positions", stored)

    await send(payment)  # the same record again, as the retry after the outage sends it
    paid = booking(app, placed)
    assert paid.amount_paid == Decimal("30.00") and len(paid.payments) == 1


async def test_a_refused_command_leaves_its_booking_as_it_was_for_the_rest_of_the_batch(setup, monkeypatch):
    app, inbox, send = setup
    placed = place(TENANT, "jo@example.com")
    await send(placed)

    def pay_then_refuse(cmd, uow):
        uow.get(Booking, cmd.booking_id).record_payment("lost", Decimal("99.00"), "EUR", "card")
        raise DomainError("refused after a change")

    monkeypatch.setitem(
        inbox.handlers, contract.VoidBooking, inbox._wrap(contract.VoidBooking, pay_then_refuse)
    )
    void = command("VoidBooking", TENANT, placed["booking_id"], reason="test")
    await send(pay(TENANT, placed["booking_id"], "10.00"), void, pay(TENANT, placed["booking_id"], "5.00"))
    paid = booking(app, placed)
    assert paid.amount_paid == Decimal("15.00") and "lost" not in paid.payments
    await send(pay(TENANT, placed["booking_id"], "1.00"))  # and the cached copy is the stored one
    assert booking(app, placed).amount_paid == Decimal("16.00")


async def test_an_erasure_empties_the_cache(setup):
    app, inbox, send = setup
    await send(place(TENANT, "jo@example.com"))
    assert len(inbox._cache) > 0
    app.forget_erased([uuid.uuid4()])
    assert len(inbox._cache) == 0
