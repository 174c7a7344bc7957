"""Customers, end to end: the accounts (and bookings) services as OS processes on a real
broker. Links are read as the notifier would get them: from accounts.events, opened with the
notifier's sealing key."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx
import pytest

from tests.support.system import (
    System,
    command_record,
    decode,
    emailed_links,
    place_booking_command,
    publish,
    read_topic,
    set_tenant_settings,
    verified_customer,
    wait_for,
    wait_for_link,
)

pytestmark = pytest.mark.integration

TENANT = "harbour-kayaks"
PASSWORD = "kayak-at-dawn-on-a-still-lake"


@pytest.fixture(scope="module")
def system(tmp_path_factory, kafka_bootstrap_servers):
    system = System(tmp_path_factory.mktemp("customers"), kafka_bootstrap_servers, smtp_port=1)
    system.start("accounts", "bookings")
    set_tenant_settings(system, TENANT, customer_logins_enabled=True)
    yield system
    system.stop()
    for name in ("accounts", "bookings"):
        assert system.services[name].errors() == [], f"{name} logged errors"


@pytest.fixture
def api(system):
    with httpx.Client(base_url=system.accounts.url, timeout=30) as client:
        yield client


def new_email(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def events(system, event_type, account_id=None):
    found = decode(asyncio.run(read_topic(system.kafka, system.topic("accounts.events"))))
    return [
        e
        for e in found
        if e["event_type"] == event_type and (account_id is None or e.get("account_id") == account_id)
    ]


def test_while_logins_are_off_customers_get_a_clear_refusal_and_staff_still_set_up(system, api):
    tenant = "not-yet-open"
    set_tenant_settings(system, tenant, allow_cancel=True, timezone="Europe/Vienna")  # staff: fine
    email = new_email()
    for path, body in [
        (f"/v1/tenants/{tenant}/accounts", {"email": email, "name": "X", "password": PASSWORD}),
        (f"/v1/tenants/{tenant}/sessions", {"email": email, "password": PASSWORD}),
        (f"/v1/tenants/{tenant}/magic-links", {"email": email}),
        (f"/v1/tenants/{tenant}/password-resets", {"email": email}),
        (f"/v1/tenants/{tenant}/verification-requests", {"email": email}),
    ]:
        response = api.post(path, json=body)
        assert response.status_code == 403, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "customer_logins_disabled"
        assert "not enabled" in response.json()["detail"]


def test_claim_verify_and_log_in_with_the_link_built_from_configuration(system, api):
    email = new_email("ada")
    response = api.post(
        f"/v1/tenants/{TENANT}/accounts",
        json={"email": email.upper(), "name": "Ada", "password": PASSWORD, "language": "de"},
        headers={"Host": "evil.example.net"},
    )
    assert response.status_code == 202, response.text

    link = wait_for_link(system, email, "verify_email")
    assert link.url.startswith(f"{system.accounts.url}/verify-email?token=")  # never the Host header
    [claimed] = events(system, "AccountClaimed", link.account_id)
    assert claimed["claimed_by"] == "customer" and claimed["language"] == "de"
    assert (
        api.post(f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": PASSWORD}).status_code
        == 401
    )

    page = api.get("/verify-email", params={"token": link.token})  # opening the link uses nothing up
    assert page.status_code == 200 and page.headers["referrer-policy"] == "no-referrer"
    verified = api.post("/v1/email-verifications", json={"token": link.token, "password": PASSWORD})
    assert verified.status_code == 200 and verified.json()["account_id"] == link.account_id
    [event] = wait_for(lambda: events(system, "EmailVerified", link.account_id), what="EmailVerified")
    assert event["first_time"] is True

    session = api.post(f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": PASSWORD})
    assert session.status_code == 200, session.text
    me = api.get("/v1/me", headers={"Authorization": f"Bearer {session.json()['token']}"}).json()
    assert me["email"] == email and me["verified"] is True and me["language"] == "de"


def test_a_resent_link_replaces_the_old_one(system, api):
    email = new_email("resend")
    api.post(f"/v1/tenants/{TENANT}/accounts", json={"email": email, "name": "Re", "password": PASSWORD})
    first = wait_for_link(system, email, "verify_email")
    assert api.post(f"/v1/tenants/{TENANT}/verification-requests", json={"email": email}).status_code == 202
    second = wait_for_link(system, email, "verify_email", after=1)
    assert second.token != first.token
    assert [e["purpose"] for e in events(system, "VerificationRequested", first.account_id)] == [
        "verify_email"
    ]
    stale = api.post("/v1/email-verifications", json={"token": first.token})
    assert stale.status_code == 400 and stale.json()["code"] == "link_invalid"
    assert api.post("/v1/email-verifications", json={"token": second.token}).status_code == 200


def test_a_passwordless_customer_logs_in_by_magic_link_once(system, api):
    email = new_email("magic")
    api.post(f"/v1/tenants/{TENANT}/accounts", json={"email": email, "name": "Mag"})
    api.post("/v1/email-verifications", json={"token": wait_for_link(system, email, "verify_email").token})

    assert api.post(f"/v1/tenants/{TENANT}/magic-links", json={"email": email}).status_code == 202
    link = wait_for_link(system, email, "magic_link")
    assert link.url.startswith(f"{system.accounts.url}/magic-link?token=")
    [requested] = events(system, "MagicLinkRequested", link.account_id)
    lifetime = datetime.fromisoformat(requested["link_expires_at"]) - datetime.fromisoformat(
        requested["occurred_at"]
    )
    assert lifetime.total_seconds() <= 15 * 60

    session = api.post("/v1/magic-link-sessions", json={"token": link.token})
    assert session.status_code == 200, session.text
    assert (
        api.get("/v1/me", headers={"Authorization": f"Bearer {session.json()['token']}"}).status_code == 200
    )
    assert api.post("/v1/magic-link-sessions", json={"token": link.token}).status_code == 400  # used


def test_forgot_password_reset_ends_earlier_sessions(system, api):
    email = new_email("reset")
    customer = verified_customer(system, None, TENANT, email, PASSWORD)
    assert api.post(f"/v1/tenants/{TENANT}/password-resets", json={"email": email}).status_code == 202
    link = wait_for_link(system, email, "password_reset")
    assert link.url.startswith(f"{system.accounts.url}/reset-password?token=")
    weak = api.post("/v1/new-passwords", json={"token": link.token, "password": "password123"})
    assert weak.status_code == 422 and weak.json()["code"] == "weak_password"
    done = api.post(
        "/v1/new-passwords", json={"token": link.token, "password": "a-brand-new-long-passphrase"}
    )
    assert done.status_code == 200, done.text
    assert api.get("/v1/me", headers=customer).status_code == 401  # the old session ended
    assert (
        api.post(f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": PASSWORD}).status_code
        == 401
    )
    login = {"email": email, "password": "a-brand-new-long-passphrase"}
    assert api.post(f"/v1/tenants/{TENANT}/sessions", json=login).status_code == 200
    [revoked] = wait_for(lambda: events(system, "SessionsRevoked", link.account_id), what="SessionsRevoked")
    assert revoked["reason"] == "password_reset"


def test_logout_and_password_change_revoke_earlier_sessions_here_and_on_the_bus(system, api):
    email = new_email("out")
    first = verified_customer(system, None, TENANT, email, PASSWORD)
    second = verified_customer_session(api, email, PASSWORD)
    account_id = api.get("/v1/me", headers=first).json()["account_id"]

    assert api.delete("/v1/me/session", headers=first).status_code == 204
    for ended in (first, second):  # logout ends every session issued until then
        response = api.get("/v1/me", headers=ended)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"

    third = verified_customer_session(api, email, PASSWORD)
    assert api.get("/v1/me", headers=third).status_code == 200
    wrong = api.put(
        "/v1/me/password", headers=third, json={"current_password": "nope", "new_password": "x" * 30}
    )
    assert wrong.status_code == 403
    changed = api.put(
        "/v1/me/password",
        headers=third,
        json={"current_password": PASSWORD, "new_password": "completely-new-passphrase-here"},
    )
    assert changed.status_code == 200, changed.text
    assert api.get("/v1/me", headers=third).status_code == 401
    fresh = {"Authorization": f"Bearer {changed.json()['token']}"}
    assert api.get("/v1/me", headers=fresh).status_code == 200

    revocations = wait_for(
        lambda: [e["reason"] for e in events(system, "SessionsRevoked", account_id)] or None,
        what="SessionsRevoked on the bus",
    )
    assert revocations == ["logout", "password_changed"]


def verified_customer_session(api, email, password):
    response = api.post(f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_profile_and_a_changed_email_that_takes_effect_when_proven(system, api):
    email, new = new_email("prof"), new_email("prof-new")
    customer = verified_customer(system, None, TENANT, email, PASSWORD)
    changed = api.patch(
        "/v1/me",
        headers=customer,
        json={
            "name": "Grace Hopper",
            "phone": "+1 202 555 0100",
            "language": "en",
            "address": {"line1": "1 Navy Yard", "city": "Arlington", "postal_code": "22202", "country": "US"},
        },
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["phone"] == "+1 202 555 0100" and changed.json()["address"]["city"] == "Arlington"
    assert api.patch("/v1/me", headers=customer, json={"name": None}).status_code == 422
    assert api.patch("/v1/me", headers=customer, json={"phone": "call me"}).status_code == 422

    request = api.post(
        "/v1/me/email-change", headers=customer, json={"email": new, "current_password": PASSWORD}
    )
    assert request.status_code == 202
    link = wait_for_link(system, new, "verify_new_email")
    assert api.get("/v1/me", headers=customer).json()["email"] == email  # not before it is proven
    assert api.post("/v1/email-verifications", json={"token": link.token}).status_code == 200
    me = api.get("/v1/me", headers=customer).json()
    assert me["email"] == new and me["pending_email"] is None
    assert (
        api.post(f"/v1/tenants/{TENANT}/sessions", json={"email": new, "password": PASSWORD}).status_code
        == 200
    )
    assert [e["first_time"] for e in events(system, "EmailVerified", link.account_id)] == [True, False]
    [profile] = events(system, "ProfileChanged", link.account_id)
    assert profile["source"] == "customer" and profile["changed_by"] == {
        "kind": "customer",
        "id": link.account_id,
    }
    assert profile["address"]["country"] == "US" and "Arlington" not in str(profile)  # sealed


def test_details_arriving_with_a_booking_fill_empty_fields_only(system, api):
    email = new_email("merge")
    customer = verified_customer(system, None, TENANT, email, PASSWORD)
    account_id = api.get("/v1/me", headers=customer).json()["account_id"]
    command = place_booking_command(TENANT, email)
    command["customer"] |= {"name": "Someone Typing Fast", "phone": "+43 660 7654321"}
    asyncio.run(publish(system.kafka, system.topic("bookings.commands"), [command_record(command)]))

    def merged():
        me = api.get("/v1/me", headers=customer).json()
        return me if me["phone"] else None

    me = wait_for(merged, timeout=60, what="the booking's phone in the profile")
    assert me["phone"] == "+43 660 7654321" and me["name"] == "Customer"  # filled, not overwritten

    second = place_booking_command(TENANT, email, account_id=uuid.UUID(account_id))
    second["customer"] |= {"phone": "+1 555 0000"}
    asyncio.run(publish(system.kafka, system.topic("bookings.commands"), [command_record(second)]))
    wait_for(lambda: applied(system) >= 2, timeout=60, what="accounts to take both bookings")
    changes = wait_for(lambda: events(system, "ProfileChanged", account_id), what="ProfileChanged")
    assert [c["source"] for c in changes] == ["booking"]
    assert changes[0]["changed_by"] == {"kind": "service", "id": "bookings"}
    assert api.get("/v1/me", headers=customer).json()["phone"] == "+43 660 7654321"
    assert len(emailed_links(system, email)) == 1  # only the verification


def applied(system) -> float:
    """How many bookings events the accounts inbox has applied (its Prometheus counter)."""
    metrics = httpx.get(f"{system.accounts.url}/metrics", timeout=10).text
    label = f'consumer="{system.topic("accounts.inbox")}",outcome="applied"'
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if label in line)
