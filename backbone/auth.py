"""Who is calling: FastAPI dependencies for customer sessions and the staff API token."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from backbone.credentials import InvalidSession, Session, SessionVerifier, same

_bearer = HTTPBearer(auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def customer_session(verifier: SessionVerifier) -> Callable[..., Session]:
    def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Session:
        if credentials is None:
            raise _unauthorized("A customer session token is required (Authorization: Bearer).")
        try:
            return verifier.verify(credentials.credentials)
        except InvalidSession:
            raise _unauthorized("The session token is invalid or has expired.") from None

    return dependency


def staff(token: SecretStr) -> Callable[..., str]:
    def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
        expected = token.get_secret_value()
        if credentials is None or not expected or not same(credentials.credentials, expected):
            raise _unauthorized("A valid staff API token is required (Authorization: Bearer).")
        return "staff:api"

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
