"""Staff in a real browser: log in with their key, change a setting (the customer's Cancel
link disappears), find and cancel a booking overriding the customer rules with a refund due,
the customer directory behind confirmations, the delivery log's retry of a parked email."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import httpx
import pytest

from tests.browser.conftest import accessible, in_thread, screenshot
from tests.browser.test_customer_portal import PASSWORD, log_in, open_business, place, see_bookings
from tests.support.system import set_tenant_settings, staff_headers, verified_customer, wait_for

# The first test also starts Kafka, the three services and the portal (minutes on a loaded
# machine): a wider bound than the suite's 300 s, not a timing requirement.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TENANT = "harbour-rentals"


def staff_key(system) -> str:
    """The staff member's key, once bookings has heard of it from accounts (on the bus)."""
    headers = staff_headers(system, TENANT)

    def admitted() -> bool:
        url = f"{system.bookings.url}/v1/staff/tenants/{TENANT}/bookings"
        return httpx.get(url, headers=headers, timeout=10).status_code == 200

    wait_for(admitted, timeout=30, what="bookings to accept the staff key")
    return headers["Authorization"].removeprefix("Bearer ")


def staff_log_in(page, system) -> None:
    page.goto(f"{system.portal.url}/staff/t/{TENANT}/login")
    page.get_by_label("Staff API key").fill(staff_key(system))
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/staff/t/.+/bookings$"))


def test_a_setting_hides_the_link_and_staff_cancel_with_an_override(system, browser, page):
    in_thread(open_business, system, TENANT, "Harbour Rentals")
    email = f"gus-{uuid.uuid4().hex[:6]}@example.com"
    in_thread(verified_customer, system, None, TENANT, email, PASSWORD)
    booking = place(system, TENANT, email, starts_in=timedelta(days=7), paid="50.00")
    customer = browser.new_context(locale="en-GB").new_page()
    log_in(customer, system, TENANT, email)
    see_bookings(customer, 1)
    mine = f"{system.portal.url}/t/{TENANT}/bookings/{booking['booking_id']}"
    customer.goto(mine)
    assert customer.locator("#cancel-link").count() == 1

    # Staff turn online cancelling off, on the settings page (with what each setting does).
    staff_log_in(page, system)
    page.get_by_role("link", name="Settings").click()
    assert "A Cancel booking link appears" in page.locator("main").inner_text()
    screenshot(page, "staff-settings")
    accessible(page)
    page.get_by_label("Customers may cancel online").uncheck()
    page.get_by_role("button", name="Save settings").click()
    assert page.locator(".notice").inner_text() == "Settings saved."

    # The customer's link disappears (bookings learns the setting from the bus), with the reason.
    def link_gone() -> bool:
        customer.goto(mine)
        return customer.locator("#cancel-link").count() == 0

    wait_for(link_gone, timeout=90, interval=1, what="the Cancel link to disappear")
    assert "does not let customers cancel" in customer.locator("#cancel-refused").inner_text()

    # Staff find the booking by the customer's address and cancel it overriding the rules,
    # with less than what was paid due back.
    page.get_by_role("link", name="Bookings").click()
    page.get_by_label("Customer (email, name or booking code)").fill(email)
    page.get_by_role("button", name="Filter").click()
    assert page.locator(".staff-bookings tbody tr").count() == 1
    screenshot(page, "staff-bookings")
    accessible(page)
    page.get_by_role("link", name=booking["booking_code"]).click()
    assert page.locator("#customer-may-cancel").inner_text().startswith("no:")
    screenshot(page, "staff-booking")
    accessible(page)
    page.get_by_label("Refund due").fill("20.00")
    page.get_by_label("Override the customer rules").check()
    page.get_by_role("button", name="Cancel this booking").click()
    assert page.locator("#booking-status").inner_text() == "Cancelled"
    cancellation = page.locator("#cancellation").inner_text()
    assert "€20.00" in cancellation and "Customer rules overridden\nyes" in cancellation.replace("\t", "\n")

    customer.goto(mine)
    assert customer.locator("#booking-status").inner_text() == "Cancelled"
    customer.context.close()

    # Another business's booking is not found with this key.
    other = place(system, "lakeside-tours", f"hal-{uuid.uuid4().hex[:6]}@example.com")
    response = page.goto(f"{system.portal.url}/staff/t/{TENANT}/bookings/{other['booking_id']}")
    assert response.status == 404


def test_the_directory_with_confirmations_and_a_parked_email_sent_again(system, mail, page):
    in_thread(open_business, system, TENANT, "Harbour Rentals")
    email = f"ida-{uuid.uuid4().hex[:6]}@example.com"
    mail.fail_recipient(email)  # 550: the notifier parks the email for an operator
    httpx.post(
        f"{system.accounts.url}/v1/tenants/{TENANT}/accounts",
        json={"email": email, "name": "Ida Parked", "password": PASSWORD},
        timeout=10,
    ).raise_for_status()
    staff_log_in(page, system)

    # The delivery log shows the parked email; once the address works again, send it again.
    def parked() -> bool:
        page.goto(f"{system.portal.url}/staff/t/{TENANT}/emails?status=parked")
        return page.get_by_role("button", name="Send again").count() > 0

    wait_for(parked, timeout=60, interval=1, what="the email to be parked")
    screenshot(page, "staff-emails")
    accessible(page)
    mail.clear_failures()
    page.get_by_role("button", name="Send again").first.click()
    assert page.locator(".notice").inner_text() == "The email will be sent again."
    mail.wait_for(lambda m: email in m.rcpt_tos, timeout=60)

    # The directory: search, the customer's page, archive behind a confirmation page.
    page.get_by_role("link", name="Customers").click()
    page.get_by_label("Search (email, name or phone)").fill("Ida Parked")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Ida Parked").click()
    screenshot(page, "staff-customer")
    accessible(page)
    page.get_by_role("link", name="Archive…").click()
    assert "can no longer log in" in page.locator("main").inner_text()
    page.get_by_role("button", name="Yes: archive this account").click()
    assert "Archive this account: done." in page.locator(".notice").inner_text()
    assert "archived" in page.locator("main").inner_text()


def test_an_invitation_sent_while_logins_are_off_says_why_it_waits(system, mail, page):
    tenant = "quiet-canoes"  # customer logins are off: the default
    email = f"jo-{uuid.uuid4().hex[:6]}@example.com"
    created = httpx.post(
        f"{system.accounts.url}/v1/staff/tenants/{tenant}/accounts",
        headers=staff_headers(system, tenant),
        json={"email": email, "name": "Jo"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    invitation = mail.wait_for(lambda m: email in m.rcpt_tos, timeout=90)
    [link] = [url for url in invitation.links if "/set-password?token=" in url]
    page.goto(link)
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_role("button", name="Save my password").click()
    assert "has not turned customer accounts on yet" in page.locator(".error").inner_text()
    screenshot(page, "customer-invitation-waiting")

    # Once the business turns accounts on, the same link works.
    in_thread(set_tenant_settings, system, tenant, customer_logins_enabled=True)
    page.goto(link)
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_role("button", name="Save my password").click()
    page.wait_for_url(re.compile(rf"/t/{tenant}/login$"))
    assert "password is saved" in page.locator(".notice").inner_text()
