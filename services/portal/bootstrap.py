"""The composition root of the portal: the customer pages, the staff back office and the
pages emailed links open, over the accounts, bookings and notifier HTTP APIs.

The portal has no store and no bus: it is a thin web front that keeps only a sealed cookie
per visitor (see web.py). Each audience has its own module-level router: `links` (emailed
links), `customer` (/t/{tenant}/...), `staff` (/staff/t/{tenant}/...); `site` has the root page,
health, and the error pages. Routes get the `Portal` built here from `app.state.portal`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware

from backbone import context
from backbone.http import CORRELATION_HEADER
from services.portal import customer, links, site, staff
from services.portal.backends import Backends
from services.portal.settings import PortalSettings
from services.portal.web import STATIC, Portal, Sealer, Sessions


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
    for router in (site.router, links.router, customer.router, staff.router):
        web.include_router(router)
    for kind, page in site.ERROR_PAGES.items():
        web.add_exception_handler(kind, page)
    return web


class _Correlation(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        request.state.correlation_id = str(uuid.uuid4())
        with context.working(request.state.correlation_id):  # in its log lines (and the backends')
            response: Response = await call_next(request)
        response.headers[CORRELATION_HEADER] = request.state.correlation_id
        return response
