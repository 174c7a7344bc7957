"""The services behind the portal, over their HTTP APIs: accounts, bookings, notifier.

The portal keeps nothing of its own. Every call carries the visitor's credential (a
customer's session token, or a staff member's API key), the visitor's address (accounts'
per-client rate limits honour X-Forwarded-For from the portal's address) and a correlation id.
An answer of 4xx becomes `Refused` with the service's own sentence; anything else that goes
wrong becomes `Unavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from backbone.http import CORRELATION_HEADER


class Refused(Exception):
    def __init__(self, status: int, detail: str, code: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.code = status, detail, code


class Unavailable(Exception):
    """A service did not answer, or answered with a 5xx."""


@dataclass(frozen=True)
class Caller:
    """Who the portal calls on behalf of."""

    credential: str | None = None
    client: str | None = None
    correlation_id: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        if self.client:
            headers["X-Forwarded-For"] = self.client
        if self.correlation_id:
            headers[CORRELATION_HEADER] = self.correlation_id
        return headers


class Backends:
    def __init__(self, accounts: str, bookings: str, notifier: str, timeout: float = 10.0):
        self.urls = {"accounts": accounts.rstrip("/"), "bookings": bookings.rstrip("/"), "notifier": notifier}
        self.urls["notifier"] = notifier.rstrip("/")
        # Keep-alive connections for as many calls as run at once (httpx keeps 20 by default:
        # under load the rest were opened and closed for every call).
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=30)
        self.http = httpx.AsyncClient(timeout=timeout, limits=limits)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        caller: Caller,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        url = f"{self.urls[service]}{path}"
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await self.http.request(method, url, headers=caller.headers(), json=json, params=clean)
        except httpx.HTTPError as error:
            raise Unavailable(f"{service} did not answer: {error}") from error
        if response.status_code >= 500:
            raise Unavailable(f"{service} answered {response.status_code}")
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            detail = body.get("detail") if isinstance(body, dict) else None
            code = body.get("code") if isinstance(body, dict) else None
            raise Refused(response.status_code, str(detail or response.reason_phrase), code)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # ----------------------------------------------------------------- public facts

    async def branding(self, tenant_id: str) -> dict[str, Any]:
        return await self.call("notifier", "GET", f"/v1/tenants/{tenant_id}/branding", Caller())
