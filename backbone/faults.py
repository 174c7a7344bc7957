"""Is this failure the message's fault, or the machine's? Decided by asking the stores.

A consumer that fails on a message has two very different ways forward: a message that cannot
be applied while everything it depends on is healthy is dead-lettered (the partition keeps
flowing, operators look at it later); a failure to reach a store is an outage, and the only
correct answer is to stall, retry with backoff, and resume where it stopped once the store is
back. Blaming a message for an outage loses it: the position moves past it and the merge rules
skip it for good.

The exception alone does not tell reliably. The event store raises eventsourcing's
`PersistenceError`s, the vault and the read models SQLAlchemy's `OperationalError`, psycopg and
redis their own, and a driver may wrap one in another (or a handler in a `RuntimeError`). So:

1. a failure whose exception (or any exception in its cause chain) is a known "could not
   reach / could not write" type is infrastructure at once;
2. any other failure is followed by a cheap probe of every store the service uses
   (`ServiceApplication.unreachable_stores`): if one does not answer, the failure is treated
   as infrastructure (`StoreUnavailable`, which carries the probe's answer) and retried;
3. only a failure with every store answering is the message's.

A third kind is neither: the broker *denies* this service something (an ACL: a topic it may not
read or write, a group it may not use). Retrying will not fix it and the message is not to
blame: only an operator can, by granting it. `classify` treats it like an outage (stall and
retry, never dead-letter), `cause_of` names it "denied", and the service's access check
(`backbone.kafkaacl`, `backbone.runtime.Access`) logs it as an error and keeps /ready at 503.

A fourth is a *conflict*: a handler's write to a store it shares with other instances (a
subject key in the vault, a row of a read model) lost a race, a unique key taken a moment
before. Every store answers, yet the message is not to blame: read again, the row is there.
`is_conflict` names it; the inbox applies the batch again a few times before it believes the
message is the cause (`backbone.inbox.CONFLICT_ATTEMPTS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from eventsourcing.persistence import IntegrityError as _ESIntegrityError
from eventsourcing.persistence import PersistenceError

from backbone.personal import UnknownSubject


class StoreUnavailable(Exception):
    """A store the service needs did not answer its health probe: an outage, not bad input."""


def _infrastructure_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [
        PersistenceError,
        OSError,  # includes ConnectionError and socket errors
        TimeoutError,
        UnknownSubject,  # a subject key that has not arrived yet
        StoreUnavailable,
    ]
    try:
        import sqlalchemy.exc as sa_exc

        # Not DBAPIError as a whole: it includes IntegrityError and DataError, which a bad
        # message can cause while the database is perfectly healthy (the probe decides those).
        types += [
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.TimeoutError,
            sa_exc.DisconnectionError,
        ]
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        pass
    try:
        import psycopg

        types += [psycopg.OperationalError, psycopg.InterfaceError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import aiokafka.errors as kafka_exc  # the broker (a relay publishing, a dead letter sent)

        types += [
            kafka_exc.KafkaConnectionError,
            kafka_exc.KafkaTimeoutError,
            kafka_exc.NodeNotReadyError,
            kafka_exc.RequestTimedOutError,
            kafka_exc.NotEnoughReplicasError,
            kafka_exc.NotLeaderForPartitionError,
        ]
    except ImportError:  # pragma: no cover - aiokafka is a dependency
        pass
    try:
        import redis.exceptions as redis_exc  # the shared rate limits' store, where installed

        types += [redis_exc.ConnectionError, redis_exc.TimeoutError]
    except ImportError:
        pass
    return tuple(types)


INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = _infrastructure_types()


def _denial_types() -> tuple[type[BaseException], ...]:
    import aiokafka.errors as kafka_exc

    return (
        kafka_exc.TopicAuthorizationFailedError,
        kafka_exc.GroupAuthorizationFailedError,
        kafka_exc.ClusterAuthorizationFailedError,
        kafka_exc.TransactionalIdAuthorizationFailed,
    )


DENIALS: tuple[type[BaseException], ...] = _denial_types()


def is_denied(error: BaseException) -> bool:
    """Is this (or anything in its cause chain) the broker refusing this principal (an ACL)?"""
    return any(isinstance(e, DENIALS) for e in causes(error))


# Errors of the event store that are about the data written, not the store's health: a
# conflicting version or position (another writer won a race). Never infrastructure by type.
_NOT_BY_TYPE: tuple[type[BaseException], ...] = (_ESIntegrityError,)


def _conflict_types() -> tuple[type[BaseException], ...]:
    import sqlite3

    import sqlalchemy.exc as sa_exc

    types: list[type[BaseException]] = [_ESIntegrityError, sa_exc.IntegrityError, sqlite3.IntegrityError]
    try:
        import psycopg

        types.append(psycopg.IntegrityError)
    except ImportError:  # pragma: no cover - only where PostgreSQL is used
        pass
    return tuple(types)


CONFLICTS: tuple[type[BaseException], ...] = _conflict_types()


def is_conflict(error: BaseException) -> bool:
    """Is this (or anything in its cause chain) a write that lost a race on a unique key?"""
    return any(isinstance(e, CONFLICTS) for e in causes(error))


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it was raised from or during, once each."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_infrastructure(error: BaseException) -> bool:
    """By type alone: is this (or anything in its cause chain) a failure to reach a store?"""
    return any(
        isinstance(e, INFRASTRUCTURE_ERRORS) and not isinstance(e, _NOT_BY_TYPE) for e in causes(error)
    )


def classify(error: BaseException, probe: Callable[[], list[str]]) -> BaseException | None:
    """The infrastructure error to stall on, or None if the failure is the message's own.

    `probe` returns the stores that do not answer (empty when all are healthy); it is called
    only when the type does not already decide.
    """
    if is_infrastructure(error) or is_denied(error):  # a denial is never the message's fault
        return error
    try:
        down = probe()
    except Exception as probe_error:  # a probe that cannot even run: treat as an outage
        return StoreUnavailable(f"store probe failed: {type(probe_error).__name__}: {probe_error}")
    if down:
        return StoreUnavailable("not answering: " + "; ".join(down))
    return None


def cause_of(error: BaseException, probe: Callable[[], list[str]]) -> str:
    """For a loop that retries whatever fails (followers, workers): "outage" if a store or the
    broker does not answer, else "failure" (a bug or bad data; it keeps retrying, never
    skipping), or "denied" if the broker refuses this service (an ACL). Blocking: may probe
    the stores."""
    if is_denied(error):
        return "denied"
    return "outage" if classify(error, probe) is not None else "failure"


def probe_all(probes: dict[str, Callable[[], Any]]) -> list[str]:
    """Run each named probe; the names (with the reason) of those that fail."""
    down = []
    for name, probe in probes.items():
        try:
            probe()
        except Exception as error:
            first_line = (str(error).splitlines() or [""])[0]
            down.append(f"{name} ({type(error).__name__}: {first_line})")
    return down
