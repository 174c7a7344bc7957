"""What the bookings service tells the others: its events, and the outcome of each command."""

from __future__ import annotations

from collections.abc import Iterator

from backbone.bus import Outgoing
from backbone.commands import outcome_messages
from backbone.context import Cause
from backbone.follower import Recorded
from backbone.outbox import envelope
from contracts import bookings as contract
from contracts.envelope import Actor
from contracts.topics import BOOKINGS_COMMAND_OUTCOMES, BOOKINGS_EVENTS
from services.bookings.application import Bookings
from services.bookings.domainmodel import Booking

SERVICE = "bookings"


def translator(app: Bookings):
    def translate(recorded: Recorded) -> Iterator[Outgoing]:
        event = recorded.event
        if isinstance(event, Booking.Placed):
            yield Outgoing(
                BOOKINGS_EVENTS,
                contract.BookingPlaced(
                    **envelope(recorded, SERVICE, tenant_id=event.tenant_id),
                    booking_id=event.originator_id,
                    booking_code=event.code,
                    account_id=event.account_id,
                    customer=contract.SealedCustomer(
                        email=app.sealed(event.customer["email"]),
                        name=app.sealed(event.customer["name"]),
                        phone=app.sealed(event.customer.get("phone")),
                    ),
                    lines=event.lines,
                    currency=event.currency,
                    total=event.total,
                    amount_paid=event.amount_paid,
                    status=event.status,
                    terms=event.terms,
                    placed_by=_actor(event),
                ),
            )
        elif isinstance(event, Booking.Cancelled):
            booking = app.repository.get(event.originator_id, version=event.originator_version)
            yield Outgoing(
                BOOKINGS_EVENTS,
                contract.BookingCancelled(
                    **envelope(recorded, SERVICE, tenant_id=booking.tenant_id),
                    booking_id=booking.id,
                    booking_code=booking.code,
                    account_id=booking.account_id,
                    email=app.sealed(booking.customer["email"]),
                    name=app.sealed(booking.customer["name"]),
                    cancelled_by=_actor(event),
                    status_before=event.status_before,
                    amount_paid=booking.amount_paid,
                    currency=booking.currency,
                    refund_due=event.refund_due,
                    reason=event.reason,
                ),
            )
        else:
            yield from outcome_messages(app, recorded, SERVICE, BOOKINGS_COMMAND_OUTCOMES)

    return translate


def _actor(event: object) -> Actor:
    return Actor.parse(Cause.from_meta(getattr(event, "meta", None)).actor)
