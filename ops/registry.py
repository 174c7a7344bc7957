"""The services of the system, as the operator tool sees them: built by their own bootstrap.

The one list of services is `SERVICES`. For each, the tool calls the service's composition
root (`bootstrap(settings)`) with the deployment's settings, and never starts what it built:
the `Service` it returns names everything operators work on (event store, read models and
their projections, outbox relay, consumers, topics, dead-letter topics), so whatever a service
adds there is covered here without changes. A new service is one line in `SERVICES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from backbone.eventstore import ServiceApplication, store_missing
from backbone.inbox import Inbox
from backbone.kafkasecurity import KafkaCluster
from backbone.outbox import OutboxRelay
from backbone.readmodel import Projection, ReadModel
from backbone.runtime import Service
from backbone.settings import ServiceSettings
from backbone.subjectkeys import SubjectKeyReceiver
from ops.config import Deployment, OpsError


@dataclass(frozen=True)
class Entry:
    name: str
    settings: str  # "module:Class" of the service's settings
    bootstrap: str  # "module:function" of its composition root


SERVICES: tuple[Entry, ...] = (
    Entry("accounts", "services.accounts.settings:AccountsSettings", "services.accounts.bootstrap:bootstrap"),
    Entry("bookings", "services.bookings.settings:BookingsSettings", "services.bookings.bootstrap:bootstrap"),
    Entry("notifier", "services.notifier.settings:NotifierSettings", "services.notifier.bootstrap:bootstrap"),
)
NAMES = tuple(entry.name for entry in SERVICES)

Consumer = Inbox | SubjectKeyReceiver


@dataclass
class ServiceHandle:
    """One service as its bootstrap built it (never started: no HTTP, no consumer group)."""

    name: str
    service: Service

    @property
    def app(self) -> ServiceApplication:
        return self.service.app

    @property
    def settings(self) -> ServiceSettings:
        return self.service.settings

    @property
    def kafka(self) -> KafkaCluster:
        """The service's cluster and how to reach it (its TLS and SASL settings)."""
        return self.settings.kafka_cluster()

    @property
    def relays(self) -> list[OutboxRelay]:
        return [f for f in self.service.followers if isinstance(f, OutboxRelay)]

    @property
    def projections(self) -> list[Projection]:
        return [f for f in self.service.followers if isinstance(f, Projection)]

    @property
    def read_models(self) -> list[tuple[ReadModel, list[Projection]]]:
        """Each read model with the projections that write it."""
        grouped: dict[int, tuple[ReadModel, list[Projection]]] = {}
        for projection in self.projections:
            grouped.setdefault(id(projection.read_model), (projection.read_model, []))[1].append(projection)
        return list(grouped.values())

    @property
    def consumers(self) -> list[Consumer]:
        """Key receivers first: what an inbox applies may need the keys they bring."""
        keys = [c for c in self.service.consumers if isinstance(c, SubjectKeyReceiver)]
        return [*keys, *(c for c in self.service.consumers if isinstance(c, Inbox))]

    @property
    def dead_letter_topics(self) -> list[str]:
        return sorted({c.dead_letter_topic for c in self.consumers})

    def consumer(self, name: str) -> Consumer:
        """A consumer by its name, with or without the deployment's topic namespace."""
        for consumer in self.consumers:
            if name in (consumer.name, self.settings.topic(name)):
                return consumer
        known = ", ".join(c.name for c in self.consumers) or "none"
        raise OpsError(f"{self.name} has no consumer {name!r} (it has: {known})")

    def close(self) -> None:
        self.app.close()
        for read_model, _ in self.read_models:
            read_model.close()


def entry(name: str) -> Entry:
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise OpsError(f"no service {name!r}: the services are {', '.join(NAMES)}")


def settings_class(name: str) -> type[ServiceSettings]:
    return _load(entry(name).settings)


def build(name: str, deployment: Deployment) -> ServiceHandle:
    settings = deployment.settings(name, settings_class(name))
    if settings.store == "memory":
        raise OpsError(f"{name} is configured with STORE=memory: there is nothing to operate on")
    # Building the service would create a store that is missing: look first, without creating.
    problem = store_missing(settings.store_settings(), name)
    if problem:
        raise OpsError(f"{problem}; the tool never creates a store: give it the service's own settings")
    try:
        service = _load(entry(name).bootstrap)(settings)
    except (OSError, ValueError) as error:
        raise OpsError(f"{name}: cannot be built from its configuration: {error}") from None
    return ServiceHandle(name, service)


@contextmanager
def services(deployment: Deployment, names: Sequence[str] = ()) -> Iterator[list[ServiceHandle]]:
    """The named services (all of them if none is named), closed afterwards."""
    handles: list[ServiceHandle] = []
    try:
        for name in names or NAMES:
            handles.append(build(name, deployment))
        yield handles
    finally:
        for handle in handles:
            handle.close()


@contextmanager
def service(deployment: Deployment, name: str) -> Iterator[ServiceHandle]:
    with services(deployment, [name]) as [handle]:
        yield handle


def _load(reference: str) -> Any:
    # Our own constants (SERVICES), never input from outside.
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
