"""Who is calling: FastAPI dependencies for customer sessions, staff API keys and the auditor."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol
from uuid import UUID

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
from pydantic import SecretStr

from backbone.credentials import InvalidSession, Session, SessionVerifier, parse_staff_api_key, same

_bearer = HTTPBearer(auto_error=False)

OPERATOR_TOKEN_FAILURES = "20/15 minutes"  # noqa: S105 - a rate, not a secret; per client network, for the admin and audit tokens


def client_network(client: str) -> str:
    """The bucket a client address counts in: an IPv6 /64 (any host has a whole one to pick
    addresses from), or the IPv4 address itself (IPv4-mapped IPv6 too)."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client  # "unknown", or a name from a test client
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailureThrottle:
    """Wrong operator tokens per client network: each attempt is counted before the token is
    compared (so a parallel burst cannot slip through) and given back when it was right; over
    the limit, 429 without comparing. In memory, per instance."""

    def __init__(self, limit: str = OPERATOR_TOKEN_FAILURES):
        self.item = parse(limit)
        self.storage = MemoryStorage()
        self.limiter = FixedWindowRateLimiter(self.storage)

    async def check(self, request: Request, right: Callable[[], bool]) -> bool:
        client = client_network(request.client.host if request.client else "unknown")
        if not await self.limiter.hit(self.item, "operator_token", client):
            await self.storage.incr(self.item.key_for("operator_token", client), self.item.get_expiry(), -1)
            stats = await self.limiter.get_window_stats(self.item, "operator_token", client)
            retry_after = str(max(1, math.ceil(stats.reset_time - time.time())))
            raise HTTPException(
                429, "Too many wrong tokens. Try again later.", headers={"Retry-After": retry_after}
            )
        if right():
            await self.storage.incr(self.item.key_for("operator_token", client), self.item.get_expiry(), -1)
            return True
        return False


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def customer_session(verifier: SessionVerifier) -> Callable[..., Awaitable[Session]]:
    """The customer's `Session` from a bearer token (401 without a valid one): a dependency,
    or called with the credentials (`CustomerBearer`, the composition roots' app.state)."""

    # A coroutine, though it blocks on nothing: a plain function would be sent to the thread
    # pool, and that hand-over costs more than checking the signature.
    async def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Session:
        if credentials is None:
            raise _unauthorized("A customer session token is required (Authorization: Bearer).")
        try:
            return verifier.verify(credentials.credentials)
        except InvalidSession:
            raise _unauthorized("The session token is invalid or has expired.") from None

    return dependency


class CustomerBearer(HTTPBearer):
    """The customer's `Session` as ONE dependency: the bearer token read and checked by the
    `customer_session` the composition root put in `app.state.customer_session`. FastAPI spends
    some 30 µs of CPU on each dependency level it solves, about what checking a remembered
    token costs (`SessionVerifier`): the customers' reads take this one. Documented in OpenAPI
    as the same `HTTPBearer` scheme."""

    def __init__(self) -> None:
        super().__init__(auto_error=False, scheme_name="HTTPBearer")

    async def __call__(self, request: Request) -> Session:  # type: ignore[override]
        return await request.app.state.customer_session(await super().__call__(request))


class StaffKeyHolder(Protocol):
    id: UUID
    tenant_id: str

    def admits(self, key_hash: str) -> bool: ...


def staff_member(find: Callable[[UUID], StaffKeyHolder | None]) -> Callable[..., Awaitable[str]]:
    """A staff member's API key (issued by accounts, see `backbone.credentials`), for the
    tenant in the path only. `find` looks the member up by id (blocking: run in a thread).
    Gives the actor `staff:<id>` that their changes are recorded with."""

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> str:
        # From the path as the route declares (and validates) it: every staff route has one.
        tenant_id = request.path_params["tenant_id"]
        parsed = parse_staff_api_key(credentials.credentials) if credentials else None
        member = await asyncio.to_thread(find, parsed[0]) if parsed else None
        if parsed is None or member is None or not member.admits(parsed[1]):
            raise _unauthorized("A valid staff API key is required (Authorization: Bearer).")
        if member.tenant_id != tenant_id:
            raise HTTPException(403, "This staff API key belongs to another business.")
        return f"staff:{member.id}"

    return dependency


def auditor(token: SecretStr | None) -> Callable[..., Awaitable[str]]:
    """The read-only audit API's bearer token (AUDIT_API_TOKEN); unset, nobody gets in.
    Wrong tokens are throttled per client network (`FailureThrottle`)."""
    throttle = FailureThrottle()

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> str:
        expected = token.get_secret_value() if token is not None else ""
        if not expected:
            raise _unauthorized("The audit API is not enabled on this instance (no AUDIT_API_TOKEN).")
        if not await throttle.check(
            request, lambda: credentials is not None and same(credentials.credentials, expected)
        ):
            raise _unauthorized("A valid audit API token is required (Authorization: Bearer).")
        return "auditor"

    return dependency


def admin(token: SecretStr | None) -> Callable[..., Awaitable[str]]:
    """The platform operator's token (ADMIN_API_TOKEN); unset, the admin API is off. Wrong
    tokens are throttled per client network (`FailureThrottle`)."""
    throttle = FailureThrottle()

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> str:
        expected = token.get_secret_value() if token is not None else ""
        if not expected:
            raise HTTPException(403, "The admin API is turned off (set ADMIN_API_TOKEN to use it).")
        if not await throttle.check(
            request, lambda: credentials is not None and same(credentials.credentials, expected)
        ):
            raise _unauthorized("The admin token is required (Authorization: Bearer).")
        return "service:admin"

    return dependency
