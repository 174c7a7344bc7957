"""What the bookings service knows of a customer account: its copy of the facts the accounts
service publishes (claimed, verified, sessions revoked, archived, redacted), recorded exactly
once from `accounts.events`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from backbone.domain import Aggregate, event
from backbone.personal import Personal

if TYPE_CHECKING:
    from services.bookings.domainmodel import Booking

_ACCOUNT_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:bookings:customer-accounts")


class CustomerAccount(Aggregate):
    """What bookings knows of a customer account (from the accounts service's events)."""

    # Every address verified before the current one (an erasure reaches the bookings made with
    # any of them). A class default: snapshots taken before it existed have none.
    earlier_verified: tuple[Personal, ...] = ()

    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return uuid5(_ACCOUNT_IDS, str(account_id))

    @event("Learned")
    def __init__(self, account_id: UUID, tenant_id: str, email: Personal | None) -> None:
        self.account_id = account_id
        self.tenant_id = tenant_id
        self.email = email
        self.verified: Personal | None = None
        self.sessions_revoked_before: datetime | None = None
        self.archived = False
        self.redacted = False
        self.erased_booking_ids: list[UUID] | None = None  # set once erasure was carried out

    @event("EmailVerified")
    def email_verified(self, email: Personal) -> None:
        if self.verified is not None and self.verified.value not in (None, email.value):
            self.earlier_verified = (*self.earlier_verified, self.verified)
        self.verified = email

    @property
    def every_verified_email(self) -> list[str]:
        """The current verified address and every earlier one."""
        found = [p.value for p in (*self.earlier_verified, self.verified) if p is not None and p.value]
        return list(dict.fromkeys(found))

    @property
    def verified_email(self) -> str | None:
        return self.verified.value if self.verified is not None else None

    def revoke_sessions(self, before: datetime) -> None:
        if self.sessions_revoked_before is None or before > self.sessions_revoked_before:
            self._sessions_revoked(before=before)

    @event("SessionsRevoked")
    def _sessions_revoked(self, before: datetime) -> None:
        self.sessions_revoked_before = before

    def session_revoked(self, issued_at: datetime) -> bool:
        return self.sessions_revoked_before is not None and issued_at < self.sessions_revoked_before

    def archive(self) -> None:
        if not self.archived:
            self._archived()

    @event("Archived")
    def _archived(self) -> None:
        self.archived = True

    def activate(self) -> None:
        if self.archived:
            self._activated()

    @event("Activated")
    def _activated(self) -> None:
        self.archived = False

    def redact(self) -> None:
        """The decision to erase this customer here (carried out by `erasure.Eraser`)."""
        if not self.redacted:
            self._redacted()

    @event("Redacted")
    def _redacted(self) -> None:
        self.redacted = True

    @event("Erased")
    def record_erasure(self, booking_ids: list[UUID]) -> None:
        self.erased_booking_ids = booking_ids
        self.email = Personal(self.account_id, None) if self.email else None
        self.verified = Personal(self.account_id, None) if self.verified else None
        self.earlier_verified = ()

    def owns(self, booking: Booking) -> bool:
        """A verified customer sees the bookings made under their account, and those made
        with their verified email address (also before the account existed)."""
        if booking.tenant_id != self.tenant_id or self.verified_email is None:
            return False
        return booking.account_id == self.account_id or booking.email == self.verified_email
