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
window). The counters (`backbone.counters`) live in memory by default (one instance); with
several instances, `RATE_LIMIT_STORAGE=async+redis://:<password>@host:6379/0` makes every
instance count in one Redis, so a limit holds in total, not per instance. Taking a request's
counts and giving them back are each one atomic step there (a Lua script).

When that Redis does not answer, limited requests are refused with 503 and Retry-After
(`RateLimitsUnavailable`): never let through uncounted, never blamed on the caller. Requests
that are not limited keep working.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limits import RateLimitItem, parse

from backbone.auth import client_network
from backbone.counters import Count, CountersUnavailable, counters_from
from backbone.logging import get_logger
from services.accounts import metrics

log = get_logger(__name__)

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


class RateLimitsUnavailable(Exception):
    """The shared counters did not answer: the request cannot be counted, so it is refused
    (503, the server's fault), never let through unlimited."""

    retry_after = 5  # seconds

    def __str__(self) -> str:
        return "Requests of this kind cannot be accepted at the moment. Try again shortly."


Counted = list[Count]


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
        self.counters = counters_from(storage)
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
        RateLimited (and nothing counted) if any is over its limit; RateLimitsUnavailable if
        the counters cannot be reached."""
        scopes: list[str] = []
        counted: Counted = []
        for scope, key in self._keys(action, tenant_id, email, client):
            item = self.items[f"{action}.{scope}"]
            scopes.append(scope)
            counted.append(Count(item.key_for(action, scope, key), item.amount, item.get_expiry()))
        try:
            over = await self.counters.take(counted)
        except CountersUnavailable as error:
            log.error("rate_limits.unavailable", action=action, error=str(error))
            metrics.rate_limits_unavailable.labels(action).inc()
            raise RateLimitsUnavailable() from error
        if over is not None:
            metrics.rate_limited.labels(action, scopes[over.index]).inc()
            raise RateLimited(action, over.retry_after)
        return counted

    async def give_back(self, counted: Counted) -> None:
        """Undo `take`, in one step (a refund that cannot be made is logged: the count then
        lasts until its window ends)."""
        await self.counters.give_back(counted)

    def _keys(self, action: str, tenant_id: str, email: str, client: str) -> list[tuple[str, str]]:
        keys = []
        if f"{action}.email" in self.items:
            keys.append(("email", self.pseudonym(tenant_id, email)))
        if f"{action}.account" in self.items:
            keys.append(("account", email))  # (the account's id, for a logged-in customer)
        if f"{action}.client" in self.items:
            keys.append(("client", client_network(client)))
        return keys
