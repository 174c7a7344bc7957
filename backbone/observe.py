"""What every service's HTTP API measures and logs by: latency per route, the request's
correlation id in every log line, and (when on) traces (`backbone.tracing`).

`http(api)` is called by the app factory (`backbone.http.create_api`); the middleware sits
inside the edge (`backbone.http._Edge`), which has chosen the request's correlation id by then.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbone import context, metrics


def http(api: FastAPI) -> None:
    api.add_middleware(_Observed)


class _Observed:
    """A plain ASGI middleware (no task group per request): one histogram observation and one
    context variable per request."""

    def __init__(self, app: ASGIApp):
        self.app = app

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

        with context.working(scope.get("state", {}).get("correlation_id")):
            try:
                await self.app(scope, receive, sent)
            finally:
                route = scope.get("route")
                metrics.http_seconds.labels(
                    scope.get("method", ""),
                    getattr(route, "path", None) or "unmatched",  # a template: bounded labels
                    str(status),
                ).observe(time.perf_counter() - started)
