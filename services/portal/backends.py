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

import aiohttp
import orjson

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
    """The HTTP client of every call, over keep-alive connections (aiohttp: the portal makes
    two or three calls per page, and httpx's client cost more CPU than rendering the page)."""

    def __init__(self, accounts: str, bookings: str, notifier: str, timeout: float = 10.0):
        self.urls = {"accounts": accounts.rstrip("/"), "bookings": bookings.rstrip("/"), "notifier": notifier}
        self.urls["notifier"] = notifier.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:  # made in the event loop that uses it (the server's)
            connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=30)
            self._http = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

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
        clean = {k: str(v) for k, v in (params or {}).items() if v not in (None, "")}
        try:
            async with self.http.request(
                method, url, headers=caller.headers(), json=json, params=clean
            ) as response:
                status, reason, content = response.status, response.reason, await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise Unavailable(f"{service} did not answer: {error!r}") from error
        if status >= 500:
            raise Unavailable(f"{service} answered {status}")
        if status >= 400:
            try:
                body = orjson.loads(content)
            except ValueError:
                body = {}
            detail = body.get("detail") if isinstance(body, dict) else None
            code = body.get("code") if isinstance(body, dict) else None
            raise Refused(status, str(detail or reason or status), code)
        if status == 204 or not content:
            return None
        return orjson.loads(content)

    # ----------------------------------------------------------------- public facts

    async def branding(self, tenant_id: str) -> dict[str, Any]:
        return await self.call("notifier", "GET", f"/v1/tenants/{tenant_id}/branding", Caller())
