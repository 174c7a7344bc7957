"""The bookings service's HTTP API for customers (other services use the command topic).

Every route takes the customer's session token from accounts. A booking that is not theirs
is "not found" (never "forbidden"). Cancelling is two steps: GET a quote (what was paid, that
the refund is not automatic, the rule that applies, until when), then POST the cancellation
with the booking version the quote showed. Modifying is the same: POST a preview, then the
modification with the version the preview showed. Repeating a confirmation gets the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import Counter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from starlette.types import Scope

from backbone import context, metrics
from backbone.auth import CustomerBearer
from backbone.credentials import InvalidSession, Session, SessionVerifier
from backbone.domain import DomainError, NotFound
from backbone.http import run_sync
from backbone.logging import get_logger
from contracts.bookings import FormKey, LongText, Phone, ShortText
from services.bookings import answers
from services.bookings import lines as booking_lines
from services.bookings.answers import (
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
R = TypeVar("R")

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


# ----------------------------------------------------------------------------- given


async def _bookings(request: Request) -> Bookings:
    return request.app.state.bookings


def _reads_of(request: Request) -> CustomerReads:
    return request.app.state.reads


async def _reads(request: Request) -> CustomerReads:
    return _reads_of(request)


# Coroutines that block on nothing: a plain function would go through the thread pool.
# The two reads (the hot path) take `CustomerReads` from the request, not as a dependency:
# FastAPI spends some 30 µs of CPU on each dependency it solves.
Customer = Annotated[Session, Depends(CustomerBearer())]  # one dependency, not two (token, check)
App = Annotated[Bookings, Depends(_bookings)]
Reads = Annotated[CustomerReads, Depends(_reads)]

# ----------------------------------------------------------------------------- routes

router = APIRouter(tags=["customers"])


def counted(action: str, work: Callable[[], R]) -> R:
    """Run a use case, counting how it went: done, or the refusal's code (the refusal itself
    goes on to the edge, `api_errors.REFUSALS`, which answers it)."""
    try:
        result = work()
    except (CustomerRefused, Refused) as refused:
        self_service.labels(action, refused.code).inc()
        raise
    except ChangedMeanwhile:
        self_service.labels(action, "concurrent_change").inc()
        raise
    self_service.labels(action, "done").inc()
    return result


def _acting(session: Session, request: Request) -> Any:
    return context.caused_by(
        f"customer:{session.account_id}", session.tenant_id, request.state.correlation_id
    )


@router.get("/v1/me/bookings", response_model=list[BookingSummary], summary="My bookings")
async def my_bookings(session: Customer, request: Request) -> Response:
    """Every booking of the logged-in customer, past and upcoming, latest start first: made
    under their account or with their verified email, with what they may do with each."""
    reads = _reads_of(request)
    listing = await reads.answer(counted, "list", lambda: reads.my_bookings_json(session))
    # Already serialised (`reads.Summaries`): answered as is, as `list[BookingSummary]`.
    return Response(listing, media_type="application/json")


@router.get("/v1/me/bookings/{booking_id}", response_model=BookingDetail, summary="One of my bookings")
async def my_booking(booking_id: UUID, session: Customer, request: Request) -> BookingDetail:
    """A booking with its contact details, form answers, the terms it was placed under, and
    its history: who changed or cancelled it, when, under which policy."""
    reads = _reads_of(request)
    return await reads.answer(counted, "view", lambda: reads.my_booking(session, booking_id))


class FastReads:
    """The two reads above, and the cancellation quote below, answered at the edge
    (`backbone.http.Shortcuts`): the same work without FastAPI's routing, dependency solving
    and response validation, which were about half of their CPU on the profile of issue 17
    (and, for the quote, a sixth of the bookings service's CPU per cancellation on the profile
    of `benchmarks.latency`, issue 10).

    It answers successes only. Anything else (no session or a bad one, a customer refused, a
    booking not theirs, a booking id in another spelling) goes on to the routes above, which
    answer it and count it. `tests/unit/bookings/test_reads.py` compares both ways byte for
    byte, headers included."""

    LIST = "/v1/me/bookings"
    ONE = "/v1/me/bookings/"  # + the booking's id as FastAPI's own `UUID` path parameter prints it
    QUOTE = "/cancellation-quote"  # after ONE and the id

    def __init__(self, reads: CustomerReads, verifier: SessionVerifier):
        self.reads, self.verifier = reads, verifier
        by_endpoint = {getattr(r, "endpoint", None): r for r in router.routes}
        self.list_route, self.one_route = by_endpoint[my_bookings], by_endpoint[my_booking]
        self.quote_route = by_endpoint[cancellation_quote]
        self.listed, self.viewed = self_service.labels("list", "done"), self_service.labels("view", "done")
        self.quoted = self_service.labels("cancel_quote", "done")

    async def __call__(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        booking_id: UUID | None = None
        quote = False
        if path != self.LIST:
            if not path.startswith(self.ONE):
                return None
            tail = len(path) - len(self.ONE) - 36
            if tail == len(self.QUOTE) and path.endswith(self.QUOTE):
                quote = True
            elif tail != 0:
                return None
            try:
                booking_id = UUID(path[len(self.ONE) : len(self.ONE) + 36])
            except ValueError:
                return None
        session = self._session(scope)
        if session is None:
            return None
        try:
            if booking_id is None:
                body = await self.reads.answer(self.reads.my_bookings_json, session)
                counter, scope["route"] = self.listed, self.list_route  # (the latency's label)
            elif quote:
                answer = await self.reads.answer(self.reads.cancellation_quote, session, booking_id)
                body = _QUOTE.dump_json(answer, by_alias=True)
                counter, scope["route"] = self.quoted, self.quote_route
            else:
                detail = await self.reads.answer(self.reads.my_booking, session, booking_id)
                body = _BOOKING_DETAIL.dump_json(detail, by_alias=True)
                counter, scope["route"] = self.viewed, self.one_route
        except (CustomerRefused, DomainError, NotFound):  # (a rule's refusal is a DomainError)
            return None
        counter.inc()
        return Response(body, media_type="application/json")

    def _session(self, scope: Scope) -> Session | None:
        """The customer's session, as `CustomerBearer` reads it (the first Authorization
        header, scheme "Bearer" in any case), if its token is valid."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                token = token.strip()
                if scheme.lower() != "bearer" or not token:
                    return None
                try:
                    return self.verifier.verify(token)
                except InvalidSession:
                    return None
        return None


