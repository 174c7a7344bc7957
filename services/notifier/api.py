"""The notifier's HTTP API for staff: the delivery log, retrying parked emails, branding.

Everything is tenant-scoped: an email or a setting of another tenant is "not found". Staff
use the API keys accounts issued (announced on its topic, kept as `StaffKey`); the actor they
are recorded with comes from the `Staff` dependency. The routes are module-level routers (staff,
public) given what they need from the app's state, which the composition root (`bootstrap`)
fills; they read the read model through `views.StaffQueries`. `REFUSALS` answers the
notifier's refusals (the one table of its edge, `backbone.http.Refusals`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from backbone import context
from backbone.http import NotFound, Refusal, Refusals, run_sync
from contracts.envelope import TenantId
from services.notifier.application import Notifier
from services.notifier.directory import BRANDING_DEFAULTS, Tenant, UnknownBranding
from services.notifier.domainmodel import NotParked
from services.notifier.rendering import LANGUAGES
from services.notifier.views import StaffQueries

TenantPath = Annotated[TenantId, Path(description="The business's tenant id")]
Status = Literal["queued", "sending", "sent", "retrying", "parked", "withdrawn"]

# One line, no control characters: these end up in headers (From, Reply-To).
HeaderText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"),
]


class EmailEntry(BaseModel):
    email_id: UUID
    kind: str = Field(description="What the email is: verify_email, booking_cancelled, ...")
    audience: Literal["customer", "staff"]
    to: str | None = Field(description="The recipient; null once their personal data is erased.")
    recipient_erased: bool
    subject: str | None = Field(description="The subject line, once sent.")
    language: str
    status: Status
    attempts: int
    queued_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None = Field(description="Why the last attempt failed, or why it was withdrawn.")
    account_id: UUID | None
    booking_id: UUID | None


class DeliveryLog(BaseModel):
    emails: list[EmailEntry]
    next_before: datetime | None = Field(description="Pass as `before` for the next (older) page.")


class HistoryEntry(BaseModel):
    what: str
    at: datetime
    by: str | None = None
    attempt: int | None = None
    interrupted: bool | None = None
    detail: str | None = None


class EmailDetail(EmailEntry):
    history: list[HistoryEntry]


class Retried(BaseModel):
    retried: list[UUID]


LogoUrl = Annotated[str, StringConstraints(max_length=500, pattern=r"^https://[^\s\"'<>]+$")]


class BrandingChange(BaseModel):
    """Only the fields given change; null puts a field back to the deployment's default."""

    model_config = ConfigDict(extra="forbid")

    business_name: HeaderText | None = None
    reply_to: EmailStr | None = None
    footer: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = None
    staff_email: EmailStr | None = Field(default=None, description="Where staff notices go.")
    default_language: Literal[LANGUAGES] | None = None  # type: ignore[valid-type]
    logo_url: LogoUrl | None = Field(
        default=None, description="An https URL of the business's logo, for the portal's pages."
    )
    colour: Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")] | None = Field(
        default=None, description="The portal's accent colour, #rrggbb."
    )


class PublicBranding(BaseModel):
    """What any visitor of the business's pages sees anyway: no personal data, no settings."""

    tenant_id: str
    business_name: str
    contact_email: str | None = Field(description="Where customers write (the reply-to address).")
    timezone: str
    default_language: str | None
    logo_url: str | None
    colour: str | None


class BrandingView(BaseModel):
    tenant_id: str
    settings: dict[str, str | None] = Field(description="As set by staff (null: the default).")
    business_name: str = Field(description="As the emails show it.")
    timezone: str = Field(description="From the tenant's customer-account settings.")
    languages: list[str] = Field(description="Languages the emails are written in.")


# ----------------------------------------------------------------------------- given

_bearer = HTTPBearer(auto_error=False)


# Coroutines that block on nothing: a plain function would go through the thread pool.
async def _notifier(request: Request) -> Notifier:
    return request.app.state.notifier


async def _queries(request: Request) -> StaffQueries:
    return request.app.state.staff_queries


