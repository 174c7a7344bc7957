"""The lag gauges move on a timer, not only when a batch succeeds.

A consumer whose batch cannot finish (here: held, as a store outage or a slow handler would
hold it) applies nothing, so a gauge set after each successful batch would stay at its last
value while the backlog grows: the moment an operator needs it most. On a real broker, with a
bookings service in this process measuring every 0.2 s.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from backbone import metrics
from backbone.credentials import load_or_create_signing_key, public_path
from backbone.signing import key_settings
from services.bookings.bootstrap import bootstrap
from services.bookings.settings import BookingsSettings
from tests.support.system import publish

pytestmark = pytest.mark.integration


def lag_of(consumer: str, topic: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "inbox_lag_messages", {"consumer": consumer, "topic": topic, "partition": "0"}
    )


async def until(predicate, seconds: float = 60, what: str = "condition"):
    for _ in range(int(seconds / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"waited {seconds}s for {what}")


async def test_a_held_consumers_lag_grows_on_the_gauge_and_falls_once_it_moves(
    tmp_path, kafka_bootstrap_servers
):
    namespace = f"lag-{uuid.uuid4().hex[:8]}"
    key = tmp_path / "keys" / "session-signing-key.pem"
    load_or_create_signing_key(key)
    service = bootstrap(
        BookingsSettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            topic_namespace=namespace,
            topic_partitions=1,
            data_dir=tmp_path / "bookings",
            session_public_key_file=public_path(key),
            lag_interval_seconds=0.2,
            **key_settings(tmp_path / "keys" / "bus", "bookings"),
        )
    )
    inbox = service.consumers[0]
    commands = f"{namespace}.bookings.commands"
    await service.start()
    try:
        await until(lambda: lag_of(inbox.name, commands) == 0, what="the inbox to report its partition")
        async with inbox._lock:  # the batch in progress does not finish
            records = [(b"k", json.dumps({"n": n}).encode(), {}) for n in range(5)]
            await publish(kafka_bootstrap_servers, commands, records)
            await until(lambda: lag_of(inbox.name, commands) == 5, what="the lag of 5 on the gauge")
        # Moving again: the records are refused (unsigned) and dead-lettered, and applied.
        await until(lambda: lag_of(inbox.name, commands) == 0, what="the lag back to 0")
        for follower in service.followers:  # every follower's lag is measured too
            await until(
                lambda f=follower: (
                    metrics.REGISTRY.get_sample_value("follower_lag_notifications", {"follower": f.name}) == 0
                ),
                what=f"{follower.name}'s lag",
            )
    finally:
        await service.stop()
