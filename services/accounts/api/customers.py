"""Customer routes: claim, links, login, sessions, profile.

Requests that name an email address (claim, resend, magic link, reset) answer 202 with the same
sentence for every address, before any work that depends on the address (`deferred.py`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from backbone.credentials import SessionSigner
from backbone.http import run_sync
from services.accounts import metrics
from services.accounts.api import auth
from services.accounts.api.auth import App, Customer, Later, Limits, Signer
from services.accounts.api.models import (
    Accepted,
    ClaimRequest,
    EmailChangeRequest,
    EmailRequest,
    LoginRequest,
    NewPasswordRequest,
    PasswordChange,
    PasswordSet,
    Profile,
    ProfileChange,
    SessionToken,
    Tenant,
    TokenRequest,
    VerificationRequest,
    Verified,
)
from services.accounts.application import Accounts
from services.accounts.customers import InvalidCredentials, WrongPassword
from services.accounts.domainmodel import Account, LinkRefused
from services.accounts.ratelimits import RateLimits

CLAIM_ANSWER = (
    "If this address can be used for an account, an email is on its way to it. Follow its link to finish."
)
LINK_ANSWER = "If this address has an account here, an email with a link is on its way to it."


router = APIRouter(tags=["customers"])
OFF = {403: {"description": "Customer accounts are off for this business"}}


def issue_session(signer: SessionSigner, accounts: Accounts, account: Account) -> SessionToken:
    token, session = signer.issue(account.id, account.tenant_id, now=accounts.clock())
    return SessionToken(token=token, expires_at=session.expires_at)


async def redeeming(request: Request, limits: RateLimits, use: object, *args: object) -> Account:
    """Follow an emailed link; failures count against the client (token guessing)."""
    async with limits.attempt("link", "", "", auth.client_of(request), failure=LinkRefused):
        with auth.cause(request, "customer:anonymous", None):
            return await run_sync(use, *args)  # type: ignore[arg-type]


# ------------------------------------------------------------------ about an address


@router.post(
    "/v1/tenants/{tenant_id}/accounts",
    status_code=202,
    response_model=Accepted,
    summary="Claim an account for an email address",
    responses={**OFF, 422: {}, 429: {}},
)
async def claim(
    tenant_id: Tenant, body: ClaimRequest, request: Request, accounts: App, limits: Limits, deferred: Later
) -> Accepted:
    await run_sync(accounts.require_logins, tenant_id)
    client = auth.client_of(request)
    await limits.hit("claim", tenant_id, body.email, client)
    with auth.cause(request, "customer:anonymous", tenant_id):
        deferred.submit(
            "claim",
            lambda: accounts.claim_account(tenant_id, body.email, body.name, body.language),
            client,
        )
    return Accepted(detail=CLAIM_ANSWER)


def _link_request(path: str, action: str, purpose: str, summary: str) -> None:
    """The three requests that email a link to an address answer alike (`LINK_ANSWER`)."""

    @router.post(
        path,
        status_code=202,
        response_model=Accepted,
        summary=summary,
        name=action,
        responses={**OFF, 429: {}},
    )
    async def request_link(
        tenant_id: Tenant,
        body: EmailRequest,
        request: Request,
        accounts: App,
        limits: Limits,
        deferred: Later,
    ) -> Accepted:
        await run_sync(accounts.require_logins, tenant_id)
        client = auth.client_of(request)
        await limits.hit(action, tenant_id, body.email, client)
        with auth.cause(request, "customer:anonymous", tenant_id):
            deferred.submit(
                action,
                lambda: accounts.request_link(tenant_id, body.email, purpose),  # type: ignore[arg-type]
                client,
            )
        return Accepted(detail=LINK_ANSWER)


_link_request(
    "/v1/tenants/{tenant_id}/verification-requests",
    "verification",
    "verify",
    "Send the verification link of an unverified account again (the old one stops working)",
)
_link_request(
    "/v1/tenants/{tenant_id}/magic-links",
    "magic_link",
    "magic_link",
    "Email a single-use login link, valid for minutes",
)
_link_request(
    "/v1/tenants/{tenant_id}/password-resets",
    "password_reset",
    "password_reset",
    "Email a link to choose a new password",
)

# ------------------------------------------------------------------ following links


@router.post(
    "/v1/email-verifications",
    response_model=Verified,
    summary="Verify an email address with the token of the emailed link (and choose a password)",
    responses={
        400: {"description": "The link is invalid, used, replaced or expired"},
        403: {"description": "Customer accounts are off for this business"},
        409: {"description": "The new address was taken by another account meanwhile"},
        422: {"description": "The password is too weak, or not expected with this link"},
        429: {},
    },
)
async def verify(body: VerificationRequest, request: Request, accounts: App, limits: Limits) -> Verified:
    account = await redeeming(
        request, limits, accounts.verify_email, body.token, body.password, body.send_login_link
    )
    return Verified(account_id=account.id, tenant_id=account.tenant_id, has_password=account.has_password)


@router.post(
    "/v1/new-passwords",
    response_model=PasswordSet,
    summary="Choose a password with the token of an invitation or reset link",
    responses={400: {}, 403: {}, 422: {"description": "The password is too weak"}, 429: {}},
)
async def new_password(
    body: NewPasswordRequest, request: Request, accounts: App, limits: Limits
) -> PasswordSet:
    account = await redeeming(request, limits, accounts.set_password, body.token, body.password)
    return PasswordSet(
        account_id=account.id, tenant_id=account.tenant_id, detail="Your password is set. Log in with it."
    )


@router.post(
    "/v1/magic-link-sessions",
    response_model=SessionToken,
    summary="Log in with the token of an emailed login link (single use)",
    responses={400: {}, 403: {}, 429: {}},
)
async def magic_session(
    body: TokenRequest, request: Request, accounts: App, limits: Limits, signer: Signer
) -> SessionToken:
    try:
        account = await redeeming(request, limits, accounts.log_in_by_link, body.token)
    except LinkRefused:
        metrics.logins.labels("magic_link", "refused").inc()
        raise
    metrics.logins.labels("magic_link", "ok").inc()
    return issue_session(signer, accounts, account)


# ------------------------------------------------------------------ sessions


@router.post(
    "/v1/tenants/{tenant_id}/sessions",
    response_model=SessionToken,
    summary="Log in with email and password",
    responses={401: {}, 403: {}, 429: {}},
)
async def log_in(
    tenant_id: Tenant, body: LoginRequest, request: Request, accounts: App, limits: Limits, signer: Signer
) -> SessionToken:
    try:
        async with limits.attempt(
            "login", tenant_id, body.email, auth.client_of(request), failure=InvalidCredentials
        ):
            account = await run_sync(accounts.log_in, tenant_id, body.email, body.password)
    except InvalidCredentials:
        metrics.logins.labels("password", "refused").inc()
        raise
    metrics.logins.labels("password", "ok").inc()
    return issue_session(signer, accounts, account)


@router.delete(
    "/v1/me/session",
    status_code=204,
    summary="Log out: ends every session of the account issued until now",
)
async def log_out(request: Request, session: Customer, accounts: App) -> Response:
    with auth.cause(request, f"customer:{session.account_id}", session.tenant_id):
        await run_sync(accounts.log_out, session)
    return Response(status_code=204)


# ------------------------------------------------------------------ my account


@router.get("/v1/me", response_model=Profile, summary="My account")
async def me(session: Customer, accounts: App) -> Profile:
    return profile(await run_sync(accounts.customer, session))


@router.patch("/v1/me", response_model=Profile, summary="Change my contact details")
async def change_profile(body: ProfileChange, request: Request, session: Customer, accounts: App) -> Profile:
    with auth.cause(request, f"customer:{session.account_id}", session.tenant_id):
        account = await run_sync(accounts.change_profile, session, body.changes())
    return profile(account)


@router.put(
    "/v1/me/password",
    response_model=SessionToken,
    summary="Change my password: ends every other session, answers with a new one",
    responses={403: {"description": "The current password is wrong"}, 422: {}, 429: {}},
)
async def change_password(
    body: PasswordChange, request: Request, session: Customer, accounts: App, limits: Limits, signer: Signer
) -> SessionToken:
    # A stolen session must not become a way to guess the password (and lock the owner out).
    async with limits.attempt(
        "password_change", "", str(session.account_id), auth.client_of(request), failure=WrongPassword
    ):
        with auth.cause(request, f"customer:{session.account_id}", session.tenant_id):
            account = await run_sync(
                accounts.change_password, session, body.current_password, body.new_password
            )
    return issue_session(signer, accounts, account)


@router.post(
    "/v1/me/email-change",
    status_code=202,
    response_model=Accepted,
    summary="Change my email address: it takes effect when the link sent to it is followed",
    responses={403: {"description": "The current password is wrong"}, 429: {}},
)
async def change_email(
    body: EmailChangeRequest,
    request: Request,
    session: Customer,
    accounts: App,
    limits: Limits,
    deferred: Later,
) -> Accepted:
    # Every request counts: each is a password guess, and mail to an address of one's choosing.
    await limits.hit("email_change", "", str(session.account_id), auth.client_of(request))
    await run_sync(accounts.check_password, session, body.current_password)
    with auth.cause(request, f"customer:{session.account_id}", session.tenant_id):
        deferred.submit(
            "email_change",
            lambda: accounts.request_email_change(session, body.email),
            auth.client_of(request),
        )
    return Accepted(detail="If this address can be used, a link to confirm it is on its way to it.")


def profile(account: Account) -> Profile:
    address = account.address
    return Profile(
        account_id=account.id,
        tenant_id=account.tenant_id,
        email=str(account.email),
        name=str(account.name),
        phone=account.phone.value if account.phone else None,
        address={k: getattr(v, "value", v) for k, v in address.items()} if address else None,
        language=account.language,
        verified=account.is_verified,
        has_password=account.has_password,
        pending_email=account.pending_email.value if account.pending_email else None,
    )
