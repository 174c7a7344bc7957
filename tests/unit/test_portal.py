"""The portal's edge without the services behind it (those are in tests/browser): the sealed
cookie, CSRF, tokens out of URLs, security headers; the one refund sentence; offline /docs."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from backbone.http import create_api
from contracts.wording import refund_note
from services.portal.bootstrap import bootstrap
from services.portal.settings import PortalSettings
from services.portal.web import COOKIE


@pytest.fixture
def client(tmp_path):
    # Services on a closed port: the portal must still answer its own pages.
    dead = "http://127.0.0.1:9"
    settings = PortalSettings(data_dir=tmp_path, accounts_url=dead, bookings_url=dead, notifier_url=dead)
    with TestClient(bootstrap(settings)) as client:
        yield client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_the_refund_sentence_says_the_customer_contacts_the_business():
    assert refund_note("en") == (
        "Refunds are not automatic. The business has been told what you paid and what is due to you; "
        "contact them to arrange your refund."
    )
    said = refund_note("de", business_name="Seeblick", contact="hallo@seeblick.example", booking_code="B-1")
    assert said.startswith("Die Erstattung erfolgt nicht automatisch. Seeblick wurde mitgeteilt")
    assert "schreiben Sie an hallo@seeblick.example" in said and "B-1" in said
    assert "reply to this email" in refund_note("en", contact="a@b.example", in_email=True)


def test_a_post_without_the_visitors_csrf_token_is_refused(client):
    page = client.get("/t/acme/login")
    assert page.status_code == 200
    for form in ({}, {"csrf": "guess"}):
        refused = client.post("/t/acme/login", data={"email": "a@b.example", "password": "x", **form})
        assert refused.status_code == 403 and "expired" in refused.text
    # With the token the form reaches accounts (unreachable here: the page says so).
    tried = client.post(
        "/t/acme/login", data={"email": "a@b.example", "password": "x", "csrf": csrf_of(page.text)}
    )
    assert tried.status_code == 503


def test_the_session_cookie_is_sealed_http_only_and_lax(client):
    response = client.get("/t/acme/login")
    cookie = response.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http here; https (or SECURE_COOKIES=true) adds it
    assert "acme" not in cookie.split(";")[0] and csrf_of(response.text) not in cookie
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    # A tampered cookie is a new visitor, not an error.
    client.cookies.set(COOKIE, "x" + client.cookies[COOKIE][1:])
    assert client.get("/t/acme/login").status_code == 200


def test_an_emailed_links_token_leaves_the_url_before_the_page_shows(client):
    opened = client.get("/magic-link?token=abc.def", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/magic-link"
    page = client.get("/magic-link")
    assert "abc.def" not in page.text and 'action="/magic-link"' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"


def test_a_session_is_needed_for_my_bookings(client):
    response = client.get("/t/acme/bookings", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/t/acme/login"


def test_swagger_ui_is_served_from_the_service_itself():
    api = create_api("t", "1", "d")
    with TestClient(api) as client:
        docs = client.get("/docs").text
        assert "cdn" not in docs.lower()
        [script] = re.findall(r'src="([^"]+swagger-ui-bundle\.js)"', docs)
        assert client.get(script).status_code == 200


def test_the_cookie_is_secure_under_tls(tmp_path):
    dead = "http://127.0.0.1:9"
    settings = PortalSettings(data_dir=tmp_path, accounts_url=dead, bookings_url=dead, notifier_url=dead)
    with TestClient(bootstrap(settings), base_url="https://portal.example") as client:
        assert "Secure" in client.get("/t/acme/login").headers["set-cookie"]


def test_a_logged_in_customer_of_one_business_is_asked_to_log_in_at_another(client):
    from services.portal.web import Sealer, Visitor

    sealer = Sealer(client.app.state.settings.cookie_key_path(), 3600)
    visitor = Visitor()
    visitor.log_in("customer", "acme", "a-session-token")
    client.cookies.set(COOKIE, sealer.seal(visitor))
    response = client.get("/t/other-business/bookings", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/t/other-business/login"
    staff = client.get("/staff/t/acme/bookings", follow_redirects=False)  # a customer is not staff
    assert staff.status_code == 303 and staff.headers["location"] == "/staff/t/acme/login"


async def test_the_branding_is_kept_for_a_while_and_an_outage_is_not_remembered(tmp_path, monkeypatch):
    from services.portal import web
    from services.portal.backends import Unavailable

    class Notifier:  # the notifier's public branding answer, counted
        def __init__(self):
            self.asked, self.down, self.name = 0, False, "Lakeside"

        async def branding(self, tenant):
            self.asked += 1
            if self.down:
                raise Unavailable("notifier did not answer")
            return {"tenant_id": tenant, "business_name": self.name}

    now = [1000.0]
    monkeypatch.setattr(web.time, "monotonic", lambda: now[0])
    notifier = Notifier()
    settings = PortalSettings(data_dir=tmp_path, accounts_url="x", bookings_url="x", notifier_url="x")
    portal = web.Portal(settings, notifier)

    assert (await portal.branding("acme"))["business_name"] == "Lakeside"
    notifier.name = "Lakeside Tours"
    now[0] += web.BRANDING_FRESH_SECONDS - 1
    assert (await portal.branding("acme"))["business_name"] == "Lakeside"  # kept
    assert notifier.asked == 1
    now[0] += 1
    assert (await portal.branding("acme"))["business_name"] == "Lakeside Tours"  # asked again
    notifier.down = True
    now[0] += web.BRANDING_FRESH_SECONDS
    assert (await portal.branding("acme"))["business_name"] == "Lakeside Tours"  # the last known
    notifier.down = False
    assert (await portal.branding("acme"))["business_name"] == "Lakeside Tours"
    assert notifier.asked == 4  # right after the outage: asked, not taken as fresh
    assert (await portal.branding("other"))["business_name"] == "Lakeside Tours"
