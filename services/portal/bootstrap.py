"""The composition root of the portal: the customer pages, the staff back office and the
pages emailed links open, over the accounts, bookings and notifier HTTP APIs.

The portal has no store and no bus: it is a thin web front that keeps only a sealed cookie
per visitor (see web.py). Each audience has its own module-level router: `links` (emailed
links), `customer` (/t/{tenant}/...), `staff` (/staff/t/{tenant}/...).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware

from backbone import context
from backbone.http import CORRELATION_HEADER
from backbone.logging import get_logger
from services.portal import customer, links, staff
from services.portal.backends import Backends, Refused, Unavailable
from services.portal.settings import PortalSettings
from services.portal.web import STATIC, CsrfRefused, LoginNeeded, Portal, Sealer, Sessions, redirect

log = get_logger(__name__)


def bootstrap(settings: PortalSettings | None = None) -> FastAPI:
    settings = settings or PortalSettings()
    backends = Backends(
        settings.accounts_url, settings.bookings_url, settings.notifier_url, settings.backend_timeout_seconds
    )
    portal = Portal(settings, backends)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await backends.close()

    web = FastAPI(
        title="booking-accounts: portal",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    web.state.portal, web.state.settings = portal, settings
    web.add_middleware(Sessions, sealer=Sealer(settings.cookie_key_path(), 30 * 24 * 3600), settings=settings)
    web.add_middleware(_Correlation)
    web.mount("/static", StaticFiles(directory=STATIC), name="static")
    web.include_router(links.router)
    web.include_router(customer.router)
    web.include_router(staff.router)

    @web.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @web.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @web.get("/", response_class=HTMLResponse)
    async def root(request: Request) -> HTMLResponse:
        return portal.render(request, "root.html")

    @web.exception_handler(LoginNeeded)
    async def _login(_: Request, needed: LoginNeeded) -> Response:
        return redirect(needed.to)

    @web.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> Response:
        log.warning("form without its CSRF token refused", path=request.url.path)
        return _error(portal, request, 403, "error.csrf")

    @web.exception_handler(Refused)
    async def _refused(request: Request, refused: Refused) -> Response:
        if refused.status == 404:
            return _error(portal, request, 404, "error.not_found")
        return _error(portal, request, refused.status, None, refused.detail)

    @web.exception_handler(Unavailable)
    async def _unavailable(request: Request, error: Unavailable) -> Response:
        log.error("a service behind the portal is unavailable", error=str(error))
        return _error(portal, request, 503, "error.unavailable")

    @web.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        return _error(
            portal,
            request,
            error.status_code,
            "error.not_found" if error.status_code == 404 else None,
            str(error.detail),
        )

    from fastapi.exceptions import RequestValidationError

    @web.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        if request.method == "POST" and any(e.get("loc", [None])[-1] == "csrf" for e in error.errors()):
            return _error(portal, request, 403, "error.csrf")
        return _error(portal, request, 422, None, "; ".join(str(e.get("msg")) for e in error.errors()[:3]))

    return web


def _error(
    portal: Portal, request: Request, status: int, key: str | None, detail: str | None = None
) -> Response:
    return portal.render(request, "error.html", status=status, message_key=key, detail=detail)


class _Correlation(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        request.state.correlation_id = str(uuid.uuid4())
        with context.working(request.state.correlation_id):  # in its log lines (and the backends')
            response: Response = await call_next(request)
        response.headers[CORRELATION_HEADER] = request.state.correlation_id
        return response
