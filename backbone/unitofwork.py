"""The aggregates one batch of messages loads and changes, saved together at the end.

Handlers are plain functions `(message, uow) -> None`: they get aggregates from the unit of
work, call their methods, and add new ones. Nothing is written until the inbox saves the whole
batch, with its positions, in one transaction.

`scope()` makes one message's changes all-or-nothing inside the batch: if the handler raises,
every aggregate it touched is put back as it was before that message, so one rejected or
failing message never leaves half its changes in the batch. Nothing is copied for that (a deep
copy per message was a tenth of a batch's time): an aggregate changes only through its events,
so its version and pending events at first touch say where it was, and a rollback (rare: a
rejected or failing message) rebuilds what the message touched from the store at that version
plus those events.

`preload(ids)` reads every aggregate a batch is going to need in one query, instead of one
query (and one replay) per aggregate per message, which capped a service at a few hundred
messages a second. Ids it did not find are known to be absent: `get` answers None for them
without asking the store again. A unit of work given a `cache` (the inbox's, aggregates as last
committed) also spares replaying what did not change since; `committed()` puts back what the
batch stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from backbone.domain import Aggregate, DomainError
from backbone.eventstore import ServiceApplication

A = TypeVar("A", bound=Aggregate)


class IdConflict(DomainError):
    """The id is taken by an aggregate of another kind (e.g. a sender reusing an id)."""

    code = "id_conflict"


_ABSENT = object()
_KNOWN_ABSENT = object()  # preloaded and not found


class UnitOfWork:
    def __init__(self, app: ServiceApplication, cache: MutableMapping[UUID, Aggregate] | None = None):
        self.app = app
        self._aggregates: dict[UUID, Aggregate] = {}
        self._scopes: list[dict[UUID, object]] = []  # per open scope: id -> backup or _ABSENT
        self._absent: set[UUID] = set()  # preloaded and not found (until added)
        self._cache = cache

    def preload(self, ids: Iterable[UUID]) -> None:
        """Read the aggregates with these ids in one go (those not already in this unit)."""
        wanted = {i for i in ids if i not in self._aggregates and i not in self._absent}
        if not wanted:
            return
        found = self.app.load_many(wanted, self._cache)
        self._aggregates.update(found)
        self._absent.update(wanted - found.keys())

    def committed(self) -> None:
        """The batch is stored: its aggregates, as they now are, are the cache's."""
        if self._cache is not None:
            for aggregate_id, aggregate in self._aggregates.items():
                self._cache[aggregate_id] = aggregate

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate, as changed so far in this unit of work; None if it does not exist."""
        aggregate = self._aggregates.get(aggregate_id)
        if aggregate is None:
            if aggregate_id in self._absent:
                self._touch(aggregate_id)
                return None
            try:
                aggregate = self.app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None
            self._touch(aggregate_id)
            self._aggregates[aggregate_id] = aggregate
        else:
            self._touch(aggregate_id)
        if not isinstance(aggregate, cls):
            raise IdConflict(f"{aggregate_id} is already used by something that is not a {cls.__name__}")
        return aggregate

    def add(self, aggregate: Aggregate) -> None:
        self._touch(aggregate.id)
        self._aggregates[aggregate.id] = aggregate
        self._absent.discard(aggregate.id)

    def changed(self) -> list[Aggregate]:
        return [a for a in self._aggregates.values() if a.pending_events]

    @contextmanager
    def scope(self) -> Iterator[None]:
        self._scopes.append({})
        try:
            yield
        except BaseException:
            self._restore(self._scopes.pop())
            raise
        else:
            inner = self._scopes.pop()
            if self._scopes:  # an enclosing scope must still be able to undo these
                for aggregate_id, backup in inner.items():
                    self._scopes[-1].setdefault(aggregate_id, backup)

    def _touch(self, aggregate_id: UUID) -> None:
        if self._scopes and aggregate_id not in self._scopes[-1]:
            current = self._aggregates.get(aggregate_id)
            if current is not None:
                self._scopes[-1][aggregate_id] = _Mark(current, current.version, len(current.pending_events))
            else:
                self._scopes[-1][aggregate_id] = _KNOWN_ABSENT if aggregate_id in self._absent else _ABSENT

    def _restore(self, backups: dict[UUID, object]) -> None:
        for aggregate_id, backup in backups.items():
            if isinstance(backup, _Mark):  # rebuilt even if its version did not move: an
                # event whose apply raised may have left it half-changed
                self._aggregates[aggregate_id] = self._rebuild(aggregate_id, backup)
            elif backup is _ABSENT:
                self._aggregates.pop(aggregate_id, None)
            elif backup is _KNOWN_ABSENT:
                self._aggregates.pop(aggregate_id, None)
                self._absent.add(aggregate_id)

    def _rebuild(self, aggregate_id: UUID, mark: _Mark) -> Aggregate:
        """The aggregate as it was at `mark`: stored at the version it was loaded at, plus the
        events this unit of work had made it trigger by then (still pending)."""
        events = list(mark.aggregate.pending_events[: mark.pending])
        loaded_at = mark.version - mark.pending
        aggregate: Any = self.app.repository.get(aggregate_id, version=loaded_at) if loaded_at else None
        for event in events:
            aggregate = event.mutate(aggregate)
        aggregate._pending_events = events  # where eventsourcing keeps them
        return aggregate  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Mark:
    """Where an aggregate was when a scope first touched it."""

    aggregate: Aggregate
    version: int
    pending: int
