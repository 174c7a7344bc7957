"""The notifier's HTTP API for staff: the delivery log, retrying parked emails, branding.

Everything is tenant-scoped: an email or a setting of another tenant is "not found". Who is
calling is decided by the `as_staff` dependency given by the composition root (today the
shared staff token, see `bootstrap`); it returns the actor recorded with every change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from backbone import context
from backbone.http import NotFound, run_sync
from backbone.readmodel import ReadModel
from contracts.envelope import TenantId
from services.notifier import views
from services.notifier.application import Notifier
from services.notifier.directory import BRANDING_DEFAULTS, Tenant
from services.notifier.rendering import LANGUAGES

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


def routes(api: FastAPI, notifier: Notifier, read_model: ReadModel, as_staff: Callable[..., str]) -> None:
    vault = notifier.vault

    def entry(row: dict[str, Any]) -> dict[str, Any]:
        to = views.recipient(row, vault)
        return {
            **row,
            "kind": row["template"],
            "to": to,
            "recipient_erased": row["recipient_subject"] is not None and to is None,
        }

    @api.get(
        "/v1/staff/tenants/{tenant_id}/emails",
        response_model=DeliveryLog,
        tags=["staff"],
        summary="The delivery log: what was sent, when, to whom, and how it went (newest first)",
    )
    async def delivery_log(
        tenant_id: TenantPath,
        account_id: UUID | None = None,
        booking_id: UUID | None = None,
        status: Status | None = None,
        before: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        _: str = Depends(as_staff),
    ) -> DeliveryLog:
        def query() -> list[dict[str, Any]]:
            with read_model.engine.connect() as conn:
                rows = views.delivery_log(
                    conn,
                    tenant_id,
                    account_id=account_id,
                    booking_id=booking_id,
                    status=status,
                    before=before,
                    limit=limit,
                )
            return [entry(row) for row in rows]

        rows = await run_sync(query)
        more = len(rows) == limit
        return DeliveryLog(
            emails=[EmailEntry.model_validate(r) for r in rows],
            next_before=rows[-1]["queued_at"] if rows and more else None,
        )

    @api.get(
        "/v1/staff/tenants/{tenant_id}/emails/{email_id}",
        response_model=EmailDetail,
        tags=["staff"],
        summary="One email with the history of its delivery",
    )
    async def email_detail(tenant_id: TenantPath, email_id: UUID, _: str = Depends(as_staff)) -> EmailDetail:
        def query() -> dict[str, Any]:
            with read_model.engine.connect() as conn:
                row = views.email_row(conn, email_id)
            if row is None or row["tenant_id"] != tenant_id:
                raise NotFound("No such email.")
            return {**entry(row), "history": _history(notifier, email_id)}

        return EmailDetail.model_validate(await run_sync(query))

    @api.post(
        "/v1/staff/tenants/{tenant_id}/emails/{email_id}/retry",
        response_model=Retried,
        tags=["staff"],
        summary="Send a parked email again (with a fresh budget of attempts)",
    )
    async def retry(
        tenant_id: TenantPath, email_id: UUID, request: Request, actor: str = Depends(as_staff)
    ) -> Retried:
        with context.caused_by(actor, tenant_id, request.state.correlation_id):
            await run_sync(notifier.retry, email_id, actor, tenant_id)
        return Retried(retried=[email_id])

    @api.post(
        "/v1/staff/tenants/{tenant_id}/parked-emails/retry",
        response_model=Retried,
        tags=["staff"],
        summary="Send every parked email of the tenant again",
    )
    async def retry_parked(
        tenant_id: TenantPath, request: Request, actor: str = Depends(as_staff)
    ) -> Retried:
        def retry_all() -> list[UUID]:
            with read_model.engine.connect() as conn:
                ids = views.parked(conn, tenant_id)
            with context.caused_by(actor, tenant_id, request.state.correlation_id):
                return [notifier.retry(email_id, actor, tenant_id).id for email_id in ids]

        return Retried(retried=await run_sync(retry_all))

    @api.get(
        "/v1/tenants/{tenant_id}/branding",
        response_model=PublicBranding,
        tags=["public"],
        summary="The business as its customers' pages show it (public: name, contact, time zone, logo)",
    )
    async def public_branding(tenant_id: TenantPath) -> PublicBranding:
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

    @api.get(
        "/v1/staff/tenants/{tenant_id}/branding",
        response_model=BrandingView,
        tags=["staff"],
        summary="How the tenant's emails look",
    )
    async def get_branding(tenant_id: TenantPath, _: str = Depends(as_staff)) -> BrandingView:
        return _branding_view(notifier, await run_sync(notifier.tenant, tenant_id))

    @api.patch(
        "/v1/staff/tenants/{tenant_id}/branding",
        response_model=BrandingView,
        tags=["staff"],
        summary="Change some of the tenant's branding: business name, reply-to, footer, staff "
        "address, default language",
    )
    async def change_branding(
        tenant_id: TenantPath, body: BrandingChange, request: Request, actor: str = Depends(as_staff)
    ) -> BrandingView:
        changes = body.model_dump(exclude_unset=True, mode="json")
        with context.caused_by(actor, tenant_id, request.state.correlation_id):
            tenant = await run_sync(notifier.change_branding, tenant_id, changes, actor)
        return _branding_view(notifier, tenant)


def _branding_view(notifier: Notifier, tenant: Tenant) -> BrandingView:
    return BrandingView(
        tenant_id=tenant.tenant_id,
        settings={k: tenant.branding.get(k) for k in BRANDING_DEFAULTS},
        business_name=notifier.branding(tenant).business_name,
        timezone=tenant.timezone,
        languages=list(LANGUAGES),
    )


def _history(notifier: Notifier, email_id: UUID) -> list[dict[str, Any]]:
    """The email's events, without what is personal (recipient, content)."""
    history = []
    for event in notifier.events.get(email_id):
        what = type(event).__name__
        history.append(
            {
                "what": what,
                "at": event.timestamp,
                "by": getattr(event, "by", None),
                "attempt": getattr(event, "attempt", None),
                "interrupted": getattr(event, "interrupted", None),
                "detail": getattr(event, "error", None)
                or getattr(event, "reason", None)
                or getattr(event, "server_reply", None),
            }
        )
    return history
