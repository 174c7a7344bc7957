"""Every log line carries a correlation id: the request's, the message's, the batch's.

Whoever writes the line (structlog or a library's standard logger) and wherever it is written
(the event loop, or a worker thread where eventsourcing runs), an operator can find every line
a request or a message caused by one id. Lines no request or message caused carry the id of
the work in progress (a follower's batch) or, between units of work, the process's own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence

import httpx
import pytest
import structlog
from fastapi import Request

from backbone import context
from backbone.eventstore import ServiceApplication, store_env
from backbone.follower import Follower, Recorded
from backbone.http import create_api, run_sync
from backbone.logging import configure, get_logger
from backbone.settings import StoreSettings
from contracts.bookings import PlaceBooking
from tests.unit.test_followers import Thing
from tests.unit.test_inbox import CMDS, harness, place_booking, record  # noqa: F401 (fixture)

library = logging.getLogger("eventsourcing.test")  # a library's standard logger
log = get_logger("correlation-test")


@pytest.fixture
def lines(capsys) -> Iterator[Callable[[], list[dict]]]:
    """Configures the logs as a service does, when the test starts (pytest's capture of the
    setup phase is not the test's); returns what was logged since, one dict per line."""
    saved_config, root = structlog.get_config(), logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    started = False

    def read() -> list[dict]:
        nonlocal started
        if not started:
            started = True
            configure("correlation-test", fmt="json")
            return []
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]

    try:
        yield read
    finally:
        structlog.configure(**saved_config)
        root.handlers[:], root.level = saved_handlers, saved_level


def by_event(entries: list[dict]) -> dict[str, dict]:
    return {entry["event"]: entry for entry in entries}


async def test_every_line_of_a_request_carries_its_correlation_id_in_threads_too(lines):
    lines()
    api = create_api("t", "1", "t")

    @api.get("/work")
    async def work(request: Request) -> dict:
        log.info("in the handler")

        def blocking() -> None:  # where eventsourcing runs: a worker thread
            library.warning("from a library, in a worker thread")

        await run_sync(blocking)
        with context.caused_by("customer:1", "acme", request.state.correlation_id):
            await run_sync(lambda: log.info("in a use case"))
        return {}

    @api.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("a bug")

    sent = str(uuid.uuid4())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as client:
        assert (await client.get("/work", headers={"X-Correlation-Id": sent})).status_code == 200
        answer = await client.get("/boom")
    entries = by_event(lines())
    for event in ("in the handler", "from a library, in a worker thread", "in a use case"):
        assert entries[event]["correlation_id"] == sent, event
    assert entries["unhandled error"]["correlation_id"] == answer.headers["X-Correlation-Id"]


async def test_a_messages_lines_carry_its_correlation_id_and_a_batch_has_one_of_its_own(
    harness,  # noqa: F811 (the fixture of tests/unit/test_inbox.py)
    lines,
):
    _, inbox, _, _ = harness
    lines()
    place = inbox.handlers[PlaceBooking]

    def logging_handler(command, uow):  # runs in the inbox's worker thread
        library.warning("handling a command")
        return place(command, uow)

    inbox.handlers[PlaceBooking] = logging_handler
    command = place_booking()
    with context.working() as batch:  # what `Inbox._consume` does around a batch
        log.info("batch taken")
        await inbox.apply([record(CMDS, 0, 0, command), record(CMDS, 0, 1, b"{not json")])
    entries = by_event(lines())
    assert entries["handling a command"]["correlation_id"] == command["correlation_id"]
    assert entries["batch taken"]["correlation_id"] == batch != command["correlation_id"]
    assert entries["undecodable record dead-lettered"]["correlation_id"] == batch


class Logging(Follower):
    name = "things.logger"
    poll_interval = 0.01

    async def handle(self, batch: Sequence[Recorded]) -> None:
        log.info("follower handles a batch")
        await asyncio.to_thread(lambda: library.warning("follower works in a thread"))
        await asyncio.to_thread(self.commit_position, batch[-1].position)


async def test_a_followers_batch_shares_one_id_and_idle_lines_carry_the_process_id(lines):
    lines()
    app = ServiceApplication(env=store_env(StoreSettings(kind="memory"), "things"))
    thing = Thing()
    thing.touch()
    app.save(thing)
    follower = Logging(app)
    task = asyncio.create_task(follower.run())
    try:
        await asyncio.wait_for(follower.caught_up.wait(), timeout=30)
    finally:
        follower.stop()
        await asyncio.wait_for(task, timeout=30)
    log.info("nothing in progress")
    entries = lines()
    assert entries and all(entry.get("correlation_id") for entry in entries), entries
    found = by_event(entries)
    batch = found["follower handles a batch"]["correlation_id"]
    assert found["follower works in a thread"]["correlation_id"] == batch != context.INSTANCE
    assert found["follower started"]["correlation_id"] == context.INSTANCE
    assert found["nothing in progress"]["correlation_id"] == context.INSTANCE
