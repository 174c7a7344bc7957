"""Deleting and creating topics again on the real broker, as an operator's mistake would."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from backbone.topiclife import topic_ids_at


async def recreate_topic(kafka: str, topic: str, partitions: int = 3, patience: float = 60) -> None:
    """Delete `topic` and create it again (a new topic id, offsets from 0). A running consumer
    may auto-create it in between (the broker allows it): then that new life is kept, with
    its partitions raised to `partitions`."""
    before = (await topic_ids_at(kafka, [topic])).ids[topic]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                await admin.create_topics([NewTopic(topic, partitions, 1)])
                break
            except TopicAlreadyExistsError:
                now = (await topic_ids_at(kafka, [topic])).ids[topic]
                if now is not None and now != before:  # auto-created by a consumer meanwhile
                    described = await admin.describe_topics([topic])
                    if len(described[0]["partitions"]) < partitions:
                        await admin.create_partitions({topic: NewPartitions(total_count=partitions)})
                    break
                await asyncio.sleep(0.2)  # the deletion is still under way
        else:
            raise TimeoutError(f"{topic} could not be created again")
    finally:
        await admin.close()
    while (await topic_ids_at(kafka, [topic])).ids[topic] in (None, before):  # noqa: ASYNC110 - a poll
        await asyncio.sleep(0.1)
