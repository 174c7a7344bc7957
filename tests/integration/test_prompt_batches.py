"""A consumer of ours takes a record as soon as the broker has it: after an empty poll,
faststream's batch subscriber paused as long again (200 ms for the inbox) before it looked
again, and a record arriving meanwhile waited it out. `prompt_batches` takes that pause away;
`getmany` itself already waits (for records, not for a clock) between empty polls."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber import usecase

from backbone.bus import ensure_topics
from backbone.inbox import prompt_batches

pytestmark = pytest.mark.integration


async def test_an_empty_poll_is_not_followed_by_a_pause(kafka_bootstrap_servers, monkeypatch):
    servers, topic = kafka_bootstrap_servers, f"prompt-{uuid.uuid4().hex[:8]}"
    await ensure_topics(servers, [topic], partitions=1)
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(usecase.anyio, "sleep", pause)
    subscriber = KafkaBroker(servers).subscriber(topic, group_id=topic, batch=True, batch_timeout_ms=50)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=servers, group_id=topic, auto_offset_reset="earliest"
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        assert await subscriber.get_msg(consumer) == ()
        assert pauses == [0.05]  # faststream's own: the pause this test is about

        prompt_batches(subscriber)
        assert await subscriber.get_msg(consumer) == ()
        assert pauses == [0.05]  # none more
        await producer.send_and_wait(topic, b"at once")
        for _ in range(200):  # each empty poll waits up to 50 ms for records
            records = await subscriber.get_msg(consumer)
            if records:
                break
        assert [r.value for r in records] == [b"at once"]
        assert pauses == [0.05]
    finally:
        await producer.stop()
        await consumer.stop()
