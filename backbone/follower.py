"""Following a service's own notification log from a durable position.

The notification log is the event store's total order of recorded events; eventsourcing keeps
it gap-free in commit order (SQLite serialises writers, PostgreSQL takes a table lock), so a
follower that remembers the last id it handled never misses an event. Two kinds of follower
use this loop: the outbox relay (log -> Kafka) and the projections (log -> read models).

A follower handles a batch, makes its position durable, and only then moves on; if handling
fails it retries the same batch with a growing pause, so nothing is skipped: neither a store
or broker outage (logged as such, without a traceback at every retry: `backbone.faults`) nor a
batch that keeps failing with everything healthy (logged with its traceback) moves it on. While
it retries, the `consumer_stalled` gauge is 1 for it. It wakes up as
soon as the application saves something in this process, and polls otherwise (another process,
or a write that came through another instance).

Its blocking work (the stores) runs in a thread of its own, not in the event loop's shared pool:
HTTP requests that wait for a follower (read-your-writes, `wait_past`) hold threads of that
pool, and a follower queued behind them would make them wait out their patience. Whoever waits
for a follower waits for its progress (`wait_past` from a thread, `reached` on the event loop),
woken as each batch is handled, never by polling.

A follower whose handling is all blocking (a projection: `handles_in_thread`) reads and handles
its batches in that thread, woken there by the save itself: between a save and its handling
the event loop is not involved. Before, each batch went thread -> loop -> thread -> loop (the
wake-up, the read, the handling), and under HTTP load every pass through the loop queued
behind the requests it was answering: a customer's confirm waited for the projection through
three of them (issue 10 goal 3, docs/performance.md).

With several instances of a service on one store, a follower runs only where it leads
(`backbone.leadership`): the others stand by and take over within seconds when the leader
dies. Its position moves by compare-and-set from where the batch started, under its lease
(`commit_position`): a write that lost a race, or comes from a stalled ex-leader, changes
nothing and makes the follower reload its stored position (`PositionMoved`), logged at INFO:
it is how coordination works, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from eventsourcing.persistence import IntegrityError, Tracking

from backbone import context, metrics
from backbone.eventstore import LeadershipLost, PositionChanged, ServiceApplication
from backbone.faults import cause_of
from backbone.leadership import Leadership, Sole
from backbone.logging import get_logger

log = get_logger(__name__)

R = TypeVar("R")


class PositionMoved(Exception):
    """The durable position is not where this follower left it: something else moved it (an
    operator's rebuild that switched a read model's tables, or a second instance of the same
    follower). Not an error: the follower resumes from the durable position."""


@dataclass(frozen=True)
class Recorded:
    """One domain event with its position in the notification log."""

    position: int
    event: Any


def read_log(app: ServiceApplication, after: int, limit: int) -> list[Recorded]:
    """Events recorded after `after`, oldest first (blocking: call it off the event loop)."""
    notifications = app.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
    events = app.recorded_events(notifications)
    return [Recorded(n.id, event) for n, event in zip(notifications, events, strict=True)]


class Wakeup:
    """Sleep until a timeout, or until the application saved something in this process."""

    def __init__(self, app: ServiceApplication, listen: bool = True):
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        if listen:  # (not for a follower woken in its thread: a callback on the loop per save)
            app.add_listener(self._set_threadsafe)

    def bind(self) -> None:
        """Call from the event loop that will sleep (saves happen in worker threads)."""
        self._loop = asyncio.get_running_loop()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        """Forget the saves so far: call it before looking at what they saved (the next
        `sleep` then ends at once only for a save made after)."""
        self._event.clear()

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=seconds)
        self._event.clear()

    def _set_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)


class Follower(ABC):
    """A loop that hands every recorded event, in order, to `handle` exactly once per position.

    Subclasses set `name` (`<service>.<what>`, also the name of its stored position), give
    `load_position`, and `handle` a batch ending with `commit_position` (or, for a projection,
    their own fenced transaction)."""

    name: str
    poll_interval = 0.5
    max_pause = 30.0
    handles_in_thread = False
    """True where `handle_in_thread` does all of a batch's work: batches are then read and
    handled in the follower's own thread, woken there by a save (`_drain`), not by the loop."""

    def __init__(self, app: ServiceApplication, batch_size: int = 500):
        self.app = app
        self.batch_size = batch_size
        self._wakeup = Wakeup(app, listen=not self.handles_in_thread)
        self._stopping = asyncio.Event()
        self.position = 0
        self.failures = 0
        self.caught_up = asyncio.Event()
        self.leadership: Leadership = Sole(getattr(self, "name", type(self).__name__))
        self._thread: ThreadPoolExecutor | None = None  # see `blocking`
        self._progress = threading.Condition()  # notified whenever `position` moves
        self._step = asyncio.Event()  # set (and replaced) whenever `position` moves
        self._saved = threading.Event()  # set by every save in this process (`_drain` waits on it)
        self._loop: asyncio.AbstractEventLoop | None = None
        if self.handles_in_thread:
            app.add_listener(self._saved.set)

    def lead_with(self, leadership: Leadership) -> None:
        """Run only while `leadership` holds (several instances on one store)."""
        self.leadership = leadership

    @property
    def leading(self) -> bool:
        return self.leadership.held

    async def blocking(self, func: Callable[..., R], *args: Any) -> R:
        """`asyncio.to_thread`, in this follower's own thread (see the module docstring)."""
        if self._thread is None:
            name = getattr(self, "name", type(self).__name__)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"follower:{name}")
        call = functools.partial(contextvars.copy_context().run, func, *args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    def wait_past(self, position: int, timeout: float) -> bool:
        """Block (a worker thread, not the event loop) until this follower has handled the log
        beyond `position`, or `timeout` seconds passed. True if it has."""
        with self._progress:
            return self._progress.wait_for(lambda: self.position > position, timeout)

    async def reached(self, position: int, patience: float) -> bool:
        """Wait until this follower has handled the log up to `position`, or `patience`
        seconds passed. True if it has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while self.position < position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._step.wait(), remaining)
        return True

    def _announce(self, position: int) -> None:
        """The log is handled up to `position`: wakes the threads waiting (`wait_past`). Call it
        from any thread, e.g. right after a commit in this follower's own."""
        self.position = position
        with self._progress:
            self._progress.notify_all()

    def _moved_to(self, position: int) -> None:
        """`_announce`, and wakes the tasks waiting (`reached`): on the event loop."""
        self._announce(position)
        self._stepped()

    def _stepped(self) -> None:
        """Wakes the tasks waiting (`reached`): on the event loop."""
        step, self._step = self._step, asyncio.Event()
        step.set()

    def load_position(self) -> int:
        """The durable position (blocking)."""
        return self.app.position(self.name) or 0

    def commit_position(self, position: int) -> None:
        """Move the stored position from where this batch started to `position`, under this
        instance's lease (blocking). `PositionMoved` if another writer moved it meanwhile."""
        try:
            self.app.record_position(Tracking(self.name, position), self.position, self.leadership.lease)
        except (PositionChanged, LeadershipLost) as error:
            raise PositionMoved(str(error)) from error
        except IntegrityError as error:  # e.g. a unique-key race on the first insert
            raise PositionMoved(f"{self.name}: {error}") from error
        self.position = position

    @abstractmethod
    async def handle(self, batch: Sequence[Recorded]) -> None:
        """Handle the batch and make `batch[-1].position` durable before returning."""

    def handle_in_thread(self, batch: Sequence[Recorded]) -> None:
        """`handle`, blocking, in the follower's thread (where `handles_in_thread`): handle the
        batch, make `batch[-1].position` durable, then `_announce` it."""
        raise NotImplementedError

    def _drain(self, patience: float) -> bool:
        """In the follower's thread: handle every batch there is; if there was none, wait up
        to `patience` seconds for a save in this process and handle what is there then. True
        if it handled any. Returns to the loop once caught up (its `idle`, `caught_up`, a stop
        or a lost leadership are the loop's)."""
        loop = self._loop
        assert loop is not None
        handled = False
        for waited in (False, True):
            if waited:
                if handled or self._stopping.is_set():
                    break
                loop.call_soon_threadsafe(self.caught_up.set)  # (before a wait of up to `patience`)
                if not self._saved.wait(patience):  # (`stop` sets it after `_stopping`)
                    break
            self._saved.clear()  # a save from now on ends the next wait at once
            while not self._stopping.is_set() and self.leadership.held:
                batch = read_log(self.app, self.position, self.batch_size)
                if not batch:
                    break
                loop.call_soon_threadsafe(self.caught_up.clear)
                with context.working():  # the batch's log lines share a correlation id
                    self.handle_in_thread(batch)
                handled = True
                loop.call_soon_threadsafe(self._stepped)  # (`wait_past` was woken by the handler)
        return handled

    async def idle(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Called when the follower has caught up (e.g. to flush side work)."""

    async def run(self) -> None:
        """Follow the log wherever this instance leads, until stopped."""
        self._wakeup.bind()
        try:
            while await self.leadership.acquire(self._stopping):
                await self._follow()
                if not self._stopping.is_set():
                    log.warning("no longer leading; standing by", follower=self.name)
                    self.caught_up.clear()
                    await self.leadership.release()
        finally:
            await self.leadership.release()
            if self._thread is not None:
                self._thread.shutdown(wait=False)
                self._thread = None

    async def _follow(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._moved_to(await self.blocking(self.load_position))
        log.info("follower started", follower=self.name, position=self.position)
        reload = False
        while not self._stopping.is_set() and self.leadership.held:
            try:
                if reload:
                    self._moved_to(await self.blocking(self.load_position))
                    reload = False
                if self.handles_in_thread:
                    await self.blocking(self._drain, self.poll_interval)
                    await self.idle()
                    self._moving()
                    self.caught_up.set()
                    continue
                batch = await self.blocking(read_log, self.app, self.position, self.batch_size)
                if batch:
                    self.caught_up.clear()
                    with context.working():  # the batch's log lines share a correlation id
                        await self.handle(batch)
                    self._moved_to(batch[-1].position)
                    self._moving()
                    continue
                await self.idle()
                self._moving()
                self.caught_up.set()
                await self._wakeup.sleep(self.poll_interval)
            except asyncio.CancelledError:
                raise
            except PositionMoved as moved:
                self.failures = 0
                log.info(
                    "position moved; resuming from the stored one", follower=self.name, detail=str(moved)
                )
                reload = True
                if not self.leadership.held:
                    return
            except Exception as error:
                self.failures += 1
                pause = min(self.max_pause, 0.2 * 2**self.failures)
                cause = await self.blocking(cause_of, error, self.app.unreachable_stores)
                metrics.stalled.labels(self.name).set(1)
                metrics.retries.labels(self.name, cause).inc()
                details = {"follower": self.name, "position": self.position, "attempt": self.failures}
                if cause == "outage":  # expected to pass: no traceback at every retry
                    log.warning(
                        "a store or the broker is unavailable; retrying the same batch",
                        error=f"{type(error).__name__}: {error}",
                        pause_seconds=pause,
                        **details,
                    )
                elif cause == "denied":  # an ACL: only an operator can fix it
                    log.error(
                        "Kafka denies this service; retrying the same batch until it is granted",
                        error=f"{type(error).__name__}: {error}",
                        pause_seconds=pause,
                        **details,
                    )
                else:
                    log.exception("follower failed, retrying the same batch", pause_seconds=pause, **details)
                await self._wakeup.sleep(pause)

    def _moving(self) -> None:
        if self.failures:
            log.info("follower moving again", follower=self.name, after_attempts=self.failures)
            self.failures = 0
        metrics.stalled.labels(self.name).set(0)

    def report_lag(self, lag: int) -> None:
        """Set the lag gauges (notifications recorded, not yet handled); measured on a timer
        (`backbone.runtime`), whether or not the follower moves."""
        metrics.follower_lag.labels(self.name).set(lag)

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        self._saved.set()
