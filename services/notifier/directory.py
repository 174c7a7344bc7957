"""What the notifier remembers between events, to write the right email to the right address.

Events say what happened, not everything an email needs: a redaction does not say where to
send its confirmation, a cancellation does not say what was booked, a magic-link request does
not say which language the customer reads. These aggregates keep that, fed by the events:

* `Customer`: an account's address and language;
* `Booking`: what a booking is for (its lines), to say what was cancelled or changed;
* `Tenant`: the business's branding (set by its staff) and time zone (from its settings);
* `StaffKey`: a staff member's API key (its hash), issued by accounts, for the staff API.
"""

from __future__ import annotations

import hmac
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from backbone.domain import Aggregate, DomainError, event
from backbone.personal import Personal

_CUSTOMER_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:notifier:customers")
_CONTACT_SUBJECTS = uuid5(NAMESPACE_URL, "urn:booking-accounts:notifier:contact-subjects")
_BOOKING_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:notifier:bookings")
_TENANT_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:notifier:tenants")
_STAFF_SUBJECTS = uuid5(NAMESPACE_URL, "urn:booking-accounts:notifier:staff-subjects")


class Customer(Aggregate):
    """A customer account as the notifier knows it.

    `address` is the notifier's own copy of the account's address, sealed under a data subject
    of the notifier's (`contact_subject`), not the account's: when an account is redacted, the
    erasure of its key (on the accounts keys topic) usually arrives *before* `AccountRedacted`
    (the relay publishes keys first), and the confirmation must still reach the customer. The
    copy is destroyed once that confirmation is sent (see `Email.erase_recipient_when_done`).
    """

    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return uuid5(_CUSTOMER_IDS, str(account_id))

    @staticmethod
    def contact_subject(account_id: UUID) -> UUID:
        return uuid5(_CONTACT_SUBJECTS, str(account_id))

    @event("Registered")
    def __init__(self, account_id: UUID, tenant_id: str, address: Personal | None, language: str | None):
        self.account_id = account_id
        self.tenant_id = tenant_id
        self.address = address
        self.language = language
        self.redacted = False

    def change_address(self, address: Personal) -> None:
        if not self.redacted and address != self.address:
            self._record_address(address=address)

    @event("AddressChanged")
    def _record_address(self, address: Personal) -> None:
        self.address = address

    def prefer_language(self, language: str) -> None:
        if not self.redacted and language != self.language:
            self._record_language(language=language)

    @event("LanguageChosen")
    def _record_language(self, language: str) -> None:
        self.language = language

    def redact(self, by: str) -> None:
        if not self.redacted:
            self._record_redaction(by=by, subject_id=self.account_id)

    @event("Redacted")
    def _record_redaction(self, by: str, subject_id: UUID) -> None:
        """The account's data is to be erased here too: `subject_id` is the account's."""
        self.redacted = True


class Booking(Aggregate):
    """What a booking is for: its lines (names and times, no personal data)."""

    @staticmethod
    def create_id(booking_id: UUID) -> UUID:
        return uuid5(_BOOKING_IDS, str(booking_id))

    @event("Noted")
    def __init__(
        self,
        booking_id: UUID,
        tenant_id: str,
        code: str,
        account_id: UUID | None,
        lines: list[dict[str, Any]],
        timezone: str,
    ):
        self.booking_id = booking_id
        self.tenant_id = tenant_id
        self.code = code
        self.account_id = account_id
        self.lines = lines
        self.timezone = timezone

    def revise(self, lines: list[dict[str, Any]]) -> None:
        if lines != self.lines:
            self._record_revision(lines=lines)

    @event("Revised")
    def _record_revision(self, lines: list[dict[str, Any]]) -> None:
        self.lines = lines


BRANDING_DEFAULTS: dict[str, str | None] = {
    "business_name": None,  # None: the deployment's MAIL_FROM display name
    "reply_to": None,
    "footer": None,
    "staff_email": None,  # where staff notices (cancellations, refunds due) go
    "default_language": None,  # None: the deployment's DEFAULT_LANGUAGE
    "logo_url": None,  # the portal's pages show it (https only)
    "colour": None,  # the portal's accent colour, #rrggbb
}


class UnknownBranding(DomainError):
    code = "unknown_setting"


class Tenant(Aggregate):
    """A business, as its emails show it: branding set by its staff, and its time zone."""

    @staticmethod
    def create_id(tenant_id: str) -> UUID:
        return uuid5(_TENANT_IDS, tenant_id)

    @staticmethod
    def staff_subject(tenant_id: str) -> UUID:
        """The subject the staff address is sealed under, like every address we store."""
        return uuid5(_STAFF_SUBJECTS, tenant_id)

    @event("Registered")
    def __init__(self, tenant_id: str):
        self.tenant_id = tenant_id
        self.branding: dict[str, str | None] = dict(BRANDING_DEFAULTS)
        self.timezone = "UTC"

    def change_branding(self, changes: dict[str, str | None], by: str) -> None:
        """Change some branding settings (None: back to the default). Records only what
        really changes; each change says who made it."""
        unknown = set(changes) - set(BRANDING_DEFAULTS)
        if unknown:
            raise UnknownBranding(f"unknown branding settings: {sorted(unknown)}")
        effective = {k: v for k, v in changes.items() if self.branding.get(k) != v}
        if effective:
            self._record_branding(changes=effective, by=by)

    @event("BrandingChanged")
    def _record_branding(self, changes: dict[str, str | None], by: str) -> None:
        self.branding = {**self.branding, **changes}

    def adopt_timezone(self, timezone: str) -> None:
        if timezone != self.timezone:
            self._record_timezone(timezone=timezone)

    @event("TimezoneAdopted")
    def _record_timezone(self, timezone: str) -> None:
        self.timezone = timezone


class StaffKey(Aggregate):
    """A staff member's API key, as accounts announced it: the hash of its secret and the
    tenant it opens. Its id is the staff member's id (the key names it)."""

    id: UUID

    @event("Accepted")
    def __init__(self, tenant_id: str, key_hash: str):
        self.tenant_id = tenant_id
        self.key_hash = key_hash
        self.active = True

    def admits(self, key_hash: str) -> bool:
        return self.active and hmac.compare_digest(self.key_hash, key_hash)

    def revoke(self) -> None:
        if self.active:
            self._record_revocation()

    @event("Revoked")
    def _record_revocation(self) -> None:
        self.active = False
        self.key_hash = ""
