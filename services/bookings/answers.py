"""What the bookings service's HTTP API answers, and how a booking (or a row of the read
model) becomes one: with what the customer may do with it, and why not."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from contracts.wording import refund_note
from services.bookings.application import Bookings, Preview, Quote, Quoted
from services.bookings.domainmodel import Booking
from services.bookings.statuses import label
from services.bookings.terms import Rule, Terms, applicable_rule, zone

REFUND_NOTE = refund_note("en")  # the one sentence (contracts.wording): the customer contacts the business


# ----------------------------------------------------------------------------- answers


class Eligibility(BaseModel):
    allowed: bool
    reason_code: str | None = None
    reason: str | None = None
    until: datetime | None = Field(default=None, description="Allowed online before this instant.")


class Line(BaseModel):
    index: int
    kind: str
    ref: str
    name: str
    starts_at: datetime
    ends_at: datetime
    quantity: int
    unit_price: Decimal
    amount: Decimal


class BookingSummary(BaseModel):
    booking_id: UUID
    code: str
    version: int = Field(description="Send it back when cancelling or modifying.")
    status: str
    status_label: str
    starts_at: datetime
    ends_at: datetime
    currency: str
    total: Decimal
    amount_paid: Decimal
    balance_due: Decimal
    lines: list[Line]
    cancel: Eligibility
    modify: Eligibility
    links: dict[str, str]


class HistoryEntry(BaseModel):
    at: datetime
    version: int
    what: str
    by: dict[str, Any]
    summary: str
    policy: dict[str, Any] | None = None


class BookingDetail(BookingSummary):
    contact: dict[str, str | None]
    form: dict[str, str | None]
    terms: dict[str, Any] = Field(description="The self-service terms in force when it was placed.")
    history: list[HistoryEntry]


class Policy(BaseModel):
    rule: dict[str, Any]
    until: datetime
    text: str


class CancellationQuote(BaseModel):
    booking_id: UUID
    code: str
    booking_version: int
    status: str
    currency: str
    amount_paid: Decimal
    refund_due: Decimal
    refund_note: str
    policy: Policy
    confirm: dict[str, Any] = Field(description="How to confirm: method, href and body.")


class Cancelled(BaseModel):
    booking_id: UUID
    code: str
    booking_version: int
    status: str
    currency: str
    amount_paid: Decimal
    refund_due: Decimal
    refund_note: str


class ModificationResult(BaseModel):
    booking_id: UUID
    booking_version: int = Field(description="In a preview: the version to confirm against.")
    status: str
    changes: list[str]
    lines: list[Line]
    currency: str
    total: Decimal
    amount_paid: Decimal
    balance_due: Decimal
    policy: Policy


# ----------------------------------------------------------------------------- shaping


def line_answers(raw: list[dict[str, Any]]) -> list[Line]:
    return [
        Line(
            index=i,
            kind=line["kind"],
            ref=line["ref"],
            name=line["name"],
            starts_at=line["starts_at"],
            ends_at=line["ends_at"],
            quantity=int(line["quantity"]),
            unit_price=Decimal(line["unit_price"]),
            amount=Decimal(line["unit_price"]) * int(line["quantity"]),
        )
        for i, line in enumerate(raw)
    ]


def eligibility(rule: Rule, status: str, starts_at: datetime, now: datetime) -> Eligibility:
    refusal = rule.refusal(status, starts_at, now)
    if refusal is None:
        return Eligibility(allowed=True, until=rule.deadline(starts_at))
    return Eligibility(allowed=False, reason_code=refusal.code, reason=str(refusal))


def links_for(booking_id: Any, cancel: Eligibility, modify: Eligibility) -> dict[str, str]:
    base = f"/v1/me/bookings/{booking_id}"
    links = {"self": base}
    if cancel.allowed:  # the customer-facing link to cancel exists only when it is allowed
        links["cancel"] = f"{base}/cancellation-quote"
    if modify.allowed:
        links["modify"] = f"{base}/modification-preview"
    return links


def row_summary(row: dict[str, Any], current: Terms, now: datetime, custom: Any) -> BookingSummary:
    return row_summary_until(row, current, now, custom)[0]


def row_summary_until(
    row: dict[str, Any], current: Terms, now: datetime, custom: Any
) -> tuple[BookingSummary, datetime | None]:
    """The summary of a read-model row at `now`, and until when it stays the same answer (the
    next instant at which a rule's verdict changes with time alone: the booking's start, or a
    cut-off; None if none is ahead). The row, the tenant's terms and the custom statuses are
    the rest of what it depends on."""
    frozen = Terms.from_dict(row["terms"])
    starts_at = row["starts_at"]
    rules = [applicable_rule(action, frozen, current) for action in ("cancel", "modify")]
    cancel, modify = (eligibility(rule, row["status"], starts_at, now) for rule in rules)
    ahead = [moment for moment in (starts_at, *(rule.deadline(starts_at) for rule in rules)) if moment > now]
    return _summary(row, custom, cancel, modify), min(ahead, default=None)


def _summary(row: dict[str, Any], custom: Any, cancel: Eligibility, modify: Eligibility) -> BookingSummary:
    raw_lines = [
        {**line, "starts_at": _instant(line["starts_at"]), "ends_at": _instant(line["ends_at"])}
        for line in row["lines"]
    ]
    return BookingSummary(
        booking_id=row["booking_id"],
        code=row["code"],
        version=row["version"],
        status=row["status"],
        status_label=label(row["status"], custom),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        currency=row["currency"],
        total=row["total"],
        amount_paid=row["amount_paid"],
        balance_due=max(Decimal(0), row["total"] - row["amount_paid"]),
        lines=line_answers(raw_lines),
        cancel=cancel,
        modify=modify,
        links=links_for(row["booking_id"], cancel, modify),
    )


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def booking_summary(booking: Booking, bookings: Bookings, custom: Any) -> BookingSummary:
    now = bookings.clock()
    cancel = eligibility(bookings.rule("cancel", booking), booking.status, booking.starts_at, now)
    modify = eligibility(bookings.rule("modify", booking), booking.status, booking.starts_at, now)
    return BookingSummary(
        booking_id=booking.id,
        code=booking.code,
        version=booking.version,
        status=booking.status,
        status_label=label(booking.status, custom),
        starts_at=booking.starts_at,
        ends_at=booking.ends_at,
        currency=booking.currency,
        total=booking.total,
        amount_paid=booking.amount_paid,
        balance_due=booking.balance_due,
        lines=line_answers(booking.lines),
        cancel=cancel,
        modify=modify,
        links=links_for(booking.id, cancel, modify),
    )


def policy_answer(rule: Rule, booking: Quoted) -> Policy:
    until = rule.deadline(booking.starts_at)
    timezone = booking.frozen_terms.timezone
    local = until.astimezone(zone(timezone)).strftime("%Y-%m-%d %H:%M")
    verb = "cancel" if rule.action == "cancel" else "change"
    source = (
        "the terms this booking was placed under"
        if rule.frozen
        else "the business's current rules (none were set when it was placed)"
    )
    return Policy(
        rule=rule.describe(),
        until=until,
        text=f"You can {verb} this booking online until {local} ({timezone}), under {source}.",
    )


def modification_answer(result: Preview, *, preview: bool) -> ModificationResult:
    booking = result.booking
    return ModificationResult(
        booking_id=booking.id,
        booking_version=booking.version - len(booking.pending_events) if preview else booking.version,
        status=booking.status,
        changes=result.changes,
        lines=line_answers(booking.lines),
        currency=booking.currency,
        total=booking.total,
        amount_paid=booking.amount_paid,
        balance_due=booking.balance_due,
        policy=policy_answer(result.rule, booking),
    )


def cancellation_answer(booking: Booking) -> Cancelled:
    """A cancelled booking, as the customer and staff who cancelled it are answered."""
    refund_due = (booking.cancellation or {}).get("refund_due", booking.amount_paid)
    return Cancelled(**_paid(booking), refund_due=refund_due, refund_note=REFUND_NOTE)


def quote_answer(quote: Quote) -> CancellationQuote:
    """What cancelling would mean (step 1 of 2), with how to confirm it."""
    booking = quote.booking
    return CancellationQuote(
        **_paid(booking),
        refund_due=booking.amount_paid,
        refund_note=REFUND_NOTE,
        policy=policy_answer(quote.rule, booking),
        confirm={
            "method": "POST",
            "href": f"/v1/me/bookings/{booking.id}/cancellation",
            "body": {"booking_version": booking.version},
        },
    )


def _paid(booking: Quoted) -> dict[str, Any]:
    """The booking, the version seen, and what was paid: the head of both answers."""
    return {
        "booking_id": booking.id,
        "code": booking.code,
        "booking_version": booking.version,
        "status": booking.status,
        "currency": booking.currency,
        "amount_paid": booking.amount_paid,
    }
