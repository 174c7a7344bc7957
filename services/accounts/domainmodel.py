"""Customer accounts and the settings of the business they belong to.

An `Account` is claimed for an email address (by the customer, or by staff on their behalf),
and shows nothing until the email is verified through a single-use, expiring link. Emails are
unique per tenant through `EmailAddress`, an aggregate whose id is derived from (tenant,
email): a second claim of the same address collides in the event store itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from backbone.domain import Aggregate, DomainError, event
from backbone.personal import Personal

_EMAIL_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:accounts:email-addresses")
_SETTINGS_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:accounts:tenant-settings")


class VerificationFailed(DomainError):
    code = "verification_failed"
    http_status = 400


class Account(Aggregate):
    """A customer account. Its id is also the id of the customer as a data subject: every
    personal value about them is sealed with that subject's key (see backbone.personal)."""

    id: UUID  # chosen by the caller: the verification link names the account

    @event("Claimed")
    def __init__(
        self,
        tenant_id: str,
        email: Personal,
        name: Personal,
        password_hash: str | None,
        claimed_by: str,
        verification_hash: str,
        verification_expires_at: datetime,
        sealed_verification_link: str,
    ) -> None:
        # The link itself is only ever stored sealed for the notifier; its hash is what counts.
        self.tenant_id = tenant_id
        self.email = email
        self.name = name
        self.password_hash = password_hash
        self.claimed_by = claimed_by
        self.verification_hash: str | None = verification_hash
        self.verification_expires_at: datetime | None = verification_expires_at
        self.verified_at: datetime | None = None

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None

    def verify_email(self, token_hash: str, now: datetime) -> None:
        # Same refusal whatever the reason: a caller learns nothing from it.
        if (
            self.is_verified
            or self.verification_hash is None
            or self.verification_hash != token_hash
            or self.verification_expires_at is None
            or now >= self.verification_expires_at
        ):
            raise VerificationFailed("This verification link is invalid or has expired.")
        self.record_email_verified(email=self.email, verified_at=now)

    @event("EmailVerified")
    def record_email_verified(self, email: Personal, verified_at: datetime) -> None:
        self.verified_at = verified_at
        self.verification_hash = None  # single use
        self.verification_expires_at = None


class EmailAddress(Aggregate):
    """Reserves an email address for one account within one tenant."""

    @staticmethod
    def create_id(tenant_id: str, email: str) -> UUID:
        return uuid5(_EMAIL_IDS, f"{tenant_id}/{email}")

    @event("Reserved")
    def __init__(self, tenant_id: str, email: Personal, account_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.email = email
        self.account_id = account_id


DEFAULT_SETTINGS: dict[str, Any] = {
    "customer_logins_enabled": False,
    "require_login_to_book": False,
    "show_pre_bookings": False,
    "allow_cancel": False,
    "cancel_cutoff": {"amount": 0, "unit": "days"},
    "allow_modify": False,
    "modify_cutoff": {"amount": 0, "unit": "days"},
    "blocking_statuses": [],
    "timezone": "UTC",
}


class TenantSettings(Aggregate):
    """The customer-account settings of one tenant. Every change is an event."""

    @staticmethod
    def create_id(tenant_id: str) -> UUID:
        return uuid5(_SETTINGS_IDS, tenant_id)

    @event("Initialised")
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.values: dict[str, Any] = dict(DEFAULT_SETTINGS)

    def change(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - set(DEFAULT_SETTINGS)
        if unknown:
            raise DomainError(f"unknown settings: {sorted(unknown)}", code="unknown_setting")
        effective = {k: v for k, v in changes.items() if self.values.get(k) != v}
        if effective:
            self.record_change(changes=effective)

    @event("Changed")
    def record_change(self, changes: dict[str, Any]) -> None:
        self.values = {**self.values, **changes}
