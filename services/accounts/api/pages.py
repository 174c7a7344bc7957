"""The pages emailed links open (PUBLIC_BASE_URL + /verify-email, /confirm-email, /set-password,
/reset-password, /magic-link), for a deployment without a customer portal (services/portal
serves the same paths, and is where PUBLIC_BASE_URL should point).

A login link needs somewhere to keep the session it opens: only the portal has that (a sealed,
HttpOnly cookie). Here its page says so and uses nothing up; it never prints a session token.

Opening a link (GET) never uses its token up: mail scanners prefetch links. The page shows a
form that posts the token (and a new password) back, and the POST does the work. A portal that
serves these paths itself calls the JSON API instead (`/v1/email-verifications`,
`/v1/new-passwords`, `/v1/magic-link-sessions`).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from backbone.domain import DomainError
from backbone.http import run_sync
from services.accounts.api import auth
from services.accounts.api.auth import App, Limits
from services.accounts.api.errors import REFUSALS
from services.accounts.domainmodel import LinkRefused
from services.accounts.ratelimits import RateLimited, RateLimits

HEADERS = {
    "Referrer-Policy": "no-referrer",  # the token must not leak to other sites
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=HEADERS)


def form(path: str, token: str, button: str, password: bool = False) -> str:
    field = '<p><label>New password <input type="password" name="password" required></label></p>'
    return (
        f'<form method="post" action="{path}">'
        f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">'
        f'{field if password else ""}<button type="submit">{html.escape(button)}</button></form>'
    )


def verification_form(token: str) -> str:
    """Whoever follows the link chooses how to log in: a password, or emailed links (the
    second button skips the browser's check of the password field)."""
    return (
        '<form method="post" action="/verify-email">'
        f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">'
        '<p><label>Choose a password <input type="password" name="password" required '
        'autocomplete="new-password"></label></p>'
        '<p><button type="submit" name="then" value="password">Verify and save my password</button></p>'
        "<p>Or log in without a password, with a link we email you each time:</p>"
        '<p><button type="submit" name="then" value="login_link" formnovalidate>'
        "Verify and email me a login link</button></p></form>"
    )


router = APIRouter(tags=["pages"])


async def attempt(
    request: Request, limits: RateLimits, title: str, work: Callable[[], Any], done: Callable[[Any], str]
) -> HTMLResponse:
    try:
        async with limits.attempt("link", "", "", auth.client_of(request), failure=LinkRefused):
            with auth.cause(request, "customer:anonymous", None):
                result = await run_sync(work)
    except RateLimited as limited:
        return page(title, f"<p>{html.escape(str(limited))}</p>", 429)
    except DomainError as refused:
        return page(title, f"<p>{html.escape(str(refused))}</p>", REFUSALS.status_of(refused))
    return page(title, done(result))


def _landing(path: str, title: str, button: str, password: bool = False) -> None:
    @router.get(path, response_class=HTMLResponse, summary=f"The page a link opens: {title}")
    async def show(token: str = "") -> HTMLResponse:
        return page(title, form(path, token, button, password))


@router.get(
    "/verify-email", response_class=HTMLResponse, summary="The page a link opens: Verify your email address"
)
async def show_verification(token: str = "") -> HTMLResponse:
    return page("Verify your email address", verification_form(token))


_landing("/confirm-email", "Confirm your new email address", "Confirm my new email address")
_landing("/set-password", "Choose your password", "Save my password", password=True)
_landing("/reset-password", "Choose a new password", "Save my new password", password=True)


@router.get("/magic-link", response_class=HTMLResponse, summary="The page a login link opens")
async def magic_link_page() -> HTMLResponse:
    return page(
        "Log in",
        "<p>Login links open the business's customer portal, which is not set up at this address. "
        "Ask the business for its portal's address and log in there.</p>",
    )


@router.post("/verify-email", response_class=HTMLResponse, include_in_schema=False)
async def verify(
    request: Request,
    accounts: App,
    limits: Limits,
    token: Annotated[str, Form(max_length=200)],
    then: Annotated[Literal["password", "login_link"], Form()] = "login_link",
    password: Annotated[str | None, Form(max_length=128)] = None,
) -> HTMLResponse:
    chosen = password if then == "password" and password else None

    def done(account: Any) -> str:
        if account.has_password:
            return "<p>Your email address is verified and your password saved. You can now log in.</p>"
        return (
            "<p>Your email address is verified. A link to log in is on its way to it; ask for a "
            "new one whenever you want to log in.</p>"
        )

    return await attempt(
        request,
        limits,
        "Verify your email address",
        lambda: accounts.verify_email(token, chosen, login_link=chosen is None),
        done,
    )


@router.post("/confirm-email", response_class=HTMLResponse, include_in_schema=False)
async def confirm(
    request: Request, accounts: App, limits: Limits, token: Annotated[str, Form(max_length=200)]
) -> HTMLResponse:
    return await attempt(
        request,
        limits,
        "Confirm your new email address",
        lambda: accounts.verify_email(token),
        lambda _: "<p>Your new email address is confirmed.</p>",
    )


def _choosing_password(path: str, title: str, name: str) -> None:
    """The invitation's and the reset link's form: the same work (a password set by link)."""

    @router.post(path, response_class=HTMLResponse, include_in_schema=False, name=name)
    async def choose(
        request: Request,
        accounts: App,
        limits: Limits,
        token: Annotated[str, Form(max_length=200)],
        password: Annotated[str, Form(max_length=128)],
    ) -> HTMLResponse:
        return await attempt(
            request,
            limits,
            title,
            lambda: accounts.set_password(token, password),
            lambda _: "<p>Your password is saved. You can now log in with it.</p>",
        )


_choosing_password("/set-password", "Choose your password", "set_password")
_choosing_password("/reset-password", "Choose a new password", "reset_password")
