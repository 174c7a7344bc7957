"""Which events make which emails: plain functions of (event, unit of work).

An email is queued once per (event, kind of email), however often the event is seen (see
`queue`). Everything an email needs is decided here, when the event is handled: recipient,
language, content; the sender only renders and delivers. Personal values stay `Personal`
(sealed in the store); links stay sealed for the notifier until the email is rendered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from backbone.personal import Personal
from backbone.unitofwork import UnitOfWork
from contracts import accounts, bookings
from contracts.envelope import IntegrationEvent
from services.notifier.directory import Booking, Customer, StaffKey, Tenant
from services.notifier.domainmodel import CUSTOMER, STAFF, Email
from services.notifier.rendering import supported_language

# ----------------------------------------------------------------------------- accounts


def when_account_claimed(event: accounts.AccountClaimed, uow: UnitOfWork) -> None:
    email = uow.app.vault.open(event.email)
    customer = _customer(uow, event.account_id, event.tenant_id, email)
    if event.language:
        customer.prefer_language(event.language)
    _queue_link(
        uow,
        event,
        "verify_email" if event.claimed_by == "customer" else "invitation",
        recipient=email,
        customer=customer,
    )


_PURPOSES = {
    "verify_email": "verify_email",
    "set_password": "invitation",
    "verify_new_email": "verify_new_email",
}


def when_verification_requested(event: accounts.VerificationRequested, uow: UnitOfWork) -> None:
    # For a new address, `email` is the new one (not verified yet): that is where the link goes.
    customer = _customer(uow, event.account_id, event.tenant_id, None)
    recipient = uow.app.vault.open(event.email)
    _queue_link(uow, event, _PURPOSES[event.purpose], recipient=recipient, customer=customer)


def when_email_verified(event: accounts.EmailVerified, uow: UnitOfWork) -> None:
    email = uow.app.vault.open(event.email)
    customer = _customer(uow, event.account_id, event.tenant_id, email)
    if event.first_time:
        queue(
            uow,
            event,
            "welcome",
            recipient=email,
            language=_language(uow, event.tenant_id, customer),
            data={"name": uow.app.vault.open(event.name), "login_url": uow.app.login_url(event.tenant_id)},
            account_id=event.account_id,
        )


def when_magic_link_requested(event: accounts.MagicLinkRequested, uow: UnitOfWork) -> None:
    customer = _customer(uow, event.account_id, event.tenant_id, None)
    _queue_link(uow, event, "magic_link", recipient=uow.app.vault.open(event.email), customer=customer)


def when_password_reset_requested(event: accounts.PasswordResetRequested, uow: UnitOfWork) -> None:
    customer = _customer(uow, event.account_id, event.tenant_id, None)
    _queue_link(uow, event, "password_reset", recipient=uow.app.vault.open(event.email), customer=customer)


def when_profile_changed(event: accounts.ProfileChanged, uow: UnitOfWork) -> None:
    if event.language:
        _customer(uow, event.account_id, event.tenant_id, None).prefer_language(event.language)


def when_account_redacted(event: accounts.AccountRedacted, uow: UnitOfWork) -> None:
    """Confirm the erasure to the customer, then erase what we hold about them.

    The confirmation goes to the notifier's own copy of the address (see `Customer`): the
    account's key is usually destroyed here before this event arrives. The key of the
    account's subject is destroyed after this event is stored (`Customer.Redacted`, see
    `eraser`), and the copy once the confirmation has been sent."""
    customer = _customer(uow, event.account_id, event.tenant_id, None)
    if customer.redacted:
        return
    if customer.address is not None and not customer.address.erased:
        queue(
            uow,
            event,
            "account_redacted",
            recipient=customer.address,
            language=_language(uow, event.tenant_id, customer),
            data={},
            account_id=event.account_id,
            erase_recipient_when_done=True,
        )
    customer.redact(by=str(event.redacted_by))


def when_tenant_settings_changed(event: accounts.TenantSettingsChanged, uow: UnitOfWork) -> None:
    _tenant(uow, event.tenant_id).adopt_timezone(event.timezone)


# ----------------------------------------------------------------------------- bookings


def when_booking_placed(event: bookings.BookingPlaced, uow: UnitOfWork) -> None:
    if uow.get(Booking, Booking.create_id(event.booking_id)) is None:
        uow.add(
            Booking(
                booking_id=event.booking_id,
                tenant_id=event.tenant_id,
                code=event.booking_code,
                account_id=event.account_id,
                lines=_lines(event.lines),
                timezone=event.terms.timezone,
            )
        )


def when_booking_cancelled(event: bookings.BookingCancelled, uow: UnitOfWork) -> None:
    vault = uow.app.vault
    booking = uow.get(Booking, Booking.create_id(event.booking_id))
    email, name = vault.open(event.email), vault.open(event.name)
    details = {
        "booking_code": event.booking_code,
        "lines": booking.lines if booking else [],
        "amount_paid": event.amount_paid,
        "refund_due": event.refund_due,
        "currency": event.currency,
        "cancelled_by_kind": event.cancelled_by.kind,
        "cancelled_by_id": event.cancelled_by.id,
        "reason": vault.open(event.sealed_reason) if event.sealed_reason else event.reason,
    }
    queue(
        uow,
        event,
        "booking_cancelled",
        recipient=email,
        language=_language(uow, event.tenant_id, _known_customer(uow, event.account_id)),
        data={"name": name, **details},
        account_id=event.account_id,
        booking_id=event.booking_id,
    )
    tenant = _tenant(uow, event.tenant_id)
    queue(
        uow,
        event,
        "booking_cancelled_staff",
        recipient=staff_address(uow.app.vault, tenant),
        language=_language(uow, event.tenant_id, None),
        data={
            **details,
            "customer_name": name,
            "customer_email": email,
            "status_before": event.status_before,
            "rules_overridden": event.rules_overridden,
        },
        account_id=event.account_id,
        booking_id=event.booking_id,
        audience=STAFF,
    )


def when_booking_modified(event: bookings.BookingModified, uow: UnitOfWork) -> None:
    booking = uow.get(Booking, Booking.create_id(event.booking_id))
    if booking is not None:
        booking.revise(_lines(event.lines))
    vault = uow.app.vault
    queue(
        uow,
        event,
        "booking_modified",
        recipient=vault.open(event.email),
        language=_language(uow, event.tenant_id, _known_customer(uow, event.account_id)),
        data={
            "name": vault.open(event.name),
            "booking_code": event.booking_code,
            "changes": list(event.changes),
            "lines": _lines(event.lines),
            "total": event.total,
            "amount_paid": event.amount_paid,
            "balance_due": event.balance_due,
            "currency": event.currency,
        },
        account_id=event.account_id,
        booking_id=event.booking_id,
    )


def when_staff_member_added(event: accounts.StaffMemberAdded, uow: UnitOfWork) -> None:
    if uow.get(StaffKey, event.staff_id) is None:
        uow.add(StaffKey(id=event.staff_id, tenant_id=event.tenant_id, key_hash=event.key_hash))


def when_staff_member_removed(event: accounts.StaffMemberRemoved, uow: UnitOfWork) -> None:
    key = uow.get(StaffKey, event.staff_id)
    if key is not None:
        key.revoke()


HANDLERS = {
    accounts.AccountClaimed: when_account_claimed,
    accounts.VerificationRequested: when_verification_requested,
    accounts.EmailVerified: when_email_verified,
    accounts.MagicLinkRequested: when_magic_link_requested,
    accounts.PasswordResetRequested: when_password_reset_requested,
    accounts.ProfileChanged: when_profile_changed,
    accounts.AccountRedacted: when_account_redacted,
    accounts.TenantSettingsChanged: when_tenant_settings_changed,
    accounts.StaffMemberAdded: when_staff_member_added,
    accounts.StaffMemberRemoved: when_staff_member_removed,
    bookings.BookingPlaced: when_booking_placed,
    bookings.BookingCancelled: when_booking_cancelled,
    bookings.BookingModified: when_booking_modified,
}


# ------------------------------------------------------------------------------ prefetch

# The emails each kind of event may queue (`queue`), by its `event_type`: their ids are derived
# from the event's id, so a batch can look for all of them at once.
_TEMPLATES = {
    "AccountClaimed": ("verify_email", "invitation"),
    "VerificationRequested": tuple(_PURPOSES.values()),
    "EmailVerified": ("welcome",),
    "MagicLinkRequested": ("magic_link",),
    "PasswordResetRequested": ("password_reset",),
    "AccountRedacted": ("account_redacted",),
    "BookingCancelled": ("booking_cancelled", "booking_cancelled_staff"),
    "BookingModified": ("booking_modified",),
}


def prefetch(body: dict[str, Any]) -> Iterator[UUID]:
    """The aggregates the handlers above get for a message, named by its raw body, so that
    the inbox reads a whole batch's in one query (`backbone.inbox.Prefetch`) instead of one
    query and one replay per aggregate per message (most of the inbox's CPU per
    cancellation on the profile of `benchmarks.latency`): the emails it may queue (to see
    they are not queued yet), its booking, customer, tenant and staff member."""
    event_id = body.get("event_id")
    if event_id is not None:
        source = UUID(str(event_id))
        for template in _TEMPLATES.get(str(body.get("event_type")), ()):
            yield Email.create_id(source, template)
    tenant_id = body.get("tenant_id")
    if isinstance(tenant_id, str):
        yield Tenant.create_id(tenant_id)
    if body.get("booking_id") is not None:
        yield Booking.create_id(UUID(str(body["booking_id"])))
    if body.get("account_id") is not None:
        yield Customer.create_id(UUID(str(body["account_id"])))
    if body.get("staff_id") is not None:
        yield UUID(str(body["staff_id"]))


# ------------------------------------------------------------------------------ helpers


def queue(
    uow: UnitOfWork,
    event: IntegrationEvent,
    template: str,
    *,
    recipient: Personal | None,
    language: str,
    data: dict[str, Any],
    account_id: UUID | None = None,
    booking_id: UUID | None = None,
    audience: str = CUSTOMER,
    erase_recipient_when_done: bool = False,
) -> None:
    """Queue an email once per (event, template), however often the event is seen."""
    if uow.get(Email, Email.create_id(event.event_id, template)) is None:
        uow.add(
            Email(
                source_event_id=event.event_id,
                template=template,
                tenant_id=event.tenant_id,
                audience=audience,
                recipient=recipient,
                language=language,
                data=data,
                account_id=account_id,
                booking_id=booking_id,
                erase_recipient_when_done=erase_recipient_when_done,
            )
        )


def staff_address(vault: Any, tenant: Tenant) -> Personal | None:
    """Where the tenant's staff notices go (sealed like every address we store); None when
    the tenant has not set one: the notice is then parked until they do and it is retried."""
    address = tenant.branding.get("staff_email") or tenant.branding.get("reply_to")
    return vault.personal(Tenant.staff_subject(tenant.tenant_id), address) if address else None


def _queue_link(
    uow: UnitOfWork, event: Any, template: str, *, recipient: Personal | None, customer: Customer
) -> None:
    queue(
        uow,
        event,
        template,
        recipient=recipient,
        language=_language(uow, event.tenant_id, customer),
        data={
            "name": uow.app.vault.open(event.name),
            "sealed_link": event.link,  # opened only when rendering, never stored open
            "expires_at": event.link_expires_at,
        },
        account_id=event.account_id,
    )


def _customer(uow: UnitOfWork, account_id: UUID, tenant_id: str, email: Personal | None) -> Customer:
    customer = uow.get(Customer, Customer.create_id(account_id))
    if customer is None:
        customer = Customer(
            account_id=account_id,
            tenant_id=tenant_id,
            address=None,
            language=None,
        )
        uow.add(customer)
    _remember_address(uow, customer, email)
    return customer


def _remember_address(uow: UnitOfWork, customer: Customer, email: Personal | None) -> None:
    if email is None or email.erased or customer.redacted:
        return
    subject = Customer.contact_subject(customer.account_id)
    customer.change_address(uow.app.vault.personal(subject, email.value))


def _known_customer(uow: UnitOfWork, account_id: UUID | None) -> Customer | None:
    return uow.get(Customer, Customer.create_id(account_id)) if account_id else None


def _tenant(uow: UnitOfWork, tenant_id: str) -> Tenant:
    tenant = uow.get(Tenant, Tenant.create_id(tenant_id))
    if tenant is None:
        tenant = Tenant(tenant_id=tenant_id)
        uow.add(tenant)
    return tenant


def _language(uow: UnitOfWork, tenant_id: str, customer: Customer | None) -> str:
    """The customer's language if we know it and write in it, else the tenant's default,
    else the deployment's."""
    tenant = uow.get(Tenant, Tenant.create_id(tenant_id))
    return (
        supported_language(
            customer.language if customer else None,
            tenant.branding.get("default_language") if tenant else None,
            uow.app.default_language,
        )
        or "en"
    )


def _lines(lines: Any) -> list[dict[str, Any]]:
    return [
        {
            "kind": line.kind,
            "name": line.name,
            "quantity": line.quantity,
            "starts_at": line.starts_at,
            "ends_at": line.ends_at,
        }
        for line in lines
    ]
