"""What every service's HTTP API measures and logs by: latency per route, the request's
correlation id in every log line, and (when on) traces (`backbone.tracing`).

The edge (`backbone.http._Edge`, the one middleware of every service's API) chooses the
request's correlation id, makes it the id of the request's log lines (`context.begin_work`) and
calls `answered` when the request is done: one middleware layer, not one per concern.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from backbone import metrics

_children: dict[tuple[str, str, int], Any] = {}  # the labelled histogram children, looked up once


def answered(scope: Scope, status: int, seconds: float) -> None:
    """One request answered (called by the edge, `backbone.http._Edge`, for every request)."""
    route = getattr(scope.get("route"), "path", None) or "unmatched"  # a template: bounded
    key = (scope.get("method", ""), route, status)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metrics.http_seconds.labels(key[0], route, str(status))
    child.observe(seconds)
