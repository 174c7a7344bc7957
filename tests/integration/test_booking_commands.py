"""The command contract of the bookings service on the real broker, the service a real OS
process: a booking's whole life through commands, each command published three times (one
effect, three identical outcomes), statuses following the amounts, custom statuses, staff told
what to refund, and invalid commands answered and dead-lettered."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from services.bookings.domainmodel import Booking
from tests.support.bookings import AccountsFeed, BookingsBus, command, line, pay, place
from tests.support.system import System, all_events, open_store

pytestmark = pytest.mark.integration

TENANT = "harbour-tours"


def test_a_booking_lives_its_whole_life_through_commands_each_sent_three_times(
    tmp_path, kafka_bootstrap_servers
):
    system = System(tmp_path, kafka_bootstrap_servers, smtp_port=1).start("bookings")
    bus = BookingsBus(kafka_bootstrap_servers, system, AccountsFeed(TENANT))
    start = datetime.now(UTC) + timedelta(days=10)

    define = command(
        "DefineCustomStatus", TENANT, status="POSTPONED", label="Postponed", locks_inventory=False
    )
    bus.send(define, define, define)  # keyed by tenant: its own partition, so first
    assert {a["outcome"] for a in bus.answered(define, times=3)} == {"accepted"}

    placed = place(TENANT, "ada@example.com", starts_at=start)
    booking_id = placed["booking_id"]
    later = start + timedelta(days=1)
    life = [
        placed,
        pay(TENANT, booking_id, "30.00"),  # deposit: PART
        pay(TENANT, booking_id, "75.00"),  # the rest: PAID
        command("ChangeBookingStatus", TENANT, booking_id, status="POSTPONED", reason="storm season"),
        command(
            "ModifyBooking",
            TENANT,
            booking_id,
            lines=[
                line("Kayak for two", later, "80.00", hours=3),
                line("Picnic lunch", later, "12.50", 3, 1, "product"),
            ],
            override_customer_rules=True,
            on_behalf_of={"kind": "staff", "id": "anna"},
        ),
        command(
            "CancelBooking",
            TENANT,
            booking_id,
            reason="no new date suits",
            override_customer_rules=True,
            on_behalf_of={"kind": "staff", "id": "anna"},
        ),
    ]
    bus.send(*[body for body in life for _ in range(3)])  # every command, three times, in order
    answers = bus.answered(*life, times=3)
    assert [a["outcome"] for a in answers] == ["accepted"] * len(life), answers
    outcomes = bus.outcomes()
    for body in life:  # three identical answers each (only the envelope differs)
        same = {
            (o["outcome"], o["aggregate_version"], o["reason_code"], o["final"])
            for o in outcomes[body["command_id"]]
        }
        assert len(outcomes[body["command_id"]]) == 3 and len(same) == 1

    # A booking voided; commands that cannot apply are refused with a reason, nothing changes.
    voided = place(TENANT, "eve@example.com", starts_at=start)
    refused = [
        pay(TENANT, booking_id, "10.00"),  # cancelled: closed
        command("ChangeBookingStatus", TENANT, voided["booking_id"], status="PAID"),
        command("VoidBooking", TENANT, voided["booking_id"], reason="test booking"),
        command("VoidBooking", TENANT, voided["booking_id"]),  # already void: no second effect
        pay(TENANT, uuid.uuid4(), "1.00"),  # no such booking (yet)
        {**pay(TENANT, voided["booking_id"], "1.00"), "amount": "lots"},  # invalid body
    ]
    bus.send(voided, *refused)
    answers = bus.answered(*refused)
    assert [(a["outcome"], a["reason_code"], a["final"]) for a in answers] == [
        ("rejected", "booking_closed", True),
        ("rejected", "status_follows_payments", True),
        ("accepted", None, True),
        ("accepted", None, True),
        ("rejected", "booking_not_found", False),
        ("rejected", "schema_invalid", False),
    ]
    letters = bus.read("bookings.dead-letters")
    assert len(letters) == 1 and letters[0]["amount"] == "lots"

    # What the others were told, once each and in order (a relay crash could repeat one with
    # the same event_id: none here).
    events = bus.events(booking_id=booking_id)
    assert [e["event_type"] for e in events] == [
        "BookingPlaced",
        "BookingPaymentRecorded",
        "BookingStatusChanged",
        "BookingPaymentRecorded",
        "BookingStatusChanged",
        "BookingStatusChanged",
        "BookingModified",
        "BookingCancelled",
    ]
    statuses = [
        (e["status_before"], e["status"], e["cause"], e["locks_inventory"])
        for e in events
        if e["event_type"] == "BookingStatusChanged"
    ]
    assert statuses == [
        ("PEND", "PART", "payment", True),
        ("PART", "PAID", "payment", True),
        ("PAID", "POSTPONED", "command", False),  # a custom status that releases inventory
    ]
    modified, cancelled = events[-2:]
    assert (modified["total"], modified["amount_paid"], modified["balance_due"]) == (
        "117.50",
        "105.00",
        "12.50",
    )
    assert modified["modified_by"] == {"kind": "staff", "id": "anna"}
    # Staff are told what to refund, by hand; no money moved.
    assert (cancelled["amount_paid"], cancelled["refund_due"], cancelled["status_before"]) == (
        "105.00",
        "105.00",
        "POSTPONED",
    )
    assert cancelled["rules_overridden"] is True and cancelled["cancelled_by"] == {
        "kind": "staff",
        "id": "anna",
    }
    assert len({e["event_id"] for e in bus.events()}) == len(bus.events())
    types = Counter(e["event_type"] for e in bus.events())
    assert types["CustomStatusDefined"] == 1 and types["BookingVoided"] == 1

    # In the store: one effect per command, however often it came.
    system.stop()
    stored = [e for e in all_events(open_store(system, "bookings")) if isinstance(e, Booking.Event)]
    mine = Counter(type(e).__qualname__ for e in stored if str(e.originator_id) == booking_id)
    assert mine == {
        "Booking.Placed": 1,
        "Booking.PaymentRecorded": 2,
        "Booking.StatusChanged": 3,
        "Booking.Modified": 1,
        "Booking.Cancelled": 1,
    }
    assert system.bookings.errors() == []
