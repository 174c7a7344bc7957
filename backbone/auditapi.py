"""The read-only audit API every service mounts: its event log for audit tooling, over HTTP.

An external audit tool needs no database access: with the audit token (`AUDIT_API_TOKEN`,
sent as `Authorization: Bearer ...`) it pages through the service's whole event log in order,
reads the full history of one aggregate (an account, a booking, an email), or downloads a
tamper-evident export (JSON Lines with a hash chain, see `backbone.auditexport`) and checks it
with `booking-accounts verify`. Nothing here changes anything. What the records show of
personal data and secrets is decided in `backbone.audit`: sealed or erased, never opened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, Field, SecretStr

from backbone.audit import AuditLog, AuditRecord
from backbone.auditexport import Export, Selection
from backbone.auth import auditor
from backbone.eventstore import ServiceApplication
from backbone.http import NotFound, run_sync
from contracts.envelope import TenantId

MAX_PAGE = 1000
SCAN_FACTOR = 20  # a filtered page reads at most this many times `limit` events


class AuditEvent(BaseModel):
    position: int | None = Field(description="Place in the service's event log (1, 2, ...).")
    aggregate_id: UUID
    aggregate_type: str = Field(description='e.g. "Booking", "Account", "Email".')
    version: int = Field(description="The aggregate's version after this event (1 = created).")
    event_type: str = Field(description='e.g. "Booking.Cancelled".')
    topic: str = Field(description="The stored event class, module:Class.Event.")
    occurred_at: datetime
    tenant_id: str | None
    actor: str = Field(description='Who caused it: "customer:<id>", "staff:<id>" or "service:<name>".')
    correlation_id: str | None = Field(description="Shared by everything one request caused.")
    causation_id: str | None = Field(description="The message (event or command) that caused it.")
    data: dict[str, Any] = Field(
        description="The event's own fields. Personal values are {subject_id, sealed: true} or "
        '{subject_id, erased: true}, never opened; secrets and their hashes are "[redacted]".'
    )
    stored_sha256: str = Field(description="SHA-256 of the event exactly as stored.")


class EventPage(BaseModel):
    service: str
    events: list[AuditEvent]
    next_after: int = Field(description="Pass as `after` for the next page.")
    head: int = Field(description="The last position of the log when this page was read.")


class AggregateHistory(BaseModel):
    service: str
    aggregate_id: UUID
    events: list[AuditEvent]


@dataclass(frozen=True)
class Audited:
    """What the audit routes are given (kept in `app.state.audited`, set by `routes`)."""

    log: AuditLog
    service: str
    auditor: Callable[..., Awaitable[str]]  # backbone.auth.auditor: made once, its throttle counts


_bearer = HTTPBearer(auto_error=False)


async def _audited(request: Request) -> Audited:
    return request.app.state.audited


async def _auditor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    audited: Annotated[Audited, Depends(_audited)],
) -> str:
    return await audited.auditor(request, credentials)


Given = Annotated[Audited, Depends(_audited)]

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(_auditor)])


def routes(api: FastAPI, app: ServiceApplication, service: str, token: SecretStr | None) -> None:
    """Mount the audit API on a service's app, over its event log."""
    api.state.audited = Audited(AuditLog(app), service, auditor(token))
    api.include_router(router)


@router.get(
    "/events",
    response_model=EventPage,
    summary="The event log, in order, one page at a time",
    description="Events after position `after`, oldest first. Filtered pages (tenant, time) "
    "may hold fewer than `limit` events: continue from `next_after` until it reaches `head`.",
)
async def events(
    audited: Given,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    tenant: TenantId | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> EventPage:
    selection = Selection(since=since, until=until, tenant_id=tenant)
    head, records, next_after = await run_sync(_page, audited.log, after, limit, selection)
    return EventPage(service=audited.service, events=_events(records), next_after=next_after, head=head)


@router.get(
    "/aggregates/{aggregate_id}/events",
    response_model=AggregateHistory,
    summary="The full history of one aggregate (an account, a booking, an email, ...)",
)
async def history(aggregate_id: UUID, audited: Given) -> AggregateHistory:
    records = await run_sync(audited.log.history, aggregate_id)
    if not records:
        raise NotFound(f"No aggregate {aggregate_id} in the {audited.service} service.")
    return AggregateHistory(service=audited.service, aggregate_id=aggregate_id, events=_events(records))


@router.get(
    "/export",
    summary="A tamper-evident export of the event log (JSON Lines with a hash chain)",
    description="Streams a header, one record per event and an end record whose `hash` is the "
    "head of the chain. Check it with `booking-accounts verify FILE`.",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export(
    audited: Given,
    from_position: Annotated[int, Query(ge=1)] = 1,
    to_position: Annotated[int | None, Query(ge=1)] = None,
    tenant: TenantId | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> StreamingResponse:
    selection = Selection(from_position, to_position, since, until, tenant)
    # A plain iterator: Starlette runs it in a worker thread, off the event loop.
    lines = Export(audited.log, audited.service, selection).lines()
    return StreamingResponse(lines, media_type="application/x-ndjson")


def _page(log: AuditLog, after: int, limit: int, selection: Selection) -> tuple[int, list[AuditRecord], int]:
    head = log.head()
    found: list[AuditRecord] = []
    scanned = after
    budget = limit * SCAN_FACTOR
    while len(found) < limit and scanned < head and budget > 0:
        batch = log.events(scanned, min(MAX_PAGE, budget), head)
        if not batch:
            break
        for record in batch:
            scanned = record.position or scanned
            if selection.matches(record):
                found.append(record)
                if len(found) == limit:
                    break
        budget -= len(batch)
    return head, found, scanned


def _events(records: list[AuditRecord]) -> list[AuditEvent]:
    return [AuditEvent.model_validate(r.as_dict()) for r in records]
