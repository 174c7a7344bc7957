"""What the operator tool asks Kafka: partitions, offsets, committed offsets, a range of records.

It reads with a consumer that belongs to no consumer group (`assign`, never `subscribe`), so
looking at a topic never disturbs the services' groups, and it writes with the backbone's own
producer settings (`backbone.bus.make_broker`: idempotent, acks=all).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from faststream.kafka import KafkaBroker

from backbone import bus
from backbone.kafkasecurity import KafkaCluster
from ops.config import OpsError

TP = tuple[str, int]
CLIENT_ID = "booking-accounts-ops"


class Kafka:
    """One connection to the cluster for looking (use as `async with Kafka(servers) as kafka`)."""

    def __init__(self, cluster: KafkaCluster | str, max_records: int = 500):
        cluster = cluster if isinstance(cluster, KafkaCluster) else KafkaCluster(cluster)
        self.bootstrap_servers = cluster.bootstrap_servers
        secured = cluster.security.for_aiokafka()  # the service's own TLS and SASL settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cluster.bootstrap_servers,
            client_id=CLIENT_ID,
            enable_auto_commit=False,
            max_poll_records=max_records,
            request_timeout_ms=30_000,
            **secured,
        )
        self.admin = AIOKafkaAdminClient(
            bootstrap_servers=cluster.bootstrap_servers,
            client_id=CLIENT_ID,
            request_timeout_ms=30_000,
            **secured,
        )
        self._partitions: dict[str, list[int]] = {}

    async def __aenter__(self) -> Kafka:
        try:
            await self.consumer.start()
            await self.admin.start()
            described = await self.admin.describe_topics(list(await self.admin.list_topics()))
        except (KafkaConnectionError, KafkaError, OSError) as error:
            await self.__aexit__()
            raise OpsError(f"cannot reach Kafka at {self.bootstrap_servers}: {error}") from None
        self._partitions = {
            t["topic"]: sorted(p["partition"] for p in t.get("partitions", ()))
            for t in described
            if not t.get("error_code")
        }
        return self

    async def __aexit__(self, *_: Any) -> None:
        with contextlib.suppress(Exception):
            await self.admin.close()
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    def partitions(self, topic: str) -> list[TP]:
        """The partitions of a topic; empty if the topic does not exist."""
        return [(topic, p) for p in self._partitions.get(topic, ())]

    async def ends(self, tps: Iterable[TP]) -> dict[TP, int]:
        """The next offset each partition will be written at."""
        found = await self.consumer.end_offsets([TopicPartition(*tp) for tp in tps]) if tps else {}
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}

    async def beginnings(self, tps: Iterable[TP]) -> dict[TP, int]:
        found = await self.consumer.beginning_offsets([TopicPartition(*tp) for tp in tps]) if tps else {}
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}

    async def offsets_at(self, tps: Iterable[TP], when: datetime) -> dict[TP, int]:
        """The first offset of each partition written at or after `when` (its end if none)."""
        tps = list(tps)
        stamp = int(when.timestamp() * 1000)
        found = await self.consumer.offsets_for_times({TopicPartition(*tp): stamp for tp in tps})
        ends = await self.ends(tps)
        return {
            tp: (found[TopicPartition(*tp)].offset if found[TopicPartition(*tp)] else ends[tp]) for tp in tps
        }

    async def committed(self, group: str, tps: Iterable[TP]) -> dict[TP, int | None]:
        """A consumer group's committed offsets (None where it committed nothing)."""
        found = await self.admin.list_consumer_group_offsets(group)
        offsets = {(tp.topic, tp.partition): meta.offset for tp, meta in found.items()}
        return {tp: (offsets[tp] if offsets.get(tp, -1) >= 0 else None) for tp in tps}

    async def read(self, starts: dict[TP, int], ends: dict[TP, int]) -> AsyncIterator[list[Any]]:
        """Every record from `starts` up to (not including) `ends`, in batches, per partition
        in offset order."""
        pending = {tp: end for tp, end in ends.items() if starts.get(tp, end) < end}
        if not pending:
            return
        self.consumer.assign([TopicPartition(*tp) for tp in pending])
        for tp in pending:
            self.consumer.seek(TopicPartition(*tp), starts[tp])
        try:
            while pending:
                fetched = await self.consumer.getmany(
                    *(TopicPartition(*tp) for tp in pending), timeout_ms=1000
                )
                batch = []
                for tp, records in fetched.items():
                    key = (tp.topic, tp.partition)
                    batch.extend(r for r in records if r.offset < pending.get(key, -1))
                    if await self.consumer.position(tp) >= pending.get(key, 0):
                        pending.pop(key, None)
                if batch:
                    yield batch
        finally:
            self.consumer.assign([])

    async def fetch(self, topic: str, partition: int, offset: int) -> Any | None:
        """The record at one offset, or None if there is none (any more)."""
        tp = (topic, partition)
        begin, end = (await self.beginnings([tp]))[tp], (await self.ends([tp]))[tp]
        if not begin <= offset < end:
            return None
        found = [r async for batch in self.read({tp: offset}, {tp: offset + 1}) for r in batch]
        return next((r for r in found if r.offset == offset), None)


@contextlib.asynccontextmanager
async def producer(cluster: KafkaCluster | str) -> AsyncIterator[KafkaBroker]:
    """A producer with the services' own settings (idempotent, acks=all, their TLS and SASL
    settings), no subscribers."""
    cluster = cluster if isinstance(cluster, KafkaCluster) else KafkaCluster(cluster)
    bootstrap_servers = cluster.bootstrap_servers
    broker = bus.make_broker(bootstrap_servers, client_id=CLIENT_ID, security=cluster.security)
    try:
        await broker.start()
    except (KafkaConnectionError, KafkaError, OSError) as error:
        with contextlib.suppress(Exception):
            await broker.stop()  # its half-started producer, else left unclosed
        raise OpsError(f"cannot reach Kafka at {bootstrap_servers}: {error}") from None
    try:
        yield broker
    finally:
        await broker.stop()
