"""Three bookings instances as real OS processes on one PostgreSQL database and topics of 6
partitions, killed with kill -9 at random and restarted while they work through a load of
commands: nothing lost, nothing applied twice, one event id per stored event.

Opt-in for now (SCALE_OUT=1): it has not passed on the shared development machine yet, where
the broker's group coordinator did not answer for 90 s under load, and a later run (no error
logged, leaders taken over after each kill) ran out of pytest's 300 s; it did find a real
bug (instances starting at once raced to create their tables). The load is scaled down:
SCALE_OUT_COMMANDS bookings placed (600 by default), a tenth of them cancelled afterwards, and
SCALE_OUT_KILLS kills (4 by default). The issue's full size is
`SCALE_OUT=1 SCALE_OUT_COMMANDS=20000 SCALE_OUT_KILLS=30 ./deploy/test tests/integration/test_scale_out.py`.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from backbone.follower import read_log
from backbone.outbox import OutboxRelay
from deploy.local._proc import free_ports
from services.bookings.domainmodel import Booking
from services.bookings.integration import translator
from tests.support.bookings import AccountsFeed, BookingsBus, command, place
from tests.support.system import TEST_PUBLISHERS, ServiceProcess, System, all_events, open_store, publisher

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("SCALE_OUT") != "1", reason="opt-in: SCALE_OUT=1 (see the docstring)"),
]

TENANT = "harbour-tours"
COMMANDS = int(os.environ.get("SCALE_OUT_COMMANDS", "600"))
KILLS = int(os.environ.get("SCALE_OUT_KILLS", "4"))
INSTANCES = 3


@pytest.mark.timeout(1800)  # processes, broker and database on a shared 2-core machine
def test_three_instances_killed_at_random_lose_nothing_and_apply_nothing_twice(
    tmp_path, kafka_bootstrap_servers, postgres
):
    partitions = {"TOPIC_PARTITIONS": "6"}
    system = System(
        tmp_path,
        kafka_bootstrap_servers,
        smtp_port=1,
        store="postgres",
        postgres=postgres,
        overrides={name: partitions for name in ("accounts", "bookings", "notifier")},
    )
    first = system.bookings
    instances = [first] + [
        ServiceProcess(
            "bookings", {**first.env, "HTTP_PORT": str(port)}, port, tmp_path / f"bookings-{n}.log"
        )
        for n, port in enumerate(free_ports(INSTANCES - 1), start=2)
    ]
    for instance in instances:
        instance.start()
    for instance in instances:
        instance.wait_ready()
    for name in list(TEST_PUBLISHERS):  # the command publishers the test's commands come from
        system.register_publisher(name, publisher(name).public_key)
    bus = BookingsBus(kafka_bootstrap_servers, system, AccountsFeed(TENANT))
    rng = random.Random(COMMANDS)
    try:
        placed = [place(TENANT, f"guest{i}@example.com") for i in range(COMMANDS)]
        cancelled = [
            command(
                "CancelBooking",
                TENANT,
                body["booking_id"],
                reason="plans changed",
                override_customer_rules=True,
                on_behalf_of={"kind": "staff", "id": "anna"},
            )
            for body in rng.sample(placed, COMMANDS // 10)
        ]
        # Same key as the booking: its partition, after the PlaceBooking.
        bus.send(*placed, *cancelled)
        for _ in range(KILLS):  # kill -9 one instance at random every few seconds, restart it
            time.sleep(rng.uniform(2.0, 5.0))
            victim = rng.choice(instances)
            victim.kill()
            victim.start()
        answers = bus.answered(*placed, *cancelled, timeout=600)
    finally:
        for instance in instances:
            instance.stop()

    assert [a["outcome"] for a in answers] == ["accepted"] * len(answers)
    for command_id, outcomes in bus.outcomes().items():  # copies are the same answer
        assert len({(o["outcome"], o["aggregate_version"]) for o in outcomes}) == 1, command_id

    app = open_store(system, "bookings")
    try:
        events = all_events(app)
        per_booking = Counter((type(e).__qualname__, e.originator_id) for e in events)
        booking_ids = {e.originator_id for e in events if isinstance(e, Booking.Placed)}
        assert len(booking_ids) == COMMANDS  # nothing lost
        assert all(per_booking[("Booking.Placed", b)] == 1 for b in booking_ids)  # nothing twice
        cancelled_ids = {e.originator_id for e in events if isinstance(e, Booking.Cancelled)}
        assert len(cancelled_ids) == len(cancelled)
        assert all(per_booking[("Booking.Cancelled", b)] == 1 for b in cancelled_ids)

        # One event id per stored event: every integration event the relay owes is on the
        # bus (possibly more than once, at other offsets: consumers drop those copies).
        relay = OutboxRelay(app, None, "bookings", translator(app), topic_for=system.topic)  # type: ignore[arg-type]
        owed = {str(out.message.event_id) for out in relay.messages(read_log(app, 0, len(events) + 1))}
        published = [e["event_id"] for e in bus.read("bookings.events")]
        assert owed == set(published)
        duplicates = len(published) - len(set(published))
        print(f"{COMMANDS} + {len(cancelled)} commands, {KILLS} kills: {duplicates} copies re-published")
    finally:
        app.close()
