"""The accounts service's HTTP API: customers claim, verify and log in; staff set the rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, FastAPI, Form, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints
from zxcvbn import zxcvbn

from backbone import context
from backbone.auth import customer_session, staff
from backbone.credentials import Session, SessionSigner, SessionVerifier
from backbone.http import NotFound, Problem, run_sync
from contracts.envelope import Email, ShortText, TenantId
from services.accounts.application import Accounts

Tenant = Annotated[TenantId, Path(description="The business's tenant id")]
StatusCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,15}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClaimRequest(Strict):
    email: Email
    name: ShortText
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Omit to log in with emailed links only."
    )


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str


class VerifyRequest(Strict):
    token: Annotated[str, StringConstraints(min_length=10, max_length=200)]


class Verified(BaseModel):
    account_id: UUID
    verified: bool


class LoginRequest(Strict):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class SessionToken(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme's name, not a secret
    expires_at: datetime


class AccountView(BaseModel):
    account_id: UUID
    tenant_id: str
    email: str
    name: str
    verified: bool


class CutoffModel(Strict):
    amount: Annotated[int, Field(ge=0, le=8760)]
    unit: Literal["days", "hours"]


class SettingsChange(Strict):
    customer_logins_enabled: bool | None = None
    require_login_to_book: bool | None = None
    show_pre_bookings: bool | None = None
    allow_cancel: bool | None = None
    cancel_cutoff: CutoffModel | None = None
    allow_modify: bool | None = None
    modify_cutoff: CutoffModel | None = None
    blocking_statuses: list[StatusCode] | None = None
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


CLAIM_ANSWER = (
    "If this address can be used for an account, a verification link is on its way to it. "
    "Follow it to finish."
)


def routes(
    api: FastAPI, accounts: Accounts, signer: SessionSigner, verifier: SessionVerifier, staff_token: SecretStr
) -> None:
    as_customer = customer_session(verifier)
    as_staff = staff(staff_token)

    @api.post(
        "/v1/tenants/{tenant_id}/accounts",
        status_code=202,
        response_model=Accepted,
        tags=["customers"],
        summary="Claim an account for an email address",
    )
    async def claim(tenant_id: Tenant, body: ClaimRequest, request: Request) -> Accepted:
        if body.password is not None and zxcvbn(body.password, [body.email, body.name])["score"] < 3:
            raise Problem(
                422, "Weak password", "Choose a longer, less guessable password.", code="weak_password"
            )
        with _cause(request, "customer:anonymous", tenant_id):
            await run_sync(
                accounts.claim_account, tenant_id, body.email, body.name, body.password, "customer"
            )
        return Accepted(detail=CLAIM_ANSWER)

    @api.get(
        "/verify-email",
        response_class=HTMLResponse,
        tags=["customers"],
        summary="The page a verification link opens",
    )
    async def verify_page(token: str = "") -> HTMLResponse:
        # A GET must not use up the token: mail scanners prefetch links. The page posts it.
        return HTMLResponse(
            _VERIFY_PAGE.format(token=_escape(token)),
            headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"},
        )

    @api.post("/verify-email", response_class=HTMLResponse, include_in_schema=False)
    async def verify_form(request: Request, token: Annotated[str, Form()]) -> HTMLResponse:
        with _cause(request, "customer:anonymous", None):
            await run_sync(accounts.verify_email, token)
        return HTMLResponse(
            "<p>Your email address is verified. You can now log in.</p>",
            headers={"Referrer-Policy": "no-referrer"},
        )

    @api.post(
        "/v1/email-verifications",
        response_model=Verified,
        tags=["customers"],
        summary="Verify an email address with the token from the emailed link",
    )
    async def verify(body: VerifyRequest, request: Request) -> Verified:
        with _cause(request, "customer:anonymous", None):
            account = await run_sync(accounts.verify_email, body.token)
        return Verified(account_id=account.id, verified=True)

    @api.post(
        "/v1/tenants/{tenant_id}/sessions",
        response_model=SessionToken,
        tags=["customers"],
        summary="Log in with email and password",
    )
    async def log_in(tenant_id: Tenant, body: LoginRequest) -> SessionToken:
        account = await run_sync(accounts.log_in, tenant_id, body.email, body.password)
        token, session = signer.issue(account.id, tenant_id)
        return SessionToken(token=token, expires_at=session.expires_at)

    @api.get("/v1/me", response_model=AccountView, tags=["customers"], summary="My account")
    async def me(session: Session = Depends(as_customer)) -> AccountView:
        account = await run_sync(accounts.account, session.account_id)
        if account is None or account.tenant_id != session.tenant_id:
            raise NotFound("No such account.")
        return AccountView(
            account_id=account.id,
            tenant_id=account.tenant_id,
            email=str(account.email),
            name=str(account.name),
            verified=account.is_verified,
        )

    @api.get(
        "/v1/staff/tenants/{tenant_id}/settings",
        tags=["staff"],
        summary="The tenant's customer-account settings",
    )
    async def get_settings(tenant_id: Tenant, _: str = Depends(as_staff)) -> dict[str, Any]:
        return await run_sync(accounts.settings, tenant_id)

    @api.patch(
        "/v1/staff/tenants/{tenant_id}/settings",
        tags=["staff"],
        summary="Change some of the tenant's customer-account settings",
    )
    async def change_settings(
        tenant_id: Tenant, body: SettingsChange, request: Request, actor: str = Depends(as_staff)
    ) -> dict[str, Any]:
        changes = body.model_dump(exclude_none=True, mode="json")
        with _cause(request, actor, tenant_id):
            await run_sync(accounts.change_settings, tenant_id, changes)
        return await run_sync(accounts.settings, tenant_id)


def _cause(request: Request, actor: str, tenant_id: str | None) -> Any:
    return context.caused_by(actor, tenant_id, request.state.correlation_id)


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#x27;")
    )


_VERIFY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Verify your email</title></head>
<body><h1>Verify your email address</h1>
<form method="post" action="/verify-email">
<input type="hidden" name="token" value="{token}">
<button type="submit">Verify my email address</button>
</form></body></html>"""
