"""Followers of the event log through a store outage: they stall on the same batch, say so in
a metric, and resume where they stopped; nothing is skipped (in memory; the real outages are
in tests/faults)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import sqlalchemy.exc
from eventsourcing.persistence import Tracking

from backbone import metrics
from backbone.domain import Aggregate, event
from backbone.eventstore import ServiceApplication
from backbone.follower import Follower, Recorded


class Thing(Aggregate):
    @event("Made")
    def __init__(self, n: int) -> None:
        self.n = n


class Flaky(Follower):
    """Handles batches into a list; the store 'is down' for the first `outage` attempts."""

    name = "test.flaky"

    def __init__(self, app: ServiceApplication, outage: int, error: Exception):
        super().__init__(app, batch_size=3)
        self.outage, self.error = outage, error
        self.handled: list[int] = []
        self.stalled_seen = False

    def load_position(self) -> int:
        return self.app.position(self.name) or 0

    async def handle(self, batch: Sequence[Recorded]) -> None:
        if self.outage:
            self.outage -= 1
            raise self.error
        self.handled += [r.event.n for r in batch]
        self.app.record_position(Tracking(self.name, batch[-1].position))


def _gauge(name: str) -> float:
    return metrics.REGISTRY.get_sample_value("consumer_stalled", {"consumer": name}) or 0.0


def _retries(name: str, cause: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("consumer_retries_total", {"consumer": name, "cause": cause}) or 0.0
    )


async def _run(follower: Flaky, expected: int) -> None:
    task = asyncio.create_task(follower.run())
    try:
        for _ in range(400):
            if _gauge(follower.name) == 1:
                follower.stalled_seen = True
            if len(follower.handled) >= expected and follower.caught_up.is_set():
                break
            await asyncio.sleep(0.01)
    finally:
        follower.stop()
        await task


async def test_a_follower_stalls_through_a_database_outage_and_resumes_where_it_stopped():
    app = ServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.save(*[Thing(n) for n in range(7)])
    outage = sqlalchemy.exc.OperationalError("SELECT", {}, Exception("connection refused"))
    follower = Flaky(app, outage=3, error=outage)
    follower.max_pause = 0.01
    before = _retries(follower.name, "outage")
    await _run(follower, 7)
    assert follower.handled == list(range(7))  # all, in order, once each
    assert follower.stalled_seen and _gauge(follower.name) == 0
    assert _retries(follower.name, "outage") - before == 3


async def test_a_batch_that_fails_with_every_store_answering_is_retried_too_never_skipped():
    app = ServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.save(*[Thing(n) for n in range(4)])
    follower = Flaky(app, outage=2, error=ValueError("a bug"))
    follower.max_pause = 0.01
    before = _retries(follower.name, "failure")
    await _run(follower, 4)
    assert follower.handled == list(range(4))
    assert _retries(follower.name, "failure") - before == 2
