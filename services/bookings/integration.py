"""What the bookings service tells the others: its events, and the outcome of each command.

One domain event, one integration event (or none): the relay derives each message's id from
the stored event, so a re-publication is the same message. Personal data goes out sealed with
the booking's subject key; a booking whose customer was erased goes out erased. A booking's
state after each event comes from the one the relay kept after the previous event
(`BookingsAsRelayed`), not from the store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Union
from uuid import UUID

from faststream.kafka import KafkaBroker

from backbone.bus import Outgoing
from backbone.commands import outcome_messages
from backbone.context import Cause
from backbone.follower import Recorded
from backbone.outbox import envelope
from backbone.personal import Personal
from contracts import bookings as contract
from contracts.envelope import Actor
from contracts.outcomes import CommandOutcome
from contracts.personal import SubjectKey, subject_keys_topic
from contracts.topics import BOOKINGS_COMMAND_OUTCOMES, BOOKINGS_EVENTS, dead_letters
from services.bookings.application import Bookings
from services.bookings.domainmodel import Booking
from services.bookings.tenants import TenantStatuses

SERVICE = "bookings"


def translator(app: Bookings):
    bookings = BookingsAsRelayed(app)

    def translate(recorded: Recorded) -> Iterator[Outgoing]:
        event = recorded.event
        if isinstance(event, Booking.Event):
            booking = bookings.after(event)
            if isinstance(event, Booking.Placed):
                yield _event(placed(app, recorded))
            elif type(event) in _BOOKING_EVENTS:
                message = _BOOKING_EVENTS[type(event)](app, recorded, booking)
                if message is not None:
                    yield _event(message)
        elif isinstance(event, TenantStatuses.Defined | TenantStatuses.Retired):
            tenant_id = app.repository.get(event.originator_id).tenant_id
            yield _event(custom_status(recorded, tenant_id))
        else:
            yield from outcome_messages(app, recorded, SERVICE, BOOKINGS_COMMAND_OUTCOMES)

    return translate


class BookingsAsRelayed:
    """Each booking as of the last of its events the relay translated, to derive the next
    one's message from without reading the store.

    A booking's integration events carry its state after the event (amount paid, balance due).
    Read from the store, that was one query and one replay (JSON decoding, opening its sealed
    personal data) per event: most of the relay's time, and what made a RecordPayment cost two to
    2.7 times a PlaceBooking end to end. The relay follows the log in order, so each booking's
    events come one version after the other: the state kept for the previous version plus the
    event is the state after it. Anything else (a version skipped, a booking not kept, an event
    that does not apply) is read from the store as before. Bounded (least recently relayed out
    first) and emptied with the application's caches when a subject is erased."""

    def __init__(self, app: Bookings, maxsize: int = 20_000):
        self.app = app
        self.maxsize = maxsize
        self._kept: OrderedDict[UUID, Booking] = OrderedDict()
        self._lock = threading.Lock()  # the relay's thread, or an operator's republish
        app.add_cache(self._kept)

    def after(self, event: Booking.Event) -> Booking:
        """The booking as it was once `event` was applied."""
        with self._lock:
            booking = self._kept.pop(event.originator_id, None)
        try:
            if isinstance(event, Booking.Placed):
                booking = event.mutate(None)
            elif booking is not None and booking.version == event.originator_version - 1:
                booking = event.mutate(booking)
            else:
                booking = None
        except Exception:  # (an event that does not apply here: the store says what it is)
            booking = None
        if booking is None or booking.version != event.originator_version:
            booking = self.app.repository.get(event.originator_id, version=event.originator_version)
        with self._lock:
            self._kept[event.originator_id] = booking
            while len(self._kept) > self.maxsize:
                self._kept.popitem(last=False)
        return booking


def placed(app: Bookings, recorded: Recorded) -> contract.BookingPlaced:
    event = recorded.event
    return contract.BookingPlaced(
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
    )


def payment_recorded(app: Bookings, recorded: Recorded, booking: Booking) -> Any:
    event = recorded.event
    return contract.BookingPaymentRecorded(
        **_about(recorded, booking),
        payment_id=event.payment_id,
        amount=event.amount,
        method=event.method,
        currency=booking.currency,
        total=booking.total,
        amount_paid=booking.amount_paid,
        balance_due=booking.balance_due,
        recorded_by=_actor(event),
    )


def status_changed(app: Bookings, recorded: Recorded, booking: Booking) -> Any:
    event = recorded.event
    return contract.BookingStatusChanged(
        **_about(recorded, booking),
        status_before=event.status_before,
        status=event.status,
        locks_inventory=event.locks_inventory,
        cause=event.cause,
        changed_by=_actor(event),
        reason=event.reason,
    )


