"""Which events make which emails: plain functions of (event, unit of work)."""

from __future__ import annotations

from typing import Any

from backbone.personal import Personal
from backbone.unitofwork import UnitOfWork
from contracts import accounts, bookings
from contracts.envelope import IntegrationEvent
from services.notifier.domainmodel import Email


def queue(
    uow: UnitOfWork,
    event: IntegrationEvent,
    template: str,
    recipient: Personal,
    about: str,
    data: dict[str, Any],
    language: str = "en",
) -> None:
    """Queue an email once per (event, template), however often the event is seen."""
    if uow.get(Email, Email.create_id(event.event_id, template)) is None:
        uow.add(
            Email(
                source_event_id=event.event_id,
                template=template,
                tenant_id=event.tenant_id,
                recipient=recipient,
                language=language,
                data=data,
                about=about,
            )
        )


def when_account_claimed(event: accounts.AccountClaimed, uow: UnitOfWork) -> None:
    vault = uow.app.vault
    queue(
        uow,
        event,
        "verify_email",
        vault.open(event.email),
        f"account:{event.account_id}",
        {
            "name": vault.open(event.name),
            "sealed_link": event.link,  # opened only when rendering, never stored open
            "expires_at": event.link_expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        },
    )


def when_booking_cancelled(event: bookings.BookingCancelled, uow: UnitOfWork) -> None:
    queue(
        uow,
        event,
        "booking_cancelled",
        uow.app.vault.open(event.email),
        f"booking:{event.booking_id}",
        {
            "booking_code": event.booking_code,
            "amount_paid": f"{event.amount_paid:.2f}",
            "refund_due": f"{event.refund_due:.2f}",
            "currency": event.currency,
            "cancelled_by": event.cancelled_by.kind,
        },
    )


HANDLERS = {
    accounts.AccountClaimed: when_account_claimed,
    bookings.BookingCancelled: when_booking_cancelled,
}
