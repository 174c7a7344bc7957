"""The rate limits' counters (`backbone/counters.py`): the same rules in memory and on a real
Redis, and on Redis the rules hold across instances (several clients, as several processes
would be) and fail closed when the server does not answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from backbone.counters import (
    KEY_PREFIX,
    Count,
    Counters,
    CountersUnavailable,
    MemoryCounters,
    RedisCounters,
    counters_from,
)
from deploy.local._proc import free_ports
from deploy.local.redis import LocalRedis, RedisParams
from services.accounts.ratelimits import RateLimits, RateLimitsUnavailable


def key() -> str:
    return f"test/{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Counters]:
    if request.param == "memory":
        made: Counters = MemoryCounters()
    else:
        made = RedisCounters(request.getfixturevalue("redis").rate_limit_storage)
    yield made
    await made.close()


async def test_counts_up_to_the_limit_then_refuses_with_the_time_left(counters: Counters):
    count = Count(key(), limit=3, window_seconds=60)
    for _ in range(3):
        assert await counters.take([count]) is None
    over = await counters.take([count])
    assert over is not None and over.index == 0 and 1 <= over.retry_after <= 60


async def test_every_key_is_counted_or_none_is(counters: Counters):
    address, client = Count(key(), 2, 60), Count(key(), 1, 60)
    assert await counters.take([address, client]) is None
    over = await counters.take([address, client])
    assert over is not None and over.index == 1  # the client ran out ...
    assert await counters.take([address, Count(key(), 1, 60)]) is None  # ... the address had one left
    assert await counters.take([address]) is not None


async def test_a_refund_gives_back_every_key_and_never_goes_below_zero(counters: Counters):
    address, client = Count(key(), 1, 60), Count(key(), 5, 60)
    assert await counters.take([address, client]) is None
    await counters.give_back([address, client])
    await counters.give_back([address, client])  # a second refund is not a credit
    assert await counters.take([address]) is None
    assert await counters.take([address]) is not None


async def test_a_window_starts_at_the_first_count_and_ends_a_window_later(counters: Counters):
    count = Count(key(), 1, window_seconds=1)
    assert await counters.take([count]) is None
    assert await counters.take([count]) is not None
    await asyncio.sleep(1.3)
    assert await counters.take([count]) is None


async def test_a_refund_after_the_window_ended_does_not_credit_the_next(redis: RedisParams):
    counters = RedisCounters(redis.rate_limit_storage)
    try:
        count = Count(key(), 1, window_seconds=1)
        assert await counters.take([count]) is None
        await asyncio.sleep(1.3)  # the key expired while the attempt was being made
        await counters.give_back([count])
        assert await counters.client.exists(KEY_PREFIX + count.key) == 0  # not recreated at -1
        assert await counters.take([count]) is None
        assert await counters.take([count]) is not None
    finally:
        await counters.close()


async def test_a_parallel_burst_from_two_instances_gets_exactly_the_limit(redis: RedisParams):
    """Two clients with pools of their own (two processes would be the same): 60 attempts at
    once against a limit of 7 on the address, each on a client key of its own too."""
    instances = [RedisCounters(redis.rate_limit_storage) for _ in range(2)]
    try:
        address = key()

        async def attempt(n: int) -> bool:
            counts = [Count(address, 7, 60), Count(key(), 100, 60)]
            return await instances[n % 2].take(counts) is None

        passed = await asyncio.gather(*(attempt(n) for n in range(60)))
        assert sum(passed) == 7
        stored = await instances[0].client.get(KEY_PREFIX + Count(address, 7, 60).key)
        assert int(stored) == 7  # refusals counted nothing
    finally:
        for instance in instances:
            await instance.close()


async def test_a_burst_larger_than_the_connection_pool_waits_its_turn(redis: RedisParams):
    """Without a bound, redis-py opened a connection per request in flight, and a burst of 3,000
    takes at once failed to connect for 2,932 of them (503s): the pool is bounded, a request
    waits for a free connection."""
    counters = RedisCounters(redis.rate_limit_storage, max_connections=4)
    try:
        count = Count(key(), 25, 60)
        answers = await asyncio.gather(*(counters.take([count]) for _ in range(500)), return_exceptions=True)
        assert not [a for a in answers if isinstance(a, BaseException)]
        assert sum(a is None for a in answers) == 25
    finally:
        await counters.close()


async def test_refunds_and_counts_interleaved_across_instances_keep_the_books(redis: RedisParams):
    """Attempts that succeed give their count back while others are counted: whatever the
    interleaving, the count left is the attempts that failed, never more than the limit."""
    instances = [RedisCounters(redis.rate_limit_storage) for _ in range(2)]
    try:
        count = Count(key(), 10, 60)

        async def attempt(n: int) -> str:
            counters = instances[n % 2]
            if await counters.take([count]) is not None:
                return "refused"
            if n % 3 == 0:  # a right password
                await counters.give_back([count])
                return "ok"
            return "failed"

        answers = await asyncio.gather(*(attempt(n) for n in range(90)))
        stored = int(await instances[0].client.get(KEY_PREFIX + count.key))
        assert stored == answers.count("failed") <= 10
        assert answers.count("ok") >= 1 and answers.count("refused") >= 60
    finally:
        for instance in instances:
            await instance.close()


async def test_a_redis_that_does_not_listen_is_an_outage_not_a_pass():
    (port,) = free_ports(1)
    counters = RedisCounters(f"async+redis://127.0.0.1:{port}/0", timeout=0.5)
    try:
        with pytest.raises(CountersUnavailable, match="did not answer"):
            await counters.take([Count(key(), 5, 60)])
        await counters.give_back([Count(key(), 5, 60)])  # logged, not raised: nothing to undo
    finally:
        await counters.close()


async def test_a_stalled_redis_times_out_and_a_restarted_one_counts_again():
    with LocalRedis() as server:
        counters = RedisCounters(server.params.rate_limit_storage, timeout=0.5)
        try:
            count = Count(key(), 5, 60)
            assert await counters.take([count]) is None
            server.pause()
            try:
                with pytest.raises(CountersUnavailable, match="Timeout"):
                    await counters.take([count])
            finally:
                server.resume()
            server.kill()
            with pytest.raises(CountersUnavailable):
                await counters.take([count])
            server.restart()  # a fresh server: the pooled connections are broken, the scripts unknown
            assert await counters.take([count]) is None
        finally:
            await counters.close()


async def test_rate_limits_refuse_with_503_reason_when_their_redis_is_gone():
    (port,) = free_ports(1)
    limits = RateLimits(lambda t, e: f"{t}/{e}", {}, f"async+redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(RateLimitsUnavailable):
            await limits.hit("claim", "t", "a@example.com", "10.0.0.1")
    finally:
        await limits.counters.close()


def test_only_memory_and_redis_are_accepted():
    assert isinstance(counters_from("async+memory://"), MemoryCounters)
    assert isinstance(counters_from("async+redis://:pw@127.0.0.1:6379/0"), RedisCounters)
    with pytest.raises(ValueError, match="not supported"):
        counters_from("async+memcached://127.0.0.1:11211")
