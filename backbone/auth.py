"""Who is calling: FastAPI dependencies for customer sessions, staff API keys and the auditor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol
from uuid import UUID

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from backbone.credentials import InvalidSession, Session, SessionVerifier, parse_staff_api_key, same

_bearer = HTTPBearer(auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def customer_session(verifier: SessionVerifier) -> Callable[..., Awaitable[Session]]:
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


def auditor(token: SecretStr | None) -> Callable[..., str]:
    """The read-only audit API's bearer token (AUDIT_API_TOKEN); unset, nobody gets in."""

    def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
        expected = token.get_secret_value() if token is not None else ""
        if not expected:
            raise _unauthorized("The audit API is not enabled on this instance (no AUDIT_API_TOKEN).")
        if credentials is None or not same(credentials.credentials, expected):
            raise _unauthorized("A valid audit API token is required (Authorization: Bearer).")
        return "auditor"

    return dependency
