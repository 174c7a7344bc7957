"""A running service: its store, bus, background loops and HTTP API, started and stopped as one.

Each service's `bootstrap.py` (the composition root) builds a `Service`; `__main__` serves it.
The pieces start in dependency order (topics, read models, broker, loops) and stop in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from backbone import auditapi, bus, deadletters
from backbone.eventstore import ServiceApplication
from backbone.follower import Follower
from backbone.inbox import Inbox
from backbone.logging import configure, get_logger
from backbone.readmodel import ReadModel
from backbone.settings import ServiceSettings
from backbone.subjectkeys import SubjectKeyReceiver

log = get_logger(__name__)


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

    def __post_init__(self) -> None:
        if self.read_model is not None:  # an outage of it stalls consumers (backbone.faults)
            self.app.add_probe("read model", self.read_model.ping)

    async def start(self) -> None:
        settings = self.settings
        await bus.ensure_topics(
            settings.kafka_bootstrap_servers,
            self.topics + self.compacted_topics,
            settings.topic_partitions,
            settings.topic_replication_factor,
            compacted=tuple(self.compacted_topics),
            compacted_segment_ms=settings.subject_keys_segment_ms,
            security=settings.kafka_security(),
        )
        await deadletters.keep_for(
            settings.kafka_bootstrap_servers,
            [t for t in self.topics if t.endswith(deadletters.SUFFIX)],
            settings.dead_letter_retention_ms,
        )
        if self.read_model is not None:
            await asyncio.to_thread(self.read_model.create)
        await self.broker.start()
        for follower in self.followers:
            self._tasks.append(asyncio.create_task(follower.run(), name=follower.name))
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(worker(), name=getattr(worker, "__name__", "worker")))
        log.info("service started", service=self.name)

    async def stop(self) -> None:
        for follower in self.followers:
            follower.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.broker.stop()
        self.app.close()
        if self.read_model is not None:
            self.read_model.close()
        log.info("service stopped", service=self.name)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def ready(self) -> bool:
        """Started, connected, every consumer has been given its partitions, and no partition
        is stalled on a stored position that does not fit it (`backbone.topiclife`)."""
        return (
            bool(self._tasks or not (self.followers or self.workers))
            and all(
                consumer.subscriber.consumer is not None and consumer.subscriber.consumer.assignment()
                for consumer in self.consumers
            )
            and not self.stalled_partitions()
        )

    def stalled_partitions(self) -> list[str]:
        """'<consumer> <topic>/<partition>: <why>' for each partition an inbox holds stalled."""
        return [
            f"{consumer.name} {topic}/{partition}: {verdict.detail}"
            for consumer in self.consumers
            if isinstance(consumer, Inbox)
            for (topic, partition), verdict in sorted(consumer.stalled.items())
        ]


def attach(service: Service) -> Service:
    """Hook the service's start/stop into its FastAPI app, and add GET /ready and the
    read-only audit API (/v1/audit/..., see backbone.auditapi)."""
    service.api.router.lifespan_context = service.lifespan
    auditapi.routes(service.api, service.app, service.name, service.settings.audit_api_token)

    @service.api.get("/ready", tags=["ops"], summary="Readiness: consuming and relaying")
    async def ready() -> Any:
        from backbone.http import problem

        if await service.ready():
            return {"status": "ready"}
        stalled = service.stalled_partitions()
        if stalled:
            detail = "Stalled until an operator decides (booking-accounts positions): " + "; ".join(stalled)
            return problem(503, "Not ready", detail)
        return problem(503, "Not ready", "Still starting: joining consumer groups.")

    return service


def serve(build: Callable[[], Service]) -> None:
    service = build()
    configure(service.name, service.settings.log_level, service.settings.log_format)
    uvicorn.run(
        service.api,
        host=service.settings.http_host,
        port=service.settings.http_port,
        log_config=None,  # keep our structured logging
        timeout_graceful_shutdown=10,
    )
