"""A running service: its store, bus, background loops and HTTP API, started and stopped as one.

Each service's `bootstrap.py` (the composition root) builds a `Service`; `__main__` serves it.
The pieces start in dependency order (topics, read models, broker, loops) and stop in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from aiokafka.client import AIOKafkaClient
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from backbone import auditapi, kafkaacl, topics, tracing
from backbone.eventstore import ServiceApplication
from backbone.follower import Follower
from backbone.inbox import Inbox
from backbone.kafkasecurity import KafkaCluster
from backbone.leadership import leadership_for
from backbone.logging import configure, get_logger
from backbone.personal import ERASURE_SYNC_SECONDS
from backbone.readmodel import ReadModel
from backbone.settings import ServiceSettings
from backbone.subjectkeys import SubjectKeyReceiver

log = get_logger(__name__)

STALLED_AFTER = 5
"""Failed attempts in a row at the same batch (about 6 s of backoff) that make an instance
report itself not ready."""


@dataclass
class Service:
    name: str
    settings: ServiceSettings
    app: ServiceApplication
    broker: KafkaBroker
    api: FastAPI
    topics: list[str]
    compacted_topics: list[str] = field(default_factory=list)  # e.g. subject keys
    read_model: ReadModel | None = None
    followers: list[Follower] = field(default_factory=list)
    consumers: list[Inbox | SubjectKeyReceiver] = field(default_factory=list)
    workers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _joined: set[int] = field(default_factory=set)
    _access: Access | None = None

    def __post_init__(self) -> None:
        if self.read_model is not None:  # an outage of it stalls consumers (backbone.faults)
            self.app.add_probe("read model", self.read_model.ping)

    async def start(self) -> None:
        settings = self.settings
        specs = [topics.spec(settings, t, compacted=False) for t in self.topics]
        specs += [topics.spec(settings, t, compacted=True) for t in self.compacted_topics]
        await topics.prepare(settings, self.name, specs)
        self._access = Access(self, settings.kafka_cluster())
        await self._access.check()  # a denial: logged and not ready, never a silent consumer
        self._tasks.append(asyncio.create_task(self._access.watch(), name="kafka access"))
        if self.read_model is not None:
            await asyncio.to_thread(self.read_model.create)
        await self.broker.start()
        store = settings.store_settings()
        for follower in self.followers:
            # One leader per follower across the instances sharing this store.
            follower.lead_with(leadership_for(store, self.name, follower.name))
            self._tasks.append(asyncio.create_task(follower.run(), name=follower.name))
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(worker(), name=getattr(worker, "__name__", "worker")))
        self._tasks.append(asyncio.create_task(self._follow_erasures(), name="erasures"))
        self._tasks.append(asyncio.create_task(give_back_free_memory(), name="malloc trim"))
        self._tasks.append(asyncio.create_task(self._watch_lag(), name="lag"))
        log.info("service started", service=self.name, tracing=tracing.enabled())

    async def _watch_lag(self) -> None:
        """The lag gauges, every `lag_interval_seconds`: a consumer or follower that keeps
        failing its batch moves no gauge of its own, and its lag is what an operator needs."""
        while True:
            try:
                await self.measure_lag()
            except Exception as error:  # an outage: readiness reports it; try again
                log.warning("cannot measure lag", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(self.settings.lag_interval_seconds)

    async def measure_lag(self) -> None:
        head = await asyncio.to_thread(self.app.head)
        for follower in self.followers:
            # A standby reports the leader's stored position: the lag is the same everywhere.
            position = (
                follower.position if follower.leading else await asyncio.to_thread(follower.load_position)
            )
            follower.report_lag(max(0, head - position))
        for consumer in self.consumers:
            if isinstance(consumer, Inbox):
                await consumer.measure_lag()

    async def _follow_erasures(self) -> None:
        """Erasures made by other instances on the shared vault: forgotten here within about
        a second, even while this instance decrypts nothing (`Vault.sync_erasures`)."""
        while True:
            try:
                await asyncio.to_thread(self.app.vault.sync_erasures)
            except Exception as error:  # an outage: readiness reports it; try again
                log.warning("cannot look for erasures", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(ERASURE_SYNC_SECONDS)

    async def stop(self) -> None:
        for follower in self.followers:
            follower.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._access is not None:
            await self._access.close()
        await self.broker.stop()
        self.app.close()
        if self.read_model is not None:
            self.read_model.close()
        await asyncio.to_thread(tracing.flush)  # the spans still buffered
        log.info("service stopped", service=self.name)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def ready(self) -> bool:
        return not await self.not_ready()

    async def not_ready(self) -> list[str]:
        """Why this instance should not get traffic now (empty: ready). Ready means: started,
        every consumer has joined its group once, every store and the Kafka cluster answer,
        and no consumer or follower is stalled (failing the same batch again and again).

        Not part of it, on purpose: holding partitions or leading a follower. During a
        rebalance every consumer holds nothing for a moment, and an instance beyond the
        partition count (or a follower's standby) holds nothing at all: they still serve HTTP.
        """
        reasons = []
        if not (self._tasks or not (self.followers or self.workers)):
            reasons.append("starting")
        for consumer in self.consumers:
            if not self._has_joined(consumer):
                reasons.append(f"{consumer.name}: joining its consumer group")
            elif getattr(consumer, "_failures", 0) >= STALLED_AFTER:
                reasons.append(f"{consumer.name}: stalled, retrying a batch")
        for follower in self.followers:
            if follower.failures >= STALLED_AFTER:
                reasons.append(f"{follower.name}: stalled, retrying a batch")
        stalled = self.stalled_partitions()  # a position that does not fit its partition
        if stalled:
            reasons.append(
                "Stalled until an operator decides (booking-accounts positions): " + "; ".join(stalled)
            )
        reasons += [f"unreachable: {store}" for store in await asyncio.to_thread(self.app.unreachable_stores)]
        if not await self.broker.ping(timeout=2.0):
            reasons.append("unreachable: Kafka")
        if self._access is not None and self._access.denied:
            reasons.append(f"Kafka denies {self._access.principal}: " + "; ".join(self._access.denied))
        return reasons

    def _has_joined(self, consumer: Inbox | SubjectKeyReceiver) -> bool:
        if id(consumer) in self._joined:
            return True
        kafka = consumer.subscriber.consumer
        coordinator = getattr(kafka, "_coordinator", None)
        if kafka is not None and (kafka.assignment() or getattr(coordinator, "generation", -1) > 0):
            self._joined.add(id(consumer))  # once joined, a rebalance does not unready it
            return True
        return False

    def stalled_partitions(self) -> list[str]:
        """'<consumer> <topic>/<partition>: <why>' for each partition an inbox holds stalled."""
        return [
            f"{consumer.name} {topic}/{partition}: {verdict.detail}"
            for consumer in self.consumers
            if isinstance(consumer, Inbox)
            for (topic, partition), verdict in sorted(consumer.stalled.items())
        ]


class Access:
    """Whether the broker lets this service do what it needs (`backbone.kafkaacl`): read what
    its consumers read, write its other topics, use its consumer groups. Checked at start and
    every `every` seconds; what is denied is logged as an error (once, and again when it
    changes) and keeps `/ready` at 503 until an operator grants it."""

    every = 15.0

    def __init__(self, service: Service, cluster: KafkaCluster):
        self.reads = sorted({t for consumer in service.consumers for t in consumer.topics})
        self.writes = sorted(set(service.topics + service.compacted_topics) - set(self.reads))
        self.groups = sorted({consumer.name for consumer in service.consumers})
        self.principal = cluster.security.sasl_username or "this client"
        self.denied: list[str] = []
        self._cluster = cluster
        self._client: AIOKafkaClient | None = None

    async def check(self) -> list[str]:
        try:
            if self._client is None:
                client = AIOKafkaClient(
                    bootstrap_servers=self._cluster.bootstrap_servers,
                    client_id="access-check",
                    **self._cluster.security.for_aiokafka(),
                )
                try:
                    await client.bootstrap()
                except BaseException:
                    await client.close()
                    raise
                self._client = client
            denied = await kafkaacl.denials(self._client, self.reads, self.writes, self.groups)
        except Exception as error:  # the broker unreachable: /ready says so on its own
            log.warning("cannot check what Kafka allows", error=f"{type(error).__name__}: {error}")
            return self.denied
        if denied and denied != self.denied:
            log.error(
                "Kafka denies this service what it needs: grant it (docs/operations.md, secured cluster)",
                principal=self.principal,
                denied=denied,
            )
        elif self.denied and not denied:
            log.info("Kafka now allows what this service needs", principal=self.principal)
        self.denied = denied
        return denied

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.check()

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None


def attach(service: Service) -> Service:
    """Hook the service's start/stop into its FastAPI app, and add GET /ready and the
    read-only audit API (/v1/audit/..., see backbone.auditapi). When the deployment turns
    tracing on, its HTTP API and its Kafka publishers and subscribers are traced
    (`backbone.tracing`)."""
    service.api.router.lifespan_context = service.lifespan
    if tracing.from_environment(service.name, service.settings.tracing):
        tracing.instrument(service.api, service.broker)
    auditapi.routes(service.api, service.app, service.name, service.settings.audit_api_token)

    @service.api.get("/ready", tags=["ops"], summary="Readiness: stores and Kafka reachable, nothing stalled")
    async def ready() -> Any:
        from backbone.http import problem

        reasons = await service.not_ready()
        if not reasons:
            return {"status": "ready"}
        return problem(503, "Not ready", "; ".join(reasons))

    return service


MALLOC_ARENAS = 2
"""glibc's malloc arenas a service's process may use (its default: 8 per core). Each thread
allocating at once gets an arena of its own, and memory freed in one is reused by that one
only: with the caches churning at their bounds and SQLite's page caches filled and emptied
by whichever thread reads, a 10-minute soak saw bookings' malloc heap grow 171 -> 346 MB
while 45-75 MB of it was in use (see "Memory over a soak" in docs/performance.md). A variable
MALLOC_ARENA_MAX in the environment (read by glibc itself) wins."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Caps glibc's malloc arenas (mallopt M_ARENA_MAX); call before threads start. False
    where there is no glibc (musl, macOS) or MALLOC_ARENA_MAX is set."""
    import os

    mallopt = _glibc("mallopt")
    if mallopt is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(mallopt(-8, arenas))  # M_ARENA_MAX (malloc.h)


def _glibc(name: str) -> Any:
    """A function of the C library this process runs on, or None where it has none by that
    name (musl, macOS: these tunings are glibc's)."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def freeze_startup_objects() -> int:
    """Move everything alive once the service is built (modules, classes, settings, compiled
    statements: some 170,000 objects, none of them ever garbage) out of the cyclic garbage
    collector's reach (`gc.freeze`), after one collection; how many were moved. Each full
    collection went through them all: in bookings under `benchmarks.pipeline --parts e2e`,
    8 full collections took 0.8 s of CPU in a run of 7 s (stalling every thread, the GIL held,
    for 3-5 s of wall clock on the shared machine), 0.4 s once frozen (see "The projection's
    CPU per event" in docs/performance.md). Frozen objects are still freed by their reference
    counts; only a cycle among them would stay."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


MALLOC_TRIM_SECONDS = 60.0
"""How often a service hands the memory glibc keeps free back to the system (`malloc_trim`).
glibc returns free memory only from the top of a heap: what SQLite's page caches and the
caches' evictions free in the middle stays in the process, counted in its RSS, until reused
(a soak's bookings: 161 MB free but kept for 53 MB in use; one `malloc_trim(0)` gave 123 MB
back in 25 ms)."""


def malloc_trim() -> bool:
    """glibc's `malloc_trim(0)`: free pages of every arena back to the system (`madvise`),
    not only the top of each heap. False where there is no glibc or nothing was given back."""
    trim = _glibc("malloc_trim")
    return trim is not None and bool(trim(0))


async def give_back_free_memory(interval: float = MALLOC_TRIM_SECONDS) -> None:
    """`malloc_trim` every `interval` seconds, in a worker thread. It holds each arena's lock
    while it walks it, so an allocation from that arena waits meanwhile: 139 ms to give back
    270 MB left free in pieces, 1-13 ms where there is little to give back (tests on the
    loaded 2-core VM). Logged at debug level with its duration."""
    while True:
        await asyncio.sleep(interval)
        began = time.perf_counter()
        released = await asyncio.to_thread(malloc_trim)
        log.debug("malloc trimmed", released=released, ms=round((time.perf_counter() - began) * 1000, 1))


def serve(build: Callable[[], Service]) -> None:
    limit_malloc_arenas()
    service = build()
    configure(service.name, service.settings.log_level, service.settings.log_format)
    # A thread that gave the GIL up (a socket read or write, an SQLite statement, os.urandom)
    # waits up to the switch interval to get it back from a thread that computes; the event
    # loop gives it up a dozen times per HTTP request. A setting, so that a deployment can
    # trade a little CPU for shorter waits (docs/performance.md, "Cancel -> email").
    sys.setswitchinterval(service.settings.gil_switch_interval_ms / 1000)
    freeze_startup_objects()
    uvicorn.run(
        service.api,
        host=service.settings.http_host,
        port=service.settings.http_port,
        log_config=None,  # keep our structured logging
        timeout_graceful_shutdown=10,
    )
    tracing.shutdown()  # (reached when uvicorn returns instead of re-raising a signal)
