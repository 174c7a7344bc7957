"""TOPIC_AUTO_CREATE=false, for clusters whose topics are managed elsewhere: a service creates
no topic, and stops at start naming those missing; `booking-accounts topics create` makes them
with the partitions, retention and compaction the services would have given them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from backbone.kafkasecurity import KafkaCluster
from backbone.topics import missing
from contracts.topics import all_topics, of_service
from tests.support.system import REPO, System

pytestmark = pytest.mark.integration

TOPICS = {"TOPIC_AUTO_CREATE": "false", "TOPIC_PARTITIONS": "2", "DEAD_LETTER_RETENTION_MS": "3600000"}


def ops_tool(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **TOPICS,
        "KAFKA_BOOTSTRAP_SERVERS": system.kafka,
        "TOPIC_NAMESPACE": system.namespace,
        "SUBJECT_KEYS_SEGMENT_MS": "60000",
    }
    return subprocess.run(
        [sys.executable, "-m", "ops", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


async def configs(servers: str, topics: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
        values = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}
            for response in responses
            for resource in response.resources
        }
        return {t["topic"]: (len(t["partitions"]), values[t["topic"]]) for t in described}
    finally:
        await admin.close()


def test_a_service_stops_at_start_naming_the_missing_topics_until_the_operator_tool_makes_them(
    tmp_path, kafka_bootstrap_servers, mail_server
):
    system = System(
        tmp_path,
        kafka_bootstrap_servers,
        mail_server.port,
        overrides={"bookings": {**TOPICS, "SUBJECT_KEYS_SEGMENT_MS": "60000"}},
    )
    names = [system.topic(t) for t in of_service("bookings")]
    bookings = system.bookings.start()
    deadline = time.monotonic() + 90
    while bookings.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert bookings.proc.poll() not in (None, 0), "bookings started without its topics"
    output = bookings.output()
    assert "bookings cannot start: topics missing" in output, output
    assert all(name in output for name in names)
    cluster = KafkaCluster(kafka_bootstrap_servers)
    assert asyncio.run(missing(cluster, names)) == names  # it created none of them

    # The operator tool: a dry run changes nothing; then it makes them all, once.
    dry = ops_tool(system, "topics", "create", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    every = {system.topic(t) for t in all_topics()}
    assert set(json.loads(dry.stdout)["created"]) == every
    assert asyncio.run(missing(cluster, names)) == names
    made = ops_tool(system, "topics", "create", "--json")
    assert made.returncode == 0, made.stderr
    assert set(json.loads(made.stdout)["created"]) == every
    assert json.loads(ops_tool(system, "topics", "create", "--json").stdout)["created"] == []

    # ... as the services would have made them (backbone.topics, the one list).
    found = asyncio.run(configs(kafka_bootstrap_servers, sorted(every)))
    for name, (partitions, config) in found.items():
        assert partitions == 2, name
        if name.endswith(".subject-keys"):
            assert config["cleanup.policy"] == "compact" and config["segment.ms"] == "60000", name
        elif name.endswith(".dead-letters"):
            assert config["cleanup.policy"] == "delete" and config["retention.ms"] == "3600000", name
        else:
            assert config["cleanup.policy"] == "delete", name

    before = len(bookings.errors())
    system.start("bookings")  # now it starts, and is ready
    system.stop()
    assert bookings.errors()[before:] == []
