"""Several instances of each service as real OS processes, for the scale-out soak and benchmark.

A `Fleet` is a `System` on PostgreSQL (one database per service, shared by all of that
service's instances) whose services each run `n` times, on ports of their own, with topics
of 6 partitions. A `TopicTail` reads a topic as it grows, in a thread of its own, so that a
test can watch 20,000 outcomes arrive without reading the topic again from offset 0 each time.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.local._proc import free_ports
from tests.support.system import TEST_PUBLISHERS, ServiceProcess, System, publisher

SERVICES = ("accounts", "bookings", "notifier")


def progress(message: str) -> None:
    """A progress line (shown with `-s`, and with a failure's captured output)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Fleet:
    """`counts[service]` instances of each service on one PostgreSQL database per service."""

    system: System
    instances: dict[str, list[ServiceProcess]]

    @classmethod
    def create(
        cls,
        root: Path,
        kafka: str,
        postgres: Any,
        smtp_port: int,
        counts: dict[str, int],
        overrides: dict[str, dict[str, str]] | None = None,
        partitions: int = 6,
    ) -> Fleet:
        common = {"TOPIC_PARTITIONS": str(partitions), "POSTGRES_POOL_SIZE": "3"}
        system = System(
            root,
            kafka,
            smtp_port=smtp_port,
            store="postgres",
            postgres=postgres,
            overrides={name: {**common, **(overrides or {}).get(name, {})} for name in SERVICES},
        )
        instances: dict[str, list[ServiceProcess]] = {}
        for name, count in counts.items():
            first = system.services[name]
            instances[name] = [first] + [
                ServiceProcess(name, {**first.env, "HTTP_PORT": str(port)}, port, root / f"{name}-{n}.log")
                for n, port in enumerate(free_ports(count - 1), start=2)
            ]
        return cls(system, instances)

    def all(self) -> list[ServiceProcess]:
        return [instance for group in self.instances.values() for instance in group]

    def start(self, timeout: float = 240) -> None:
        """Start every instance (each service's first one alone first: it creates the tables
        and topics), wait until all are ready, register the tests' command publishers."""
        firsts = [group[0] for group in self.instances.values()]
        for instance in firsts:
            instance.start()
        for instance in firsts:
            instance.wait_ready(timeout)
        rest = [i for group in self.instances.values() for i in group[1:]]
        for instance in rest:
            instance.start()
        for instance in rest:
            instance.wait_ready(timeout)
        if "bookings" in self.instances:
            for name in list(TEST_PUBLISHERS):
                self.system.register_publisher(name, publisher(name).public_key)

    def stop(self) -> None:
        for instance in self.all():
            instance.stop()

    def errors(self) -> dict[str, list[str]]:
        return {i.log.name: i.errors() for i in self.all() if i.errors()}


@dataclass
class Killer:
    """kill -9 one instance picked at random, then start it again at once (it rejoins its
    groups and standby lists while the others carry on)."""

    instances: list[ServiceProcess]
    rng: random.Random
    kills: list[tuple[float, str]] = field(default_factory=list)

    def kill_one(self) -> ServiceProcess:
        """The first kills take each service once (in a random order), so that a short run
        still interrupts all three; after that any instance at all."""
        services = sorted({i.name for i in self.instances})
        spared = [s for s in services if not self.count(s)]
        if spared:
            choice = self.rng.choice(spared)
            victim = self.rng.choice([i for i in self.instances if i.name == choice])
        else:
            victim = self.rng.choice(self.instances)
        victim.kill()
        victim.start()
        self.kills.append((time.monotonic(), victim.name))
        return victim

    def count(self, service: str) -> int:
        return sum(1 for _, name in self.kills if name == service)

    def restarted_ready(self, timeout: float = 240) -> None:
        """Every instance running and ready again (after the last kill)."""
        for instance in self.instances:
            instance.wait_ready(timeout)


class TopicTail:
    """Every record of a topic from offset 0 on, read as it grows in a thread of its own."""

    def __init__(self, kafka: str, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"tail {topic}", daemon=True)

    def __enter__(self) -> TopicTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def snapshot(self) -> list[dict[str, Any]]:
        if self._failure is not None:
            raise RuntimeError(f"reading {self.topic} failed") from self._failure
        with self._lock:
            return list(self.records)

    def _run(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as failure:  # reported by snapshot()
            self._failure = failure

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions: set[int] = set()
            while not partitions and not self._stop.is_set():
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic) or set()
                if not partitions:
                    await asyncio.sleep(0.5)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                decoded = [json.loads(r.value) for recs in batch.values() for r in recs]
                if decoded:
                    with self._lock:
                        self.records.extend(decoded)
        finally:
            await consumer.stop()


def wait_until(
    done: Callable[[], bool],
    describe: Callable[[], str],
    timeout: float,
    every: float = 1.0,
    report_every: float = 15.0,
    between: Callable[[], None] | None = None,
) -> None:
    """Poll `done` until true, printing `describe()` every `report_every` s; `between` runs
    between polls (the killer). A TimeoutError says where it stood."""
    started = last = time.monotonic()
    while not done():
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"after {timeout:.0f}s: {describe()}")
        if now - last >= report_every:
            progress(describe())
            last = now
        if between is not None:
            between()
        else:
            time.sleep(every)


_METRIC = re.compile(r'^inbox_messages_total\{consumer="([^"]+)",outcome="([^"]+)"\} ([0-9.e+]+)$')


def inbox_counts(instance: ServiceProcess) -> dict[tuple[str, str], float]:
    """The instance's `inbox_messages_total` by (consumer, outcome), from its /metrics."""
    text = httpx.get(f"{instance.url}/metrics", timeout=10).text
    counts = {}
    for line in text.splitlines():
        if m := _METRIC.match(line):
            counts[(m.group(1), m.group(2))] = float(m.group(3))
    return counts
