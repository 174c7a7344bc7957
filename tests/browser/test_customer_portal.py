"""A customer in a real browser: claim, the verification email, log in, My bookings, the
Cancel booking link only where the rules allow it, the confirmation dialog, Cancelled; an
emailed login link; CSRF; another business's customer sees nothing."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta

import httpx
import pytest

from tests.browser.conftest import accessible, in_thread, screenshot
from tests.support.system import (
    command_record,
    notifier_staff_headers,
    place_booking_command,
    publish,
    set_tenant_settings,
    verified_customer,
    wait_for,
)

# The first test also starts Kafka, the three services and the portal (minutes on a loaded
# machine): a wider bound than the suite's 300 s, not a timing requirement.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TENANT = "lakeside-tours"
CONTACT = "hello@lakeside.example"
PASSWORD = "kayak-at-dawn-on-a-still-lake"


def open_business(system, tenant: str, name: str) -> None:
    set_tenant_settings(
        system,
        tenant,
        customer_logins_enabled=True,
        allow_cancel=True,
        cancel_cutoff={"amount": 2, "unit": "days"},
        timezone="Europe/Vienna",
    )
    response = httpx.patch(
        f"{system.notifier.url}/v1/staff/tenants/{tenant}/branding",
        headers=notifier_staff_headers(system, tenant),
        json={"business_name": name, "reply_to": CONTACT, "colour": "#0b6e4f"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def place(system, tenant: str, email: str, **kwargs) -> dict:
    command = place_booking_command(tenant, email, **kwargs)
    in_thread(
        asyncio.run, publish(system.kafka, system.topic("bookings.commands"), [command_record(command)])
    )
    return command


def log_in(page, system, tenant: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{system.portal.url}/t/{tenant}/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/bookings$"))


def see_bookings(page, count: int) -> None:
    def shown() -> bool:
        page.reload()
        return page.locator(".booking-card").count() >= count

    wait_for(shown, timeout=90, interval=1, what=f"{count} bookings on the page")


def test_claim_verify_log_in_and_cancel_in_the_dialog(system, mail, page):
    open_business(system, TENANT, "Lakeside Tours")
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    soon = place(system, TENANT, email, starts_in=timedelta(days=7), paid="30.00")
    tomorrow = place(system, TENANT, email, starts_in=timedelta(hours=12))  # inside the cut-off at any hour

    # Claim an account in the portal.
    page.goto(f"{system.portal.url}/t/{TENANT}/claim")
    assert page.locator(".business .name").inner_text() == "Lakeside Tours"
    screenshot(page, "customer-claim")
    accessible(page)
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Your name").fill("Ada")
    page.get_by_role("button", name="Create my account").click()
    assert "an email is on its way" in page.locator("main").inner_text()

    # The verification email, caught by the SMTP server, links to the portal.
    message = mail.wait_for(lambda m: email in m.rcpt_tos and "Verify" in m.subject, timeout=90)
    [link] = [url for url in message.links if "/verify-email?token=" in url]
    assert link.startswith(system.portal.url)
    page.goto(link)
    assert "token" not in page.url  # moved into the session cookie, out of the address bar
    screenshot(page, "customer-verify")
    accessible(page)
    # Whoever proves the address chooses the password, here.
    page.get_by_label(re.compile("Choose a password")).fill(PASSWORD)
    page.get_by_role("button", name="Verify my email address").click()
    page.wait_for_url(re.compile(rf"/t/{TENANT}/login$"))
    assert "verified" in page.locator(".notice").inner_text()
    welcome = mail.wait_for(lambda m: email in m.rcpt_tos and "Welcome" in m.subject, timeout=90)
    assert f"{system.portal.url}/t/{TENANT}/login" in welcome.links  # the welcome email links here

    # Log in: My bookings, with items, products and status labels.
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/bookings$"))
    see_bookings(page, 2)
    text = page.locator("main").inner_text()
    assert "Kayak for two" in text and "Picnic lunch" in text and "Pending" in text
    assert "€105.00" in text
    screenshot(page, "customer-bookings")
    accessible(page)

    # Too late to cancel online: no link, and the reason in plain words.
    page.goto(f"{system.portal.url}/t/{TENANT}/bookings/{tomorrow['booking_id']}")
    assert page.locator("#cancel-link").count() == 0
    assert "too late to cancel" in page.locator("#cancel-refused").inner_text()

    # An eligible booking: the link beneath the status; the server-rendered confirmation page...
    page.goto(f"{system.portal.url}/t/{TENANT}/bookings/{soon['booking_id']}")
    assert page.locator(".status-block #cancel-link").inner_text() == "Cancel booking"
    screenshot(page, "customer-booking")
    accessible(page)
    page.goto(f"{system.portal.url}/t/{TENANT}/bookings/{soon['booking_id']}/cancel")
    assert "Refund due" in page.locator("main").inner_text()
    screenshot(page, "customer-cancel-page")
    accessible(page)

    # ...and, with scripts, the same in a dialog: what was paid, the refund due, who to contact.
    page.goto(f"{system.portal.url}/t/{TENANT}/bookings/{soon['booking_id']}")
    page.get_by_role("link", name="Cancel booking").click()
    dialog = page.locator("dialog#cancel-dialog")
    dialog.wait_for(state="visible")
    said = dialog.inner_text()
    assert "You paid" in said and "€30.00" in said and "Refund due" in said
    assert "Refunds are not automatic" in said and CONTACT in said and soon["booking_code"] in said
    screenshot(page, "customer-cancel-dialog")
    dialog.get_by_role("button", name="Yes, cancel my booking").click()
    page.wait_for_url(re.compile(rf"/bookings/{soon['booking_id']}$"))
    assert page.locator("#booking-status").inner_text() == "Cancelled"
    assert page.locator("#cancel-link").count() == 0
    screenshot(page, "customer-cancelled")

    # And the customer is told by email, with the same refund sentence.
    told = mail.wait_for(lambda m: email in m.rcpt_tos and "cancelled" in m.subject, timeout=90)
    assert "Refunds are not automatic" in told.text and CONTACT in told.text


def test_german_pages_and_amounts(system, page):
    email = f"bea-{uuid.uuid4().hex[:6]}@example.com"
    open_business(system, TENANT, "Lakeside Tours")
    in_thread(verified_customer, system, None, TENANT, email, PASSWORD)
    place(system, TENANT, email, paid="1234.50")
    log_in(page, system, TENANT, email)
    page.get_by_role("link", name="Deutsch").click()
    page.goto(f"{system.portal.url}/t/{TENANT}/bookings")
    see_bookings(page, 1)
    text = page.locator("main").inner_text()
    assert "Meine Buchungen" in text and "105,00\xa0€" in text and "Ausstehend" in text
    screenshot(page, "customer-bookings-de")


def test_an_emailed_login_link_logs_into_the_portal(system, mail, page):
    email = f"cy-{uuid.uuid4().hex[:6]}@example.com"
    open_business(system, TENANT, "Lakeside Tours")
    in_thread(verified_customer, system, None, TENANT, email, PASSWORD)
    page.goto(f"{system.portal.url}/t/{TENANT}/login-link")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Email me a login link").click()
    message = mail.wait_for(
        lambda m: email in m.rcpt_tos and "/magic-link?token=" in (m.text or ""), timeout=30
    )
    [link] = [url for url in message.links if "/magic-link?token=" in url]
    page.goto(link)
    assert "token" not in page.url
    page.get_by_role("button", name="Log me in").click()
    page.wait_for_url(re.compile(rf"/t/{TENANT}/bookings$"))
    assert "eyJ" not in page.content()  # no session token printed anywhere


def test_a_form_without_its_csrf_token_is_refused(system, page):
    email = f"dee-{uuid.uuid4().hex[:6]}@example.com"
    open_business(system, TENANT, "Lakeside Tours")
    in_thread(verified_customer, system, None, TENANT, email, PASSWORD)
    booking = place(system, TENANT, email)
    log_in(page, system, TENANT, email)
    see_bookings(page, 1)
    url = f"{system.portal.url}/t/{TENANT}/bookings/{booking['booking_id']}/cancel"

    # The browser's own cookies, a form without the token, or with another token: refused.
    for form in ({"booking_version": "1"}, {"booking_version": "1", "csrf": "forged"}):
        refused = page.request.post(url, form=form, max_redirects=0)
        assert refused.status == 403, refused.text()
    page.goto(f"{system.portal.url}/t/{TENANT}/bookings/{booking['booking_id']}")
    assert page.locator("#booking-status").inner_text() == "Pending"

    # The login form too, before any session.
    with httpx.Client(base_url=system.portal.url) as client:
        client.get(f"/t/{TENANT}/login")
        response = client.post(f"/t/{TENANT}/login", data={"email": email, "password": PASSWORD})
        assert response.status_code == 403


def test_a_customer_of_another_business_sees_nothing(system, page):
    other = "hilltop-bikes"
    open_business(system, other, "Hilltop Bikes")
    theirs = place(system, other, f"eve-{uuid.uuid4().hex[:6]}@example.com")
    email = f"fay-{uuid.uuid4().hex[:6]}@example.com"
    in_thread(verified_customer, system, None, TENANT, email, PASSWORD)
    log_in(page, system, TENANT, email)

    # The other business's pages ask to log in; its booking is not found under ours.
    page.goto(f"{system.portal.url}/t/{other}/bookings")
    assert page.url.endswith(f"/t/{other}/login")
    page.goto(f"{system.portal.url}/t/{other}/bookings/{theirs['booking_id']}")
    assert page.url.endswith(f"/t/{other}/login")
    response = page.goto(f"{system.portal.url}/t/{TENANT}/bookings/{theirs['booking_id']}")
    assert response.status == 404 and theirs["booking_code"] not in page.content()


def test_session_cookie_and_headers(system, page):
    response = page.goto(f"{system.portal.url}/t/{TENANT}/login")
    headers = response.all_headers()
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    [cookie] = [c for c in page.context.cookies() if c["name"] == "portal_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"


def test_my_details_and_an_email_change_verified_again(system, mail, page):
    email = f"kai-{uuid.uuid4().hex[:6]}@example.com"
    new = f"kai-new-{uuid.uuid4().hex[:6]}@example.com"
    open_business(system, TENANT, "Lakeside Tours")
    in_thread(verified_customer, system, None, TENANT, email, PASSWORD)
    log_in(page, system, TENANT, email)
    page.get_by_role("link", name="My details").click()
    page.get_by_label("Name").fill("Kai Lindqvist")
    page.get_by_role("button", name="Save my details").click()
    assert page.locator(".notice").inner_text() == "Your details are saved."
    assert page.get_by_label("Name").input_value() == "Kai Lindqvist"
    accessible(page)

    page.get_by_label("New email address").fill(new)
    page.get_by_label("Current password (if you have one)").fill(PASSWORD)
    page.get_by_role("button", name="Send the link").click()
    assert "on its way to the new address" in page.locator(".notice").inner_text()
    message = mail.wait_for(lambda m: new in m.rcpt_tos, timeout=90)
    [link] = [url for url in message.links if "/confirm-email?token=" in url]
    page.goto(link)
    page.get_by_role("button", name="Confirm my new email address").click()
    page.wait_for_url(re.compile(rf"/t/{TENANT}/login$"))
    page.goto(f"{system.portal.url}/t/{TENANT}/details")
    assert new in page.locator("main").inner_text()


def test_change_a_booking_after_seeing_the_new_total(system, page):
    open_business(system, TENANT, "Lakeside Tours")
    set_tenant_settings(system, TENANT, allow_modify=True, modify_cutoff={"amount": 1, "unit": "days"})
    email = f"lea-{uuid.uuid4().hex[:6]}@example.com"
    in_thread(verified_customer, system, None, TENANT, email, PASSWORD)
    booking = place(system, TENANT, email, starts_in=timedelta(days=7), paid="30.00")
    log_in(page, system, TENANT, email)
    see_bookings(page, 1)

    def change_link() -> bool:  # bookings hears of the setting on the bus
        page.goto(f"{system.portal.url}/t/{TENANT}/bookings/{booking['booking_id']}")
        return page.locator("#change-link").count() == 1

    wait_for(change_link, timeout=90, interval=1, what="the Change booking link")
    page.locator("#change-link").click()
    page.get_by_label("Quantity").nth(1).fill("3")  # three picnic lunches instead of two
    page.get_by_role("button", name="See what changes").click()
    assert page.locator("#new-total").inner_text() == "€117.50"
    assert page.locator("#new-balance").inner_text() == "€87.50"
    screenshot(page, "customer-change-preview")
    accessible(page)
    page.get_by_role("button", name="Confirm the change").click()
    page.wait_for_url(re.compile(rf"/bookings/{booking['booking_id']}$"))
    assert page.locator(".notice").inner_text() == "Your booking is changed."
    assert "€117.50" in page.locator("main").inner_text()
