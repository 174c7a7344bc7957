"""Events published by the accounts service on `accounts.events` (Kafka key: account id, the
tenant id for settings, the staff member's id for staff keys).

Personal data is `Sealed` with the account's subject key (the subject id is the account id; see
`contracts.personal`). A link whose holder can act on an account is sealed *for the notifier*
(`NotifierSealed`): only the notifier can open it, to put it in the email.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from contracts.envelope import Actor, IntegrationEvent, UtcDatetime, Value
from contracts.personal import Sealed

NotifierSealed = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_=-]+$", min_length=16, max_length=4096),
    Field(
        description="A secret sealed for the notifier only (libsodium sealed box with the "
        "notifier's public key, base64url). Nobody else reading the topic can open it."
    ),
]

Language = Annotated[
    str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$"), Field(description="BCP 47, e.g. en, de")
]


class _AccountEvent(IntegrationEvent):
    account_id: UUID

    @property
    def key(self) -> str:
        return str(self.account_id)


class AccountClaimed(_AccountEvent):
    """An account was claimed for an email address, by the customer or by staff for them.

    Unverified until `EmailVerified`. `link` is what the customer must follow: a verification
    link when they claimed it, a set-password link (which also verifies) when staff did."""

    event_type: Literal["AccountClaimed"] = "AccountClaimed"
    schema_version: Literal[2] = 2

    email: Sealed
    name: Sealed
    claimed_by: Literal["customer", "staff"]
    link: NotifierSealed
    link_expires_at: UtcDatetime
    language: Language | None = None


class VerificationRequested(_AccountEvent):
    """A new link was issued for an unverified address (a resend, or a changed email); any
    earlier link of the same purpose stopped working."""

    event_type: Literal["VerificationRequested"] = "VerificationRequested"
    schema_version: Literal[1] = 1

    email: Sealed
    name: Sealed
    purpose: Literal["verify_email", "set_password", "verify_new_email"]
    link: NotifierSealed
    link_expires_at: UtcDatetime


class EmailVerified(_AccountEvent):
    """The customer proved they own `email` (the account's address from now on)."""

    event_type: Literal["EmailVerified"] = "EmailVerified"
    schema_version: Literal[2] = 2

    email: Sealed
    name: Sealed
    first_time: bool = Field(description="True the first time the account is verified (welcome).")


class MagicLinkRequested(_AccountEvent):
    """The customer asked to log in by email: a single-use link, valid for minutes."""

    event_type: Literal["MagicLinkRequested"] = "MagicLinkRequested"
    schema_version: Literal[1] = 1

    email: Sealed
    name: Sealed
    link: NotifierSealed
    link_expires_at: UtcDatetime


class PasswordResetRequested(_AccountEvent):
    event_type: Literal["PasswordResetRequested"] = "PasswordResetRequested"
    schema_version: Literal[1] = 1

    email: Sealed
    name: Sealed
    link: NotifierSealed
    link_expires_at: UtcDatetime


class SessionsRevoked(_AccountEvent):
    """Every session of the account issued before `revoked_before` is no longer valid
    (logout, password change, archive): services that check sessions must refuse them."""

    event_type: Literal["SessionsRevoked"] = "SessionsRevoked"
    schema_version: Literal[1] = 1

    revoked_before: UtcDatetime
    reason: Literal["logout", "password_changed", "password_reset", "archived", "redacted"]


class Address(Value):
    line1: Sealed
    line2: Sealed | None = None
    city: Sealed
    postal_code: Sealed
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


class ProfileChanged(_AccountEvent):
    """Contact details changed (only the changed ones are given). `source` says whether the
    customer, staff, or details arriving with a booking (filling empty fields only) did it."""

    event_type: Literal["ProfileChanged"] = "ProfileChanged"
    schema_version: Literal[1] = 1

    name: Sealed | None = None
    phone: Sealed | None = None
    address: Address | None = None
    language: Language | None = None
    source: Literal["customer", "staff", "booking"]
    changed_by: Actor


class AccountArchived(_AccountEvent):
    event_type: Literal["AccountArchived"] = "AccountArchived"
    schema_version: Literal[1] = 1
    archived_by: Actor


class AccountActivated(_AccountEvent):
    event_type: Literal["AccountActivated"] = "AccountActivated"
    schema_version: Literal[1] = 1
    activated_by: Actor


class AccountRedacted(_AccountEvent):
    """The customer's personal data was erased (their subject key destroyed). Every service
    must erase what it holds about the account, including the bookings made with its verified
    email; the bookings and their amounts remain."""

    event_type: Literal["AccountRedacted"] = "AccountRedacted"
    schema_version: Literal[1] = 1

    redacted_by: Actor


CutoffUnit = Literal["days", "hours"]


class Cutoff(Value):
    """How long before a booking starts a customer may still act on it."""

    amount: Annotated[int, Field(ge=0, le=8760)]
    unit: CutoffUnit


class TenantSettingsChanged(IntegrationEvent):
    """The customer-account settings of a tenant, complete, after a change by staff.

    Published whole (not as a diff) so that a consumer needs only the latest one."""

    event_type: Literal["TenantSettingsChanged"] = "TenantSettingsChanged"
    schema_version: Literal[1] = 1

    settings_version: Annotated[int, Field(ge=1)]
    customer_logins_enabled: bool
    require_login_to_book: bool
    show_pre_bookings: bool
    allow_cancel: bool
    cancel_cutoff: Cutoff
    allow_modify: bool
    modify_cutoff: Cutoff
    blocking_statuses: tuple[Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,15}$")], ...]
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    changed_by: Actor

    @property
    def key(self) -> str:
        return self.tenant_id


StaffKeyHash = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{64}$"),
    Field(
        description="SHA-256 (hex) of the secret part of the staff member's API key. The secret "
        "is 256 random bits: the hash lets a service check a key, never recover it."
    ),
]


class StaffMemberAdded(IntegrationEvent):
    """A staff member of the tenant got an API key (`staff_<id hex>.<secret>`). Every service
    with a staff API accepts the key for this tenant from now on, with the actor `staff:<id>`."""

    event_type: Literal["StaffMemberAdded"] = "StaffMemberAdded"
    schema_version: Literal[1] = 1

    staff_id: UUID
    key_hash: StaffKeyHash

    @property
    def key(self) -> str:
        return str(self.staff_id)


class StaffMemberRemoved(IntegrationEvent):
    """The staff member's API key no longer opens anything."""

    event_type: Literal["StaffMemberRemoved"] = "StaffMemberRemoved"
    schema_version: Literal[1] = 1

    staff_id: UUID

    @property
    def key(self) -> str:
        return str(self.staff_id)


EVENTS = (
    AccountClaimed,
    VerificationRequested,
    EmailVerified,
    MagicLinkRequested,
    PasswordResetRequested,
    SessionsRevoked,
    ProfileChanged,
    AccountArchived,
    AccountActivated,
    AccountRedacted,
    TenantSettingsChanged,
    StaffMemberAdded,
    StaffMemberRemoved,
)
