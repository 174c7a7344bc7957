"""What the bookings service does with the messages it consumes: plain functions of
(message, unit of work), registered by message type at the bottom.

Commands (`bookings.commands`) return what they changed; a `Refused` is answered to the sender
as a rejection with its reason code (`backbone.commands` applies each command_id once). Events
from accounts (`accounts.events`) update this service's copies of accounts and tenant rules.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from backbone import context
from backbone.commands import Accepted
from backbone.personal import Personal
from backbone.unitofwork import UnitOfWork
from contracts import accounts
from contracts import bookings as contract
from services.bookings import lines as booking_lines
from services.bookings.customers import CustomerAccount
from services.bookings.domainmodel import Booking
from services.bookings.errors import Refused
from services.bookings.statuses import CustomStatus, check_start
from services.bookings.tenants import TenantPolicy, TenantStatuses
from services.bookings.terms import applicable_rule

# ------------------------------------------------------------------------------ commands


def place_booking(command: contract.PlaceBooking | contract.PlaceBookingV2, uow: UnitOfWork) -> Accepted:
    if uow.get(Booking, command.booking_id) is not None:
        raise Refused("booking_exists", f"Booking {command.booking_id} was already placed.")
    policy = _policy(uow, command.tenant_id)
    _check_account(command, policy, uow)
    lines = [line.model_dump() for line in command.lines]
    total = booking_lines.total(lines)
    check_start(command.status, command.amount_paid, total, _custom_statuses(uow, command.tenant_id))
    subject = command.booking_id  # the booking's customer details are their own data subject
    customer = command.customer
    form = getattr(command, "form", None) or {}
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
        terms=policy.terms().as_dict(),
        form={key: Personal(subject, answer) for key, answer in form.items()} or None,
    )
    uow.add(booking)
    return Accepted(booking.id, booking.version)


def record_payment(command: contract.RecordPayment, uow: UnitOfWork) -> Accepted:
    booking = _booking(uow, command)
    with _acting_for(command):
        booking.record_payment(command.payment_id, command.amount, command.currency, command.method)
    return Accepted(booking.id, booking.version)


def change_status(command: contract.ChangeBookingStatus, uow: UnitOfWork) -> Accepted:
    booking = _booking(uow, command)
    with _acting_for(command):
        booking.change_status(command.status, command.reason, _custom_statuses(uow, command.tenant_id))
    return Accepted(booking.id, booking.version)


def modify_booking(command: contract.ModifyBooking, uow: UnitOfWork) -> Accepted:
    booking = _booking(uow, command)
    if command.expected_version is not None and booking.version != command.expected_version:
        raise Refused(
            "booking_changed", f"The booking is at version {booking.version}, not {command.expected_version}."
        )
    _check_customer_request(command, booking, uow)
    if command.customer is not None and command.customer.email is not None and _for_customer(command):
        raise Refused("not_allowed_for_customer", "A customer cannot change the email of a booking.")
    policy = _policy(uow, command.tenant_id)
    with _acting_for(command):
        booking.modify(
            now=_now(uow),
            rule=applicable_rule("modify", booking.frozen_terms, policy.terms()),
            customer=command.customer.model_dump(exclude_none=True) if command.customer else None,
            lines=[line.model_dump() for line in command.lines] if command.lines else None,
            form=command.form,
            reason=command.reason,
            override=command.override_customer_rules,
        )
    return Accepted(booking.id, booking.version)


def cancel_booking(command: contract.CancelBooking, uow: UnitOfWork) -> Accepted:
    booking = _booking(uow, command)
    _check_customer_request(command, booking, uow)
    policy = _policy(uow, command.tenant_id)
    with _acting_for(command):
        booking.cancel(
            now=_now(uow),
            rule=applicable_rule("cancel", booking.frozen_terms, policy.terms()),
            reason=command.reason,
            override=command.override_customer_rules,
            refund_due=command.refund_due,
        )
    return Accepted(booking.id, booking.version)


def void_booking(command: contract.VoidBooking, uow: UnitOfWork) -> Accepted:
    booking = _booking(uow, command)
    with _acting_for(command):
        booking.void(command.reason)
    return Accepted(booking.id, booking.version)


def define_custom_status(command: contract.DefineCustomStatus, uow: UnitOfWork) -> Accepted:
    statuses = _tenant_statuses(uow, command.tenant_id)
    with _acting_for(command):
        statuses.define(command.status, command.label, command.locks_inventory)
    return Accepted(statuses.id, statuses.version)


def retire_custom_status(command: contract.RetireCustomStatus, uow: UnitOfWork) -> Accepted:
    statuses = _tenant_statuses(uow, command.tenant_id)
    with _acting_for(command):
        statuses.retire(command.status)
    return Accepted(statuses.id, statuses.version)


# ------------------------------------------------------------------------ accounts events


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


def when_sessions_revoked(event: accounts.SessionsRevoked, uow: UnitOfWork) -> None:
    account = uow.get(CustomerAccount, CustomerAccount.create_id(event.account_id))
    if account is not None:  # unknown here: no session of it is accepted here anyway
        account.revoke_sessions(event.revoked_before)


def when_account_archived(event: accounts.AccountArchived, uow: UnitOfWork) -> None:
    account = uow.get(CustomerAccount, CustomerAccount.create_id(event.account_id))
    if account is not None:
        account.archive()


def when_account_activated(event: accounts.AccountActivated, uow: UnitOfWork) -> None:
    account = uow.get(CustomerAccount, CustomerAccount.create_id(event.account_id))
    if account is not None:
        account.activate()


def when_account_redacted(event: accounts.AccountRedacted, uow: UnitOfWork) -> None:
    """Record the decision to erase; `erasure.Eraser` carries it out (and retries until done)."""
    account = uow.get(CustomerAccount, CustomerAccount.create_id(event.account_id))
    if account is None:  # bookings made under the account id must still be erased
        account = CustomerAccount(account_id=event.account_id, tenant_id=event.tenant_id, email=None)
        uow.add(account)
    account.redact()


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


# ------------------------------------------------------------------------------ prefetch


def prefetch(body: dict[str, Any]) -> Iterator[UUID]:
    """The aggregates the handlers above get for a message, named by its raw body, so that
    the inbox reads a whole batch's in one query (`backbone.inbox.Prefetch`)."""
    tenant_id = body.get("tenant_id")
    if isinstance(tenant_id, str):
        yield TenantPolicy.create_id(tenant_id)
        yield TenantStatuses.create_id(tenant_id)
    if body.get("booking_id") is not None:
        yield UUID(str(body["booking_id"]))
    if body.get("account_id") is not None:
        yield CustomerAccount.create_id(UUID(str(body["account_id"])))
    on_behalf_of = body.get("on_behalf_of")
    if isinstance(on_behalf_of, dict) and on_behalf_of.get("kind") == "customer":
        yield CustomerAccount.create_id(UUID(str(on_behalf_of.get("id"))))


