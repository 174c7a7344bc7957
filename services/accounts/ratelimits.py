"""Rate limits on what strangers can ask for: per email address and per client (IP address).

Claims, verification resends, magic links and password resets count every request; logins count
failures only (a customer who types the right password is never slowed down, a guesser is;
NIST SP 800-63B 5.2.2). A refused request gets 429 with Retry-After, whether or not the
address has an account. Addresses are counted under a keyed pseudonym, never in the clear.

The counters live in memory by default (one instance); give `RATE_LIMIT_STORAGE` a shared
storage (e.g. `async+redis://host:6379`) when several instances serve the same tenants.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from services.accounts import metrics

DEFAULTS: dict[str, str] = {
    "claim.email": "5/hour",
    "claim.client": "30/hour",
    "verification.email": "5/hour",
    "verification.client": "30/hour",
    "magic_link.email": "5/hour",
    "magic_link.client": "30/hour",
    "password_reset.email": "5/hour",
    "password_reset.client": "30/hour",
    "login.email": "10/15 minutes",  # failed attempts
    "login.client": "100/15 minutes",  # failed attempts
    "link.client": "30/15 minutes",  # links followed with a token that did not work (guessing)
}


@dataclass
class RateLimited(Exception):
    action: str
    retry_after: int  # seconds

    def __str__(self) -> str:
        return f"Too many requests. Try again in {self.retry_after} seconds."


class RateLimits:
    def __init__(
        self,
        pseudonym: Callable[[str, str], str],
        overrides: Mapping[str, str] | None = None,
        storage: str = "async+memory://",
    ):
        unknown = set(overrides or {}) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown rate limits {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        self.items: dict[str, RateLimitItem] = {
            k: parse(v) for k, v in {**DEFAULTS, **(overrides or {})}.items()
        }
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage))
        self.pseudonym = pseudonym

    async def hit(self, action: str, tenant_id: str, email: str, client: str) -> None:
        """Count one request; RateLimited if the address or the client is over its limit."""
        await self.check(action, tenant_id, email, client)
        await self.count(action, tenant_id, email, client)

    async def count(self, action: str, tenant_id: str, email: str, client: str) -> None:
        """Count one request (e.g. a failed login) without refusing it."""
        for scope, key in self._keys(action, tenant_id, email, client):
            await self.limiter.hit(self.items[f"{action}.{scope}"], action, scope, key)

    async def check(self, action: str, tenant_id: str, email: str, client: str) -> None:
        """RateLimited if the address or the client has no request left, without counting."""
        for scope, key in self._keys(action, tenant_id, email, client):
            item = self.items[f"{action}.{scope}"]
            if not await self.limiter.test(item, action, scope, key):
                stats = await self.limiter.get_window_stats(item, action, scope, key)
                metrics.rate_limited.labels(action, scope).inc()
                raise RateLimited(action, max(1, math.ceil(stats.reset_time - time.time())))

    def _keys(self, action: str, tenant_id: str, email: str, client: str) -> list[tuple[str, str]]:
        keys = [("client", client)]
        if f"{action}.email" in self.items:
            keys.insert(0, ("email", self.pseudonym(tenant_id, email)))
        return keys
