"""Rate limits on what strangers can ask for: per email address and per client network.

Every request is counted *before* its work is done, in one atomic step that also says whether
it is over the limit (`take`): a burst of parallel requests cannot all pass a check made before
any of them was counted. Claims, verification resends, magic links and password resets keep
their count. Logins and links followed give it back when they succeed (`attempt`): a customer
who types the right password is never slowed down, a guesser is (NIST SP 800-63B 5.2.2). A
refused request costs nothing and gets 429 with Retry-After, whether or not the address has an
account. Addresses are counted under a keyed pseudonym, never in the clear.

A client is its network, not its address: an IPv6 host holds a whole /64 (every address in it
is one bucket), an IPv4 address is itself (IPv4-mapped IPv6 too).

Windows are fixed, starting at a key's first counted request (the `limits` library's fixed
window: an atomic increment that can be given back). The counters live in memory by default
(one instance); give `RATE_LIMIT_STORAGE` a shared storage (e.g. `async+redis://host:6379`)
when several instances serve the same tenants.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from backbone.auth import client_network
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
    # Logged in: guessing the current password, and mail sent to addresses of one's choosing.
    "password_change.account": "10/15 minutes",  # failed attempts
    "email_change.account": "5/hour",
}


@dataclass
class RateLimited(Exception):
    action: str
    retry_after: int  # seconds

    def __str__(self) -> str:
        return f"Too many requests. Try again in {self.retry_after} seconds."


Counted = list[tuple[RateLimitItem, tuple[str, ...]]]


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
        self.storage = storage_from_string(storage)
        self.limiter = FixedWindowRateLimiter(self.storage)
        self.pseudonym = pseudonym

    async def hit(self, action: str, tenant_id: str, email: str, client: str) -> None:
        """Count one request; RateLimited if the address or the client is over its limit."""
        await self.take(action, tenant_id, email, client)

    @asynccontextmanager
    async def attempt(
        self,
        action: str,
        tenant_id: str,
        email: str,
        client: str,
        failure: type[BaseException] | tuple[type[BaseException], ...],
    ) -> AsyncIterator[None]:
        """Count an attempt before it is made; give the count back unless it fails with
        `failure` (a wrong password, a token that does not work)."""
        counted = await self.take(action, tenant_id, email, client)
        try:
            yield
        except failure:
            raise
        except BaseException:
            await self.give_back(counted)
            raise
        await self.give_back(counted)

    async def take(self, action: str, tenant_id: str, email: str, client: str) -> Counted:
        """Count one request against every key of `action` at once, or none of them:
        RateLimited (and nothing counted) if any is over its limit."""
        counted: Counted = []
        for scope, key in self._keys(action, tenant_id, email, client):
            item, identifiers = self.items[f"{action}.{scope}"], (action, scope, key)
            allowed = await self.limiter.hit(item, *identifiers)
            counted.append((item, identifiers))
            if not allowed:
                stats = await self.limiter.get_window_stats(item, *identifiers)
                await self.give_back(counted)
                metrics.rate_limited.labels(action, scope).inc()
                raise RateLimited(action, max(1, math.ceil(stats.reset_time - time.time())))
        return counted

    async def give_back(self, counted: Counted) -> None:
        """Undo `take` (an increment by -1: atomic in every storage `limits` offers)."""
        for item, identifiers in counted:
            await self.storage.incr(item.key_for(*identifiers), item.get_expiry(), amount=-1)

    def _keys(self, action: str, tenant_id: str, email: str, client: str) -> list[tuple[str, str]]:
        keys = []
        if f"{action}.email" in self.items:
            keys.append(("email", self.pseudonym(tenant_id, email)))
        if f"{action}.account" in self.items:
            keys.append(("account", email))  # (the account's id, for a logged-in customer)
        if f"{action}.client" in self.items:
            keys.append(("client", client_network(client)))
        return keys
