"""A topic deleted and created again under a running service: its stored positions belong to
the old life, so the inbox stalls those partitions (never skips), says so (/ready, status,
metric), and resumes once an operator decides; the decision is recorded."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import httpx
import pytest

from backbone.topiclife import PartitionLife
from tests.support.ops import Ops
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
from tests.support.topics import recreate_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_topic_created_again_stalls_its_partitions_until_an_operator_decides(
    tmp_path, kafka_bootstrap_servers, mail_server
):
    kafka = kafka_bootstrap_servers
    system = System(tmp_path, kafka, mail_server.port).start("bookings")
    ops = Ops(system, tmp_path)
    topic = system.topic("bookings.commands")
    try:
        first = [place_booking_command("lives-tours", f"a{i}@example.com") for i in range(12)]
        asyncio.run(publish(kafka, topic, map(command_record, first)))

        def answered() -> set[str]:
            outcomes = decode(asyncio.run(read_topic(kafka, system.topic("bookings.command-outcomes"))))
            return {o["command_id"] for o in outcomes}

        wait_for(lambda: len(answered()) == 12, timeout=60, what="the first commands answered")

        asyncio.run(recreate_topic(kafka, topic, partitions=3))
        second = [place_booking_command("lives-tours", f"b{i}@example.com") for i in range(3)]
        asyncio.run(publish(kafka, topic, map(command_record, second)))

        def not_ready() -> str:
            response = httpx.get(f"{system.bookings.url}/ready", timeout=5)
            return response.json().get("detail", "") if response.status_code == 503 else ""

        detail = wait_for(lambda: "Stalled" in not_ready() and not_ready(), timeout=60, what="/ready 503")
        assert topic in detail
        metrics = httpx.get(f"{system.bookings.url}/metrics", timeout=5).text
        assert "inbox_partition_stalled{" in metrics and "} 1.0" in metrics
        status = ops.run("status", "bookings", check=False)
        assert status.returncode == 1 and b"is stalled" in status.stdout + status.stderr, status.stderr
        assert not {c["command_id"] for c in second} & answered()  # stalled, not skipped

        stalled = sorted(set(re.findall(rf"({re.escape(topic)}/\d+):", detail)))
        assert stalled
        for partition in stalled:
            ops.run("positions", "replay-from-start", "bookings", partition, "--note", "topic recreated")
        wait_for(lambda: {c["command_id"] for c in second} <= answered(), timeout=60, what="resumed")
        wait_for(lambda: httpx.get(f"{system.bookings.url}/ready", timeout=5).status_code == 200, timeout=30)
        assert ops.run("status", "bookings").returncode == 0
    finally:
        system.stop()

    events = all_events(open_store(system, "bookings"))
    decided = [e for e in events if isinstance(e, PartitionLife.Decided)]
    assert len(decided) == len(stalled) and all(e.meta["actor"] == "staff:test-operator" for e in decided)
    placed = Counter(e.originator_id for e in events if type(e).__name__ == "Placed")
    assert len(placed) == 15 and set(placed.values()) == {1}  # none lost, none twice
