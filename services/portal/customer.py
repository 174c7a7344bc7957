"""The customer's pages of one business, under /t/{tenant}: claim an account, log in (password
or emailed link), forgotten password, My bookings, a booking with its history, and cancelling
it (a server-rendered confirmation page, shown in a <dialog> where scripts run).

Every page works without JavaScript. Whatever the services refuse is shown in their words (or
in German for the refusals the portal knows); a session that ended sends the visitor to log in.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from contracts.wording import refund_note
from services.portal.backends import Refused
from services.portal.i18n import LANGUAGES, Words
from services.portal.web import (
    CheckedVisitor,
    LoginNeeded,
    Portal,
    PortalDep,
    Visitor,
    VisitorDep,
    caller,
    redirect,
    told,
    words_for,
)

TenantPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="The business")]
EmailField = Annotated[str, Form(max_length=320)]
PasswordField = Annotated[str, Form(max_length=128)]

router = APIRouter(prefix="/t/{tenant}", tags=["customer pages"], include_in_schema=False)


async def _brand(tenant: TenantPath, portal: PortalDep) -> dict[str, Any]:
    return await portal.branding(tenant)


async def _customer(tenant: TenantPath, visitor: VisitorDep) -> str:
    """The customer's session token, for this business only: a session of another business
    (or a staff session) sees nothing here and is asked to log in."""
    if visitor.kind == "customer" and visitor.tenant == tenant and visitor.credential:
        return visitor.credential
    raise LoginNeeded(f"/t/{tenant}/login")


Brand = Annotated[dict[str, Any], Depends(_brand)]
CustomerToken = Annotated[str, Depends(_customer)]


@dataclass(frozen=True)
class Page:
    """A request of a logged-in customer of the business in the path: the calls made as them
    and the page that answers, in their language and the business's branding."""

    request: Request
    portal: Portal
    tenant: str
    brand: dict[str, Any]
    token: str

    @property
    def words(self) -> Words:
        return words_for(self.request, self.portal.settings, self.brand)

    async def bookings(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call of the bookings API as the customer."""
        return await self._call("bookings", method, path, **kwargs)

    async def me(self, method: str, sub: str = "", **kwargs: Any) -> Any:
        """A call of the accounts API about the customer's own account (/v1/me...)."""
        return await self._call("accounts", method, f"/v1/me{sub}", **kwargs)

    async def _call(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        """A session that ended elsewhere (log out, password change, archived) sends the
        visitor to log in again."""
        try:
            return await self.portal.backends.call(
                service, method, path, caller(self.request, self.token), **kwargs
            )
        except Refused as refused:
            if refused.status == 401:
                self.request.state.visitor.log_out()
                raise LoginNeeded(f"/t/{self.tenant}/login") from None
            raise

    def render(self, template: str, **context: Any) -> HTMLResponse:
        return self.portal.render(self.request, template, brand=self.brand, **context)

    def back(self, to: str = "") -> Response:
        return redirect(f"/t/{self.tenant}{to}")


async def _page(
    request: Request, tenant: TenantPath, portal: PortalDep, brand: Brand, token: CustomerToken
) -> Page:
    return Page(request, portal, tenant, brand, token)


CustomerPage = Annotated[Page, Depends(_page)]


# ----------------------------------------------------------------------------- branding


@router.get("/brand.css")
async def brand_css(brand: Brand) -> Response:
    """The business's colour as a stylesheet (the CSP allows no inline styles)."""
    colour = brand.get("colour") or "#1f5f8b"
    return PlainTextResponse(f":root {{ --brand: {colour}; }}\n", media_type="text/css")


@router.get("/language/{language}")
async def choose_language(tenant: TenantPath, language: str, visitor: VisitorDep) -> Response:
    if language in LANGUAGES:
        visitor.language, visitor.dirty = language, True
    return redirect(f"/t/{tenant}/")


# ----------------------------------------------------------------------------- entry


@router.get("/")
async def home(tenant: TenantPath, visitor: VisitorDep) -> Response:
    if visitor.kind == "customer" and visitor.tenant == tenant:
        return redirect(f"/t/{tenant}/bookings")
    return redirect(f"/t/{tenant}/login")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, portal: PortalDep, brand: Brand) -> HTMLResponse:
    return portal.render(request, "login.html", brand=brand)


@router.post("/login", response_class=HTMLResponse)
async def log_in(
    request: Request,
    tenant: TenantPath,
    portal: PortalDep,
    brand: Brand,
    visitor: CheckedVisitor,
    email: EmailField,
    password: PasswordField,
) -> Response:
    try:
        session = await portal.backends.call(
            "accounts",
            "POST",
            f"/v1/tenants/{tenant}/sessions",
            caller(request),
            json={"email": email, "password": password},
        )
    except Refused as refused:
        words = words_for(request, portal.settings, brand)
        error = words.t("login.failed") if refused.status in (401, 422) else refused.detail
        return portal.render(
            request, "login.html", status=refused.status, brand=brand, error=error, email=email
        )
    visitor.log_in("customer", tenant, session["token"])
    return redirect(f"/t/{tenant}/bookings")


@router.post("/logout")
async def log_out(
    request: Request, tenant: TenantPath, portal: PortalDep, visitor: CheckedVisitor
) -> Response:
    if visitor.kind == "customer" and visitor.credential:
        # Ends every session of the account issued until now: a copied cookie dies too.
        with contextlib.suppress(Refused):
            await portal.backends.call(
                "accounts", "DELETE", "/v1/me/session", caller(request, visitor.credential)
            )
    visitor.log_out()
    return redirect(f"/t/{tenant}/login")


def _email_form(path: str, template: str, api: str, with_name: bool = False) -> None:
    @router.get(path, response_class=HTMLResponse, name=f"{template}-page")
    async def show(request: Request, portal: PortalDep, brand: Brand) -> HTMLResponse:
        return portal.render(request, template, brand=brand)

    @router.post(path, response_class=HTMLResponse, name=f"{template}-send")
    async def send(
        request: Request,
        tenant: TenantPath,
        portal: PortalDep,
        brand: Brand,
        visitor: CheckedVisitor,
        email: EmailField,
        name: Annotated[str, Form(max_length=200)] = "",
    ) -> HTMLResponse:
        body: dict[str, Any] = {"email": email}
        if with_name:
            words = words_for(request, portal.settings, brand)
            # No password here: whoever proves the address chooses it, on the verification page.
            body.update(name=name or email.split("@")[0], language=words.language)
        try:
            answer = await portal.backends.call(
                "accounts", "POST", api.format(tenant=tenant), caller(request), json=body
            )
        except Refused as refused:
            return portal.render(
                request, template, status=refused.status, brand=brand, error=refused.detail, email=email
            )
        return portal.render(request, template, brand=brand, done=answer["detail"])


_email_form("/claim", "claim.html", "/v1/tenants/{tenant}/accounts", with_name=True)
_email_form("/login-link", "login_link.html", "/v1/tenants/{tenant}/magic-links")
_email_form("/forgot-password", "forgot.html", "/v1/tenants/{tenant}/password-resets")


# ----------------------------------------------------------------------------- bookings


@router.get("/bookings", response_class=HTMLResponse)
async def my_bookings(page: CustomerPage) -> HTMLResponse:
    return page.render("bookings.html", bookings=await page.bookings("GET", "/v1/me/bookings"))


@router.get("/bookings/{booking_id}", response_class=HTMLResponse)
async def my_booking(booking_id: UUID, page: CustomerPage) -> HTMLResponse:
    booking = await page.bookings("GET", f"/v1/me/bookings/{booking_id}")
    quote = None
    if booking["cancel"]["allowed"]:  # the dialog shows the same as the confirmation page
        quote = await _quote(page, booking_id)
    return page.render("booking.html", booking=booking, quote=quote, note=_note(page, booking))


@router.get("/bookings/{booking_id}/cancel", response_class=HTMLResponse)
async def cancel_page(booking_id: UUID, page: CustomerPage) -> Response:
    quote = await _quote(page, booking_id)
    if quote is None:  # not allowed (any more): the booking's page says why
        return page.back(f"/bookings/{booking_id}")
    return page.render("cancel.html", quote=quote, note=_note(page, quote))


@router.post("/bookings/{booking_id}/cancel")
async def cancel(
    booking_id: UUID, page: CustomerPage, visitor: CheckedVisitor, booking_version: Annotated[int, Form(ge=1)]
) -> Response:
    words = page.words
    return await told(
        visitor,
        page.bookings(
            "POST", f"/v1/me/bookings/{booking_id}/cancellation", json={"booking_version": booking_version}
        ),
        f"/t/{page.tenant}/bookings/{booking_id}",
        words.t("booking.cancelled"),
        lambda refused: words.refusal(refused.code, refused.detail),
    )


async def _quote(page: Page, booking_id: UUID) -> Any:
    try:
        return await page.bookings("GET", f"/v1/me/bookings/{booking_id}/cancellation-quote")
    except Refused as refused:
        if refused.status == 409:
            return None
        raise


def _note(page: Page, booking: dict[str, Any]) -> str:
    return refund_note(
        page.words.language,
        business_name=page.brand.get("business_name"),
        contact=page.brand.get("contact_email"),
        booking_code=booking.get("code"),
    )


__all__ = ["Visitor", "router"]


# ----------------------------------------------------------------------------- my details


@router.get("/details", response_class=HTMLResponse)
async def my_details(page: CustomerPage) -> HTMLResponse:
    return page.render("details.html", me=await page.me("GET"))


@router.post("/details", response_class=HTMLResponse)
async def change_details(
    page: CustomerPage,
    visitor: CheckedVisitor,
    name: Annotated[str, Form(max_length=200)],
    phone: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    return await told(
        visitor,
        page.me("PATCH", json={"name": name, "phone": phone or None}),
        f"/t/{page.tenant}/details",
        page.words.t("details.saved"),
        lambda refused: refused.detail,
    )


@router.post("/details/email", response_class=HTMLResponse)
async def change_email(
    page: CustomerPage,
    visitor: CheckedVisitor,
    email: EmailField,
    current_password: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """The new address takes effect once the link sent to it is followed (verified again)."""
    body = {"email": email, **({"current_password": current_password} if current_password else {})}
    return await told(
        visitor,
        page.me("POST", "/email-change", json=body),
        f"/t/{page.tenant}/details",
        page.words.t("details.email_sent"),
        lambda refused: refused.detail,
    )


# ----------------------------------------------------------------------------- changing a booking


@router.get("/bookings/{booking_id}/change", response_class=HTMLResponse)
async def change_page(booking_id: UUID, page: CustomerPage) -> Response:
    booking = await page.bookings("GET", f"/v1/me/bookings/{booking_id}")
    if not booking["modify"]["allowed"]:
        return page.back(f"/bookings/{booking_id}")
    zone = page.words.zone
    starts = {line["index"]: _local_input(line["starts_at"], zone) for line in booking["lines"]}
    return page.render("change.html", booking=booking, starts=starts)


@router.post("/bookings/{booking_id}/change", response_class=HTMLResponse)
async def change_preview_or_confirm(
    booking_id: UUID, page: CustomerPage, visitor: CheckedVisitor
) -> Response:
    """Without `booking_version`: the preview (new lines, total, balance due), nothing saved;
    with it (the preview's confirm button): the change, checked against the rules again."""
    form = await page.request.form()
    words = page.words
    path = f"/v1/me/bookings/{booking_id}"
    booking = await page.bookings("GET", path)
    changes = _line_changes(form, booking, words.zone)
    version = str(form.get("booking_version") or "")
    try:
        if version.isdigit():
            await page.bookings(
                "POST", f"{path}/modification", json={"lines": changes, "booking_version": int(version)}
            )
            visitor.tell(words.t("change.done"))
            return page.back(f"/bookings/{booking_id}")
        preview = await page.bookings("POST", f"{path}/modification-preview", json={"lines": changes})
    except Refused as refused:
        visitor.tell(words.refusal(refused.code, refused.detail))
        return page.back(f"/bookings/{booking_id}/change")
    return page.render("change_preview.html", booking=booking, preview=preview, fields=dict(form))


def _local_input(value: str, zone: Any) -> str:
    return datetime.fromisoformat(value).astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def _line_changes(form: Any, booking: dict[str, Any], zone: Any) -> list[dict[str, Any]]:
    """What the customer changed on each line (quantity, start in the business's time zone)."""
    changes = []
    for line in booking["lines"]:
        index = line["index"]
        change: dict[str, Any] = {}
        quantity = str(form.get(f"quantity_{index}") or "")
        if quantity.isdigit() and int(quantity) != line["quantity"]:
            change["quantity"] = int(quantity)
        start = str(form.get(f"starts_{index}") or "")
        if start and start != _local_input(line["starts_at"], zone):
            try:
                change["starts_at"] = datetime.fromisoformat(start).replace(tzinfo=zone).isoformat()
            except ValueError:  # the bookings service says what is wrong with it
                change["starts_at"] = start
        if change:
            changes.append({"line": index, **change})
    return changes
