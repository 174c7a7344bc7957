"""The bookings service's HTTP API for customers (other services use the command topic)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, StringConstraints

from backbone import context
from backbone.auth import customer_session
from backbone.credentials import Session, SessionVerifier
from backbone.http import Problem, run_sync
from backbone.readmodel import ReadModel
from services.bookings import views
from services.bookings.application import Bookings, NotVerified
from services.bookings.domainmodel import cancellation_refusal


class Eligibility(BaseModel):
    allowed: bool
    reason_code: str | None = None
    reason: str | None = None


class BookingSummary(BaseModel):
    booking_id: UUID
    code: str
    status: str
    starts_at: datetime
    currency: str
    total: Decimal
    amount_paid: Decimal
    balance_due: Decimal
    lines: list[dict[str, Any]]
    cancel: Eligibility
    links: dict[str, str]


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None


class Cancelled(BaseModel):
    booking_id: UUID
    code: str
    status: str
    amount_paid: Decimal
    refund_due: Decimal
    refund_note: str


REFUND_NOTE = (
    "Refunds are not automatic: the business has been told what you paid and will "
    "contact you about the refund."
)


def routes(api: FastAPI, bookings: Bookings, read_model: ReadModel, verifier: SessionVerifier) -> None:
    as_customer = customer_session(verifier)

    def verified(session: Session) -> Any:
        try:
            return bookings.customer(session.account_id, session.tenant_id)
        except NotVerified:
            raise Problem(
                403, "Not verified", "Verify your email address to see your bookings.", code="not_verified"
            ) from None

    @api.get(
        "/v1/me/bookings",
        response_model=list[BookingSummary],
        tags=["customers"],
        summary="Every booking of the logged-in customer, newest first",
    )
    async def my_bookings(session: Session = Depends(as_customer)) -> list[BookingSummary]:
        def query() -> list[BookingSummary]:
            customer = verified(session)
            policy = bookings.policy(session.tenant_id)
            now = bookings.clock()
            with read_model.engine.connect() as conn:
                rows = views.customer_bookings(
                    conn, session.tenant_id, customer.account_id, customer.verified_email
                )
            return [
                _summary(row, cancellation_refusal(row["status"], row["starts_at"], policy, now))
                for row in rows
            ]

        return await run_sync(query)

    @api.post(
        "/v1/me/bookings/{booking_id}/cancellation",
        response_model=Cancelled,
        tags=["customers"],
        summary="Cancel one of my bookings (when the rules allow)",
    )
    async def cancel(
        booking_id: UUID, body: CancelRequest, request: Request, session: Session = Depends(as_customer)
    ) -> Cancelled:
        def attempt() -> Any:
            verified(session)
            with context.caused_by(
                f"customer:{session.account_id}", session.tenant_id, request.state.correlation_id
            ):
                for _ in range(3):  # a concurrent change (e.g. by staff): re-check the rules
                    try:
                        return bookings.cancel_by_customer(
                            session.account_id, session.tenant_id, booking_id, body.reason
                        )
                    except IntegrityError:
                        continue
            raise Problem(
                409,
                "Changed meanwhile",
                "The booking changed while you were cancelling it; please look at it again.",
                code="concurrent_change",
            )

        booking = await run_sync(attempt)
        return Cancelled(
            booking_id=booking.id,
            code=booking.code,
            status=booking.status,
            amount_paid=booking.amount_paid,
            refund_due=booking.cancellation["refund_due"],
            refund_note=REFUND_NOTE,
        )


def _summary(row: dict[str, Any], refusal: Any) -> BookingSummary:
    links = {} if refusal else {"cancel": f"/v1/me/bookings/{row['booking_id']}/cancellation"}
    return BookingSummary(
        booking_id=row["booking_id"],
        code=row["code"],
        status=row["status"],
        starts_at=row["starts_at"],
        currency=row["currency"],
        total=row["total"],
        amount_paid=row["amount_paid"],
        balance_due=max(Decimal(0), row["total"] - row["amount_paid"]),
        lines=row["lines"],
        cancel=Eligibility(
            allowed=refusal is None,
            reason_code=getattr(refusal, "code", None),
            reason=str(refusal) if refusal else None,
        ),
        links=links,
    )
