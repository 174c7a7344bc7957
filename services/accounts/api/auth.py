"""Who is calling the accounts API: a customer (session), a staff member of the tenant in the
path (API key), or the platform's operator (admin token)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from backbone import context
from backbone.auth import FailureThrottle, customer_session, staff_member
from backbone.credentials import Session, SessionVerifier, same
from backbone.http import run_sync
from services.accounts.application import Accounts
from services.accounts.customers import SessionEnded

_bearer = HTTPBearer(auto_error=False)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def customer(accounts: Accounts, verifier: SessionVerifier) -> Callable[..., Any]:
    """A signed, unexpired session that still stands here: not logged out, not ended by a
    password change, its account active (checked on every request, like bookings does from
    `SessionsRevoked`)."""
    signed = customer_session(verifier)

    async def dependency(session: Session = Depends(signed)) -> Session:
        try:
            await run_sync(accounts.customer, session)
        except SessionEnded as ended:
            raise unauthorized(str(ended)) from None
        return session

    return dependency


def staff(accounts: Accounts) -> Callable[..., Any]:
    """A staff member's API key, for the tenant in the path only (see backbone.auth)."""
    return staff_member(accounts.staff_member)


def admin(token: SecretStr | None) -> Callable[..., Any]:
    """The platform operator's token (ADMIN_API_TOKEN): manages staff members, nothing else.
    Wrong tokens are throttled per client network (`backbone.auth.FailureThrottle`)."""
    throttle = FailureThrottle()

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> str:
        expected = token.get_secret_value() if token else ""
        if not expected:
            raise HTTPException(403, "The admin API is turned off (set ADMIN_API_TOKEN to use it).")
        if not await throttle.check(
            request, lambda: credentials is not None and same(credentials.credentials, expected)
        ):
            raise unauthorized("The admin token is required (Authorization: Bearer).")
        return "service:admin"

    return dependency


def cause(request: Request, actor: str, tenant_id: str | None) -> Any:
    return context.caused_by(actor, tenant_id, request.state.correlation_id)


def client_of(request: Request) -> str:
    """The caller's address (the proxy's X-Forwarded-For is honoured only from the addresses
    in uvicorn's FORWARDED_ALLOW_IPS, 127.0.0.1 by default)."""
    return request.client.host if request.client else "unknown"
