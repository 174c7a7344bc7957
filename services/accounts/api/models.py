"""The bodies the accounts API takes and gives. Requests are strict (unknown fields are an
error, 422); personal data is validated here and normalised (emails lower-cased)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from contracts.accounts import Language
from contracts.envelope import Email, ShortText, TenantId

Tenant = Annotated[TenantId, Path(description="The business's tenant id")]
StatusCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,15}$")]
Password = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128),
    Field(description="Checked for strength (zxcvbn score 3 or more) where a new one is chosen."),
]
Token = Annotated[
    str,
    StringConstraints(min_length=10, max_length=200),
    Field(description="The `token` parameter of the emailed link."),
]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ()-]{5,25}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- customers


class ClaimRequest(Strict):
    email: Email
    name: ShortText
    password: Password | None = Field(
        default=None,
        deprecated=True,
        description=(
            "Ignored (accepted so that older clients keep working): whoever claims an address may "
            "not own it, so the password is chosen when the verification link is followed "
            "(`POST /v1/email-verifications`)."
        ),
    )
    language: Language | None = None


class EmailRequest(Strict):
    email: Email


class TokenRequest(Strict):
    token: Token


class VerificationRequest(Strict):
    token: Token
    password: Password | None = Field(
        default=None,
        description=(
            "The password of a newly claimed account, chosen now by whoever follows the link "
            "(checked for strength). Omit it to log in with emailed links; not for a link that "
            "confirms a new address (422 `password_not_expected`)."
        ),
    )
    send_login_link: bool = Field(
        default=False, description="Without a password: email a login link right away."
    )


class NewPasswordRequest(Strict):
    token: Token
    password: Password


class LoginRequest(Strict):
    email: Email
    password: Password


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str


class Verified(BaseModel):
    account_id: UUID
    verified: bool = True
    has_password: bool = Field(description="False: the customer logs in with emailed links.")


class PasswordSet(BaseModel):
    account_id: UUID
    detail: str


class SessionToken(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme's name, not a secret
    expires_at: datetime


class Address(Strict):
    line1: ShortText
    line2: ShortText | None = None
    city: ShortText
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = Field(
        description="ISO 3166-1 alpha-2"
    )


class ProfileChange(Strict):
    """Only the fields given change; `null` clears phone or address."""

    name: ShortText | None = None
    phone: Phone | None = None
    address: Address | None = None
    language: Language | None = None

    @model_validator(mode="after")
    def _name_cannot_be_cleared(self) -> ProfileChange:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be removed")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set)


class EmailChangeRequest(Strict):
    email: Email
    current_password: Password | None = Field(default=None, description="Required if the account has one.")


class PasswordChange(Strict):
    current_password: Password | None = Field(default=None, description="Required if the account has one.")
    new_password: Password


class Profile(BaseModel):
    account_id: UUID
    tenant_id: str
    email: str
    name: str
    phone: str | None
    address: dict[str, Any] | None
    language: str | None
    verified: bool
    has_password: bool
    pending_email: str | None = Field(description="A new address waiting to be verified, if any.")


# ----------------------------------------------------------------------------- staff


class CreateAccount(Strict):
    email: Email
    name: ShortText
    phone: Phone | None = None
    address: Address | None = None
    language: Language | None = None


class AccountEdit(ProfileChange):
    """Contact details. A new `email` must still be verified by the customer: the account
    keeps its current address until they follow the link (unless nobody has verified the
    current one yet: then it is corrected at once and the link goes to the new one)."""

    email: Email | None = None

    @model_validator(mode="after")
    def _email_cannot_be_cleared(self) -> AccountEdit:
        if "email" in self.model_fields_set and self.email is None:
            raise ValueError("email cannot be removed")
        return self


class Created(BaseModel):
    account_id: UUID


class AccountSummary(BaseModel):
    account_id: UUID
    email: str | None = Field(description="null once redacted")
    name: str | None
    phone: str | None
    status: Literal["active", "archived", "redacted"]
    verified: bool
    claimed_by: Literal["customer", "staff"]
    created_at: datetime
    verified_at: datetime | None


class DirectoryPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AccountSummary]


class HistoryEntry(BaseModel):
    at: datetime
    event: str
    actor: str
    version: int
    details: dict[str, Any]


class AccountDetail(AccountSummary):
    address: dict[str, Any] | None
    language: str | None
    has_password: bool
    history: list[HistoryEntry]


class BlockRequest(Strict):
    email: Email


class BlockedEntry(BaseModel):
    entry_id: UUID
    hint: str = Field(description="The address, masked: only a keyed hash of it is kept.")
    changed_at: datetime
    changed_by: str


class CutoffModel(Strict):
    amount: Annotated[int, Field(ge=0, le=8760)]
    unit: Literal["days", "hours"]


class SettingsChange(Strict):
    customer_logins_enabled: bool | None = None
    require_login_to_book: bool | None = None
    show_pre_bookings: bool | None = None
    allow_cancel: bool | None = None
    cancel_cutoff: CutoffModel | None = None
    allow_modify: bool | None = None
    modify_cutoff: CutoffModel | None = None
    blocking_statuses: Annotated[list[StatusCode], Field(max_length=64)] | None = None
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="IANA time zone the cut-off days are counted in, e.g. Europe/Vienna"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
                raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @field_validator("blocking_statuses")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return sorted(set(value)) if value is not None else None


class Settings(BaseModel):
    customer_logins_enabled: bool
    require_login_to_book: bool
    show_pre_bookings: bool
    allow_cancel: bool
    cancel_cutoff: CutoffModel
    allow_modify: bool
    modify_cutoff: CutoffModel
    blocking_statuses: list[str]
    timezone: str


class SettingsChangeEntry(BaseModel):
    at: datetime
    actor: str
    version: int
    changes: dict[str, Any]


# ----------------------------------------------------------------------------- admin


class StaffMemberRequest(Strict):
    label: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] = Field(
        description="What the key is for, e.g. 'front desk' or 'website backend' (shown in lists)."
    )


class StaffMemberCreated(BaseModel):
    staff_id: UUID
    tenant_id: str
    label: str
    api_key: str = Field(description="Shown this once; only its hash is kept.")


class StaffMemberView(BaseModel):
    staff_id: UUID
    label: str
    active: bool
    added_at: datetime
