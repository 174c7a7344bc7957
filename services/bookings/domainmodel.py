"""Bookings, and what the bookings service knows of accounts and of each tenant's rules.

A `Booking` is placed by another service's command, with lines of classic *items* or new
*products*. Customers may cancel their own bookings when the tenant's rules allow it; no money
ever moves here: a cancellation states what was paid and what staff must refund by hand.

`CustomerAccount` and `TenantPolicy` are this service's own copies of facts published by the
accounts service (consumed from the bus and recorded here, exactly once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from backbone.domain import Aggregate, DomainError, event
from backbone.personal import Personal

_ACCOUNT_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:bookings:customer-accounts")
_POLICY_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:bookings:tenant-policies")

CANCELLED = "STOP"
VOID = "VOID"
CLOSED_STATUSES = frozenset({CANCELLED, VOID})


class BookingExists(DomainError):
    code = "booking_exists"


class CannotCancel(DomainError):
    """Why a customer may not cancel: `code` is one of setting_off, status_blocks,
    cutoff_passed, already_closed, already_started."""

    http_status = 409


@dataclass(frozen=True)
class Cutoff:
    amount: int
    unit: str  # "days" | "hours"

    def deadline(self, starts_at: datetime, timezone: str) -> datetime:
        """The last instant a customer may act on a booking that starts at `starts_at`.

        Hours count back from the start itself. Days count calendar days in the tenant's time
        zone: with 2 days, a booking starting on the 25th may be changed until the end of the
        23rd, local time (and never after it started)."""
        if self.unit == "hours":
            return starts_at - timedelta(hours=self.amount)
        zone = ZoneInfo(timezone)
        last_day = starts_at.astimezone(zone).date() - timedelta(days=self.amount)
        end_of_day = datetime.combine(last_day + timedelta(days=1), time(0), zone)
        return min(end_of_day, starts_at)


def cancellation_refusal(
    status: str, starts_at: datetime, policy: TenantPolicy, now: datetime
) -> CannotCancel | None:
    """None if a customer may cancel a booking in `status` starting at `starts_at` now, else
    the reason they may not (the first that applies, in the order a customer would ask)."""
    if status in CLOSED_STATUSES:
        return CannotCancel("This booking is already cancelled.", code="already_closed")
    if not policy.allow_cancel:
        return CannotCancel("This business does not let customers cancel online.", code="setting_off")
    if status in policy.blocking_statuses:
        return CannotCancel(
            "Bookings in this status cannot be cancelled online; please contact the business.",
            code="status_blocks",
        )
    if now >= starts_at:
        return CannotCancel("This booking has already started.", code="already_started")
    if now > policy.cancel_cutoff.deadline(starts_at, policy.timezone):
        return CannotCancel(
            "It is too late to cancel this booking online; please contact the business.", code="cutoff_passed"
        )
    return None


class Booking(Aggregate):
    """A booking. Its id is also the id of its customer's details as a data subject: they are
    sealed with that subject's key, erased when the customer is (see backbone.personal)."""

    id: UUID  # chosen by the service that places the booking

    @event("Placed")
    def __init__(
        self,
        tenant_id: str,
        code: str,
        customer: dict[str, Personal | None],
        account_id: UUID | None,
        lines: list[dict[str, Any]],
        currency: str,
        status: str,
        amount_paid: Decimal,
        total: Decimal,
        terms: dict[str, Any],
    ) -> None:
        self.tenant_id = tenant_id
        self.code = code
        self.customer = customer
        self.account_id = account_id
        self.lines = lines
        self.currency = currency
        self.status = status
        self.amount_paid = amount_paid
        self.total = total
        self.terms = terms  # the self-service rules in force when it was placed
        self.cancellation: dict[str, Any] | None = None

    @property
    def email(self) -> str | None:
        """The customer's email address; None once the customer was erased."""
        email = self.customer.get("email")
        return email.value if email is not None else None

    @property
    def starts_at(self) -> datetime:
        return min(line["starts_at"] for line in self.lines)

    def customer_cancellation_refusal(self, policy: TenantPolicy, now: datetime) -> CannotCancel | None:
        return cancellation_refusal(self.status, self.starts_at, policy, now)

    def cancel_by_customer(self, policy: TenantPolicy, now: datetime, reason: str | None) -> None:
        refusal = self.customer_cancellation_refusal(policy, now)
        if refusal is not None:
            raise refusal
        self.record_cancellation(
            status_before=self.status, refund_due=self.amount_paid, reason=reason, cancelled_at=now
        )

    @event("Cancelled")
    def record_cancellation(
        self, status_before: str, refund_due: Decimal, reason: str | None, cancelled_at: datetime
    ) -> None:
        self.status = CANCELLED
        self.cancellation = {
            "status_before": status_before,
            "refund_due": refund_due,
            "reason": reason,
            "cancelled_at": cancelled_at,
        }


