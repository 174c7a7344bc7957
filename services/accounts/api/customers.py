"""Customer routes: claim, links, login, sessions, profile.

Requests that name an email address (claim, resend, magic link, reset) answer 202 with the same
sentence for every address, before any work that depends on the address (`deferred.py`).
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request, Response

from backbone.credentials import Session, SessionSigner, SessionVerifier
from backbone.http import run_sync
from services.accounts import metrics
from services.accounts.api import auth
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
from services.accounts.deferred import Deferred
from services.accounts.domainmodel import Account, LinkRefused
from services.accounts.ratelimits import RateLimits

CLAIM_ANSWER = (
    "If this address can be used for an account, an email is on its way to it. Follow its link to finish."
)
LINK_ANSWER = "If this address has an account here, an email with a link is on its way to it."


def routes(
    api: FastAPI,
    accounts: Accounts,
    signer: SessionSigner,
    verifier: SessionVerifier,
    limits: RateLimits,
    deferred: Deferred,
) -> None:
    as_customer = auth.customer(accounts, verifier)

    def issue_session(account: Account) -> SessionToken:
        token, session = signer.issue(account.id, account.tenant_id, now=accounts.clock())
        return SessionToken(token=token, expires_at=session.expires_at)

    async def redeeming(request: Request, use: object, *args: object) -> Account:
        """Follow an emailed link; failures count against the client (token guessing)."""
        async with limits.attempt("link", "", "", auth.client_of(request), failure=LinkRefused):
            with auth.cause(request, "customer:anonymous", None):
                return await run_sync(use, *args)  # type: ignore[arg-type]

    # -------------------------------------------------------------- about an address

    @api.post(
        "/v1/tenants/{tenant_id}/accounts",
        status_code=202,
        response_model=Accepted,
        tags=["customers"],
        summary="Claim an account for an email address",
        responses={403: {"description": "Customer accounts are off for this business"}, 422: {}, 429: {}},
    )
    async def claim(tenant_id: Tenant, body: ClaimRequest, request: Request) -> Accepted:
        await run_sync(accounts.require_logins, tenant_id)
        await limits.hit("claim", tenant_id, body.email, auth.client_of(request))
        with auth.cause(request, "customer:anonymous", tenant_id):
            deferred.submit(
                "claim", lambda: accounts.claim_account(tenant_id, body.email, body.name, body.language)
            )
        return Accepted(detail=CLAIM_ANSWER)

    def link_request(path: str, action: str, purpose: str, summary: str) -> None:
        @api.post(
            path,
            status_code=202,
            response_model=Accepted,
            tags=["customers"],
            summary=summary,
            name=action,
            responses={403: {"description": "Customer accounts are off for this business"}, 429: {}},
        )
        async def request_link(tenant_id: Tenant, body: EmailRequest, request: Request) -> Accepted:
            await run_sync(accounts.require_logins, tenant_id)
            await limits.hit(action, tenant_id, body.email, auth.client_of(request))
            with auth.cause(request, "customer:anonymous", tenant_id):
                deferred.submit(action, lambda: accounts.request_link(tenant_id, body.email, purpose))  # type: ignore[arg-type]
            return Accepted(detail=LINK_ANSWER)

    link_request(
        "/v1/tenants/{tenant_id}/verification-requests",
        "verification",
        "verify",
        "Send the verification link of an unverified account again (the old one stops working)",
    )
    link_request(
        "/v1/tenants/{tenant_id}/magic-links",
        "magic_link",
        "magic_link",
        "Email a single-use login link, valid for minutes",
    )
    link_request(
        "/v1/tenants/{tenant_id}/password-resets",
        "password_reset",
        "password_reset",
        "Email a link to choose a new password",
    )

    # -------------------------------------------------------------- following links

    @api.post(
        "/v1/email-verifications",
        response_model=Verified,
        tags=["customers"],
        summary="Verify an email address with the token of the emailed link (and choose a password)",
        responses={
            400: {"description": "The link is invalid, used, replaced or expired"},
            403: {"description": "Customer accounts are off for this business"},
            409: {"description": "The new address was taken by another account meanwhile"},
            422: {"description": "The password is too weak, or not expected with this link"},
            429: {},
        },
    )
    async def verify(body: VerificationRequest, request: Request) -> Verified:
        account = await redeeming(
            request, accounts.verify_email, body.token, body.password, body.send_login_link
        )
        return Verified(account_id=account.id, has_password=account.has_password)

    @api.post(
        "/v1/new-passwords",
        response_model=PasswordSet,
        tags=["customers"],
        summary="Choose a password with the token of an invitation or reset link",
        responses={400: {}, 403: {}, 422: {"description": "The password is too weak"}, 429: {}},
    )
    async def new_password(body: NewPasswordRequest, request: Request) -> PasswordSet:
        account = await redeeming(request, accounts.set_password, body.token, body.password)
        return PasswordSet(account_id=account.id, detail="Your password is set. Log in with it.")

    @api.post(
        "/v1/magic-link-sessions",
        response_model=SessionToken,
        tags=["customers"],
        summary="Log in with the token of an emailed login link (single use)",
        responses={400: {}, 403: {}, 429: {}},
    )
    async def magic_session(body: TokenRequest, request: Request) -> SessionToken:
        try:
            account = await redeeming(request, accounts.log_in_by_link, body.token)
        except LinkRefused:
            metrics.logins.labels("magic_link", "refused").inc()
            raise
        metrics.logins.labels("magic_link", "ok").inc()
        return issue_session(account)

    # -------------------------------------------------------------- sessions

    @api.post(
        "/v1/tenants/{tenant_id}/sessions",
        response_model=SessionToken,
        tags=["customers"],
        summary="Log in with email and password",
        responses={401: {}, 403: {}, 429: {}},
    )
    async def log_in(tenant_id: Tenant, body: LoginRequest, request: Request) -> SessionToken:
        try:
            async with limits.attempt(
                "login", tenant_id, body.email, auth.client_of(request), failure=InvalidCredentials
            ):
                account = await run_sync(accounts.log_in, tenant_id, body.email, body.password)
        except InvalidCredentials:
            metrics.logins.labels("password", "refused").inc()
            raise
        metrics.logins.labels("password", "ok").inc()
        return issue_session(account)

    @api.delete(
        "/v1/me/session",
        status_code=204,
        tags=["customers"],
        summary="Log out: ends every session of the account issued until now",
    )
    async def log_out(request: Request, session: Session = Depends(as_customer)) -> Response:
        with auth.cause(request, f"customer:{session.account_id}", session.tenant_id):
            await run_sync(accounts.log_out, session)
        return Response(status_code=204)

    # -------------------------------------------------------------- my account

    @api.get("/v1/me", response_model=Profile, tags=["customers"], summary="My account")
    async def me(session: Session = Depends(as_customer)) -> Profile:
        return profile(await run_sync(accounts.customer, session))

    @api.patch("/v1/me", response_model=Profile, tags=["customers"], summary="Change my contact details")
    async def change_profile(
        body: ProfileChange, request: Request, session: Session = Depends(as_customer)
    ) -> Profile:
        with auth.cause(request, f"customer:{session.account_id}", session.tenant_id):
            account = await run_sync(accounts.change_profile, session, body.changes())
        return profile(account)

    @api.put(
        "/v1/me/password",
        response_model=SessionToken,
        tags=["customers"],
        summary="Change my password: ends every other session, answers with a new one",
        responses={403: {"description": "The current password is wrong"}, 422: {}, 429: {}},
    )
    async def change_password(
        body: PasswordChange, request: Request, session: Session = Depends(as_customer)
    ) -> SessionToken:
        # A stolen session must not become a way to guess the password (and lock the owner out).
        async with limits.attempt(
            "password_change", "", str(session.account_id), auth.client_of(request), failure=WrongPassword
        ):
            with auth.cause(request, f"customer:{session.account_id}", session.tenant_id):
                account = await run_sync(
                    accounts.change_password, session, body.current_password, body.new_password
                )
        return issue_session(account)

    @api.post(
        "/v1/me/email-change",
        status_code=202,
        response_model=Accepted,
        tags=["customers"],
        summary="Change my email address: it takes effect when the link sent to it is followed",
        responses={403: {"description": "The current password is wrong"}, 429: {}},
    )
    async def change_email(
        body: EmailChangeRequest, request: Request, session: Session = Depends(as_customer)
    ) -> Accepted:
        # Every request counts: each is a password guess, and mail to an address of one's choosing.
        await limits.hit("email_change", "", str(session.account_id), auth.client_of(request))
        await run_sync(accounts.check_password, session, body.current_password)
        with auth.cause(request, f"customer:{session.account_id}", session.tenant_id):
            deferred.submit("email_change", lambda: accounts.request_email_change(session, body.email))
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
