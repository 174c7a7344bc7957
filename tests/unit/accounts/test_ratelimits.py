"""Rate limits per address and per client, and what a refusal says."""

from __future__ import annotations

import pytest

from services.accounts.ratelimits import RateLimited, RateLimits


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


async def test_logins_count_failures_only():
    rate = RateLimits(lambda t, e: f"{t}/{e}", {"login.email": "2/minute"})
    for _ in range(5):
        await rate.check("login", "t", "a@example.com", "10.0.0.1")  # successful logins: not counted
    await rate.count("login", "t", "a@example.com", "10.0.0.1")
    await rate.count("login", "t", "a@example.com", "10.0.0.2")
    with pytest.raises(RateLimited):
        await rate.check("login", "t", "a@example.com", "10.0.0.3")


def test_unknown_limits_are_refused_at_start():
    with pytest.raises(ValueError, match="unknown rate limits"):
        RateLimits(lambda t, e: e, {"clam.email": "1/second"})
