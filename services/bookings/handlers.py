"""What the bookings service does with the messages it consumes: plain functions of
(message, unit of work), registered by message type at the bottom."""

from __future__ import annotations

from backbone.commands import Accepted
from backbone.personal import Personal
from backbone.unitofwork import UnitOfWork
from contracts import accounts, bookings
from services.bookings.domainmodel import Booking, BookingExists, CustomerAccount, TenantPolicy


def place_booking(command: bookings.PlaceBooking, uow: UnitOfWork) -> Accepted:
    if uow.get(Booking, command.booking_id) is not None:
        raise BookingExists(f"booking {command.booking_id} already exists")
    lines = [line.model_dump() for line in command.lines]
    total = sum((line.unit_price * line.quantity for line in command.lines), start=0)
    policy = uow.get(TenantPolicy, TenantPolicy.create_id(command.tenant_id))
    subject = command.booking_id  # the booking's customer details are their own data subject
    customer = command.customer
    booking = Booking(
        id=command.booking_id,
        tenant_id=command.tenant_id,
        code=command.booking_code,
        customer={
            "email": Personal(subject, customer.email),
            "name": Personal(subject, customer.name),
            "phone": Personal(subject, customer.phone) if customer.phone else None,
        },
        account_id=command.account_id,
        lines=lines,
        currency=command.currency,
        status=command.status,
        amount_paid=command.amount_paid,
        total=total,
        terms=(policy or TenantPolicy.default(command.tenant_id)).terms(),
    )
    uow.add(booking)
    return Accepted(booking.id, booking.version)


def when_account_claimed(event: accounts.AccountClaimed, uow: UnitOfWork) -> None:
    account_id = CustomerAccount.create_id(event.account_id)
    if uow.get(CustomerAccount, account_id) is None:
        email = uow.app.vault.open(event.email)
        uow.add(CustomerAccount(account_id=event.account_id, tenant_id=event.tenant_id, email=email))


def when_email_verified(event: accounts.EmailVerified, uow: UnitOfWork) -> None:
    account = uow.get(CustomerAccount, CustomerAccount.create_id(event.account_id))
    if account is None:  # the claim is always published first, in the same partition
        raise LookupError(f"EmailVerified for unknown account {event.account_id}")
    email = uow.app.vault.open(event.email)
    if account.verified_email != email.value:
        account.email_verified(email=email)


def when_settings_changed(event: accounts.TenantSettingsChanged, uow: UnitOfWork) -> None:
    settings = event.model_dump(
        mode="json",
        include={
            "customer_logins_enabled",
            "require_login_to_book",
            "show_pre_bookings",
            "allow_cancel",
            "cancel_cutoff",
            "allow_modify",
            "modify_cutoff",
            "blocking_statuses",
            "timezone",
        },
    )
    policy = uow.get(TenantPolicy, TenantPolicy.create_id(event.tenant_id))
    if policy is None:
        uow.add(
            TenantPolicy(
                tenant_id=event.tenant_id, settings_version=event.settings_version, settings=settings
            )
        )
    else:
        policy.adopt(event.settings_version, settings)


HANDLERS = {
    bookings.PlaceBooking: place_booking,
    accounts.AccountClaimed: when_account_claimed,
    accounts.EmailVerified: when_email_verified,
    accounts.TenantSettingsChanged: when_settings_changed,
}
