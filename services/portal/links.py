"""The pages emailed links open. Accounts builds its links from PUBLIC_BASE_URL: point it at the
portal, and /verify-email, /confirm-email, /set-password, /reset-password and /magic-link land here.

Opening a link (GET) never uses its token up (mail scanners prefetch links): the token moves
from the URL into the sealed session cookie and the browser is sent to the same path without
it, so no token stays in the address bar, the history or a Referer. The page then shows a form;
its POST (with the CSRF token) does the work through the accounts API and lands the customer
on their business's pages: logged in for a login link, at the login page otherwise.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from services.portal.backends import Refused
from services.portal.web import CheckedVisitor, PortalDep, Visitor, VisitorDep, caller, redirect, words_for

router = APIRouter(tags=["emailed links"], include_in_schema=False)

PAGES = {
    "/verify-email": ("verify.title", "verify.intro", "verify.submit", True),
    "/confirm-email": ("confirm.title", "confirm.intro", "confirm.submit", False),
    "/magic-link": ("link.open_title", "link.open_intro", "link.open_submit", False),
    "/set-password": ("password.title", None, "password.submit", True),
    "/reset-password": ("password.title", None, "password.submit", True),
}

NOT_YET = {
    "en": "This business has not turned customer accounts on yet, so this link cannot be used yet. "
    "It has not been used up: open it again once the business has turned accounts on.",
    "de": "Dieses Unternehmen hat Kundenkonten noch nicht eingeschaltet, daher kann dieser Link noch nicht "
    "verwendet werden. Er bleibt gültig: Öffnen Sie ihn erneut, sobald die Konten eingeschaltet sind.",
}


def _landing(path: str) -> None:
    @router.get(path, response_class=HTMLResponse, name=f"open {path}")
    async def open_link(
        request: Request, portal: PortalDep, visitor: VisitorDep, token: str = ""
    ) -> Response:
        if token:
            visitor.link, visitor.dirty = token[:200], True
            return redirect(path)
        return _form(request, portal, visitor, path)


def _form(
    request: Request, portal: Any, visitor: Visitor, path: str, error: str | None = None, status: int = 200
) -> HTMLResponse:
    title, intro, button, password = PAGES[path]
    return portal.render(
        request,
        "link.html",
        status=status,
        action=path,
        title_key=title,
        intro_key=intro,
        button_key=button,
        password=password,
        has_link=bool(visitor.link),
        error=error,
    )


async def _redeem(
    request: Request, portal: Any, visitor: Visitor, path: str, api: str, body: dict[str, Any]
) -> Any:
    if not visitor.link:
        return None
    try:
        return await portal.backends.call("accounts", "POST", api, caller(request), json=body)
    except Refused as refused:
        words = words_for(request, portal.settings, None)
        detail = NOT_YET[words.language] if refused.code == "customer_logins_disabled" else refused.detail
        if refused.status == 400:  # used, replaced or expired: it will never work
            visitor.link, visitor.dirty = None, True
        raise _Shown(_form(request, portal, visitor, path, error=detail, status=refused.status)) from None


class _Shown(Exception):
    def __init__(self, page: HTMLResponse):
        super().__init__("shown")
        self.page = page


for _path in PAGES:
    _landing(_path)


@router.post("/verify-email", response_class=HTMLResponse)
async def verify(
    request: Request,
    portal: PortalDep,
    visitor: CheckedVisitor,
    password: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """The first verification of a claimed account: whoever proves the address chooses the
    password here (or none: a login link is emailed right away, and whenever asked)."""
    body: dict[str, Any] = {"token": visitor.link}
    body.update({"password": password} if password else {"send_login_link": True})
    return await _verify(request, portal, visitor, "/verify-email", body)


@router.post("/confirm-email", response_class=HTMLResponse)
async def confirm(request: Request, portal: PortalDep, visitor: CheckedVisitor) -> Response:
    """A new address of an existing account."""
    return await _verify(request, portal, visitor, "/confirm-email", {"token": visitor.link})


async def _verify(
    request: Request, portal: Any, visitor: Visitor, path: str, body: dict[str, Any]
) -> Response:
    try:
        done = await _redeem(request, portal, visitor, path, "/v1/email-verifications", body)
    except _Shown as shown:
        return shown.page
    if done is None:
        return _form(request, portal, visitor, path)
    visitor.link = None
    words = words_for(request, portal.settings, None)
    visitor.tell(words.t("verify.done" if done.get("has_password", True) else "verify.done_link"))
    return redirect(f"/t/{done['tenant_id']}/login")


@router.post("/magic-link", response_class=HTMLResponse)
async def magic_link(request: Request, portal: PortalDep, visitor: CheckedVisitor) -> Response:
    try:
        session = await _redeem(
            request, portal, visitor, "/magic-link", "/v1/magic-link-sessions", {"token": visitor.link}
        )
    except _Shown as shown:
        return shown.page
    if session is None:
        return _form(request, portal, visitor, "/magic-link")
    me = await portal.backends.call("accounts", "GET", "/v1/me", caller(request, session["token"]))
    visitor.log_in("customer", me["tenant_id"], session["token"])
    return redirect(f"/t/{me['tenant_id']}/bookings")


async def _new_password(
    request: Request, portal: Any, visitor: Visitor, path: str, password: str
) -> Response:
    try:
        done = await _redeem(
            request, portal, visitor, path, "/v1/new-passwords", {"token": visitor.link, "password": password}
        )
    except _Shown as shown:
        return shown.page
    if done is None:
        return _form(request, portal, visitor, path)
    visitor.link = None
    visitor.tell(words_for(request, portal.settings, None).t("password.done"))
    return redirect(f"/t/{done['tenant_id']}/login")


@router.post("/set-password", response_class=HTMLResponse)
async def set_password(
    request: Request,
    portal: PortalDep,
    visitor: CheckedVisitor,
    password: Annotated[str, Form(max_length=128)],
) -> Response:
    return await _new_password(request, portal, visitor, "/set-password", password)


@router.post("/reset-password", response_class=HTMLResponse)
async def reset_password(
    request: Request,
    portal: PortalDep,
    visitor: CheckedVisitor,
    password: Annotated[str, Form(max_length=128)],
) -> Response:
    return await _new_password(request, portal, visitor, "/reset-password", password)
