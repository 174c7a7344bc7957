"""The accounts' deferred work queue through a store outage: retried in order, never dropped."""

from __future__ import annotations

import asyncio

import sqlalchemy.exc

from services.accounts.deferred import Deferred


async def test_work_failing_during_an_outage_is_retried_until_the_store_is_back():
    deferred = Deferred(capacity=10, max_pause=0.01)
    attempts: list[str] = []
    outage = {"left": 3}

    def claim() -> None:
        attempts.append("claim")
        if outage["left"]:
            outage["left"] -= 1
            raise sqlalchemy.exc.OperationalError("INSERT", {}, ConnectionRefusedError("refused"))

    done: list[str] = []
    worker = asyncio.create_task(deferred.run())
    deferred.submit("claim", claim)
    deferred.submit("magic_link", lambda: done.append("after"))  # waits behind it, in order
    await asyncio.wait_for(deferred.join(), 5)
    worker.cancel()
    assert attempts == ["claim"] * 4 and done == ["after"]


async def test_a_request_failing_while_every_store_answers_is_dropped_not_retried():
    deferred = Deferred(capacity=10, probe=lambda: [], max_pause=0.01)
    attempts: list[int] = []

    def bad() -> None:
        attempts.append(1)
        raise ValueError("not a store problem")

    worker = asyncio.create_task(deferred.run())
    deferred.submit("claim", bad)
    await asyncio.wait_for(deferred.join(), 5)
    worker.cancel()
    assert attempts == [1]


async def test_an_unknown_failure_is_retried_while_the_probe_finds_a_store_down():
    down = {"probes": 2}

    def probe() -> list[str]:
        if down["probes"]:
            down["probes"] -= 1
            return ["event store (OperationalError: could not connect)"]
        return []

    deferred = Deferred(capacity=10, probe=probe, max_pause=0.01)
    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        raise RuntimeError("wrapped by a library")

    worker = asyncio.create_task(deferred.run())
    deferred.submit("claim", flaky)
    await asyncio.wait_for(deferred.join(), 5)
    worker.cancel()
    assert len(attempts) == 3  # two outages seen by the probe, then the request's own failure