# -------------------------------------------------------------------------------- helpers


def _booking(uow: UnitOfWork, command: Any) -> Booking:
    booking = uow.get(Booking, command.booking_id)
    if booking is None or booking.tenant_id != command.tenant_id:
        raise Refused(
            "booking_not_found",
            f"No booking {command.booking_id} for {command.tenant_id}; if it was placed just now, "
            "send this again (same command_id) once the PlaceBooking was accepted.",
            final=False,
        )
    return booking


def _policy(uow: UnitOfWork, tenant_id: str) -> TenantPolicy:
    return uow.get(TenantPolicy, TenantPolicy.create_id(tenant_id)) or _default_policy(tenant_id)


@functools.lru_cache(maxsize=1024)
def _default_policy(tenant_id: str) -> TenantPolicy:
    """The rules of a tenant nothing was heard of, made once: only read here, never saved (a
    new aggregate per command was a tenth of a PlaceBooking's time in the handler)."""
    return TenantPolicy.default(tenant_id)


def _tenant_statuses(uow: UnitOfWork, tenant_id: str) -> TenantStatuses:
    statuses = uow.get(TenantStatuses, TenantStatuses.create_id(tenant_id))
    if statuses is None:
        statuses = TenantStatuses(tenant_id=tenant_id)
        uow.add(statuses)
    return statuses