_BOOKING_DETAIL = TypeAdapter(BookingDetail)
_QUOTE = TypeAdapter(CancellationQuote)


@router.get(
    "/v1/me/bookings/{booking_id}/cancellation-quote",
    response_model=CancellationQuote,
    summary="Ask to cancel: what it means",
)
async def cancellation_quote(booking_id: UUID, session: Customer, reads: Reads) -> CancellationQuote:
    """Step 1 of 2. What was paid, what the business will refund (by hand: refunds are not
    automatic), the rule that applies and until when. 409 with the reason when the booking
    cannot be cancelled online."""
    return await reads.answer(counted, "cancel_quote", lambda: reads.cancellation_quote(session, booking_id))


@router.post(
    "/v1/me/bookings/{booking_id}/cancellation",
    response_model=Cancelled,
    summary="Confirm the cancellation",
)
async def cancel(booking_id: UUID, body: CancelRequest, request: Request, session: Customer) -> Cancelled:
    """Step 2 of 2. The rules are checked again now (a cut-off may have passed since the
    quote); a booking that changed since the quote is refused with `booking_changed`.
    Sending the same confirmation again answers the same."""
    # The application and the reads from the request, not as dependencies (as the reads above):
    # the hot path of a cancel, and FastAPI solving dependencies was a seventh of the event
    # loop's CPU at 50 cancels/s (issue 10 goal 3).
    bookings: Bookings = request.app.state.bookings
    reads = _reads_of(request)

    def attempt() -> Booking:
        with _acting(session, request):
            return bookings.cancel_by_customer(session, booking_id, body.booking_version, body.reason)

    def confirm() -> Booking:  # one hand-over to a thread, not two (the hot path of a cancel)
        booking = counted("cancel", attempt)
        log.info("booking cancelled by its customer", booking_id=str(booking.id), code=booking.code)
        reads.until_shown(booking.id, booking.version)  # their next page shows it
        return booking

    return answers.cancellation_answer(await run_sync(confirm))


@router.post(
    "/v1/me/bookings/{booking_id}/modification-preview",
    response_model=ModificationResult,
    summary="See what a change would do",
)
async def modification_preview(
    booking_id: UUID, body: ChangesIn, session: Customer, bookings: App
) -> ModificationResult:
    """Step 1 of 2: the booking as it would be (new lines, total, balance due), nothing
    saved. Lines can be moved, resized, removed or repeated at their price; contact details
    (name, phone) and booking-form answers can change."""

    def query() -> ModificationResult:
        return answers.modification_answer(
            bookings.modification_preview(session, booking_id, body.as_changes()), preview=True
        )

    return await run_sync(counted, "modify_preview", query)


@router.post(
    "/v1/me/bookings/{booking_id}/modification",
    response_model=ModificationResult,
    summary="Confirm a change",
)
async def modify(
    booking_id: UUID,
    body: ModificationRequest,
    request: Request,
    session: Customer,
    bookings: App,
    reads: Reads,
) -> ModificationResult:
    """Step 2 of 2, with the booking version the preview showed; the rules are checked
    again. Sending the same confirmation again answers the same."""
    changes = ChangesIn.model_validate(body.model_dump(exclude={"booking_version"})).as_changes()

    def attempt() -> Preview:
        with _acting(session, request):
            return bookings.modify_by_customer(session, booking_id, body.booking_version, changes)

    result = await run_sync(counted, "modify", attempt)
    log.info("booking modified by its customer", booking_id=str(result.booking.id))
    await run_sync(reads.until_shown, result.booking.id, result.booking.version)
    return answers.modification_answer(result, preview=False)
