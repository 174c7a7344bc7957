"""Liveness and readiness of several instances on a real Kafka broker.

Two bookings instances in one consumer group, on topics of one partition: one of them holds
nothing, and both are ready (an instance beyond the partition count still serves HTTP). A
store that stops answering makes an instance not ready, with the reason; a missing key file
stops the start with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
import pytest
import sqlalchemy as sa

from backbone.credentials import MissingKey, load_or_create_signing_key, public_path
from backbone.readmodel import ReadModel
from backbone.signing import key_settings
from services.bookings.bootstrap import bootstrap
from services.bookings.settings import BookingsSettings

pytestmark = pytest.mark.integration


def settings(tmp_path, kafka, namespace, name) -> BookingsSettings:
    key = tmp_path / "keys" / "session-signing-key.pem"
    load_or_create_signing_key(key)
    return BookingsSettings(
        kafka_bootstrap_servers=kafka,
        topic_namespace=namespace,
        topic_partitions=1,
        data_dir=tmp_path / name,
        session_public_key_file=public_path(key),
        **key_settings(tmp_path / "keys" / "bus", "bookings"),
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until_ready(service, seconds=90.0) -> None:
    for _ in range(int(seconds / 0.25)):
        if not await service.not_ready():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{service.name} not ready: {await service.not_ready()}")


async def test_instances_beyond_the_partition_count_are_ready_and_a_dead_store_is_not(
    tmp_path, kafka_bootstrap_servers
):
    namespace = f"ready-{uuid.uuid4().hex[:8]}"
    first = bootstrap(settings(tmp_path, kafka_bootstrap_servers, namespace, "a"))
    second = bootstrap(settings(tmp_path, kafka_bootstrap_servers, namespace, "b"))
    await first.start()
    await second.start()
    try:
        await until_ready(first)
        await until_ready(second)
        # The keys topic has one partition: one of the two instances holds nothing.
        keys = [s.consumers[1].subscriber.consumer for s in (first, second)]
        for _ in range(120):
            held = [len(c.assignment()) for c in keys]
            if sum(held) == 1:
                break
            await asyncio.sleep(0.25)
        assert sorted(held) == [0, 1]
        assert not await first.not_ready() and not await second.not_ready()

        transport = httpx.ASGITransport(app=second.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://bookings") as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            assert (await client.get("/ready")).status_code == 200

            # A database this instance needs stops answering (nothing listens on its port).
            dead = ReadModel(f"postgresql+psycopg://u:p@127.0.0.1:{closed_port()}/gone", sa.MetaData())
            second.app.add_probe("reports database", dead.ping)
            answer = await client.get("/ready")
            assert answer.status_code == 503 and "unreachable: reports database" in answer.json()["detail"]
            assert (await client.get("/health")).status_code == 200  # alive all the same
        assert not await first.not_ready()
    finally:
        await second.stop()
        await first.stop()


def test_a_missing_key_file_stops_the_start_with_a_clear_message(tmp_path):
    with pytest.raises(MissingKey) as stopped:
        bootstrap(
            BookingsSettings(
                data_dir=tmp_path,
                session_public_key_file=tmp_path / "nowhere.pem",
                **key_settings(tmp_path / "bus", "bookings"),  # present: the session key is not
            )
        )
    message = str(stopped.value)
    assert str(tmp_path / "nowhere.pem") in message and "SESSION_PUBLIC_KEY_FILE" in message
    assert "deploy.keys" in message
