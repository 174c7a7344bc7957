"""What every service's HTTP API measures and logs by: latency per route, the request's
correlation id in every log line, and (when on) traces (`backbone.tracing`).

`http(api)` is called by the app factory (`backbone.http.create_api`); the middleware sits
inside the edge (`backbone.http._Edge`), which has chosen the request's correlation id by then.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbone import context, metrics


def http(api: FastAPI) -> None:
    api.add_middleware(_Observed)


class _Observed:
    """A plain ASGI middleware (no task group per request): one context variable and one
    histogram observation per request, the labelled child looked up once per label set."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless an answer starts
        started = time.perf_counter()

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = context.begin_work(scope.get("state", {}).get("correlation_id"))
        try:
            await self.app(scope, receive, sent)
        finally:
            context.end_work(token)
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # a template: bounded
            key = (scope.get("method", ""), route, status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = metrics.http_seconds.labels(key[0], route, str(status))
            child.observe(time.perf_counter() - started)
