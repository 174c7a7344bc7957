"""Rate limits per address and per client network, and what a refusal says."""

from __future__ import annotations

import asyncio

import pytest

from backbone.auth import client_network
from services.accounts.ratelimits import RateLimited, RateLimits


class WrongPassword(Exception):
    pass


async def test_an_address_is_limited_whichever_client_asks():
    rate = RateLimits(lambda t, e: f"{t}/{e}", {"claim.email": "2/minute"})
    await rate.hit("claim", "t", "a@example.com", "10.0.0.1")
    await rate.hit("claim", "t", "a@example.com", "10.0.0.2")
    with pytest.raises(RateLimited) as limited:
        await rate.hit("claim", "t", "a@example.com", "10.0.0.3")
    assert 1 <= limited.value.retry_after <= 60
    await rate.hit("claim", "t", "b@example.com", "10.0.0.3")  # another address is fine
    await rate.hit("claim", "other-tenant", "a@example.com", "10.0.0.3")  # so is another tenant


async def test_a_client_is_limited_whichever_address_it_asks_about():
    rate = RateLimits(lambda t, e: f"{t}/{e}", {"magic_link.client": "3/hour"})
    for i in range(3):
        await rate.hit("magic_link", "t", f"{i}@example.com", "10.0.0.9")
    with pytest.raises(RateLimited) as limited:
        await rate.hit("magic_link", "t", "new@example.com", "10.0.0.9")
    assert limited.value.retry_after > 60


async def fail(rate: RateLimits, email: str, client: str) -> None:
    with pytest.raises(WrongPassword):
        async with rate.attempt("login", "t", email, client, failure=WrongPassword):
            raise WrongPassword


async def test_logins_count_failures_only():
    rate = RateLimits(lambda t, e: f"{t}/{e}", {"login.email": "2/minute"})
    for _ in range(5):  # successful logins give their count back
        async with rate.attempt("login", "t", "a@example.com", "10.0.0.1", failure=WrongPassword):
            pass
    await fail(rate, "a@example.com", "10.0.0.1")
    await fail(rate, "a@example.com", "10.0.0.2")
    with pytest.raises(RateLimited):
        async with rate.attempt("login", "t", "a@example.com", "10.0.0.3", failure=WrongPassword):
            pass


async def test_an_attempt_is_counted_before_it_is_made_so_a_parallel_burst_cannot_pass():
    rate = RateLimits(lambda t, e: f"{t}/{e}", {"login.email": "3/minute"})
    started = 0

    async def slow_wrong_password() -> str:
        nonlocal started
        try:
            async with rate.attempt("login", "t", "a@example.com", "10.0.0.1", failure=WrongPassword):
                started += 1
                await asyncio.sleep(0.05)  # argon2
                raise WrongPassword
        except WrongPassword:
            return "401"
        except RateLimited:
            return "429"

    answers = await asyncio.gather(*(slow_wrong_password() for _ in range(20)))
    assert sorted(answers).count("401") == 3 and started == 3


async def test_a_refused_request_costs_nothing_on_its_other_keys():
    rate = RateLimits(lambda t, e: f"{t}/{e}", {"claim.client": "1/minute", "claim.email": "2/minute"})
    await rate.hit("claim", "t", "a@example.com", "10.0.0.1")
    with pytest.raises(RateLimited):
        await rate.hit("claim", "t", "a@example.com", "10.0.0.1")  # the client is over
    await rate.hit("claim", "t", "a@example.com", "10.0.0.2")  # the address still had one left


def test_an_ipv6_client_is_its_64_and_an_ipv4_client_its_address():
    assert client_network("2001:db8:1:2:aaaa::1") == client_network("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:3::1") != client_network("2001:db8:1:2::1")
    assert client_network("::ffff:192.0.2.7") == client_network("192.0.2.7") == "192.0.2.7"
    assert client_network("unknown") == "unknown"


def test_unknown_limits_are_refused_at_start():
    with pytest.raises(ValueError, match="unknown rate limits"):
        RateLimits(lambda t, e: e, {"clam.email": "1/second"})
