"""Who and what caused the work in progress: correlation, causation, actor and tenant.

Set once at the edge (an HTTP request, a consumed message) and read by the domain base class,
which stamps it on every event the work records. Lives in a context variable, so it follows
`asyncio.to_thread` into the worker threads where the event store runs.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from uuid import UUID, uuid4


@dataclass(frozen=True)
class Cause:
    correlation_id: str
    causation_id: str | None
    actor: str  # "customer:<id>", "staff:<id>" or "service:<name>"
    tenant_id: str | None = None  # the business in whose scope the work happens

    def as_meta(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict | None) -> Cause:
        meta = meta or {}
        return cls(
            correlation_id=meta.get("correlation_id") or str(uuid4()),
            causation_id=meta.get("causation_id"),
            actor=meta.get("actor") or "service:unknown",
            tenant_id=meta.get("tenant_id"),
        )


_current: contextvars.ContextVar[Cause | None] = contextvars.ContextVar("cause", default=None)


def current() -> Cause:
    """The cause in effect, or a fresh one (a new correlation) when nothing set it."""
    cause = _current.get()
    return cause if cause is not None else Cause(str(uuid4()), None, "service:unknown")


@contextmanager
def caused_by(
    actor: str,
    tenant_id: str | None = None,
    correlation_id: UUID | str | None = None,
    causation_id: UUID | str | None = None,
) -> Iterator[Cause]:
    cause = Cause(
        correlation_id=str(correlation_id or uuid4()),
        causation_id=str(causation_id) if causation_id else None,
        actor=actor,
        tenant_id=tenant_id,
    )
    token = _current.set(cause)
    try:
        yield cause
    finally:
        _current.reset(token)
