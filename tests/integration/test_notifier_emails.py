"""Every email the notifier writes, as it arrives at a real SMTP server: content, links, the
tenant's branding, the customer's language; and the staff's delivery log of it all.

The events come from the bus, published as their producers' relays publish them (see
`tests.support.producers`), and from the real accounts and bookings services where their
flows exist: a claim's verification link is followed against the real accounts service.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from backbone.credentials import parse_staff_api_key
from contracts import accounts as acc
from contracts import bookings as bk
from contracts.accounts import Cutoff
from contracts.envelope import Actor
from tests.support.producers import Producer
from tests.support.system import (
    System,
    admin_headers,
    command_record,
    notifier_staff_headers,
    place_booking_command,
    publish,
    set_tenant_settings,
    verified_customer,
    wait_for,
)

pytestmark = pytest.mark.integration

ALPEN, LAKE = "alpen-tours", "lakeside-tours"
EXPIRES = datetime(2031, 3, 5, 16, 45, tzinfo=UTC)


@pytest.fixture
def system(tmp_path, kafka_bootstrap_servers, mail_server):
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port).start("notifier")
    yield system
    system.stop()
    assert system.notifier.errors() == [], "the notifier logged errors"


def lake_staff_id(headers):
    return parse_staff_api_key(headers["Authorization"].removeprefix("Bearer "))[0]


def one(mail_server, to, subject_part, timeout=60):
    message = mail_server.wait_for(lambda m: to in m.rcpt_tos and subject_part in m.subject, timeout=timeout)
    assert len([m for m in mail_server.messages_to(to) if m.subject == message.subject]) == 1
    return message


def claimed(producer, tenant, account_id, address, name, link, by="customer", language=None):
    return acc.AccountClaimed(
        **producer.envelope(tenant),
        account_id=account_id,
        email=producer.seal(account_id, address),
        name=producer.seal(account_id, name),
        claimed_by=by,
        link=producer.link(link),
        link_expires_at=EXPIRES,
        language=language,
    )


def linked(cls, producer, tenant, account_id, address, link, **fields):
    return cls(
        **producer.envelope(tenant),
        account_id=account_id,
        email=producer.seal(account_id, address),
        name=producer.seal(account_id, "Ada"),
        link=producer.link(link),
        link_expires_at=EXPIRES,
        **fields,
    )


def booking_events(producer, tenant, booking_id, account_id, address):
    start = datetime(2031, 7, 14, 8, 0, tzinfo=UTC)
    line = bk.BookingLine(
        kind="item",
        ref="raft",
        name="Rafting on the Salzach",
        starts_at=start,
        ends_at=start + timedelta(hours=4),
        quantity=2,
        unit_price=Decimal("95.00"),
    )
    common = {"booking_id": booking_id, "booking_code": "ALP-2031", "account_id": account_id}
    customer = {"email": producer.seal(booking_id, address), "name": producer.seal(booking_id, "Ada")}
    placed = bk.BookingPlaced(
        **producer.envelope(tenant),
        **common,
        customer=bk.SealedCustomer(**customer),
        lines=[line],
        currency="EUR",
        total=Decimal("190.00"),
        amount_paid=Decimal("50.00"),
        status="PART",
        terms=bk.BookingTerms(
            settings_version=1,
            allow_cancel=True,
            cancel_cutoff=Cutoff(amount=2, unit="days"),
            allow_modify=True,
            modify_cutoff=Cutoff(amount=2, unit="days"),
            blocking_statuses=(),
            timezone="Europe/Vienna",
        ),
        placed_by=Actor(kind="service", id="storefront"),
    )
    modified = bk.BookingModified(
        **producer.envelope(tenant),
        **common,
        **customer,
        modified_by=Actor(kind="customer", id=str(account_id)),
        changes=["Lunch package added"],
        lines=[
            line,
            line.model_copy(update={"name": "Lunch package", "quantity": 1, "unit_price": Decimal("20")}),
        ],
        currency="EUR",
        total=Decimal("210.00"),
        amount_paid=Decimal("50.00"),
        balance_due=Decimal("160.00"),
    )
    cancelled = bk.BookingCancelled(
        **producer.envelope(tenant),
        **common,
        **customer,
        cancelled_by=Actor(kind="staff", id="anna"),
        status_before="PART",
        amount_paid=Decimal("50.00"),
        currency="EUR",
        refund_due=Decimal("50.00"),
        reason="River closed after the storm",
        rules_overridden=True,
    )
    return placed, modified, cancelled


def test_every_email_in_the_customers_language_with_the_tenants_branding(
    system, mail_server, kafka_bootstrap_servers
):
    accounts = Producer(system, kafka_bootstrap_servers, "accounts")
    # A staff member for each business, announced by accounts; each key opens its own only.
    api = httpx.Client(
        base_url=system.notifier.url, headers=accounts.announce_staff_member(ALPEN), timeout=10
    )
    lake = accounts.announce_staff_member(LAKE)
    assert api.get(f"/v1/staff/tenants/{LAKE}/branding").status_code == 403

    # Staff set the branding of one tenant; the other keeps the defaults.
    branding = {
        "business_name": "Alpen Touren",
        "reply_to": "hallo@alpen.example",
        "footer": "Alpen Touren GmbH\nHauptplatz 1, 5020 Salzburg",
        "staff_email": "buero@alpen.example",
        "default_language": "de",
    }
    response = api.patch(f"/v1/staff/tenants/{ALPEN}/branding", json=branding)
    assert response.status_code == 200, response.text
    unset = {"logo_url": None, "colour": None}  # the portal's: not set here
    assert response.json()["settings"] == {**branding, **unset}
    assert response.json()["languages"] == ["en", "de"]
    assert httpx.get(f"{system.notifier.url}/v1/staff/tenants/{ALPEN}/branding").status_code == 401
    for bad in (
        {"business_name": "Evil\r\nBcc: x@example.com"},
        {"colour": "red"},
        {"colour": "#fff;}body{x"},
        {"logo_url": "javascript:alert(1)"},
        {"default_language": "fr"},
    ):
        refused = api.patch(f"/v1/staff/tenants/{ALPEN}/branding", json=bad)
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"

    bookings = Producer(system, kafka_bootstrap_servers, "bookings")
    a1, a2, a3, b1, b2 = (uuid.uuid4() for _ in range(5))
    url = "https://accounts.alpen.example"
    account_events = [
        # Alpen's customer-account settings: its time zone is how the emails show times.
        acc.TenantSettingsChanged(
            **accounts.envelope(ALPEN),
            settings_version=1,
            customer_logins_enabled=True,
            require_login_to_book=False,
            show_pre_bookings=False,
            allow_cancel=True,
            cancel_cutoff=Cutoff(amount=2, unit="days"),
            allow_modify=False,
            modify_cutoff=Cutoff(amount=0, unit="days"),
            blocking_statuses=(),
            timezone="Europe/Vienna",
            changed_by=Actor(kind="staff", id="anna"),
        ),
        # Alpen: no language known for the customer: the tenant's default, German.
        claimed(accounts, ALPEN, a1, "ada@example.com", "Ada", f"{url}/verify-email?token=one"),
        linked(
            acc.VerificationRequested,
            accounts,
            ALPEN,
            a1,
            "ada.new@example.com",
            f"{url}/verify-email?token=two",
            purpose="verify_new_email",
        ),
        acc.EmailVerified(
            **accounts.envelope(ALPEN),
            account_id=a1,
            email=accounts.seal(a1, "ada.new@example.com"),
            name=accounts.seal(a1, "Ada"),
            first_time=True,
        ),
        linked(
            acc.MagicLinkRequested, accounts, ALPEN, a1, "ada.new@example.com", f"{url}/magic?token=three"
        ),
        linked(
            acc.PasswordResetRequested, accounts, ALPEN, a1, "ada.new@example.com", f"{url}/reset?token=four"
        ),
        # Lakeside (defaults, English): staff created the account of a customer who reads German.
        claimed(
            accounts, LAKE, a2, "ben@example.com", "Ben", f"{url}/set-password?token=five", "staff", "de"
        ),
        # Lakeside: a customer who switches to German after claiming in English.
        claimed(accounts, LAKE, a3, "cy@example.com", "Cy", f"{url}/verify-email?token=six"),
        acc.ProfileChanged(
            **accounts.envelope(LAKE),
            account_id=a3,
            language="de",
            source="customer",
            changed_by=Actor(kind="customer", id=str(a3)),
        ),
        linked(acc.MagicLinkRequested, accounts, LAKE, a3, "cy@example.com", f"{url}/magic?token=seven"),
    ]
    placed, modified, cancelled = booking_events(bookings, ALPEN, b1, a1, "ada.new@example.com")
    lake_cancelled = bk.BookingCancelled(
        **bookings.envelope(LAKE),
        booking_id=b2,
        booking_code="LAKE-7",
        account_id=None,
        email=bookings.seal(b2, "dee@example.com"),
        name=bookings.seal(b2, "Dee"),
        cancelled_by=Actor(kind="customer", id="guest"),
        status_before="PAID",
        amount_paid=Decimal("80.00"),
        currency="EUR",
        refund_due=Decimal("80.00"),
    )
    asyncio.run(accounts.publish(*account_events))
    asyncio.run(bookings.publish(placed, modified, cancelled, lake_cancelled))

    # Alpen, in German, with Alpen's branding, links as sealed by accounts.
    verify = one(mail_server, "ada@example.com", "Bestätigen Sie Ihre E-Mail-Adresse")
    assert verify.sender == "Alpen Touren <no-reply@booking-accounts.local>"
    assert verify.message["Reply-To"] == "hallo@alpen.example"
    assert verify.message["Content-Language"] == "de"
    assert f"{url}/verify-email?token=one" in verify.links
    assert "Hallo Ada" in verify.text and "Hauptplatz 1, 5020 Salzburg" in verify.text
    assert "5. März 2031, 17:45 Uhr (CET)" in verify.text  # the expiry, in the tenant's zone
    assert "Hauptplatz 1, 5020 Salzburg" in verify.html and "hallo@alpen.example" in verify.html
    new_address = one(mail_server, "ada.new@example.com", "neue E-Mail-Adresse")
    assert f"{url}/verify-email?token=two" in new_address.links
    welcome = one(mail_server, "ada.new@example.com", "Willkommen bei Alpen Touren")
    assert "Kundenkonto bei Alpen Touren ist bereit" in welcome.text
    magic = one(mail_server, "ada.new@example.com", "Ihr Anmeldelink")
    assert f"{url}/magic?token=three" in magic.links
    reset = one(mail_server, "ada.new@example.com", "Passwort zurücksetzen")
    assert f"{url}/reset?token=four" in reset.links

    changed = one(mail_server, "ada.new@example.com", "wurde geändert")
    assert "Lunch package added" in changed.text and "Noch offen: 160,00 EUR" in changed.text
    assert "Rafting on the Salzach (x2), 14. Juli 2031, 10:00 Uhr (CEST)" in changed.text
    cancelled_mail = one(mail_server, "ada.new@example.com", "Ihre Buchung ALP-2031 ist storniert")
    assert "Lunch package" in cancelled_mail.text and "Zu erstatten: 50,00 EUR" in cancelled_mail.text
    assert "Die Erstattung erfolgt nicht automatisch" in cancelled_mail.text
    assert "hallo@alpen.example" in cancelled_mail.text  # how to get the refund
    notice = one(mail_server, "buero@alpen.example", "Buchung ALP-2031 storniert")
    assert "Kunde: Ada <ada.new@example.com>" in notice.text
    assert "Mitarbeiter (anna)" in notice.text and "Zu erstatten: 50,00 EUR" in notice.text
    assert "übergangen" in notice.text and "River closed after the storm" in notice.text

    # Lakeside: default branding; the customer's own language wins over the tenant's default.
    invitation = one(mail_server, "ben@example.com", "Ihr Kundenkonto bei Bookings")
    assert invitation.sender == "Bookings <no-reply@booking-accounts.local>"
    assert invitation.message["Reply-To"] is None
    assert f"{url}/set-password?token=five" in invitation.links
    assert one(mail_server, "cy@example.com", "Verify your email address").message["Content-Language"] == "en"
    assert one(mail_server, "cy@example.com", "Ihr Anmeldelink").message["Content-Language"] == "de"
    dee = one(mail_server, "dee@example.com", "Your booking LAKE-7 is cancelled")
    assert "Refunds are not automatic" in dee.text and "as you asked" in dee.text

    # The delivery log: what was sent, when, to whom; per account and per booking.
    def account_log():
        emails = api.get(f"/v1/staff/tenants/{ALPEN}/emails", params={"account_id": str(a1)}).json()["emails"]
        return len(emails) == 8 and all(e["status"] == "sent" for e in emails) and emails

    log = wait_for(account_log, timeout=30, what="the account's delivery log up to date")
    assert sorted(e["kind"] for e in log) == sorted(
        [
            "verify_email",
            "verify_new_email",
            "welcome",
            "magic_link",
            "password_reset",
            "booking_modified",
            "booking_cancelled",
            "booking_cancelled_staff",
        ]
    )
    assert all(e["status"] == "sent" and e["sent_at"] and e["attempts"] == 1 for e in log)
    by_kind = {e["kind"]: e for e in log}
    assert by_kind["verify_email"]["to"] == "ada@example.com"
    assert by_kind["booking_cancelled_staff"]["to"] == "buero@alpen.example"
    assert by_kind["welcome"]["subject"] == "Willkommen bei Alpen Touren"
    per_booking = api.get(f"/v1/staff/tenants/{ALPEN}/emails", params={"booking_id": str(b1)}).json()
    assert len(per_booking["emails"]) == 3 and per_booking["next_before"] is None
    email_id = by_kind["welcome"]["email_id"]
    assert api.get(f"/v1/staff/tenants/{LAKE}/emails/{email_id}", headers=lake).status_code == 404
    assert httpx.get(f"{system.notifier.url}/v1/staff/tenants/{ALPEN}/emails").status_code == 401

    # Lakeside has no staff address: its notice waits, parked with the reason, until one is set.
    def parked():
        emails = api.get(f"/v1/staff/tenants/{LAKE}/emails", params={"status": "parked"}, headers=lake)
        return emails.json()["emails"]

    [waiting] = wait_for(parked, timeout=30, what="the staff notice parked")
    assert waiting["kind"] == "booking_cancelled_staff" and waiting["to"] is None
    assert "no staff notification address" in waiting["last_error"]
    api.patch(
        f"/v1/staff/tenants/{LAKE}/branding", json={"staff_email": "desk@lakeside.example"}, headers=lake
    )
    retried = api.post(f"/v1/staff/tenants/{LAKE}/parked-emails/retry", headers=lake)
    assert retried.status_code == 200 and retried.json()["retried"] == [waiting["email_id"]]
    lake_notice = one(mail_server, "desk@lakeside.example", "Booking LAKE-7 cancelled: refund due 80.00 EUR")
    assert "Cancelled by: the customer" in lake_notice.text

    def recorded_as_sent():  # the server has it; the notifier records that a moment later
        detail = api.get(f"/v1/staff/tenants/{LAKE}/emails/{waiting['email_id']}", headers=lake).json()
        return detail["status"] == "sent" and detail

    detail = wait_for(recorded_as_sent, timeout=30, what="the notice recorded as sent")
    assert [h["what"] for h in detail["history"]] == [
        "Queued",
        "AttemptStarted",
        "Parked",
        "RetryRequested",
        "AttemptStarted",
        "Sent",
    ]
    assert detail["history"][3]["by"] == f"staff:{lake_staff_id(lake)}"  # who asked for it
    assert detail["to"] == "desk@lakeside.example"
    again = api.post(f"/v1/staff/tenants/{LAKE}/emails/{waiting['email_id']}/retry", headers=lake)
    assert again.status_code == 409 and again.json()["code"] == "not_parked"


def test_links_work_against_the_real_accounts_service(tmp_path, kafka_bootstrap_servers, mail_server):
    tenant = "riverside-tours"
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port).start()
    try:
        set_tenant_settings(system, tenant, customer_logins_enabled=True, allow_cancel=True)
        response = httpx.patch(
            f"{system.notifier.url}/v1/staff/tenants/{tenant}/branding",
            headers=notifier_staff_headers(system, tenant),
            json={"business_name": "Riverside Tours", "staff_email": "office@riverside.example"},
        )
        assert response.status_code == 200, response.text
        address = f"eve-{uuid.uuid4().hex[:6]}@example.com"
        # Claim, follow the emailed link (the real accounts service checks its token), log in.
        customer = verified_customer(system, mail_server, tenant, address)
        verify = one(mail_server, address, "Verify your email address")
        [link] = [u for u in verify.links if "token=" in u]
        assert link.startswith(f"{system.accounts.url}/verify-email?token=")  # from configuration
        assert "Riverside Tours" in verify.text
        welcome = one(mail_server, address, "Welcome to Riverside Tours")
        assert "your account with Riverside Tours is ready" in welcome.text

        command = place_booking_command(tenant, address, paid="40.00")
        asyncio.run(
            publish(kafka_bootstrap_servers, system.topic("bookings.commands"), [command_record(command)])
        )

        def listed():
            response = httpx.get(f"{system.bookings.url}/v1/me/bookings", headers=customer, timeout=10)
            return response.status_code == 200 and response.json()

        wait_for(listed, timeout=60, what="the booking in the customer's list")
        quote = httpx.get(
            f"{system.bookings.url}/v1/me/bookings/{command['booking_id']}/cancellation-quote",
            headers=customer,
            timeout=10,
        )
        assert quote.status_code == 200, quote.text
        confirm = quote.json()["confirm"]
        cancel = httpx.post(
            f"{system.bookings.url}{confirm['href']}",
            headers=customer,
            json={**confirm["body"], "reason": "plans changed"},
            timeout=10,
        )
        assert cancel.status_code == 200, cancel.text
        told = one(mail_server, address, f"Your booking {command['booking_code']} is cancelled")
        assert "Kayak for two" in told.text and "Picnic lunch (x2)" in told.text  # what was booked
        assert "Amount paid: 40.00 EUR" in told.text and "Refunds are not automatic" in told.text
        notice = one(mail_server, "office@riverside.example", f"Booking {command['booking_code']} cancelled")
        assert f"<{address}>" in notice.text and "Cancelled by: the customer" in notice.text
        assert "Refund due: 40.00 EUR" in notice.text and "Reason given: plans changed" in notice.text

        # The operator removes the staff member in accounts: the key stops opening the notifier.
        staff = notifier_staff_headers(system, tenant)
        staff_id = parse_staff_api_key(staff["Authorization"].removeprefix("Bearer "))[0]
        removed = httpx.delete(
            f"{system.accounts.url}/v1/admin/tenants/{tenant}/staff/{staff_id}", headers=admin_headers()
        )
        assert removed.status_code in (200, 204), removed.text
        branding = f"{system.notifier.url}/v1/staff/tenants/{tenant}/branding"
        wait_for(
            lambda: httpx.get(branding, headers=staff).status_code == 401,
            timeout=30,
            what="the removed key refused by the notifier",
        )
    finally:
        system.stop()
    for service in system.services.values():
        assert service.errors() == [], f"{service.name} logged errors"
