"""M4: dead-letter topics kept raw commands, customer details included, with no retention:
an erasure cannot reach a dead letter, so it stayed for as long as the broker's default said
(forever, on many clusters)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from backbone.settings import ServiceSettings

pytestmark = pytest.mark.integration


async def topic_config(kafka: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(_, _, _, _, entries)] = response.resources
        return {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()


def test_dead_letters_are_deleted_after_the_configured_retention(system):
    config = asyncio.run(topic_config(system.kafka, system.topic("accounts.dead-letters")))
    assert config["cleanup.policy"] == "delete"
    assert int(config["retention.ms"]) == ServiceSettings().dead_letter_retention_ms == 7 * 24 * 3_600_000
