"""A consumer of ours takes a record as soon as the broker has it.

After an empty poll, faststream's batch subscriber paused as long again (200 ms for the inbox)
before it looked again, and a record arriving meanwhile waited it out. `prompt_batches` takes
that pause away; `getmany` itself already waits (for records, not for a clock) between empty
polls.

The inbox's periodic check of its partitions (`backbone.topiclife`) asks for the log bounds on
the client's coordination connection (`log_bounds`), not behind the fetch waiting at the broker
on the other one: the same answers as the consumer's own calls.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber import usecase

from backbone.bus import ensure_topics
from backbone.inbox import prompt_batches
from backbone.topiclife import log_bounds

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


async def test_log_bounds_are_the_consumers_own_answers(kafka_bootstrap_servers):
    servers, topic = kafka_bootstrap_servers, f"bounds-{uuid.uuid4().hex[:8]}"
    await ensure_topics(servers, [topic], partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, group_id=topic)
    await consumer.start()
    try:
        for n in range(7):
            await producer.send_and_wait(topic, b"x", partition=n % 3)
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        await consumer.getmany(timeout_ms=100)  # a fetch is now waiting at the broker
        tps = [TopicPartition(topic, p) for p in range(3)]
        starts, ends = await log_bounds(consumer._client, tps)
        assert ends == {tps[0]: 3, tps[1]: 2, tps[2]: 2}
        assert starts == await consumer.beginning_offsets(tps)
        assert ends == await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await producer.stop()
