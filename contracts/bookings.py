"""The bookings service's contract: its events on `bookings.events`, the commands other services
publish on `bookings.commands`, and the outcome of each command on `bookings.command-outcomes`.

The guide for the teams that publish commands is docs/publishing-booking-commands.md; the
channels are described in docs/asyncapi/bookings.yaml (generated: `python -m
services.bookings.asyncapi --write`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, PlainSerializer, StringConstraints, model_validator

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


FormKey = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$"),
    Field(description="A question of the tenant's booking form, e.g. dietary_needs, pickup_hotel."),
]

FormAnswers = Annotated[
    dict[FormKey, LongText],
    Field(
        max_length=50,
        description="Answers to the tenant's booking form. They may be personal (a hotel, a diet): "
        "the bookings service stores them sealed, like the contact details.",
    ),
]

Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{5,25}$")]

PositiveMoney = Annotated[
    Decimal,
    Field(max_digits=14, decimal_places=2, gt=0, description="An amount above zero, as a decimal string."),
    PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json"),
]

Version = Annotated[
    int, Field(ge=1, description="A booking's version, as the last outcome or event gave it.")
]


class CustomerChange(Value):
    """New contact details of a booking; a field left out stays as it is."""

    email: Email | None = Field(
        default=None,
        description="Only staff (or a service acting on its own) may change a booking's email: it "
        "decides which customer account sees the booking.",
    )
    name: ShortText | None = None
    phone: Phone | None = None


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


class _BookingCommand(Command):
    booking_id: UUID
    on_behalf_of: Actor | None = Field(
        default=None,
        description="The person the publishing service acts for: a staff member (staff:<id>) or "
        "the logged-in customer (customer:<account id>). Recorded as who did it; a customer is held "
        "to the customer rules of the booking.",
    )

    @property
    def key(self) -> str:
        return str(self.booking_id)


class PlaceBookingV2(Command):
    """Place a new booking (v2: adds the answers to the booking form). The sender chooses the
    booking's id, so that follow-up commands can name it before the outcome arrives; placing
    the same booking_id twice is rejected. `quantity` counts what a line books: people for a
    per-person product or item, units otherwise."""

    command_type: Literal["PlaceBooking"] = "PlaceBooking"
    schema_version: Literal[2] = 2

    booking_id: UUID
    booking_code: BookingCode
    customer: Customer
    account_id: UUID | None = Field(
        default=None,
        description="The verified customer account the booking is made under, if any. Required "
        "when the tenant requires a login to book.",
    )
    lines: Annotated[tuple[BookingLine, ...], Field(min_length=1, max_length=100)]
    currency: Currency
    status: StatusCode = Field(
        default="PEND",
        description="The starting status: PRE, PEND, HOLD, WAIT, an active custom status, or PART / "
        "PAID when amount_paid says so.",
    )
    amount_paid: Money = Field(default=0, description="Already paid when the booking is placed.")
    form: FormAnswers = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.booking_id)


class RecordPayment(_BookingCommand):
    """A payment was taken for a booking (by the payment service). The status follows from the
    amounts: PART (deposit) while something is still due, PAID once the total is covered."""

    command_type: Literal["RecordPayment"] = "RecordPayment"
    schema_version: Literal[1] = 1

    payment_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="The payment's id in the payment system: the same payment is never counted twice."
    )
    amount: PositiveMoney
    currency: Currency = Field(description="Must be the booking's currency.")
    method: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = Field(
        default=None, description="How it was paid, e.g. card, cash, transfer."
    )


class ChangeBookingStatus(_BookingCommand):
    """Move a booking to another status, along the allowed transitions (see the publisher guide).
    PART and PAID follow from the amounts; cancelling and voiding have their own commands."""

    command_type: Literal["ChangeBookingStatus"] = "ChangeBookingStatus"
    schema_version: Literal[1] = 1

    status: StatusCode
    reason: LongText | None = None


class ModifyBooking(_BookingCommand):
    """Change a booking's contact details, booking-form answers, or lines (dates, quantities,
    prices, lines added or removed). The total is recomputed; the balance due follows."""

    command_type: Literal["ModifyBooking"] = "ModifyBooking"
    schema_version: Literal[1] = 1

    expected_version: Version | None = Field(
        default=None,
        description="Refuse (booking_changed) if the booking is no longer at this version.",
    )
    customer: CustomerChange | None = None
    lines: Annotated[tuple[BookingLine, ...], Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="The complete new list of lines, if they change."
    )
    form: dict[FormKey, LongText | None] | None = Field(
        default=None,
        max_length=50,
        description="Answers to set; a null answer removes the question's answer.",
    )
    reason: LongText | None = None
    override_customer_rules: bool = Field(
        default=False,
        description="Staff only: modify even where the customer rules (cut-off, blocking status, "
        "setting off) would not let the customer.",
    )


class CancelBooking(_BookingCommand):
    """Cancel a booking (staff, or a service on the customer's behalf). No money moves: the
    `BookingCancelled` event tells staff what to refund by hand."""

    command_type: Literal["CancelBooking"] = "CancelBooking"
    schema_version: Literal[1] = 1

    reason: LongText | None = None
    refund_due: Money | None = Field(
        default=None,
        description="What the business will refund; at most what was paid. Default: everything paid.",
    )
    override_customer_rules: bool = Field(
        default=False,
        description="Staff only: cancel even where the customer rules would not let the customer "
        "(recorded on the cancellation). Without it, the customer rules are checked.",
    )


class VoidBooking(_BookingCommand):
    """Void a booking that was made in error. Only a booking with nothing paid can be voided;
    cancel one that has payments."""

    command_type: Literal["VoidBooking"] = "VoidBooking"
    schema_version: Literal[1] = 1

    reason: LongText | None = None


CustomStatusCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,15}$"),
    Field(description="A tenant's own status id, e.g. POSTPONED; not one of the system statuses."),
]


class _StatusCommand(Command):
    status: CustomStatusCode
    on_behalf_of: Actor | None = None

    @property
    def key(self) -> str:
        return self.tenant_id


class DefineCustomStatus(_StatusCommand):
    """Create a tenant's custom status, or change its label or inventory lock (or bring back a
    retired one). A custom status that does not lock inventory releases it, e.g. POSTPONED."""

    command_type: Literal["DefineCustomStatus"] = "DefineCustomStatus"
    schema_version: Literal[1] = 1

    label: ShortText
    locks_inventory: bool


class RetireCustomStatus(_StatusCommand):
    """No booking may enter this custom status any more; bookings already in it keep it."""

    command_type: Literal["RetireCustomStatus"] = "RetireCustomStatus"
    schema_version: Literal[1] = 1


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
    schema_version: Literal[3] = 3  # v3: the reason sealed (`sealed_reason`)

    email: Sealed
    name: Sealed
    cancelled_by: Actor
    status_before: StatusCode
    amount_paid: Money
    currency: Currency
    refund_due: Money
    reason: LongText | None = Field(
        default=None,
        description="Only on cancellations recorded before v3 sealed reasons: see `sealed_reason`.",
    )
    sealed_reason: Sealed | None = Field(
        default=None,
        description="Why, in the canceller's words (free text, often about the customer): sealed "
        "with the booking's subject key, like the customer's details, and erased with them.",
    )
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


class BookingPaymentRecorded(_BookingEvent):
    """A payment was recorded. When it moved the status (PART, PAID), a `BookingStatusChanged`
    with cause "payment" follows."""

    event_type: Literal["BookingPaymentRecorded"] = "BookingPaymentRecorded"
    schema_version: Literal[1] = 1

    payment_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    amount: PositiveMoney
    method: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    currency: Currency
    total: Money
    amount_paid: Money
    balance_due: Money
    recorded_by: Actor


class BookingStatusChanged(_BookingEvent):
    """A booking's status changed, other than by a cancellation (`BookingCancelled`) or a void
    (`BookingVoided`). `locks_inventory` says whether the new status holds the booked items."""

    event_type: Literal["BookingStatusChanged"] = "BookingStatusChanged"
    schema_version: Literal[1] = 1

    status_before: StatusCode
    status: StatusCode
    locks_inventory: bool
    cause: Literal["command", "payment", "modification"] = Field(
        description="An explicit change, or one that followed from the amounts."
    )
    changed_by: Actor
    reason: LongText | None = None


class BookingVoided(_BookingEvent):
    """A booking made in error was voided (nothing had been paid). Its inventory is released."""

    event_type: Literal["BookingVoided"] = "BookingVoided"
    schema_version: Literal[1] = 1

    status_before: StatusCode
    voided_by: Actor
    reason: LongText | None = None


class _TenantStatusEvent(IntegrationEvent):
    status: CustomStatusCode

    @property
    def key(self) -> str:
        return self.tenant_id


class CustomStatusDefined(_TenantStatusEvent):
    """A tenant's custom status was created, changed, or brought back."""

    event_type: Literal["CustomStatusDefined"] = "CustomStatusDefined"
    schema_version: Literal[1] = 1

    label: ShortText
    locks_inventory: bool
    defined_by: Actor


class CustomStatusRetired(_TenantStatusEvent):
    event_type: Literal["CustomStatusRetired"] = "CustomStatusRetired"
    schema_version: Literal[1] = 1

    retired_by: Actor


COMMANDS = (
    PlaceBooking,
    PlaceBookingV2,
    RecordPayment,
    ChangeBookingStatus,
    ModifyBooking,
    CancelBooking,
    VoidBooking,
    DefineCustomStatus,
    RetireCustomStatus,
)
EVENTS = (
    BookingPlaced,
    BookingPaymentRecorded,
    BookingStatusChanged,
    BookingModified,
    BookingCancelled,
    BookingVoided,
    CustomStatusDefined,
    CustomStatusRetired,
    CommandOutcome,
)
