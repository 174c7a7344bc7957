"""The customer's pages of one business, under /t/{tenant}: claim an account, log in (password
or emailed link), forgotten password, My bookings, a booking with its history, and cancelling
it (a server-rendered confirmation page, shown in a <dialog> where scripts run).

Every page works without JavaScript. Whatever the services refuse is shown in their words (or
in German for the refusals the portal knows); a session that ended sends the visitor to log in.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from contracts.wording import refund_note
from services.portal.backends import Refused
from services.portal.i18n import LANGUAGES
from services.portal.web import (
    CheckedVisitor,
    LoginNeeded,
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


async def _as_customer(
    request: Request, portal: PortalDep, tenant: str, token: str, method: str, path: str, **kwargs: Any
) -> Any:
    """A call of the bookings API as the customer."""
    return await _calling(request, portal, tenant, token, "bookings", method, path, **kwargs)


async def _as_me(
    request: Request, portal: Any, tenant: str, token: str, method: str, sub: str = "", **kwargs: Any
) -> Any:
    """A call of the accounts API about the customer's own account (/v1/me...)."""
    return await _calling(request, portal, tenant, token, "accounts", method, f"/v1/me{sub}", **kwargs)


async def _calling(
    request: Request,
    portal: Any,
    tenant: str,
    token: str,
    service: str,
    method: str,
    path: str,
    **kwargs: Any,
) -> Any:
    """A session that ended elsewhere (log out, password change, archived) sends the visitor to
    log in again."""
    try:
        return await portal.backends.call(service, method, path, caller(request, token), **kwargs)
    except Refused as refused:
        if refused.status == 401:
            request.state.visitor.log_out()
            raise LoginNeeded(f"/t/{tenant}/login") from None
        raise


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
async def my_bookings(
    request: Request, tenant: TenantPath, portal: PortalDep, brand: Brand, token: CustomerToken
) -> HTMLResponse:
    bookings = await _as_customer(request, portal, tenant, token, "GET", "/v1/me/bookings")
    return portal.render(request, "bookings.html", brand=brand, bookings=bookings)


@router.get("/bookings/{booking_id}", response_class=HTMLResponse)
async def my_booking(
    request: Request,
    tenant: TenantPath,
    booking_id: UUID,
    portal: PortalDep,
    brand: Brand,
    token: CustomerToken,
) -> HTMLResponse:
    booking = await _as_customer(request, portal, tenant, token, "GET", f"/v1/me/bookings/{booking_id}")
    quote = None
    if booking["cancel"]["allowed"]:  # the dialog shows the same as the confirmation page
        quote = await _quote(request, portal, tenant, token, booking_id)
    words = words_for(request, portal.settings, brand)
    return portal.render(
        request, "booking.html", brand=brand, booking=booking, quote=quote, note=_note(words, brand, booking)
    )


@router.get("/bookings/{booking_id}/cancel", response_class=HTMLResponse)
async def cancel_page(
    request: Request,
    tenant: TenantPath,
    booking_id: UUID,
    portal: PortalDep,
    brand: Brand,
    token: CustomerToken,
) -> Response:
    quote = await _quote(request, portal, tenant, token, booking_id)
    if quote is None:  # not allowed (any more): the booking's page says why
        return redirect(f"/t/{tenant}/bookings/{booking_id}")
    words = words_for(request, portal.settings, brand)
    return portal.render(request, "cancel.html", brand=brand, quote=quote, note=_note(words, brand, quote))


@router.post("/bookings/{booking_id}/cancel")
async def cancel(
    request: Request,
    tenant: TenantPath,
    booking_id: UUID,
    portal: PortalDep,
    brand: Brand,
    token: CustomerToken,
    visitor: CheckedVisitor,
    booking_version: Annotated[int, Form(ge=1)],
) -> Response:
    words = words_for(request, portal.settings, brand)
    return await told(
        visitor,
        _as_customer(
            request,
            portal,
            tenant,
            token,
            "POST",
            f"/v1/me/bookings/{booking_id}/cancellation",
            json={"booking_version": booking_version},
        ),
        f"/t/{tenant}/bookings/{booking_id}",
        words.t("booking.cancelled"),
        lambda refused: words.refusal(refused.code, refused.detail),
    )


async def _quote(request: Request, portal: Any, tenant: str, token: str, booking_id: UUID) -> Any:
    try:
        return await _as_customer(
            request, portal, tenant, token, "GET", f"/v1/me/bookings/{booking_id}/cancellation-quote"
        )
    except Refused as refused:
        if refused.status == 409:
            return None
        raise


