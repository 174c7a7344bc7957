"""The bookings service's contract: its events on `bookings.events`, the commands other services
publish on `bookings.commands`, and the outcome of each command on `bookings.command-outcomes`.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints, model_validator

from contracts.accounts import Cutoff
from contracts.envelope import (
    Actor,
    Command,
    Currency,
    Email,
    IntegrationEvent,
    LongText,
    Money,
    ShortText,
    UtcDatetime,
    Value,
)
from contracts.outcomes import CommandOutcome
from contracts.personal import Sealed

StatusCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,15}$"),
    Field(
        description="A booking status id: a system status (PRE, PEND, HOLD, PART, PAID, WAIT, "
        "STOP, VOID) or a tenant's custom status."
    ),
]

BookingCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$"),
    Field(description="The human booking code shown to customers and staff, e.g. ABCD-1234."),
]


class Customer(Value):
    """The contact details a booking was made with."""

    email: Email
    name: ShortText
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{5,25}$")] | None = None


class BookingLine(Value):
    """One thing booked: a classic *item* or a new-style *product*, for a time span."""

    kind: Literal["item", "product"]
    ref: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="The item's or product's id in the catalogue of the publishing service."
    )
    name: ShortText
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    unit_price: Money

    @model_validator(mode="after")
    def _ends_after_start(self) -> BookingLine:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


# ---------------------------------------------------------------------------------- commands


class PlaceBooking(Command):
    """Place a new booking. The sender chooses the booking's id, so that follow-up commands can
    name it before the outcome arrives; placing the same booking_id twice is rejected."""

    command_type: Literal["PlaceBooking"] = "PlaceBooking"
    schema_version: Literal[1] = 1

    booking_id: UUID
    booking_code: BookingCode
    customer: Customer
    account_id: UUID | None = Field(
        default=None, description="The customer account the booking was made under, if any."
    )
    lines: Annotated[tuple[BookingLine, ...], Field(min_length=1, max_length=100)]
    currency: Currency
    status: StatusCode = "PEND"
    amount_paid: Money = Field(default=0, description="Already paid when the booking is placed.")

    @property
    def key(self) -> str:
        return str(self.booking_id)


# ------------------------------------------------------------------------------------ events


class SealedCustomer(Value):
    """A booking's contact details, sealed with the key of the booking's data subject."""

    email: Sealed
    name: Sealed
    phone: Sealed | None = None


class BookingTerms(Value):
    """The self-service rules in force when the booking was placed, frozen on it."""

    settings_version: Annotated[int, Field(ge=0)]
    allow_cancel: bool
    cancel_cutoff: Cutoff
    allow_modify: bool
    modify_cutoff: Cutoff
    blocking_statuses: tuple[StatusCode, ...]
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _BookingEvent(IntegrationEvent):
    booking_id: UUID
    booking_code: BookingCode
    account_id: UUID | None

    @property
    def key(self) -> str:
        return str(self.booking_id)


class BookingPlaced(_BookingEvent):
    """A booking was placed (by another service's command, on behalf of a customer)."""

    event_type: Literal["BookingPlaced"] = "BookingPlaced"
    schema_version: Literal[2] = 2

    customer: SealedCustomer
    lines: tuple[BookingLine, ...]
    currency: Currency
    total: Money
    amount_paid: Money
    status: StatusCode
    terms: BookingTerms
    placed_by: Actor


class BookingCancelled(_BookingEvent):
    """A booking was cancelled. No money moves: `refund_due` tells staff what to refund by hand."""

    event_type: Literal["BookingCancelled"] = "BookingCancelled"
    schema_version: Literal[2] = 2

    email: Sealed
    name: Sealed
    cancelled_by: Actor
    status_before: StatusCode
    amount_paid: Money
    currency: Currency
    refund_due: Money
    reason: LongText | None = None
    rules_overridden: bool = Field(
        default=False, description="Staff cancelled although the customer rules would not allow it."
    )


class BookingModified(_BookingEvent):
    """A booking's lines, dates or details changed; the new total and balance follow."""

    event_type: Literal["BookingModified"] = "BookingModified"
    schema_version: Literal[1] = 1

    email: Sealed
    name: Sealed
    modified_by: Actor
    changes: tuple[LongText, ...] = Field(description="What changed, one sentence each.")
    lines: tuple[BookingLine, ...]
    currency: Currency
    total: Money
    amount_paid: Money
    balance_due: Money


COMMANDS = (PlaceBooking,)
EVENTS = (BookingPlaced, BookingCancelled, BookingModified, CommandOutcome)
