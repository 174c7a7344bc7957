"""Events published by the accounts service on `accounts.events`."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from contracts.envelope import Actor, Email, IntegrationEvent, ShortText, UtcDatetime, Value

SealedText = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_-]+={0,2}$", min_length=16, max_length=4096),
    Field(
        description="A secret sealed for the notifier only (libsodium sealed box with the "
        "notifier's public key, base64url). Nobody else reading the topic can open it."
    ),
]


class AccountClaimed(IntegrationEvent):
    """A customer account was claimed for an email address, by the customer or by staff.

    The account is unverified until `EmailVerified`. `verification_link` is the link the
    customer must follow; it is sealed because whoever holds it can verify the account.
    """

    event_type: Literal["AccountClaimed"] = "AccountClaimed"
    schema_version: Literal[1] = 1

    account_id: UUID
    email: Email
    name: ShortText
    claimed_by: Literal["customer", "staff"]
    verification_link: SealedText
    verification_expires_at: UtcDatetime

    @property
    def key(self) -> str:
        return str(self.account_id)


class EmailVerified(IntegrationEvent):
    """The customer proved they own the email address of their account."""

    event_type: Literal["EmailVerified"] = "EmailVerified"
    schema_version: Literal[1] = 1

    account_id: UUID
    email: Email

    @property
    def key(self) -> str:
        return str(self.account_id)


CutoffUnit = Literal["days", "hours"]


class Cutoff(Value):
    """How long before a booking starts a customer may still act on it."""

    amount: Annotated[int, Field(ge=0, le=8760)]
    unit: CutoffUnit


class TenantSettingsChanged(IntegrationEvent):
    """The customer-account settings of a tenant, complete, after a change by staff.

    Published whole (not as a diff) so that a consumer needs only the latest one.
    """

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


EVENTS = (AccountClaimed, EmailVerified, TenantSettingsChanged)
