"""Lower: a few dozen clients could fill the deferred queue (the work behind claims and link
requests, done after the 202) and make claims answer 503 for everyone."""

from __future__ import annotations

import pytest

from backbone.http import Problem
from services.accounts.deferred import Deferred


async def test_a_few_dozen_clients_cannot_fill_the_queue_for_everyone():
    deferred = Deferred(capacity=1000, per_client=10)  # the defaults; no worker runs: all waits
    refusals = []
    for flooder in range(36):  # three dozen clients, 50 requests each, as fast as they can
        for _ in range(50):
            try:
                deferred.submit("claim", lambda: None, f"198.51.100.{flooder}")
            except Problem as problem:
                refusals.append((problem.status, problem.code))
    assert deferred.queue.qsize() == 360 and refusals == [(429, "rate_limited")] * 36 * 40
    deferred.submit("claim", lambda: None, "203.0.113.5")  # anyone else still gets in


async def test_an_ipv6_client_cannot_take_more_shares_with_more_addresses():
    deferred = Deferred(capacity=1000, per_client=10)
    for i in range(10):
        deferred.submit("claim", lambda: None, f"2001:db8:5:6::{i + 1:x}")
    with pytest.raises(Problem):
        deferred.submit("claim", lambda: None, "2001:db8:5:6::ffff")


async def test_a_clients_share_frees_up_as_its_requests_are_done():
    deferred = Deferred(capacity=1000, per_client=2)
    done = []
    for i in range(2):
        deferred.submit("claim", lambda i=i: done.append(i), "192.0.2.9")
    with pytest.raises(Problem):
        deferred.submit("claim", lambda: None, "192.0.2.9")
    while not deferred.queue.empty():
        await deferred._do(*deferred.queue.get_nowait())
    assert done == [0, 1]
    deferred.submit("claim", lambda: None, "192.0.2.9")
