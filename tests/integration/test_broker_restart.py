"""The broker dies (kill -9) in the middle of the work and comes back on the same address:
the services reconnect on their own, nothing is lost, nothing is applied twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from services.bookings.domainmodel import Booking
from tests.support.system import (
    System,
    all_events,
    command_record,
    decode,
    open_store,
    place_booking_command,
    publish,
    read_topic,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 400


def test_services_ride_out_a_broker_kill(tmp_path, local_kafka, mail_server):
    kafka = local_kafka.bootstrap_servers
    system = System(
        tmp_path,
        kafka,
        mail_server.port,
        overrides={"bookings": {"CONSUMER_BATCH_SIZE": "10", "RELAY_BATCH_SIZE": "10"}},
    )
    system.start("bookings")
    commands = [place_booking_command("restart-tours", f"g{i}@example.com") for i in range(N)]
    asyncio.run(publish(kafka, system.topic("bookings.commands"), map(command_record, commands)))

    def outcomes():
        return decode(asyncio.run(read_topic(kafka, system.topic("bookings.command-outcomes"))))

    wait_for(lambda: len(outcomes()) >= 50, timeout=60, interval=0.05, what="50 outcomes")
    local_kafka.kill()
    time.sleep(3)  # the services see the broker gone: relay and consumer retry
    started = time.monotonic()
    assert local_kafka.restart() == kafka
    wait_for(
        lambda: len({o["command_id"] for o in outcomes()}) == N,
        timeout=180,
        what="every command answered after the restart",
    )
    print(f"\nall {N} commands answered {time.monotonic() - started:.1f}s after the broker restart")
    placed = [
        e
        for e in decode(asyncio.run(read_topic(kafka, system.topic("bookings.events"))))
        if e["event_type"] == "BookingPlaced"
    ]
    system.stop()

    events = all_events(open_store(system, "bookings"))
    booking_ids = [e.originator_id for e in events if isinstance(e, Booking.Placed)]
    assert len(booking_ids) == len(set(booking_ids)) == N
    assert len({e["event_id"] for e in placed}) == N
    assert Counter(o["outcome"] for o in {o["command_id"]: o for o in outcomes()}.values()) == {"accepted": N}
