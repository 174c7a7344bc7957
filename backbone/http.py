"""The HTTP edge shared by the services: errors as problem+json, correlation ids, health.

Every error a caller can cause gets a 4xx with a sentence saying what is wrong (RFC 9457
problem details), never a 500: malformed JSON, a schema violation, an oversized body (counted
as it arrives, chunked or not: `_Edge`), a business rule. A 500 only ever means a bug,
and carries the correlation id to find it in logs.

Business refusals (`backbone.domain.DomainError` and the like) know nothing of HTTP: each
service's HTTP layer gives its one table of `Refusals` (which status, title and headers each
kind of refusal gets), and only this edge turns a refusal into an answer. A refusal that no
table names is a 409.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbone import context, metrics, observe
from backbone.domain import DomainError, NotFound  # NotFound: also imported from here
from backbone.logging import get_logger

log = get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

MAX_BODY_BYTES = 256 * 1024
NO_NATIVE_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
CORRELATION_HEADER = "X-Correlation-Id"


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, code: str | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.code = status, title, detail, code


async def run_sync(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run blocking work (the event store) off the event loop."""
    return await asyncio.to_thread(func, *args, **kwargs)


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


@dataclass(frozen=True)
class Refusal:
    """How the edge answers one kind of refusal: its status (or a function of the error that
    gives it, for a kind whose `code`s differ), the problem's title, its `code` (by default
    the error's own, if it has one) and extra headers (a function of the error)."""

    status: int | Callable[[Any], int]
    title: str = "Refused"
    code: str | None = None
    headers: Callable[[Any], dict[str, str]] | None = None

    def status_of(self, error: Exception) -> int:
        return self.status(error) if callable(self.status) else self.status

    def answer(self, error: Exception) -> JSONResponse:
        code = self.code or getattr(error, "code", None)
        response = problem(self.status_of(error), self.title, str(error), **({"code": code} if code else {}))
        for key, value in (self.headers(error) if self.headers else {}).items():
            response.headers[key] = value
        return response


REFUSED = Refusal(409)  # a business rule refused, and no table says more


class Refusals:
    """A service's one table from kinds of refusal (exception classes) to their answers.
    A kind not in it answers as its nearest base class in it does, a `DomainError` as 409."""

    def __init__(self, table: Mapping[type[Exception], Refusal]):
        self.table = dict(table)

    def of(self, error: Exception) -> Refusal:
        for kind in type(error).__mro__:
            if kind in self.table:
                return self.table[kind]
        return REFUSED

    def status_of(self, error: Exception) -> int:
        return self.of(error).status_of(error)

    def install(self, api: FastAPI) -> None:
        """Answer each kind in the table as it says (one exception handler per kind)."""

        async def refused(_: Request, error: Exception) -> Response:
            return self.of(error).answer(error)

        for kind in self.table:
            api.add_exception_handler(kind, refused)


Shortcut = Callable[[Scope], Awaitable[Response | None]]


class Shortcuts:
    """Answers the edge gives before routing, for the few hot reads whose ordinary way costs
    more CPU than their work: FastAPI's routing, dependency solving and response validation
    are most of a cached read (a customer's bookings list and one booking, issue 17's profile).

    A shortcut answers only what it is sure of, a success, and returns None for anything else:
    no token or a bad one, not found, anything unusual. That request then goes the ordinary
    way, to the route FastAPI declares and documents, which gives the one answer for each error.
    So a shortcut must answer exactly as its route does; each has a test comparing the two,
    byte for byte. It runs inside the edge: correlation ids, log lines, the latency histogram
    (it puts its route in `scope["route"]`) and the safety net hold for it as for any route.
    `create_api` gives every API one, as `api.state.shortcuts`; most have none."""

    def __init__(self) -> None:
        self.handlers: list[Shortcut] = []
        self.enabled = True  # (tests turn it off to compare with the ordinary way)

    def add(self, handler: Shortcut) -> None:
        self.handlers.append(handler)

    async def answer(self, scope: Scope) -> Response | None:
        for handler in self.handlers:
            response = await handler(scope)
            if response is not None:
                return response
        return None