def _note(words: Any, brand: dict[str, Any], booking: dict[str, Any]) -> str:
    return refund_note(
        words.language,
        business_name=brand.get("business_name"),
        contact=brand.get("contact_email"),
        booking_code=booking.get("code"),
    )


__all__ = ["Visitor", "router"]


# ----------------------------------------------------------------------------- my details


@router.get("/details", response_class=HTMLResponse)
async def my_details(
    request: Request, tenant: TenantPath, portal: PortalDep, brand: Brand, token: CustomerToken
) -> HTMLResponse:
    me = await _as_me(request, portal, tenant, token, "GET")
    return portal.render(request, "details.html", brand=brand, me=me)


@router.post("/details", response_class=HTMLResponse)
async def change_details(
    request: Request,
    tenant: TenantPath,
    portal: PortalDep,
    brand: Brand,
    token: CustomerToken,
    visitor: CheckedVisitor,
    name: Annotated[str, Form(max_length=200)],
    phone: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    words = words_for(request, portal.settings, brand)
    return await told(
        visitor,
        _as_me(request, portal, tenant, token, "PATCH", json={"name": name, "phone": phone or None}),
        f"/t/{tenant}/details",
        words.t("details.saved"),
        lambda refused: refused.detail,
    )


@router.post("/details/email", response_class=HTMLResponse)
async def change_email(
    request: Request,
    tenant: TenantPath,
    portal: PortalDep,
    brand: Brand,
    token: CustomerToken,
    visitor: CheckedVisitor,
    email: EmailField,
    current_password: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """The new address takes effect once the link sent to it is followed (verified again)."""
    words = words_for(request, portal.settings, brand)
    body = {"email": email, **({"current_password": current_password} if current_password else {})}
    return await told(
        visitor,
        _as_me(request, portal, tenant, token, "POST", "/email-change", json=body),
        f"/t/{tenant}/details",
        words.t("details.email_sent"),
        lambda refused: refused.detail,
    )


# ----------------------------------------------------------------------------- changing a booking


@router.get("/bookings/{booking_id}/change", response_class=HTMLResponse)
async def change_page(
    request: Request,
    tenant: TenantPath,
    booking_id: UUID,
    portal: PortalDep,
    brand: Brand,
    token: CustomerToken,
) -> Response:
    booking = await _as_customer(request, portal, tenant, token, "GET", f"/v1/me/bookings/{booking_id}")
    if not booking["modify"]["allowed"]:
        return redirect(f"/t/{tenant}/bookings/{booking_id}")
    words = words_for(request, portal.settings, brand)
    starts = {line["index"]: _local_input(line["starts_at"], words.zone) for line in booking["lines"]}
    return portal.render(request, "change.html", brand=brand, booking=booking, starts=starts)


@router.post("/bookings/{booking_id}/change", response_class=HTMLResponse)
async def change_preview_or_confirm(
    request: Request,
    tenant: TenantPath,
    booking_id: UUID,
    portal: PortalDep,
    brand: Brand,
    token: CustomerToken,
    visitor: CheckedVisitor,
) -> Response:
    """Without `booking_version`: the preview (new lines, total, balance due), nothing saved;
    with it (the preview's confirm button): the change, checked against the rules again."""
    form = await request.form()
    words = words_for(request, portal.settings, brand)
    booking = await _as_customer(request, portal, tenant, token, "GET", f"/v1/me/bookings/{booking_id}")
    changes = _line_changes(form, booking, words.zone)
    path = f"/v1/me/bookings/{booking_id}"
    version = str(form.get("booking_version") or "")
    try:
        if version.isdigit():
            await _as_customer(
                request,
                portal,
                tenant,
                token,
                "POST",
                f"{path}/modification",
                json={"lines": changes, "booking_version": int(version)},
            )
            visitor.tell(words.t("change.done"))
            return redirect(f"/t/{tenant}/bookings/{booking_id}")
        preview = await _as_customer(
            request, portal, tenant, token, "POST", f"{path}/modification-preview", json={"lines": changes}
        )
    except Refused as refused:
        visitor.tell(words.refusal(refused.code, refused.detail))
        return redirect(f"/t/{tenant}/bookings/{booking_id}/change")
    return portal.render(
        request, "change_preview.html", brand=brand, booking=booking, preview=preview, fields=dict(form)
    )


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
