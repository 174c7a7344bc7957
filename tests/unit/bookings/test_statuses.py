"""The status transitions: the table as a readable grid, and properties of any sequence of
payments, changes, modifications, cancellations and voids (hypothesis)."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.domain import DomainError
from backbone.personal import Personal
from services.bookings import statuses
from services.bookings.domainmodel import Booking
from services.bookings.errors import Refused
from services.bookings.statuses import CustomStatus, check_transition, kind
from services.bookings.terms import Terms, applicable_rule

CUSTOM = {
    "POSTPONED": CustomStatus("POSTPONED", "Postponed", locks_inventory=False),
    "CONFIRMED": CustomStatus("CONFIRMED", "Confirmed by phone", locks_inventory=True),
    "OLD": CustomStatus("OLD", "Retired one", locks_inventory=True, active=False),
}

# from \ to, with amounts that satisfy the guards (PART: part paid, PAID: all paid, else unpaid)
GRID = """
        PRE  PEND HOLD WAIT PART PAID STOP VOID POSTPONED
PRE     -    y    y    y    y    y    y    y    y
PEND    -    -    y    y    y    y    y    y    y
HOLD    -    y    -    y    y    y    y    y    y
WAIT    -    y    y    -    y    y    y    y    y
PART    -    -    -    -    -    y    y    -    y
PAID    -    -    -    -    y    -    y    -    y
STOP    -    -    -    -    -    -    -    y    -
VOID    -    -    -    -    -    -    -    -    -
CONFIRMED -  y    y    y    y    y    y    y    y
"""


def amounts_for(status: str) -> tuple[Decimal, Decimal]:
    """(paid, total) that satisfy the guard of `status` as a target."""
    return {"PART": (Decimal(10), Decimal(100)), "PAID": (Decimal(100), Decimal(100))}.get(
        status, (Decimal(0), Decimal(100))
    )


def grid() -> list[tuple[str, str, bool]]:
    header, *rows = [line.split() for line in GRID.strip().splitlines()]
    return [
        (row[0], target, mark == "y") for row in rows for target, mark in zip(header, row[1:], strict=True)
    ]


@pytest.mark.parametrize(("current", "target", "allowed"), grid())
def test_the_transition_table(current, target, allowed):
    paid, total = amounts_for(target)
    if allowed:
        check_transition(current, target, paid, total, CUSTOM)
    else:
        with pytest.raises(Refused):
            check_transition(current, target, paid, total, CUSTOM)


def test_the_guards_on_top_of_the_table():
    with pytest.raises(Refused, match="PAID needs"):
        check_transition("PEND", "PAID", Decimal(50), Decimal(100), CUSTOM)
    with pytest.raises(Refused, match="PART needs"):
        check_transition("PEND", "PART", Decimal(0), Decimal(100), CUSTOM)
    with pytest.raises(Refused) as void:
        check_transition("HOLD", "VOID", Decimal(1), Decimal(100), CUSTOM)
    assert void.value.code == "void_with_payments"
    for unknown in ("OLD", "NEVER"):
        with pytest.raises(Refused) as error:
            check_transition("PEND", unknown, Decimal(0), Decimal(100), CUSTOM)
        assert error.value.code == "unknown_status"
    check_transition("OLD", "PEND", Decimal(0), Decimal(100), CUSTOM)  # leaving a retired one


# ------------------------------------------------------------------------ any sequence

NOW = datetime(2030, 1, 1, tzinfo=UTC)
OVERRIDE = applicable_rule("cancel", Terms(), Terms())  # staff: the customer rule is overridden
targets = st.sampled_from([*statuses.SYSTEM_STATUSES, *CUSTOM])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("pay"), st.integers(1, 120), st.sampled_from(["p1", "p2", "p3", "p4"])),
        st.tuples(st.just("status"), targets),
        st.tuples(st.just("quantity"), st.integers(1, 4)),
        st.tuples(st.just("cancel"), st.integers(0, 150)),
        st.tuples(st.just("void")),
    ),
    max_size=12,
)


def new_booking(status: str, paid: int) -> Booking:
    subject = uuid.uuid4()
    start = NOW + timedelta(days=10)
    line = {
        "kind": "item",
        "ref": "k",
        "name": "Kayak",
        "starts_at": start,
        "ends_at": start + timedelta(hours=2),
        "quantity": 1,
        "unit_price": Decimal(50),
    }
    return Booking(
        id=subject,
        tenant_id="t",
        code="ABC-1",
        customer={"email": Personal(subject, "a@example.com"), "name": Personal(subject, "A"), "phone": None},
        account_id=None,
        lines=[line],
        currency="EUR",
        status=status,
        amount_paid=Decimal(paid),
        total=Decimal(50),
        terms=Terms().as_dict(),
    )


def apply(booking: Booking, operation: tuple) -> None:
    name, *args = operation
    if name == "pay":
        booking.record_payment(args[1], Decimal(args[0]), "EUR", None)
    elif name == "status":
        booking.change_status(args[0], None, CUSTOM)
    elif name == "quantity":
        lines = [{**booking.lines[0], "quantity": args[0]}]
        booking.modify(now=NOW, rule=OVERRIDE, lines=lines, override=True)
    elif name == "cancel":
        refund = Decimal(args[0]) if args[0] <= 100 else None
        booking.cancel(now=NOW, rule=OVERRIDE, reason=None, override=True, refund_due=refund)
    else:
        booking.void(None)


@settings(max_examples=300, deadline=None)
@given(start=st.sampled_from(["PRE", "PEND", "HOLD", "WAIT"]), operations=operations)
def test_any_sequence_keeps_the_booking_consistent(start, operations):
    booking = new_booking(start, 0)
    payments: dict[str, Decimal] = {}
    for operation in operations:
        before = copy.deepcopy(booking)
        try:
            apply(booking, operation)
        except DomainError:
            # A refusal changes nothing.
            assert booking.version == before.version and booking.status == before.status
            assert booking.pending_events == before.pending_events
            continue
        if operation[0] == "pay" and operation[2] not in payments:
            payments[operation[2]] = Decimal(operation[1])
        # Every status step taken is one the table allows.
        for event in booking.pending_events[len(before.pending_events) :]:
            if isinstance(event, Booking.StatusChanged | Booking.Cancelled | Booking.Voided):
                after = getattr(event, "status", None) or booking.status
                assert kind(after) in statuses.TRANSITIONS[kind(event.status_before)], event
        # Closed is final: a cancelled booking can only become void, a void one nothing.
        if before.status == "VOID":
            assert booking.status == "VOID"
        if before.status == "STOP":
            assert booking.status in ("STOP", "VOID")
        # PART and PAID always say the truth about the amounts; payments count once.
        assert booking.amount_paid == sum(payments.values())
        if booking.status == "PAID":
            assert booking.amount_paid >= booking.total
        if booking.status == "PART":
            assert 0 < booking.amount_paid < booking.total
        if booking.status == "VOID":
            assert booking.amount_paid == 0
        if booking.status == "STOP":
            assert booking.cancellation["refund_due"] <= booking.amount_paid