def create_api(title: str, version: str, description: str) -> FastAPI:
    # /docs and /redoc with Swagger UI's and ReDoc's assets served from the package
    # (fastapi-offline), not from a CDN: the pages work without internet.
    # FastAPI's own OpenTelemetry hooks off: traces come from `backbone.tracing` when a
    # deployment turns them on, and the hooks asked for the global tracer, meter and logger
    # providers on every request (environment lookups: 7 % of the bookings service's event
    # loop at 50 cancels/s on py-spy's profile, with tracing off).
    api = FastAPIOffline(title=title, version=version, description=description, telemetry=NO_NATIVE_TELEMETRY)
    api.state.shortcuts = shortcuts = Shortcuts()
    api.add_middleware(_Edge, limit=MAX_BODY_BYTES, shortcuts=shortcuts)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in error.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(400, "Malformed JSON", "The request body is not valid JSON.")
        summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return problem(422, "Invalid request", summary, errors=errors)

    @api.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        titles = {
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not found",
            405: "Not allowed",
            413: "Payload too large",
        }
        if error.status_code == 413:
            return _too_large(MAX_BODY_BYTES)
        response = problem(error.status_code, titles.get(error.status_code, "Error"), str(error.detail))
        for key, value in (error.headers or {}).items():
            response.headers[key] = value
        return response

    @api.exception_handler(NotFound)
    async def _not_found(_: Request, error: NotFound) -> JSONResponse:
        return problem(404, "Not found", str(error) or "No such resource.")

    @api.exception_handler(DomainError)
    async def _refused(_: Request, error: DomainError) -> JSONResponse:
        return REFUSED.answer(error)  # (the service's `Refusals` answer the kinds they name)

    @api.exception_handler(Problem)
    async def _problem(_: Request, error: Problem) -> JSONResponse:
        extra = {"code": error.code} if error.code else {}
        return problem(error.status, error.title, error.detail, **extra)

    @api.get("/health", tags=["ops"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return api


class _Edge:
    """Correlation id in and out (and in every log line of the request), the latency per route
    (`observe`), at most `limit` bytes of body, and a safety net for bugs.

    Before routing, it offers the request to the API's `Shortcuts` (GETs only).

    A plain ASGI middleware, and one only: Starlette's `BaseHTTPMiddleware` runs every request
    through a task group and memory streams, and each further layer costs every request a
    coroutine and a wrapped `send`, more than a cached read costs itself.

    The body is counted as it arrives: a chunked body has no Content-Length to check up front.
    (Starlette's RequestBodyLimitMiddleware counts the same way but answers in plain text,
    replacing even our problem+json answer.) A declared length over the limit is refused before
    anything is read; a body that grows over it makes the read fail with 413, which the
    handlers above turn into a problem."""

    def __init__(self, app: ASGIApp, limit: int, shortcuts: Shortcuts | None = None):
        self.app, self.limit, self.shortcuts = app, limit, shortcuts or Shortcuts()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        correlation = headers.get(CORRELATION_HEADER, "")
        try:
            correlation = str(uuid.UUID(correlation))
        except ValueError:
            correlation = str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = correlation  # request.state.correlation_id
        started = False
        status = 500  # unless an answer starts
        began = time.perf_counter()

        async def send_with_correlation(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation
            await send(message)

        token = context.begin_work(correlation)  # the id of every log line of this request
        try:
            await self._answer(scope, receive, send_with_correlation, correlation, lambda: started)
        finally:
            context.end_work(token)
            observe.answered(scope, status, time.perf_counter() - began)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, correlation: str, started: Callable[[], bool]
    ) -> None:
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, "too large")  # (FastAPI's: its body reader lets it through)
            return message

        try:
            shortcuts = self.shortcuts
            if shortcuts.handlers and shortcuts.enabled and scope["method"] == "GET":
                response = await shortcuts.answer(scope)
                if response is not None:
                    await response(scope, counted, send)
                    return
            await self.app(scope, counted, send)
        except Exception:
            log.exception("unhandled error", path=scope.get("path", ""), correlation_id=correlation)
            if started():  # too late for an answer of our own: the client sees the connection end
                raise
            response = problem(
                500, "Internal error", "Something went wrong on our side.", correlation_id=correlation
            )
            await response(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return problem(413, "Payload too large", f"The body must be at most {limit} bytes.")
