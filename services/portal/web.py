"""What every page of the portal shares: the visitor's sealed cookie, CSRF tokens, security
headers, the page renderer, and the dependencies routes declare (`Annotated[..., Depends]`).

The session lives in one cookie, sealed with Fernet (AES-CBC + HMAC, with its issue time):
the browser can neither read nor change it. It holds the CSRF token of the visitor, their
language, and once logged in their credential (a customer's session token from accounts, or
a staff member's API key) - never in a URL, never readable by scripts (HttpOnly), sent only
by same-site navigations (SameSite=Lax), Secure under TLS. Logging out asks accounts to end
the customer's sessions, so a copied cookie dies with it; a staff session ends when the key
is removed. Every POST carries the CSRF token in a hidden field and is refused without it.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbone.logging import get_logger
from services.portal.backends import Backends, Caller, Refused
from services.portal.i18n import Words, language_of
from services.portal.settings import PortalSettings

log = get_logger(__name__)

COOKIE = "portal_session"
BRANDING_FRESH_SECONDS = 30.0
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a link's token must never leave in a Referer
    "X-Frame-Options": "DENY",
}


@dataclass
class Visitor:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    language: str | None = None
    kind: str | None = None  # "customer" | "staff"
    tenant: str | None = None
    credential: str | None = None
    link: str | None = None  # an emailed link's token, moved out of the URL, until its form is sent
    notice: str | None = None  # one message for the next page
    dirty: bool = False

    def log_in(self, kind: str, tenant: str, credential: str) -> None:
        """A new session gets a new CSRF token (nothing from before the login carries over)."""
        self.kind, self.tenant, self.credential = kind, tenant, credential
        self.csrf = secrets.token_urlsafe(32)
        self.link = None
        self.dirty = True

    def log_out(self) -> None:
        self.kind = self.tenant = self.credential = None
        self.csrf = secrets.token_urlsafe(32)
        self.dirty = True

    def tell(self, notice: str) -> None:
        self.notice, self.dirty = notice, True

    def take_notice(self) -> str | None:
        notice, self.notice = self.notice, None
        if notice:
            self.dirty = True
        return notice


class Sealer:
    def __init__(self, key_file: Path, max_age_seconds: int):
        key_file.parent.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            key_file.write_bytes(Fernet.generate_key())
            key_file.chmod(0o600)
        self.fernet = Fernet(key_file.read_bytes().strip())
        self.max_age = max_age_seconds

    def seal(self, visitor: Visitor) -> str:
        data = {k: v for k, v in asdict(visitor).items() if k != "dirty" and v is not None}
        return self.fernet.encrypt(json.dumps(data).encode()).decode()

    def open(self, value: str | None) -> Visitor | None:
        if not value:
            return None
        try:
            data = json.loads(self.fernet.decrypt(value.encode(), ttl=self.max_age))
            return Visitor(**{k: v for k, v in data.items() if k in Visitor.__dataclass_fields__})
        except (InvalidToken, ValueError, TypeError):
            return None


class Sessions:
    """Opens the cookie into `request.state.visitor`, seals it back when it changed, and adds
    the security headers to every answer.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` runs every request through a task
    group and memory streams, a fifth of a page's CPU time here. The visitor is sealed back as
    the answer starts, after the route is done with it."""

    def __init__(self, app: ASGIApp, sealer: Sealer, settings: PortalSettings):
        self.app, self.sealer, self.settings = app, sealer, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        visitor = self.sealer.open(HTTPConnection(scope).cookies.get(COOKIE))
        if visitor is None:
            visitor = Visitor(dirty=True)
        scope.setdefault("state", {})["visitor"] = visitor  # request.state.visitor

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if visitor.dirty:
                    headers.append("set-cookie", self._cookie(visitor, scope))
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_session)

    def _cookie(self, visitor: Visitor, scope: Scope) -> str:
        secure = self.settings.secure_cookies
        if secure is None:
            secure = scope.get("scheme") == "https"
        carrier = Response()  # (Starlette's own cookie rendering)
        carrier.set_cookie(
            COOKIE,
            self.sealer.seal(visitor),
            max_age=self.sealer.max_age,
            httponly=True,
            samesite="lax",
            secure=secure,
            path="/",
        )
        return carrier.headers["set-cookie"]


# --------------------------------------------------------------------------- errors


class CsrfRefused(Exception):
    """A form came without this visitor's CSRF token."""


class LoginNeeded(Exception):
    def __init__(self, to: str):
        super().__init__(to)
        self.to = to


# --------------------------------------------------------------------------- the portal


class Portal:
    """What the routes need, built by the composition root (bootstrap.py)."""

    def __init__(self, settings: PortalSettings, backends: Backends):
        self.settings, self.backends = settings, backends
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self._branding: dict[str, tuple[float, dict[str, Any]]] = {}  # tenant -> (fresh until, branding)

    async def branding(self, tenant: str) -> dict[str, Any]:
        """The business as customers see it (name, contact, time zone, logo, colour): public
        facts, asked of the notifier, which keeps the tenant's branding. Every page shows
        them, so an answer is kept for `BRANDING_FRESH_SECONDS` (asking on every page cost a
        fifth of a page's time): a business's new logo shows within that long."""
        known = self._branding.get(tenant)
        if known is not None and time.monotonic() < known[0]:
            return known[1]
        try:
            found = await self.backends.branding(tenant)
        except Exception as error:  # the pages still work, with the last known (or plain) branding
            log.warning("branding unavailable", tenant_id=tenant, error=str(error))
            found = (
                known[1]
                if known
                else {
                    "tenant_id": tenant,
                    "business_name": tenant,
                    "contact_email": None,
                    "timezone": "UTC",
                    "logo_url": None,
                    "colour": None,
                    "default_language": None,
                }
            )
            # Asked again at the next page: an outage is not remembered as fresh.
            self._branding[tenant] = (0.0, found)
            return found
        self._branding[tenant] = (time.monotonic() + BRANDING_FRESH_SECONDS, found)
        return found

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        visitor: Visitor = request.state.visitor
        brand = context.pop("brand", None)
        words = words_for(request, self.settings, brand)
        return self.templates.TemplateResponse(
            request,
            template,
            {
                "visitor": visitor,
                "csrf": visitor.csrf,
                "brand": brand,
                "w": words,
                "t": words.t,
                "notice": visitor.take_notice(),
                **context,
            },
            status_code=status,
        )


def words_for(request: Request, settings: PortalSettings, brand: dict[str, Any] | None) -> Words:
    visitor: Visitor = request.state.visitor
    language = (
        visitor.language
        or language_of(request.headers.get("accept-language"))
        or (brand or {}).get("default_language")
        or settings.default_language
    )
    return Words(language, (brand or {}).get("timezone") or "UTC")


def redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303)


async def told(
    visitor: Visitor, work: Awaitable[Any], back: str, done: str, refused: Callable[[Refused], str]
) -> RedirectResponse:
    """What most forms do: the work a service does (`work`, a call not yet awaited), then back
    to the page `back`, which tells the visitor how it went: `done`, or `refused(refusal)`."""
    try:
        await work
    except Refused as refusal:
        visitor.tell(refused(refusal))
    else:
        visitor.tell(done)
    return redirect(back)


# --------------------------------------------------------------------------- dependencies


# Coroutines that block on nothing: a plain function would go through the thread pool.


async def _portal(request: Request) -> Portal:
    return request.app.state.portal


async def _visitor(request: Request) -> Visitor:
    return request.state.visitor


async def _checked(request: Request) -> Visitor:
    """A POST of this visitor: its form's `csrf` must be the one in their sealed cookie."""
    visitor: Visitor = request.state.visitor
    form = await request.form()
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), visitor.csrf.encode()):
        raise CsrfRefused()
    return visitor


def caller(request: Request, credential: str | None = None) -> Caller:
    return Caller(
        credential=credential,
        client=request.client.host if request.client else None,
        correlation_id=getattr(request.state, "correlation_id", None),
    )


PortalDep = Annotated[Portal, Depends(_portal)]
VisitorDep = Annotated[Visitor, Depends(_visitor)]
CheckedVisitor = Annotated[Visitor, Depends(_checked)]
