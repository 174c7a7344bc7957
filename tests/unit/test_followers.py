"""Followers of the notification log, in memory: positions move by compare-and-set.

Two instances of a follower on one store (what a misconfigured deployment, or the moment of a
leadership change, looks like): the one that loses the race reloads the stored position and
goes on from there; it does not handle its tail again at every backoff, and it is no error.
Leadership across instances on PostgreSQL is proven in tests/integration/test_leadership.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from eventsourcing.domain import Aggregate, event

from backbone.eventstore import ServiceApplication, store_env
from backbone.follower import Follower, PositionMoved, Recorded, read_log
from backbone.settings import StoreSettings


class Thing(Aggregate):
    @event("Touched")
    def touch(self) -> None:
        pass


class Counting(Follower):
    name = "things.counter"
    poll_interval = 0.01

    def __init__(self, app: ServiceApplication):
        super().__init__(app)
        self.handled: list[int] = []
        self.stale_start: int | None = None

    def load_position(self) -> int:
        if self.stale_start is not None:  # believes it is where it was before the other ran
            start, self.stale_start = self.stale_start, None
            return start
        return super().load_position()

    async def handle(self, batch: Sequence[Recorded]) -> None:
        self.handled += [r.position for r in batch]
        await self.blocking(self.commit_position, batch[-1].position)


@pytest.fixture
def app():
    app = ServiceApplication(env=store_env(StoreSettings(kind="memory"), "things"))
    for _ in range(5):
        thing = Thing()
        thing.touch()
        app.save(thing)
    return app


async def test_the_position_moves_only_from_where_the_batch_started(app):
    first, second = Counting(app), Counting(app)
    batch = read_log(app, 0, 100)
    await first.handle(batch)
    assert app.position("things.counter") == app.head() == 10
    with pytest.raises(PositionMoved):
        await second.handle(batch)  # started at 0: someone moved it meanwhile
    assert app.position("things.counter") == 10


async def test_a_follower_that_lost_a_race_reloads_instead_of_handling_its_tail_again(app):
    winner, loser = Counting(app), Counting(app)
    await winner.handle(read_log(app, 0, 100))
    loser.stale_start = 0
    task = asyncio.create_task(loser.run())
    await asyncio.wait_for(loser.caught_up.wait(), timeout=30)
    thing = Thing()
    thing.touch()
    app.save(thing)  # new work after the reload: handled once, from the stored position
    for _ in range(600):
        if loser.position == app.head():
            break
        await asyncio.sleep(0.05)
    loser.stop()
    await task
    assert loser.handled == [*range(1, 11), 11, 12]  # the lost batch once, then only new events
    assert loser.failures == 0  # not counted as a failure: no backoff, no error log
    assert app.position("things.counter") == 12


async def test_a_save_wakes_the_follower_and_it_wakes_those_waiting_for_it(app):
    follower = Counting(app)
    follower.poll_interval = 3600  # only the save in this process can wake it in time
    task = asyncio.create_task(follower.run())
    await asyncio.wait_for(follower.caught_up.wait(), timeout=30)
    head = app.head()
    # One waiter in a worker thread (an HTTP request's read-your-writes), one on the loop.
    in_thread = asyncio.create_task(asyncio.to_thread(follower.wait_past, head, 30))
    on_loop = asyncio.create_task(follower.reached(head + 2, 30))
    await asyncio.sleep(0.05)
    assert not in_thread.done() and not on_loop.done()  # nothing new: they wait
    thing = Thing()
    thing.touch()
    await asyncio.to_thread(app.save, thing)
    assert await in_thread is True
    assert await on_loop is True
    assert follower.position == head + 2
    assert await follower.reached(head + 3, 0.05) is False  # nothing beyond: not reached
    follower.stop()
    await task


async def test_a_follower_moves_while_every_thread_of_the_shared_pool_waits_for_it(app):
    """HTTP requests that wait for the projection hold threads of the loop's shared pool; the
    follower's own store work must not queue behind them."""
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    shared = ThreadPoolExecutor(1)
    loop.set_default_executor(shared)
    follower = Counting(app)
    follower.poll_interval = 3600
    task = asyncio.create_task(follower.run())
    await asyncio.wait_for(follower.caught_up.wait(), timeout=30)
    head = app.head()
    waiting = loop.run_in_executor(None, follower.wait_past, head, 30)  # the only shared thread
    thing = Thing()
    thing.touch()
    app.save(thing)
    try:
        assert await waiting is True
    finally:
        follower.stop()
        await task
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio"))  # for the next tests
        shared.shutdown()


class CountingInThread(Counting):
    """A follower whose handling is all blocking, like a projection: read, handled and
    announced in its own thread."""

    handles_in_thread = True

    def handle_in_thread(self, batch: Sequence[Recorded]) -> None:
        self.handled += [r.position for r in batch]
        self.commit_position(batch[-1].position)
        self._announce(batch[-1].position)


async def test_a_follower_handling_in_its_thread_is_woken_there_while_the_loop_is_busy(app):
    """A save wakes the follower in its own thread, and a request waiting for it (`wait_past`)
    is answered with the event loop blocked all along: nothing between the save and the
    handling goes through the loop (where HTTP requests queue under load). The loop's waiters
    (`reached`) are woken once it runs again."""
    from concurrent.futures import ThreadPoolExecutor

    follower = CountingInThread(app)
    follower.poll_interval = 3600  # only the save in this process can wake it in time
    task = asyncio.create_task(follower.run())
    await asyncio.wait_for(follower.caught_up.wait(), timeout=30)
    assert follower.handled == list(range(1, 11))
    head = app.head()
    on_loop = asyncio.create_task(follower.reached(head + 2, 30))
    await asyncio.sleep(0)

    def save_then_wait() -> bool:
        thing = Thing()
        thing.touch()
        app.save(thing)
        return follower.wait_past(head, 30)

    with ThreadPoolExecutor(1) as request:
        assert request.submit(save_then_wait).result(timeout=30) is True  # (blocks the loop)
    assert follower.handled == list(range(1, 13))
    assert app.position("things.counter") == head + 2
    assert await on_loop is True
    await asyncio.wait_for(follower.caught_up.wait(), timeout=30)
    follower.stop()
    await asyncio.wait_for(task, 30)
    assert follower.failures == 0
