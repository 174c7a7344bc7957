"""The staff back office of one business, under /staff/t/{tenant}: settings with help text,
the customer directory (archive, blocklist, redact, each behind a confirmation page), bookings
with filters (a booking's history, payments, cancellation with the override and the refund
due), and the email delivery log with retry of parked emails.

A staff member logs in with the API key accounts issued them; the session keeps it sealed in
the cookie (web.py) and every page calls the services' staff APIs with it, so the services
decide, as for any other client, what the key may see. Removing the staff member ends it.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.portal.backends import Refused
from services.portal.web import CheckedVisitor, LoginNeeded, PortalDep, VisitorDep, caller, redirect, told

TenantPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="The business")]

router = APIRouter(prefix="/staff/t/{tenant}", tags=["staff pages"], include_in_schema=False)

# What each setting does to customers: the settings page shows it beside the field.
SETTINGS_HELP: dict[str, tuple[str, str]] = {
    "customer_logins_enabled": (
        "Customer accounts",
        "Customers can claim an account, log in and see their bookings. Off: the portal's customer "
        "pages and emailed links refuse, and invitations wait until it is on.",
    ),
    "require_login_to_book": (
        "Require an account to book",
        "Your booking website asks customers to log in before booking.",
    ),
    "show_pre_bookings": (
        "Show pre-bookings",
        "Customers also see bookings they started and did not complete (status Pre-booking).",
    ),
    "allow_cancel": (
        "Customers may cancel online",
        "A Cancel booking link appears beneath the status of each booking the rules allow. "
        "Refunds are never automatic: you are told what was paid.",
    ),
    "cancel_cutoff": (
        "Cancel until",
        "How long before the start customers may still cancel online; days end at midnight in your "
        "time zone (0 days: until the start day begins).",
    ),
    "allow_modify": (
        "Customers may change bookings online",
        "Customers may change dates, quantities and contact details within the cut-off.",
    ),
    "modify_cutoff": ("Change until", "How long before the start customers may still change a booking."),
    "blocking_statuses": (
        "Statuses that block changes",
        "Bookings in these statuses (comma-separated ids, e.g. PAID,HOLD) cannot be cancelled or changed "
        "online; customers are told to contact you.",
    ),
    "timezone": (
        "Time zone",
        "Dates in the portal and emails are shown in it; day-based cut-offs end at its midnight.",
    ),
}
STATUSES = ("PRE", "PEND", "HOLD", "WAIT", "PART", "PAID", "STOP", "VOID")
ACTIONS = {
    "archive": (
        "Archive this account",
        "The customer can no longer log in. Their bookings stay.",
        "/archive",
    ),
    "activate": ("Activate this account again", "The customer can log in again.", "/activation"),
    "redact": (
        "Redact this customer",
        "Their personal data is erased everywhere: accounts, bookings and emails. This cannot be undone.",
        "/redaction",
    ),
    "blocklist": (
        "Blocklist this email address",
        "The address can no longer claim an account with your business.",
        None,
    ),
}


async def _staff(tenant: TenantPath, visitor: VisitorDep) -> str:
    if visitor.kind == "staff" and visitor.tenant == tenant and visitor.credential:
        return visitor.credential
    raise LoginNeeded(f"/staff/t/{tenant}/login")


StaffKey = Annotated[str, Depends(_staff)]


async def _call(
    request: Request, portal: Any, tenant: str, key: str, service: str, method: str, path: str, **kwargs: Any
) -> Any:
    try:
        return await portal.backends.call(
            service, method, f"/v1/staff/tenants/{tenant}{path}", caller(request, key), **kwargs
        )
    except Refused as refused:
        if refused.status == 401:  # the key was removed: the session ends with it
            request.state.visitor.log_out()
            raise LoginNeeded(f"/staff/t/{tenant}/login") from None
        raise


def _page(
    request: Request, portal: Any, tenant: str, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    return portal.render(request, f"staff/{template}", status=status, tenant=tenant, **context)


# ----------------------------------------------------------------------------- session


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, tenant: TenantPath, portal: PortalDep) -> HTMLResponse:
    return _page(request, portal, tenant, "login.html")


@router.post("/login", response_class=HTMLResponse)
async def log_in(
    request: Request,
    tenant: TenantPath,
    portal: PortalDep,
    visitor: CheckedVisitor,
    api_key: Annotated[str, Form(max_length=300)],
) -> Response:
    key = api_key.strip()
    try:  # a key that opens this business's settings is a staff key of this business
        await portal.backends.call(
            "accounts", "GET", f"/v1/staff/tenants/{tenant}/settings", caller(request, key)
        )
    except Refused as refused:
        return _page(request, portal, tenant, "login.html", status=refused.status, error=refused.detail)
    visitor.log_in("staff", tenant, key)
    return redirect(f"/staff/t/{tenant}/bookings")


@router.post("/logout")
async def log_out(tenant: TenantPath, visitor: CheckedVisitor) -> Response:
    visitor.log_out()
    return redirect(f"/staff/t/{tenant}/login")


@router.get("/")
async def home(tenant: TenantPath, _: StaffKey) -> Response:
    return redirect(f"/staff/t/{tenant}/bookings")


# ----------------------------------------------------------------------------- settings


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(
    request: Request, tenant: TenantPath, portal: PortalDep, key: StaffKey
) -> HTMLResponse:
    settings = await _call(request, portal, tenant, key, "accounts", "GET", "/settings")
    return _page(request, portal, tenant, "settings.html", settings=settings, help=SETTINGS_HELP)


@router.post("/settings", response_class=HTMLResponse)
async def change_settings(
    request: Request, tenant: TenantPath, portal: PortalDep, key: StaffKey, visitor: CheckedVisitor
) -> Response:
    form = await request.form()

    def cutoff(name: str) -> dict[str, Any]:
        return {"amount": int(str(form.get(f"{name}_amount") or 0)), "unit": str(form.get(f"{name}_unit"))}

    changes: dict[str, Any] = {
        flag: form.get(flag) == "on"
        for flag in (
            "customer_logins_enabled",
            "require_login_to_book",
            "show_pre_bookings",
            "allow_cancel",
            "allow_modify",
        )
    }
    try:
        changes["cancel_cutoff"] = cutoff("cancel_cutoff")
        changes["modify_cutoff"] = cutoff("modify_cutoff")
    except ValueError:
        visitor.tell("A cut-off must be a whole number.")
        return redirect(f"/staff/t/{tenant}/settings")
    changes["blocking_statuses"] = [
        s.strip().upper() for s in str(form.get("blocking_statuses") or "").split(",") if s.strip()
    ]
    changes["timezone"] = str(form.get("timezone") or "UTC").strip()
    return await told(
        visitor,
        _call(request, portal, tenant, key, "accounts", "PATCH", "/settings", json=changes),
        f"/staff/t/{tenant}/settings",
        "Settings saved.",
        lambda refused: f"Not saved: {refused.detail}",
    )


# ----------------------------------------------------------------------------- customers


@router.get("/customers", response_class=HTMLResponse)
async def customers(
    request: Request,
    tenant: TenantPath,
    portal: PortalDep,
    key: StaffKey,
    q: Annotated[str, Query(max_length=100)] = "",
    status: Annotated[str, Query(max_length=20)] = "all",
) -> HTMLResponse:
    page = await _call(
        request,
        portal,
        tenant,
        key,
        "accounts",
        "GET",
        "/accounts",
        params={"q": q, "status": status, "limit": 100},
    )
    return _page(request, portal, tenant, "customers.html", page=page, q=q, status_filter=status)


@router.get("/customers/{account_id}", response_class=HTMLResponse)
async def customer(
    request: Request, tenant: TenantPath, account_id: UUID, portal: PortalDep, key: StaffKey
) -> HTMLResponse:
    account = await _call(request, portal, tenant, key, "accounts", "GET", f"/accounts/{account_id}")
    found = await _call(
        request,
        portal,
        tenant,
        key,
        "bookings",
        "GET",
        "/bookings",
        params={"account_id": str(account_id), "account_email": account.get("email"), "limit": 200},
    )
    return _page(request, portal, tenant, "customer.html", account=account, bookings=found["bookings"])


@router.get("/customers/{account_id}/{action}", response_class=HTMLResponse)
async def confirm_action(
    request: Request, tenant: TenantPath, account_id: UUID, action: str, portal: PortalDep, key: StaffKey
) -> HTMLResponse:
    if action not in ACTIONS:
        raise Refused(404, "No such action.")
    account = await _call(request, portal, tenant, key, "accounts", "GET", f"/accounts/{account_id}")
    title, consequence, _ = ACTIONS[action]
    return _page(
        request,
        portal,
        tenant,
        "confirm_action.html",
        account=account,
        action=action,
        title=title,
        consequence=consequence,
    )


@router.post("/customers/{account_id}/{action}")
async def do_action(
    request: Request,
    tenant: TenantPath,
    account_id: UUID,
    action: str,
    portal: PortalDep,
    key: StaffKey,
    visitor: CheckedVisitor,
) -> Response:
    if action not in ACTIONS:
        raise Refused(404, "No such action.")
    title, _, path = ACTIONS[action]

    async def act() -> None:
        if action == "blocklist":
            account = await _call(request, portal, tenant, key, "accounts", "GET", f"/accounts/{account_id}")
            email = {"email": account["email"]}
            await _call(request, portal, tenant, key, "accounts", "POST", "/blocklist", json=email)
        else:
            await _call(request, portal, tenant, key, "accounts", "POST", f"/accounts/{account_id}{path}")

    return await told(
        visitor,
        act(),
        f"/staff/t/{tenant}/customers/{account_id}",
        f"{title}: done.",
        lambda refused: f"{title}: refused. {refused.detail}",
    )


# ----------------------------------------------------------------------------- bookings


def _day(value: str, timezone: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(datetime.fromisoformat(value).date(), time(0), ZoneInfo(timezone))
    except ValueError:
        return None


@router.get("/bookings", response_class=HTMLResponse)
async def bookings(
    request: Request,
    tenant: TenantPath,
    portal: PortalDep,
    key: StaffKey,
    status: Annotated[str, Query(max_length=16)] = "",
    starts_from: Annotated[str, Query(max_length=10)] = "",
    starts_before: Annotated[str, Query(max_length=10)] = "",
    customer: Annotated[str, Query(max_length=320)] = "",
) -> HTMLResponse:
    brand = await portal.branding(tenant)
    zone = brand.get("timezone") or "UTC"
    params = {
        "status": status,
        "starts_from": (d := _day(starts_from, zone)) and d.isoformat(),
        "starts_before": (d := _day(starts_before, zone)) and d.isoformat(),
        "customer": customer,
        "limit": 200,
    }
    found = await _call(request, portal, tenant, key, "bookings", "GET", "/bookings", params=params)
    return _page(
        request,
        portal,
        tenant,
        "bookings.html",
        brand=brand,
        found=found,
        statuses=STATUSES,
        filters={
            "status": status,
            "starts_from": starts_from,
            "starts_before": starts_before,
            "customer": customer,
        },
    )


@router.get("/bookings/{booking_id}", response_class=HTMLResponse)
async def booking(
    request: Request, tenant: TenantPath, booking_id: UUID, portal: PortalDep, key: StaffKey
) -> HTMLResponse:
    brand = await portal.branding(tenant)
    found = await _call(request, portal, tenant, key, "bookings", "GET", f"/bookings/{booking_id}")
    recorded = sum((Decimal(p["amount"]) for p in found["payments"]), Decimal(0))
    return _page(
        request,
        portal,
        tenant,
        "booking.html",
        brand=brand,
        booking=found,
        paid_when_booked=Decimal(found["amount_paid"]) - recorded,
    )


@router.post("/bookings/{booking_id}/cancel")
async def cancel(
    request: Request,
    tenant: TenantPath,
    booking_id: UUID,
    portal: PortalDep,
    key: StaffKey,
    visitor: CheckedVisitor,
    booking_version: Annotated[int, Form(ge=1)],
    refund_due: Annotated[str, Form(max_length=20)] = "",
    reason: Annotated[str, Form(max_length=1000)] = "",
    override: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    body: dict[str, Any] = {
        "booking_version": booking_version,
        "override_customer_rules": override == "on",
        "reason": reason.strip() or None,
    }
    if refund_due.strip():
        body["refund_due"] = refund_due.strip().replace(",", ".")
    cancellation = f"/bookings/{booking_id}/cancellation"
    return await told(
        visitor,
        _call(request, portal, tenant, key, "bookings", "POST", cancellation, json=body),
        f"/staff/t/{tenant}/bookings/{booking_id}",
        "The booking is cancelled. Refund the customer by hand: nothing was refunded automatically.",
        lambda refused: f"Not cancelled: {refused.detail}",
    )


# ----------------------------------------------------------------------------- emails


@router.get("/emails", response_class=HTMLResponse)
async def emails(
    request: Request,
    tenant: TenantPath,
    portal: PortalDep,
    key: StaffKey,
    status: Annotated[str, Query(max_length=16)] = "",
) -> HTMLResponse:
    brand = await portal.branding(tenant)
    log = await _call(request, portal, tenant, key, "notifier", "GET", "/emails", params={"status": status})
    return _page(request, portal, tenant, "emails.html", brand=brand, log=log, status_filter=status)


@router.post("/emails/{email_id}/retry")
async def retry(
    request: Request,
    tenant: TenantPath,
    email_id: UUID,
    portal: PortalDep,
    key: StaffKey,
    visitor: CheckedVisitor,
) -> Response:
    return await told(
        visitor,
        _call(request, portal, tenant, key, "notifier", "POST", f"/emails/{email_id}/retry"),
        f"/staff/t/{tenant}/emails",
        "The email will be sent again.",
        lambda refused: f"Not retried: {refused.detail}",
    )
