"""What the accounts service does with the messages it consumes: plain functions of
(message, unit of work), registered by message type at the bottom."""

from __future__ import annotations

from typing import Any

from backbone.personal import Personal
from backbone.unitofwork import IdConflict, UnitOfWork
from contracts import bookings
from services.accounts.addresses import EmailAddress
from services.accounts.domainmodel import Account


def when_booking_placed(event: bookings.BookingPlaced, uow: UnitOfWork) -> None:
    """The merge rule: the details a booking arrives with fill the empty fields of the
    customer's account and never overwrite what is there.

    The customer's account is the one the booking was placed under, or else the verified
    account with the booking's email address in that tenant (never an unverified one: whoever
    claimed an address without proving it must not collect the details of its bookings)."""
    vault = uow.app.vault
    account = _placed_under(event, uow)
    if account is None:
        email = vault.open(event.customer.email)
        if email is None or email.value is None:
            return  # the booking's customer is erased already
        reservation = uow.get(EmailAddress, uow.app.index.address_id(event.tenant_id, email.value))
        found = uow.get(Account, reservation.account_id) if reservation and reservation.account_id else None
        account = found if found is not None and found.is_verified else None
    if account is None or account.tenant_id != event.tenant_id:
        return
    details: dict[str, Any] = {"name": _copy(vault.open(event.customer.name), account)}
    if event.customer.phone is not None:
        details["phone"] = _copy(vault.open(event.customer.phone), account)
    account.fill_in(details)


def _placed_under(event: bookings.BookingPlaced, uow: UnitOfWork) -> Account | None:
    if event.account_id is None:
        return None
    try:
        return uow.get(Account, event.account_id)
    except IdConflict:  # not an account's id: as good as none
        return None


def _copy(value: Personal | None, account: Account) -> Personal | None:
    """A booking's detail as the account's own: sealed from now on with the account's key, so
    that redacting the account erases the copy too."""
    if value is None or value.value is None:
        return None
    return Personal(account.id, value.value)


HANDLERS = {
    bookings.BookingPlaced: when_booking_placed,
}
