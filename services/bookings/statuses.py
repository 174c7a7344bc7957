"""Booking statuses: the platform's system statuses, a tenant's custom ones, and the allowed
transitions between them.

System statuses (their ids are fixed; labels are for people):

    PRE   pre-booking: started, not completed
    PEND  pending confirmation                       locks inventory
    HOLD  reserved: confirmed, with or without a payment   locks inventory
    WAIT  waiting: a candidate for being released
    PART  deposit: something paid, something due     locks inventory (follows from the amounts)
    PAID  paid in full                               locks inventory (follows from the amounts)
    STOP  cancelled: inventory released, the record kept
    VOID  made in error, nothing paid: inventory released

A tenant adds custom statuses (e.g. POSTPONED), each with its own "locks inventory" flag.
`TRANSITIONS` is the table of what may follow what; `CUSTOM` in it stands for any active custom
status. On top of the table, three guards that depend on the booking: PART and PAID only when
the amounts say so; VOID only when nothing was paid; a custom status only while it is active.
Cancelled and void bookings are final: a cancellation has told staff what to refund, and
undoing it would be a new booking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from services.bookings.errors import Refused

PRE, PEND, HOLD, WAIT, PART, PAID, STOP, VOID = "PRE", "PEND", "HOLD", "WAIT", "PART", "PAID", "STOP", "VOID"
CUSTOM = "*"  # any active custom status of the tenant, in the transition table

SYSTEM_STATUSES: dict[str, str] = {
    PRE: "Pre-booking",
    PEND: "Pending",
    HOLD: "Reserved",
    WAIT: "Waiting",
    PART: "Deposit paid",
    PAID: "Paid",
    STOP: "Cancelled",
    VOID: "Void",
}
LOCKING_SYSTEM_STATUSES = frozenset({PEND, HOLD, PART, PAID})
CLOSED = frozenset({STOP, VOID})
FOLLOWS_PAYMENTS = frozenset({PART, PAID})
# Statuses a payment (or a new total) moves to PART or PAID by itself. A custom status is left
# alone: staff chose it on purpose (a postponed booking keeps its payments and its status).
SET_BY_AMOUNTS = frozenset({PRE, PEND, HOLD, WAIT, PART, PAID})
START_STATUSES = frozenset({PRE, PEND, HOLD, WAIT, PART, PAID, CUSTOM})

_OPEN = frozenset({PEND, HOLD, WAIT, PART, PAID, STOP, VOID, CUSTOM})
TRANSITIONS: dict[str, frozenset[str]] = {
    PRE: _OPEN,
    PEND: _OPEN - {PEND},
    HOLD: _OPEN - {HOLD},
    WAIT: _OPEN - {WAIT},
    PART: frozenset({PAID, STOP, CUSTOM}),
    PAID: frozenset({PART, STOP, CUSTOM}),
    CUSTOM: _OPEN,  # to another custom status too
    STOP: frozenset({VOID}),
    VOID: frozenset(),
}


@dataclass(frozen=True)
class CustomStatus:
    code: str
    label: str
    locks_inventory: bool
    active: bool = True


def kind(status: str) -> str:
    """The row of the transition table a status belongs to."""
    return status if status in SYSTEM_STATUSES else CUSTOM


def locks_inventory(status: str, custom: Mapping[str, CustomStatus]) -> bool:
    if status in SYSTEM_STATUSES:
        return status in LOCKING_SYSTEM_STATUSES
    found = custom.get(status)
    return found.locks_inventory if found is not None else False


def label(status: str, custom: Mapping[str, CustomStatus]) -> str:
    found = custom.get(status)
    return SYSTEM_STATUSES.get(status) or (found.label if found else status)


def status_for_amounts(status: str, amount_paid: Decimal, total: Decimal) -> str:
    """The status a booking takes when its amounts change (a payment, a new total)."""
    if status not in SET_BY_AMOUNTS or amount_paid <= 0:
        return status
    return PAID if amount_paid >= total else PART


def check_status(
    status: str, amount_paid: Decimal, total: Decimal, custom: Mapping[str, CustomStatus]
) -> None:
    """Refuse a status the booking cannot be in with these amounts (or that does not exist)."""
    if status not in SYSTEM_STATUSES:
        found = custom.get(status)
        if found is None or not found.active:
            raise Refused("unknown_status", f"{status} is not a status of this business.")
        return
    if status == PAID and amount_paid < total:
        raise Refused("status_follows_payments", "PAID needs the total to be paid; record a payment.")
    if status == PART and not 0 < amount_paid < total:
        raise Refused("status_follows_payments", "PART needs a part of the total to be paid.")
    if status == VOID and amount_paid > 0:
        raise Refused("void_with_payments", "A booking with payments cannot be voided; cancel it.")


def check_start(
    status: str, amount_paid: Decimal, total: Decimal, custom: Mapping[str, CustomStatus]
) -> None:
    """Refuse a status a new booking cannot start in."""
    if kind(status) not in START_STATUSES:
        raise Refused("transition_not_allowed", f"A booking cannot be placed as {status}.")
    check_status(status, amount_paid, total, custom)


def check_transition(
    current: str, target: str, amount_paid: Decimal, total: Decimal, custom: Mapping[str, CustomStatus]
) -> None:
    """Refuse a change of status that the table or the guards do not allow."""
    if current in CLOSED:
        if target not in TRANSITIONS[current]:
            raise Refused("booking_closed", f"The booking is {label(current, custom).lower()}.")
    elif kind(target) not in TRANSITIONS[kind(current)]:
        raise Refused("transition_not_allowed", f"A booking cannot go from {current} to {target}.")
    check_status(target, amount_paid, total, custom)