def modified(app: Bookings, recorded: Recorded, booking: Booking) -> Any:
    return contract.BookingModified(
        **_about(recorded, booking),
        email=app.sealed(booking.customer["email"]),
        name=app.sealed(booking.customer["name"]),
        modified_by=_actor(recorded.event),
        changes=tuple(recorded.event.changes),
        lines=booking.lines,
        currency=booking.currency,
        total=booking.total,
        amount_paid=booking.amount_paid,
        balance_due=booking.balance_due,
    )


def cancelled(app: Bookings, recorded: Recorded, booking: Booking) -> Any:
    event = recorded.event
    return contract.BookingCancelled(
        **_about(recorded, booking),
        email=app.sealed(booking.customer["email"]),
        name=app.sealed(booking.customer["name"]),
        cancelled_by=_actor(event),
        status_before=event.status_before,
        amount_paid=booking.amount_paid,
        currency=booking.currency,
        refund_due=event.refund_due,
        reason=event.reason if isinstance(event.reason, str) else None,  # (recorded unsealed)
        sealed_reason=app.sealed(event.reason) if isinstance(event.reason, Personal) else None,
        rules_overridden=event.rules_overridden,
    )


def voided(app: Bookings, recorded: Recorded, booking: Booking) -> Any:
    event = recorded.event
    return contract.BookingVoided(
        **_about(recorded, booking),
        status_before=event.status_before,
        voided_by=_actor(event),
        reason=event.reason,
    )


def custom_status(recorded: Recorded, tenant_id: str) -> Any:
    event = recorded.event
    common = envelope(recorded, SERVICE, tenant_id=tenant_id) | {"status": event.code}
    if isinstance(event, TenantStatuses.Defined):
        return contract.CustomStatusDefined(
            **common, label=event.label, locks_inventory=event.locks_inventory, defined_by=_actor(event)
        )
    return contract.CustomStatusRetired(**common, retired_by=_actor(event))


# Erasing a customer publishes nothing here: the erasure travels on `bookings.subject-keys`.
_BOOKING_EVENTS = {
    Booking.PaymentRecorded: payment_recorded,
    Booking.StatusChanged: status_changed,
    Booking.Modified: modified,
    Booking.Cancelled: cancelled,
    Booking.Voided: voided,
}


def _about(recorded: Recorded, booking: Booking) -> dict[str, Any]:
    return {
        **envelope(recorded, SERVICE, tenant_id=booking.tenant_id),
        "booking_id": booking.id,
        "booking_code": booking.code,
        "account_id": booking.account_id,
    }


def _event(message: Any) -> Outgoing:
    return Outgoing(BOOKINGS_EVENTS, message)


def _actor(event: object) -> Actor:
    return Actor.parse(Cause.from_meta(getattr(event, "meta", None)).actor)


def declare_publications(broker: KafkaBroker, topic_for: Any = lambda name: name) -> None:
    """Describe what this service publishes, for its AsyncAPI document. The outbox relay sends
    through the broker directly; these publishers only carry the documentation."""
    events = tuple(m for m in contract.EVENTS if m is not CommandOutcome)
    broker.publisher(
        topic_for(BOOKINGS_EVENTS),
        title=f"{BOOKINGS_EVENTS}:publish",
        description="Every change of a booking, and of a tenant's custom statuses, once each, in "
        "order per booking (key: booking id; tenant id for custom statuses). Personal data is "
        "sealed per subject (keys on bookings.subject-keys). Headers: message-type, "
        "schema-version, message-id, source, source-position (deduplicate on it), tenant-id.",
        schema=Union[events],  # noqa: UP007 - a runtime tuple of models
    )
    broker.publisher(
        topic_for(BOOKINGS_COMMAND_OUTCOMES),
        title=f"{BOOKINGS_COMMAND_OUTCOMES}:publish",
        description="One outcome per command received, correlated by command_id (key: the booking "
        "id, or the command id). A repeated command_id gets the same outcome again.",
        schema=CommandOutcome,
    )
    broker.publisher(
        topic_for(subject_keys_topic(SERVICE)),
        title=f"{subject_keys_topic(SERVICE)}:publish",
        description="Compacted. The key of each booking's customer data (subject id = booking id), "
        "published before any message sealed with it; key: null once the customer is erased.",
        schema=SubjectKey,
    )
    broker.publisher(
        topic_for(dead_letters(SERVICE)),
        title=f"{dead_letters(SERVICE)}:publish",
        description="What this service could not decode or apply: the original record (same key, "
        "bytes and headers) plus dlq-reason, dlq-detail, dlq-original-topic, "
        "dlq-original-partition, dlq-original-offset, dlq-consumer, dlq-at headers.",
    )
