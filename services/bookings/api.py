"""The bookings service's HTTP API for customers (other services use the command topic).

Every route takes the customer's session token from accounts. A booking that is not theirs
is "not found" (never "forbidden"). Cancelling is two steps: GET a quote (what was paid, that
the refund is not automatic, the rule that applies, until when), then POST the cancellation
with the booking version the quote showed. Modifying is the same: POST a preview, then the
modification with the version the preview showed. Repeating a confirmation gets the same answer.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import Counter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from backbone import context, metrics
from backbone.auth import customer_session
from backbone.credentials import Session, SessionVerifier
from backbone.http import Problem, run_sync
from backbone.logging import get_logger
from backbone.readmodel import ReadModel
from contracts.bookings import FormKey, LongText, Phone, ShortText
from services.bookings import answers
from services.bookings import lines as booking_lines
from services.bookings.answers import (
    REFUND_NOTE,
    BookingDetail,
    BookingSummary,
    CancellationQuote,
    Cancelled,
    ModificationResult,
)
from services.bookings.application import (
    Bookings,
    ChangedMeanwhile,
    CustomerChanges,
    CustomerRefused,
    Preview,
)
from services.bookings.domainmodel import Booking
from services.bookings.errors import Refused
from services.bookings.reads import CustomerReads

log = get_logger(__name__)

self_service = Counter(
    "bookings_self_service_total",
    "Customer self-service requests, by action and outcome (done, or the refusal's code).",
    ["action", "outcome"],
    registry=metrics.REGISTRY,
)

# ----------------------------------------------------------------------------- requests


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CancelRequest(_Body):
    booking_version: Annotated[int, Field(ge=1, description="The version the quote showed.")]
    reason: LongText | None = None


class ContactChange(_Body):
    name: ShortText | None = None
    phone: Phone | None = None


class LineChangeIn(_Body):
    line: Annotated[int, Field(ge=0, description="The line's index in the booking.")]
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = Field(default=None, description="Default: the same duration.")
    quantity: Annotated[int, Field(ge=1, le=10_000)] | None = None


class ExtraLineIn(_Body):
    like_line: Annotated[int, Field(ge=0, description="One more of this line, at its price.")]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1


class ChangesIn(_Body):
    contact: ContactChange | None = None
    form: Annotated[dict[FormKey, LongText | None], Field(max_length=50)] = Field(default_factory=dict)
    lines: Annotated[list[LineChangeIn], Field(max_length=100)] = Field(default_factory=list)
    add_lines: Annotated[list[ExtraLineIn], Field(max_length=100)] = Field(default_factory=list)
    remove_lines: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=100)] = Field(
        default_factory=list
    )

    def as_changes(self) -> CustomerChanges:
        return CustomerChanges(
            contact=self.contact.model_dump(exclude_none=True) if self.contact else {},
            form=dict(self.form),
            line_changes=tuple(
                booking_lines.LineChange(c.line, c.starts_at, c.ends_at, c.quantity) for c in self.lines
            ),
            extra_lines=tuple(
                booking_lines.ExtraLine(a.like_line, a.starts_at, a.ends_at, a.quantity)
                for a in self.add_lines
            ),
            remove_lines=tuple(self.remove_lines),
        )


class ModificationRequest(ChangesIn):
    booking_version: Annotated[int, Field(ge=1, description="The version the preview showed.")]


# ----------------------------------------------------------------------------- routes


def routes(
    api: FastAPI,
    bookings: Bookings,
    read_model: ReadModel,
    verifier: SessionVerifier,
    reads: CustomerReads | None = None,
) -> None:
    """The customer routes. `reads` answers the reads (give the one whose cache the service's
    projection keeps current; without it, every read queries the read model's tables)."""
    as_customer = customer_session(verifier)
    reads = reads or CustomerReads(read_model, bookings.clock, vault=bookings.vault)
    tags = ["customers"]

    def as_problem(action: str, work: Any) -> Any:
        """Run a use case; the customer's refusals become problems, and are counted."""
        try:
            result = work()
        except CustomerRefused as refused:
            self_service.labels(action, refused.code).inc()
            raise Problem(refused.status, "Not allowed", str(refused), code=refused.code) from None
        except ChangedMeanwhile as changed:
            self_service.labels(action, "concurrent_change").inc()
            raise Problem(409, "Changed meanwhile", str(changed), code="concurrent_change") from None
        except Refused as refused:
            self_service.labels(action, refused.code).inc()
            raise
        self_service.labels(action, "done").inc()
        return result

    def acting(session: Session, request: Request) -> Any:
        return context.caused_by(
            f"customer:{session.account_id}", session.tenant_id, request.state.correlation_id
        )

    @api.get("/v1/me/bookings", response_model=list[BookingSummary], tags=tags, summary="My bookings")
    async def my_bookings(session: Session = Depends(as_customer)) -> Response:
        """Every booking of the logged-in customer, past and upcoming, latest start first: made
        under their account or with their verified email, with what they may do with each."""

        def query() -> bytes:
            return reads.my_bookings_json(session)

        # Already serialised (`reads.Summaries`): answered as is, as `list[BookingSummary]`.
        return Response(await run_sync(as_problem, "list", query), media_type="application/json")

    @api.get(
        "/v1/me/bookings/{booking_id}", response_model=BookingDetail, tags=tags, summary="One of my bookings"
    )
    async def my_booking(booking_id: UUID, session: Session = Depends(as_customer)) -> BookingDetail:
        """A booking with its contact details, form answers, the terms it was placed under, and
        its history: who changed or cancelled it, when, under which policy."""

        def query() -> BookingDetail:
            return reads.my_booking(session, booking_id)

        return await run_sync(as_problem, "view", query)

    @api.get(
        "/v1/me/bookings/{booking_id}/cancellation-quote",
        response_model=CancellationQuote,
        tags=tags,
        summary="Ask to cancel: what it means",
    )
    async def cancellation_quote(
        booking_id: UUID, session: Session = Depends(as_customer)
    ) -> CancellationQuote:
        """Step 1 of 2. What was paid, what the business will refund (by hand: refunds are not
        automatic), the rule that applies and until when. 409 with the reason when the booking
        cannot be cancelled online."""

        def query() -> CancellationQuote:
            quote = bookings.cancellation_quote(session, booking_id)
            booking = quote.booking
            return CancellationQuote(
                booking_id=booking.id,
                code=booking.code,
                booking_version=booking.version,
                status=booking.status,
                currency=booking.currency,
                amount_paid=booking.amount_paid,
                refund_due=booking.amount_paid,
                refund_note=REFUND_NOTE,
                policy=answers.policy_answer(quote.rule, booking),
                confirm={
                    "method": "POST",
                    "href": f"/v1/me/bookings/{booking.id}/cancellation",
                    "body": {"booking_version": booking.version},
                },
            )

        return await run_sync(as_problem, "cancel_quote", query)

    @api.post(
        "/v1/me/bookings/{booking_id}/cancellation",
        response_model=Cancelled,
        tags=tags,
        summary="Confirm the cancellation",
    )
    async def cancel(
        booking_id: UUID, body: CancelRequest, request: Request, session: Session = Depends(as_customer)
    ) -> Cancelled:
        """Step 2 of 2. The rules are checked again now (a cut-off may have passed since the
        quote); a booking that changed since the quote is refused with `booking_changed`.
        Sending the same confirmation again answers the same."""

        def attempt() -> Booking:
            with acting(session, request):
                return bookings.cancel_by_customer(session, booking_id, body.booking_version, body.reason)

        booking = await run_sync(as_problem, "cancel", attempt)
        log.info("booking cancelled by its customer", booking_id=str(booking.id), code=booking.code)
        await run_sync(reads.until_shown, booking.id, booking.version)  # their next page shows it
        return Cancelled(
            booking_id=booking.id,
            code=booking.code,
            booking_version=booking.version,
            status=booking.status,
            currency=booking.currency,
            amount_paid=booking.amount_paid,
            refund_due=(booking.cancellation or {}).get("refund_due", booking.amount_paid),
            refund_note=REFUND_NOTE,
        )

    @api.post(
        "/v1/me/bookings/{booking_id}/modification-preview",
        response_model=ModificationResult,
        tags=tags,
        summary="See what a change would do",
    )
    async def modification_preview(
        booking_id: UUID, body: ChangesIn, session: Session = Depends(as_customer)
    ) -> ModificationResult:
        """Step 1 of 2: the booking as it would be (new lines, total, balance due), nothing
        saved. Lines can be moved, resized, removed or repeated at their price; contact details
        (name, phone) and booking-form answers can change."""

        def query() -> ModificationResult:
            return answers.modification_answer(
                bookings.modification_preview(session, booking_id, body.as_changes()), preview=True
            )

        return await run_sync(as_problem, "modify_preview", query)

    @api.post(
        "/v1/me/bookings/{booking_id}/modification",
        response_model=ModificationResult,
        tags=tags,
        summary="Confirm a change",
    )
    async def modify(
        booking_id: UUID, body: ModificationRequest, request: Request, session: Session = Depends(as_customer)
    ) -> ModificationResult:
        """Step 2 of 2, with the booking version the preview showed; the rules are checked
        again. Sending the same confirmation again answers the same."""
        changes = ChangesIn.model_validate(body.model_dump(exclude={"booking_version"})).as_changes()

        def attempt() -> Preview:
            with acting(session, request):
                return bookings.modify_by_customer(session, booking_id, body.booking_version, changes)

        result = await run_sync(as_problem, "modify", attempt)
        log.info("booking modified by its customer", booking_id=str(result.booking.id))
        await run_sync(reads.until_shown, result.booking.id, result.booking.version)
        return answers.modification_answer(result, preview=False)
