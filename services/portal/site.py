"""The site's own routes (its root page, liveness, readiness) and how whatever goes wrong is
shown: as a page of the portal, in the visitor's language, never as JSON. `ERROR_PAGES` is the
portal's one table from kinds of error to what the visitor sees; the composition root
(bootstrap.py) installs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from backbone.logging import get_logger
from services.portal.backends import Refused, Unavailable
from services.portal.web import CsrfRefused, LoginNeeded, Portal, PortalDep, redirect

log = get_logger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready() -> dict[str, str]:
    return {"status": "ready"}


@router.get("/", response_class=HTMLResponse)
async def root(request: Request, portal: PortalDep) -> HTMLResponse:
    return portal.render(request, "root.html")


# --------------------------------------------------------------------------- error pages


def _error(request: Request, status: int, key: str | None, detail: str | None = None) -> Response:
    portal: Portal = request.app.state.portal
    return portal.render(request, "error.html", status=status, message_key=key, detail=detail)


async def _login(_: Request, needed: LoginNeeded) -> Response:
    return redirect(needed.to)


async def _csrf(request: Request, _: CsrfRefused) -> Response:
    log.warning("form without its CSRF token refused", path=request.url.path)
    return _error(request, 403, "error.csrf")


async def _refused(request: Request, refused: Refused) -> Response:
    if refused.status == 404:
        return _error(request, 404, "error.not_found")
    return _error(request, refused.status, None, refused.detail)


async def _unavailable(request: Request, error: Unavailable) -> Response:
    log.error("a service behind the portal is unavailable", error=str(error))
    return _error(request, 503, "error.unavailable")


async def _http(request: Request, error: StarletteHTTPException) -> Response:
    return _error(
        request,
        error.status_code,
        "error.not_found" if error.status_code == 404 else None,
        str(error.detail),
    )


async def _invalid(request: Request, error: RequestValidationError) -> Response:
    if request.method == "POST" and any(e.get("loc", [None])[-1] == "csrf" for e in error.errors()):
        return _error(request, 403, "error.csrf")
    return _error(request, 422, None, "; ".join(str(e.get("msg")) for e in error.errors()[:3]))


ERROR_PAGES: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    LoginNeeded: _login,  # type: ignore[dict-item]
    CsrfRefused: _csrf,  # type: ignore[dict-item]
    Refused: _refused,  # type: ignore[dict-item]
    Unavailable: _unavailable,  # type: ignore[dict-item]
    StarletteHTTPException: _http,  # type: ignore[dict-item]
    RequestValidationError: _invalid,  # type: ignore[dict-item]
}
