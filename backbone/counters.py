"""The counters rate limits take from and give back to: in this process, or on Redis, shared by
every instance of a service.

A request is counted *before* its work is done, against every key it is limited by at once
(`take`): all of them are counted, or, if any is at its limit, none is and the caller learns how
long to wait. What succeeded can be given back afterwards (`give_back`, e.g. a right password).
Each is one atomic step: a parallel burst spread over any number of instances cannot pass a
check made before the others were counted, and a refund cannot interleave with a count.

- `MemoryCounters` (``async+memory://``): the `limits` library's in-memory storage, one process.
  Its steps run on one event loop without yielding between a count and its check.
- `RedisCounters` (``async+redis://[:password@]host:port[/db]``, ``async+rediss://`` for TLS):
  each step is one Lua script, which Redis runs atomically. `limits` offers atomic steps for one
  key (its increment with expiry); a request limited by two keys (the address and the client)
  needs both counted or neither, so the scripts here do what its fixed window does, for several
  keys in one step.

Windows are fixed and start at a key's first count, exactly as `limits`' fixed window does
(the key expires a window after its count went from 0 to 1). A refund never takes a counter
below zero and never brings back one that expired.

When Redis does not answer (down, stalled past the timeout, refusing writes), `take` raises
`CountersUnavailable`: the caller refuses the request with 503 (fail closed, never silently
unlimited). It is the server's fault, never the request's. A refund that cannot be made is
logged and dropped: the count stays until its window ends, costing the customer one attempt.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from limits.aio.storage import MemoryStorage

from backbone.logging import get_logger

log = get_logger(__name__)

# A stalled Redis answers nothing: a limited request waits this long before its 503.
REDIS_TIMEOUT_SECONDS = 2.0
# Connections per instance; a request in a burst waits up to POOL_WAIT_SECONDS for one.
MAX_CONNECTIONS = 32
POOL_WAIT_SECONDS = 5.0
KEY_PREFIX = "booking-accounts:limits:"


@dataclass(frozen=True)
class Count:
    """One key a request is counted against, with its limit and window."""

    key: str
    limit: int
    window_seconds: int


@dataclass(frozen=True)
class OverLimit:
    """`take` counted nothing: ``counts[index]`` is at its limit for ``retry_after`` seconds more."""

    index: int
    retry_after: int


class CountersUnavailable(Exception):
    """The counters' store did not answer: an outage of the server, not the request's fault."""


class Counters(Protocol):
    async def take(self, counts: list[Count]) -> OverLimit | None:
        """Count one against every key, or none if any is at its limit (then: which, how long)."""

    async def give_back(self, counts: list[Count]) -> None:
        """Undo a `take` that returned None."""

    async def close(self) -> None: ...


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


class MemoryCounters:
    """In this process only (one instance): `limits`' MemoryStorage."""

    def __init__(self) -> None:
        self.storage = MemoryStorage()

    async def take(self, counts: list[Count]) -> OverLimit | None:
        taken: list[Count] = []
        for index, count in enumerate(counts):
            taken.append(count)
            if await self.storage.incr(count.key, count.window_seconds) > count.limit:
                reset = await self.storage.get_expiry(count.key)
                await self.give_back(taken)
                return OverLimit(index, _seconds(reset - time.time()))
        return None

    async def give_back(self, counts: list[Count]) -> None:
        for count in counts:
            await self.storage.decr(count.key)  # never below 0

    async def close(self) -> None:
        return None


# KEYS: the counters; ARGV: limit and window (ms) of each key in turn.
# Check every key, then count every key: nothing runs between the two (Redis runs a script
# atomically), so this is the count-first of the memory counters without a refund of refusals.
# A key counted from 0 to 1 starts its window, as `limits`' fixed window does.
TAKE = """
for i = 1, #KEYS do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[2 * i - 1]) then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
      ttl = tonumber(ARGV[2 * i])
    end
    return {i, ttl}
  end
end
for i = 1, #KEYS do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
  end
end
return {0, 0}
"""

# KEYS: the counters to give one back to. Never below zero, never a key that expired meanwhile
# (DECR would create it at -1, a free attempt in the next window); DECR keeps the expiry.
GIVE_BACK = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end
return 0
"""


class RedisCounters:
    """On one Redis server (or a Sentinel-managed primary), shared by every instance.

    Not for Redis Cluster: a request's keys are counted in one script and would have to share a
    hash slot. At most `max_connections` per instance; a request waits up to POOL_WAIT_SECONDS
    for one. Retries: one, at once, on a broken connection (a pooled connection to a server that
    restarted); none on a timeout, where the script may have run and a retry would count twice."""

    def __init__(
        self, url: str, timeout: float = REDIS_TIMEOUT_SECONDS, max_connections: int = MAX_CONNECTIONS
    ):
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError, TimeoutError)
        # A bounded pool that makes a burst wait its turn (each script takes microseconds):
        # without a bound, redis-py opens a connection per request in flight, and a burst of
        # thousands timed out connecting (measured: 3,000 takes at once).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url.removeprefix("async+"),
            max_connections=max_connections,
            timeout=POOL_WAIT_SECONDS,  # waiting for a free connection, behind the burst
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            health_check_interval=30,
        )
        self.client = redis.asyncio.Redis.from_pool(pool)
        self._take = self.client.register_script(TAKE)
        self._give_back = self.client.register_script(GIVE_BACK)

    async def take(self, counts: list[Count]) -> OverLimit | None:
        args: list[int] = []
        for count in counts:
            args += [count.limit, count.window_seconds * 1000]
        try:
            over, ttl_ms = await self._take(keys=[KEY_PREFIX + c.key for c in counts], args=args)
        except self._errors as error:
            raise CountersUnavailable(f"the rate limits' Redis did not answer: {_describe(error)}") from error
        if over == 0:
            return None
        return OverLimit(int(over) - 1, _seconds(int(ttl_ms) / 1000))

    async def give_back(self, counts: list[Count]) -> None:
        try:
            await self._give_back(keys=[KEY_PREFIX + c.key for c in counts])
        except self._errors as error:
            log.warning("rate_limits.give_back_failed", error=_describe(error), keys=len(counts))

    async def close(self) -> None:
        await self.client.aclose()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"[:300]


def counters_from(url: str) -> Counters:
    """The counters a RATE_LIMIT_STORAGE setting names; ValueError for any other kind."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("async+memory", "memory"):
        return MemoryCounters()
    if scheme in ("async+redis", "async+rediss", "redis", "rediss", "async+redis+unix", "unix"):
        return RedisCounters(url.replace("redis+unix://", "unix://"))
    raise ValueError(
        f"RATE_LIMIT_STORAGE {scheme}:// is not supported: use async+memory:// (one instance) or "
        "async+redis://[:password@]host:port[/db] (async+rediss:// for TLS), shared by every instance"
    )