def _custom_statuses(uow: UnitOfWork, tenant_id: str) -> dict[str, CustomStatus]:
    statuses = uow.get(TenantStatuses, TenantStatuses.create_id(tenant_id))
    return statuses.custom if statuses is not None else {}


def _check_account(command: Any, policy: TenantPolicy, uow: UnitOfWork) -> None:
    """ "Require login to book", and no new booking for an erased account."""
    account = None
    if command.account_id is not None:
        account = uow.get(CustomerAccount, CustomerAccount.create_id(command.account_id))
        if account is not None and account.tenant_id != command.tenant_id:
            account = None
        if account is not None and account.redacted:
            raise Refused("account_erased", "This customer account was erased.")
    if not policy.require_login_to_book:
        return
    if command.account_id is None:
        raise Refused("login_required", "This business takes bookings only from logged-in customers.")
    if account is None or account.verified is None:
        raise Refused(
            "account_not_verified",
            "The customer account is not known here as verified (yet); send this again (same "
            "command_id) in a moment.",
            final=False,
        )
    if account.archived:
        raise Refused("account_archived", "This customer account is archived.")


def _for_customer(command: Any) -> bool:
    return command.on_behalf_of is not None and command.on_behalf_of.kind == "customer"


def _check_customer_request(command: Any, booking: Booking, uow: UnitOfWork) -> None:
    """A service acting for a customer: the booking must be theirs, and no override."""
    if not _for_customer(command):
        return
    if command.override_customer_rules:
        raise Refused("not_allowed_for_customer", "Only staff can override the customer rules.")
    account = uow.get(CustomerAccount, CustomerAccount.create_id(_account_id(command)))
    if account is None or not account.owns(booking):
        raise Refused("booking_not_found", f"No booking {booking.id} for this customer.")


def _account_id(command: Any) -> UUID:
    try:
        return UUID(command.on_behalf_of.id)
    except ValueError:
        raise Refused("booking_not_found", "on_behalf_of names no customer account.") from None


@contextmanager
def _acting_for(command: Any) -> Iterator[None]:
    """Record the person a service acts for as the actor of what the command changes."""
    on_behalf_of = getattr(command, "on_behalf_of", None)
    if on_behalf_of is None:
        yield
        return
    cause = context.current()
    with context.caused_by(
        str(on_behalf_of), cause.tenant_id, cause.correlation_id, cause.causation_id, cause.traceparent
    ):
        yield


def _now(uow: UnitOfWork) -> datetime:
    return uow.app.clock()  # type: ignore[attr-defined]


HANDLERS = {
    contract.PlaceBooking: place_booking,
    contract.PlaceBookingV2: place_booking,
    contract.RecordPayment: record_payment,
    contract.ChangeBookingStatus: change_status,
    contract.ModifyBooking: modify_booking,
    contract.CancelBooking: cancel_booking,
    contract.VoidBooking: void_booking,
    contract.DefineCustomStatus: define_custom_status,
    contract.RetireCustomStatus: retire_custom_status,
    accounts.AccountClaimed: when_account_claimed,
    accounts.EmailVerified: when_email_verified,
    accounts.SessionsRevoked: when_sessions_revoked,
    accounts.AccountArchived: when_account_archived,
    accounts.AccountActivated: when_account_activated,
    accounts.AccountRedacted: when_account_redacted,
    accounts.TenantSettingsChanged: when_settings_changed,
}
