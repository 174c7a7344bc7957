"""The bookings service's HTTP API for a tenant's staff: list and search bookings, one
booking with its history, payments and cancellation, and cancelling (with the override of the
customer rules, and the refund due).

Staff use the API keys accounts issued (announced on accounts.events; see `staffkeys.py`),
for their own tenant only; another tenant's booking is "not found". The routes take what they
need from the app's state (set by the composition root) through `Annotated` dependencies.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from backbone import context
from backbone.http import run_sync
from backbone.personal import Personal
from contracts.bookings import LongText
from contracts.envelope import TenantId
from services.bookings import answers
from services.bookings.answers import BookingSummary, Cancelled, HistoryEntry
from services.bookings.application import Bookings
from services.bookings.history import customer_history, rows_of
from services.bookings.reads import StaffReads

TenantPath = Annotated[TenantId, Path(description="The business's tenant id")]
_bearer = HTTPBearer(auto_error=False)
_NOBODY = UUID(int=0)  # staff are nobody's "you" in a booking's history


# Coroutines that block on nothing: a plain function would go through the thread pool.


async def _bookings(request: Request) -> Bookings:
    return request.app.state.bookings


async def _staff_reads(request: Request) -> StaffReads:
    return request.app.state.staff_reads


async def _staff(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    # backbone.auth.staff_member over the keys accounts announced, made by the composition root.
    return await request.app.state.staff_member(request, credentials)


App = Annotated[Bookings, Depends(_bookings)]
StaffViews = Annotated[StaffReads, Depends(_staff_reads)]
Staff = Annotated[str, Depends(_staff)]  # the actor, staff:<id>

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details (backbone.http)",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
}


def refused(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM}}}


router = APIRouter(
    prefix="/v1/staff/tenants/{tenant_id}/bookings",
    tags=["staff"],
    responses={
        401: refused("A valid staff API key is required"),
        403: refused("This staff API key belongs to another business"),
        422: refused("Invalid request"),
    },
)


class StaffBookingRow(BookingSummary):
    customer_email: str | None = Field(description="Null once the customer's data is erased.")
    customer_name: str | None
    account_id: UUID | None
    placed_at: datetime


class StaffBookingList(BaseModel):
    bookings: list[StaffBookingRow]
    total: int = Field(description="How many bookings match the filters in all.")


class Payment(BaseModel):
    payment_id: str
    amount: Decimal


class Cancellation(BaseModel):
    status_before: str
    refund_due: Decimal
    reason: str | None
    cancelled_at: datetime
    rules_overridden: bool


class StaffBookingDetail(BookingSummary):
    contact: dict[str, str | None]
    form: dict[str, str | None]
    terms: dict[str, Any]
    payments: list[Payment]
    cancellation: Cancellation | None
    refund_note: str
    history: list[HistoryEntry]


class StaffCancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    booking_version: Annotated[int, Field(ge=1, description="The version the staff member looked at.")]
    reason: LongText | None = None
    override_customer_rules: bool = Field(
        default=False, description="Cancel although the customer rules would not allow it now."
    )
    refund_due: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)] | None = Field(
        default=None, description="Default: what was paid. Never more."
    )


@router.get("", response_model=StaffBookingList, summary="List and search the tenant's bookings")
async def list_bookings(
    tenant_id: TenantPath,
    staff_reads: StaffViews,
    _: Staff,
    status: Annotated[str | None, Query(max_length=32, description="A status id, e.g. PEND or STOP")] = None,
    starts_from: Annotated[datetime | None, Query(description="Starting at or after")] = None,
    starts_before: Annotated[datetime | None, Query(description="Starting before")] = None,
    customer: Annotated[
        str | None,
        Query(
            max_length=320,
            description="Part of the booking code, the account id, or words that begin words of the "
            "customer's name or email (all of them)",
        ),
    ] = None,
    account_id: Annotated[UUID | None, Query(description="One customer account's bookings")] = None,
    account_email: Annotated[
        str | None, Query(max_length=320, description="With account_id: also those made with this address")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    def query() -> bytes:
        return staff_reads.bookings_json(
            tenant_id,
            status=status,
            starts_from=starts_from,
            starts_before=starts_before,
            customer=customer,
            account_id=account_id,
            account_email=account_email,
            limit=limit,
            offset=offset,
        )

    # Already serialised (`reads.StaffReads`): answered as is, as `StaffBookingList`.
    return Response(await run_sync(query), media_type="application/json")


@router.get(
    "/{booking_id}",
    response_model=StaffBookingDetail,
    summary="One booking: history, payments, cancellation",
    responses={404: refused("No such booking for this business")},
)
async def get_booking(tenant_id: TenantPath, booking_id: UUID, bookings: App, _: Staff) -> StaffBookingDetail:
    return await run_sync(_detail, bookings, tenant_id, booking_id)


@router.post(
    "/{booking_id}/cancellation",
    response_model=Cancelled,
    summary="Cancel, within the customer rules or overriding them; say the refund due",
    responses={
        400: refused("Malformed JSON"),
        404: refused("No such booking for this business"),
        409: refused(
            "Not allowed by the customer rules (without override), a refund above what was paid, "
            "or the booking changed meanwhile"
        ),
    },
)
async def cancel_booking(
    tenant_id: TenantPath,
    booking_id: UUID,
    body: StaffCancelRequest,
    request: Request,
    bookings: App,
    actor: Staff,
) -> Cancelled:
    def attempt() -> Any:
        with context.caused_by(actor, tenant_id, request.state.correlation_id):
            return bookings.cancel_by_staff(
                tenant_id,
                booking_id,
                body.booking_version,
                body.reason,
                body.override_customer_rules,
                body.refund_due,
            )

    return answers.cancellation_answer(await run_sync(attempt))


def _plain(value: Any) -> Any:
    """A personal value (the customer's reason, sealed since BookingCancelled v3) in the clear."""
    return value.value if isinstance(value, Personal) else value


def _detail(bookings: Bookings, tenant_id: str, booking_id: UUID) -> StaffBookingDetail:
    booking = bookings.staff_booking(tenant_id, booking_id)
    custom = bookings.custom_statuses(tenant_id)
    summary = answers.booking_summary(booking, bookings, custom)
    history = customer_history(rows_of(bookings.booking_events(booking.id)), _NOBODY, custom)
    cancellation = booking.cancellation
    return StaffBookingDetail(
        **summary.model_dump(),
        contact={k: (v.value if v is not None else None) for k, v in booking.customer.items()},
        form={k: v.value for k, v in booking.form.items()},
        terms=booking.frozen_terms.as_dict(),
        payments=[Payment(payment_id=k, amount=v) for k, v in booking.payments.items()],
        cancellation=Cancellation(**{k: _plain(cancellation[k]) for k in Cancellation.model_fields})
        if cancellation
        else None,
        refund_note=answers.REFUND_NOTE,
        history=[HistoryEntry(**entry) for entry in history],
    )
