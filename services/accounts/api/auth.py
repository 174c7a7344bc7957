"""Who is calling the accounts API, and what its routes are given: `Annotated` dependencies,
resolved from `app.state`, which the composition root (`services/accounts/bootstrap.py`) fills
through `services.accounts.api.install`.

A customer (session), a staff member of the tenant in the path (API key), or the platform's
operator (admin token). Each dependency is a coroutine that blocks on nothing: a plain
function would be sent to the thread pool on every request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backbone import context
from backbone.credentials import Session, SessionSigner
from backbone.http import run_sync
from services.accounts.application import Accounts
from services.accounts.customers import SessionEnded
from services.accounts.deferred import Deferred
from services.accounts.ratelimits import RateLimits
from services.accounts.views import StaffQueries

_bearer = HTTPBearer(auto_error=False)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def _accounts(request: Request) -> Accounts:
    return request.app.state.accounts


async def _signer(request: Request) -> SessionSigner:
    return request.app.state.signer


async def _limits(request: Request) -> RateLimits:
    return request.app.state.limits


async def _deferred(request: Request) -> Deferred:
    return request.app.state.deferred


async def _queries(request: Request) -> StaffQueries:
    return request.app.state.staff_queries


async def _customer(request: Request, credentials: Bearer) -> Session:
    """A signed, unexpired session that still stands here: not logged out, not ended by a
    password change, its account active (checked on every request, like bookings does from
    `SessionsRevoked`)."""
    state = request.app.state
    session: Session = await state.customer_session(credentials)
    try:
        await run_sync(state.accounts.customer, session)
    except SessionEnded as ended:
        raise unauthorized(str(ended)) from None
    return session


async def _staff(request: Request, credentials: Bearer) -> str:
    """A staff member's API key, for the tenant in the path only (see backbone.auth)."""
    return await request.app.state.staff_member(request, credentials)


async def _admin(request: Request, credentials: Bearer) -> str:
    return await request.app.state.admin(request, credentials)


App = Annotated[Accounts, Depends(_accounts)]
Signer = Annotated[SessionSigner, Depends(_signer)]
Limits = Annotated[RateLimits, Depends(_limits)]
Later = Annotated[Deferred, Depends(_deferred)]
Queries = Annotated[StaffQueries, Depends(_queries)]
Customer = Annotated[Session, Depends(_customer)]
Staff = Annotated[str, Depends(_staff)]  # the actor, staff:<id>
Admin = Annotated[str, Depends(_admin)]  # the actor, service:admin


def cause(request: Request, actor: str, tenant_id: str | None) -> Any:
    return context.caused_by(actor, tenant_id, request.state.correlation_id)


def client_of(request: Request) -> str:
    """The caller's address (the proxy's X-Forwarded-For is honoured only from the addresses
    in uvicorn's FORWARDED_ALLOW_IPS, 127.0.0.1 by default)."""
    return request.client.host if request.client else "unknown"
