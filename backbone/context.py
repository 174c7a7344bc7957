"""Who and what caused the work in progress: correlation, causation, actor and tenant.

Set once at the edge (an HTTP request, a consumed message) and read by the domain base class,
which stamps it on every event the work records. Lives in a context variable, so it follows
`asyncio.to_thread` into the worker threads where the event store runs.

With tracing on (`backbone.tracing`), the cause also carries the `traceparent` of the span in
effect when it was set: stored with the events, it lets the outbox relay continue the trace of
the request long after it ended. (Absent from `meta` when tracing is off.)

Every log line carries a correlation id (`backbone.logging`): the cause's, else the one of the
work in progress (`working`: an HTTP request before it has a cause, a batch of a follower or
consumer), else the one of this process's life (`INSTANCE`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID, uuid4

from backbone import tracing


@dataclass(frozen=True)
class Cause:
    correlation_id: str
    causation_id: str | None
    actor: str  # "customer:<id>", "staff:<id>" or "service:<name>"
    tenant_id: str | None = None  # the business in whose scope the work happens
    traceparent: str | None = None  # the span in effect, when tracing is on

    def as_meta(self) -> dict[str, str | None]:
        # By hand: `dataclasses.asdict` (a recursive deep copy) was most of an event's cost.
        meta = {
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "actor": self.actor,
            "tenant_id": self.tenant_id,
        }
        if self.traceparent is not None:
            meta["traceparent"] = self.traceparent
        return meta

    @classmethod
    def from_meta(cls, meta: dict | None) -> Cause:
        meta = meta or {}
        return cls(
            correlation_id=meta.get("correlation_id") or str(uuid4()),
            causation_id=meta.get("causation_id"),
            actor=meta.get("actor") or "service:unknown",
            tenant_id=meta.get("tenant_id"),
            traceparent=meta.get("traceparent"),
        )


_current: contextvars.ContextVar[Cause | None] = contextvars.ContextVar("cause", default=None)
_work: contextvars.ContextVar[str | None] = contextvars.ContextVar("work_correlation", default=None)

INSTANCE = str(uuid4())
"""The correlation id of this process's own life (start, stop, loops between units of work)."""


def current() -> Cause:
    """The cause in effect, or a fresh one (a new correlation) when nothing set it."""
    cause = _current.get()
    if cause is not None:
        return cause
    return Cause(str(uuid4()), None, "service:unknown", traceparent=tracing.traceparent())


@contextmanager
def caused_by(
    actor: str,
    tenant_id: str | None = None,
    correlation_id: UUID | str | None = None,
    causation_id: UUID | str | None = None,
    traceparent: str | None = None,
) -> Iterator[Cause]:
    """Work done for `actor`. Its trace context is the current span's (tracing on), else
    `traceparent`: the cause being carried on (a stored cause, resumed by a follower)."""
    cause = Cause(
        correlation_id=str(correlation_id or uuid4()),
        causation_id=str(causation_id) if causation_id else None,
        actor=actor,
        tenant_id=tenant_id,
        traceparent=tracing.traceparent() or traceparent,
    )
    token = _current.set(cause)
    try:
        yield cause
    finally:
        _current.reset(token)


def correlation_id() -> str:
    """The correlation id of what is logged now (see the module docstring). Never creates a
    cause: reading it changes nothing of what the work records."""
    cause = _current.get()
    if cause is not None:
        return cause.correlation_id
    return _work.get() or INSTANCE


def begin_work(correlation: UUID | str | None = None) -> contextvars.Token[str | None]:
    """`working` for hot paths that cannot afford a context manager: pass the token to
    `end_work` when the unit of work ends."""
    return _work.set(str(correlation or uuid4()))


def end_work(token: contextvars.Token[str | None]) -> None:
    _work.reset(token)


@contextmanager
def working(correlation: UUID | str | None = None) -> Iterator[str]:
    """A unit of work that no cause covers yet (an HTTP request until its handler sets one, a
    batch of a follower or a consumer): its log lines share one correlation id, `correlation`
    or a new one."""
    value = str(correlation or uuid4())
    token = _work.set(value)
    try:
        yield value
    finally:
        _work.reset(token)