class CustomerAccount(Aggregate):
    """What bookings knows of a customer account (from the accounts service's events)."""

    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return uuid5(_ACCOUNT_IDS, str(account_id))

    @event("Learned")
    def __init__(self, account_id: UUID, tenant_id: str, email: Personal) -> None:
        self.account_id = account_id
        self.tenant_id = tenant_id
        self.email = email
        self.verified: Personal | None = None

    @event("EmailVerified")
    def email_verified(self, email: Personal) -> None:
        self.verified = email

    @property
    def verified_email(self) -> str | None:
        return self.verified.value if self.verified is not None else None

    def owns(self, booking: Booking) -> bool:
        """A verified customer sees the bookings made under their account, and those made
        with their verified email address (also before the account existed)."""
        if booking.tenant_id != self.tenant_id or self.verified_email is None:
            return False
        return booking.account_id == self.account_id or booking.email == self.verified_email


class TenantPolicy(Aggregate):
    """The tenant's customer-account rules, as last published by the accounts service."""

    @staticmethod
    def create_id(tenant_id: str) -> UUID:
        return uuid5(_POLICY_IDS, tenant_id)

    @event("Adopted")
    def __init__(self, tenant_id: str, settings_version: int, settings: dict[str, Any]) -> None:
        self.tenant_id = tenant_id
        self.settings_version = settings_version
        self.settings = settings

    def adopt(self, settings_version: int, settings: dict[str, Any]) -> None:
        if settings_version > self.settings_version:  # ignore stale or repeated versions
            self.record_adoption(settings_version=settings_version, settings=settings)

    @event("Updated")
    def record_adoption(self, settings_version: int, settings: dict[str, Any]) -> None:
        self.settings_version = settings_version
        self.settings = settings

    @classmethod
    def default(cls, tenant_id: str) -> TenantPolicy:
        """Rules of a tenant nothing was heard of: everything off (the product's default)."""
        return cls(tenant_id=tenant_id, settings_version=0, settings={})

    @property
    def allow_cancel(self) -> bool:
        return bool(self.settings.get("allow_cancel", False))

    @property
    def blocking_statuses(self) -> frozenset[str]:
        return frozenset(self.settings.get("blocking_statuses", ()))

    @property
    def timezone(self) -> str:
        return str(self.settings.get("timezone", "UTC"))

    @property
    def cancel_cutoff(self) -> Cutoff:
        raw = self.settings.get("cancel_cutoff") or {"amount": 0, "unit": "days"}
        return Cutoff(int(raw["amount"]), str(raw["unit"]))

    def terms(self) -> dict[str, Any]:
        """The self-service rules as they stand, to be frozen on a new booking."""
        zero = {"amount": 0, "unit": "days"}
        return {
            "settings_version": self.settings_version,
            "allow_cancel": self.allow_cancel,
            "cancel_cutoff": self.settings.get("cancel_cutoff") or zero,
            "allow_modify": bool(self.settings.get("allow_modify", False)),
            "modify_cutoff": self.settings.get("modify_cutoff") or zero,
            "blocking_statuses": sorted(self.blocking_statuses),
            "timezone": self.timezone,
        }