async def _staff(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    # backbone.auth.staff_member over the keys accounts announced, made by the composition root.
    return await request.app.state.staff_member(request, credentials)


App = Annotated[Notifier, Depends(_notifier)]
Queries = Annotated[StaffQueries, Depends(_queries)]
Staff = Annotated[str, Depends(_staff)]  # the actor, staff:<id>

# ----------------------------------------------------------------------------- routes

staff = APIRouter(tags=["staff"])
public = APIRouter(tags=["public"])


@staff.get(
    "/v1/staff/tenants/{tenant_id}/emails",
    response_model=DeliveryLog,
    summary="The delivery log: what was sent, when, to whom, and how it went (newest first)",
)
async def delivery_log(
    tenant_id: TenantPath,
    queries: Queries,
    _: Staff,
    account_id: UUID | None = None,
    booking_id: UUID | None = None,
    status: Status | None = None,
    before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryLog:
    rows = await run_sync(
        queries.delivery_log,
        tenant_id,
        account_id=account_id,
        booking_id=booking_id,
        status=status,
        before=before,
        limit=limit,
    )
    more = len(rows) == limit
    return DeliveryLog(
        emails=[EmailEntry.model_validate(r) for r in rows],
        next_before=rows[-1]["queued_at"] if rows and more else None,
    )


@staff.get(
    "/v1/staff/tenants/{tenant_id}/emails/{email_id}",
    response_model=EmailDetail,
    summary="One email with the history of its delivery",
)
async def email_detail(
    tenant_id: TenantPath, email_id: UUID, notifier: App, queries: Queries, _: Staff
) -> EmailDetail:
    def query() -> dict[str, Any]:
        entry = queries.email(tenant_id, email_id)
        if entry is None:
            raise NotFound("No such email.")
        return {**entry, "history": notifier.email_history(email_id)}

    return EmailDetail.model_validate(await run_sync(query))


@staff.post(
    "/v1/staff/tenants/{tenant_id}/emails/{email_id}/retry",
    response_model=Retried,
    summary="Send a parked email again (with a fresh budget of attempts)",
)
async def retry(
    tenant_id: TenantPath, email_id: UUID, request: Request, notifier: App, actor: Staff
) -> Retried:
    with context.caused_by(actor, tenant_id, request.state.correlation_id):
        await run_sync(notifier.retry, email_id, actor, tenant_id)
    return Retried(retried=[email_id])


@staff.post(
    "/v1/staff/tenants/{tenant_id}/parked-emails/retry",
    response_model=Retried,
    summary="Send every parked email of the tenant again",
)
async def retry_parked(
    tenant_id: TenantPath, request: Request, notifier: App, queries: Queries, actor: Staff
) -> Retried:
    def retry_all() -> list[UUID]:
        ids = queries.parked(tenant_id)
        with context.caused_by(actor, tenant_id, request.state.correlation_id):
            return [notifier.retry(email_id, actor, tenant_id).id for email_id in ids]

    return Retried(retried=await run_sync(retry_all))


@public.get(
    "/v1/tenants/{tenant_id}/branding",
    response_model=PublicBranding,
    summary="The business as its customers' pages show it (public: name, contact, time zone, logo)",
)
async def public_branding(tenant_id: TenantPath, notifier: App) -> PublicBranding:
    tenant = await run_sync(notifier.tenant, tenant_id)
    return PublicBranding(
        tenant_id=tenant_id,
        business_name=notifier.branding(tenant).business_name,
        contact_email=tenant.branding.get("reply_to"),
        timezone=tenant.timezone,
        default_language=tenant.branding.get("default_language"),
        logo_url=tenant.branding.get("logo_url"),
        colour=tenant.branding.get("colour"),
    )


@staff.get(
    "/v1/staff/tenants/{tenant_id}/branding",
    response_model=BrandingView,
    summary="How the tenant's emails look",
)
async def get_branding(tenant_id: TenantPath, notifier: App, _: Staff) -> BrandingView:
    return _branding_view(notifier, await run_sync(notifier.tenant, tenant_id))


@staff.patch(
    "/v1/staff/tenants/{tenant_id}/branding",
    response_model=BrandingView,
    summary="Change some of the tenant's branding: business name, reply-to, footer, staff "
    "address, default language",
)
async def change_branding(
    tenant_id: TenantPath, body: BrandingChange, request: Request, notifier: App, actor: Staff
) -> BrandingView:
    changes = body.model_dump(exclude_unset=True, mode="json")
    with context.caused_by(actor, tenant_id, request.state.correlation_id):
        tenant = await run_sync(notifier.change_branding, tenant_id, changes, actor)
    return _branding_view(notifier, tenant)


ROUTERS = (staff, public)
REFUSALS = Refusals({NotParked: Refusal(409), UnknownBranding: Refusal(422)})  # the edge's one table


def _branding_view(notifier: Notifier, tenant: Tenant) -> BrandingView:
    return BrandingView(
        tenant_id=tenant.tenant_id,
        settings={k: tenant.branding.get(k) for k in BRANDING_DEFAULTS},
        business_name=notifier.branding(tenant).business_name,
        timezone=tenant.timezone,
        languages=list(LANGUAGES),
    )
