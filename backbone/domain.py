"""The base of every aggregate in the three services.

It is eventsourcing's `Aggregate` plus one thing: every event carries `meta`, the cause in
effect when it was triggered (correlation id, causation id, actor), so that audit tooling can
say who did what and why, and integration events can carry the same ids on the bus.

With tracing on, an aggregate also remembers the span that created it (`traceparent`, from
its first event's `meta`): work done on it later, apart from that request (the notifier's
delivery of a queued email), joins the same trace. Nothing is kept when tracing is off.
"""

from __future__ import annotations

from typing import Any

import eventsourcing.domain as es
from eventsourcing.domain import event

from backbone import context

__all__ = ["Aggregate", "DomainError", "NotFound", "event"]


class DomainError(Exception):
    """A business rule refused the request. `code` is machine-readable, the text is for humans.

    `final` is False when the refusal may go away by itself (e.g. a fact the rule needs has not
    arrived yet): a command refused that way may be sent again with the same command_id.

    Nothing here says how HTTP answers it: each service's HTTP layer maps its kinds of refusal
    to statuses (`backbone.http.Refusals`)."""

    code = "rejected"
    final = True

    def __init__(self, message: str, *, code: str | None = None, final: bool | None = None):
        super().__init__(message)
        if code:
            self.code = code
        if final is not None:
            self.final = final


class NotFound(Exception):
    """The thing does not exist *for this caller* (also used to hide others' data: IDOR)."""


class Aggregate(es.Aggregate):
    traceparent: str | None = None  # of the span that created it, when tracing was on

    class Event(es.Aggregate.Event):
        meta: dict[str, Any]

    class Created(Event, es.Aggregate.Created):
        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            traceparent = (getattr(self, "meta", None) or {}).get("traceparent")
            if traceparent is not None:
                aggregate.traceparent = traceparent

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        kwargs.setdefault("meta", context.current().as_meta())
        super().trigger_event(event_class, **kwargs)

    @classmethod
    def _create(cls, event_class: type[Any], **kwargs: Any) -> Any:
        kwargs.setdefault("meta", context.current().as_meta())
        return super()._create(event_class, **kwargs)
