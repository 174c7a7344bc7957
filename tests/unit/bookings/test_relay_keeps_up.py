"""The outbox relay publishes its events while the inbox keeps making subject keys.

Every booking placed makes a subject key that the relay publishes before the events sealed
with it. With three bookings instances applying 20,000 commands, keys were made faster than
the relay published them; its loop "publish keys until none is left" never ended and not one
event reached the bus (tests/integration/test_scale_out.py). Here every key the relay
publishes is answered by another booking placed at once: the relay still gets to its events.
"""

from __future__ import annotations

import asyncio
import json

from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from backbone.follower import read_log
from backbone.outbox import OutboxRelay
from backbone.signing import Keyring, create_key
from services.bookings.integration import translator
from tests.support.bookings import place
from tests.unit.bookings.conftest import TENANT, Harness


async def test_keys_made_faster_than_they_are_published_do_not_keep_the_relay_from_its_events(tmp_path):
    broker = KafkaBroker()
    harness = Harness(broker, [])
    keys_published, events_published = [], []
    placed_meanwhile = []

    @broker.subscriber("bookings.subject-keys")
    async def key_published(message: KafkaMessage) -> None:
        keys_published.append(message.raw_message.key)
        if len(placed_meanwhile) < 200:  # meanwhile the inbox places another booking: a new key
            body = place(TENANT, f"late{len(placed_meanwhile)}@example.com")
            placed_meanwhile.append(body)
            await harness.send(body)

    @broker.subscriber("bookings.events")
    async def event_published(message: KafkaMessage) -> None:
        events_published.append(json.loads(message.body))

    signer = create_key(tmp_path / "bus", "bookings")
    create_key(tmp_path / "bus", "notifier")  # keys are sealed for every other service
    relay = OutboxRelay(
        harness.app,
        broker,
        "bookings",
        translator(harness.app),
        signer=signer,
        keyring=Keyring.load(tmp_path / "bus" / "trusted"),
    )
    async with TestKafkaBroker(broker):
        first = [place(TENANT, f"guest{i}@example.com") for i in range(3)]
        await harness.send(*first)
        batch = read_log(harness.app, 0, 1000)
        await asyncio.wait_for(relay.handle(batch), timeout=60)

    placed = {e["booking_id"] for e in events_published if e["event_type"] == "BookingPlaced"}
    assert {b["booking_id"] for b in first} <= placed  # the batch's events are on the bus
    assert len(placed_meanwhile) < 200  # it stopped publishing keys that its batch does not need
    assert harness.app.position(relay.name) == batch[-1].position
