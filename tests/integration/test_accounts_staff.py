"""Staff, end to end on a real broker: staff members per tenant from the admin API, the
settings and their history, the directory, accounts created for customers, edits, resends,
archive/activate, the blocklist; every change recorded with `staff:<id>` as its actor."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.support.system import (
    ADMIN_TOKEN,
    System,
    admin_headers,
    decode,
    read_topic,
    set_tenant_settings,
    staff_headers,
    verified_customer,
    wait_for,
    wait_for_link,
)

pytestmark = pytest.mark.integration

TENANT, OTHER_TENANT = "alpine-rentals", "coast-rentals"
PASSWORD = "kayak-at-dawn-on-a-still-lake"


@pytest.fixture(scope="module")
def system(tmp_path_factory, kafka_bootstrap_servers):
    system = System(tmp_path_factory.mktemp("staff"), kafka_bootstrap_servers, smtp_port=1)
    system.start("accounts")
    set_tenant_settings(system, TENANT, customer_logins_enabled=True)
    yield system
    system.stop()
    assert system.accounts.errors() == []


@pytest.fixture
def api(system):
    with httpx.Client(base_url=system.accounts.url, timeout=30) as client:
        yield client


def events(system, event_type=None, key=None):
    found = decode(asyncio.run(read_topic(system.kafka, system.topic("accounts.events"))))
    return [
        e
        for e in found
        if (event_type is None or e["event_type"] == event_type)
        and (key is None or key in (e.get("account_id"), e.get("tenant_id")))
    ]


def test_staff_members_come_from_the_admin_api_and_act_for_their_tenant_only(system, api):
    tenant = "quarry-climbs"
    assert api.post(f"/v1/admin/tenants/{tenant}/staff", json={"label": "x"}).status_code == 401
    assert api.get(f"/v1/staff/tenants/{tenant}/settings", headers=admin_headers()).status_code == 401
    created = api.post(
        f"/v1/admin/tenants/{tenant}/staff", headers=admin_headers(), json={"label": "front desk"}
    )
    assert created.status_code == 201, created.text
    key, staff_id = created.json()["api_key"], created.json()["staff_id"]
    mine = {"Authorization": f"Bearer {key}"}

    assert api.get(f"/v1/staff/tenants/{tenant}/settings", headers=mine).status_code == 200
    other = api.patch(f"/v1/staff/tenants/{OTHER_TENANT}/settings", headers=mine, json={"allow_cancel": True})
    assert other.status_code == 403 and "another business" in other.json()["detail"]
    for broken in (key[:-1], key.replace(".", ""), f"Bearer {ADMIN_TOKEN}", "staff_.x"):
        response = api.get(
            f"/v1/staff/tenants/{tenant}/settings", headers={"Authorization": f"Bearer {broken}"}
        )
        assert response.status_code == 401

    listed = wait_for(
        lambda: api.get(f"/v1/admin/tenants/{tenant}/staff", headers=admin_headers()).json(),
        what="the staff list",
    )
    assert [(m["staff_id"], m["label"], m["active"]) for m in listed] == [(staff_id, "front desk", True)]
    assert "api_key" not in listed[0]

    changed = api.patch(
        f"/v1/staff/tenants/{tenant}/settings", headers=mine, json={"show_pre_bookings": True}
    )
    assert changed.status_code == 200
    [published] = wait_for(
        lambda: [e for e in events(system, "TenantSettingsChanged", tenant) if e["show_pre_bookings"]],
        what="the change on the bus",
    )
    assert published["changed_by"] == {"kind": "staff", "id": staff_id}

    assert (
        api.delete(f"/v1/admin/tenants/{tenant}/staff/{staff_id}", headers=admin_headers()).status_code == 204
    )
    assert api.get(f"/v1/staff/tenants/{tenant}/settings", headers=mine).status_code == 401
    assert (
        api.delete(f"/v1/admin/tenants/{OTHER_TENANT}/staff/{staff_id}", headers=admin_headers()).status_code
        == 404
    )


def test_every_setting_its_validation_and_its_history(system, api):
    fresh = "fresh-business"
    defaults = api.get(f"/v1/staff/tenants/{fresh}/settings", headers=staff_headers(system, fresh)).json()
    assert not any(defaults[k] for k in ("customer_logins_enabled", "allow_cancel", "allow_modify"))
    staff = staff_headers(system, TENANT)
    path = f"/v1/staff/tenants/{TENANT}/settings"
    settings = {
        "customer_logins_enabled": True,
        "require_login_to_book": True,
        "show_pre_bookings": True,
        "allow_cancel": True,
        "cancel_cutoff": {"amount": 48, "unit": "hours"},
        "allow_modify": True,
        "modify_cutoff": {"amount": 2, "unit": "days"},
        "blocking_statuses": ["PAID", "HOLD", "POSTPONED", "PAID"],
        "timezone": "America/Vancouver",
    }
    response = api.patch(path, headers=staff, json=settings)
    assert response.status_code == 200, response.text
    assert response.json() == settings | {"blocking_statuses": ["HOLD", "PAID", "POSTPONED"]}

    for bad in (
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "../../etc/passwd"},
        {"cancel_cutoff": {"amount": 2, "unit": "weeks"}},
        {"cancel_cutoff": {"amount": -1, "unit": "days"}},
        {"blocking_statuses": ["paid"]},
        {"allow_cancel": "maybe"},
        {"surprise": True},
    ):
        refused = api.patch(path, headers=staff, json=bad)
        assert refused.status_code == 422, bad
        assert refused.headers["content-type"] == "application/problem+json" and refused.json()["detail"]
    malformed = api.patch(path, headers={**staff, "Content-Type": "application/json"}, content=b"{not json")
    assert malformed.status_code == 400 and malformed.json()["title"] == "Malformed JSON"

    history = api.get(f"{path}/history", headers=staff).json()
    assert history[-1]["changes"]["timezone"] == "America/Vancouver"
    assert history[-1]["actor"].startswith("staff:")


def test_staff_create_an_account_the_customer_claims_through_the_set_password_link(system, api):
    staff = staff_headers(system, TENANT)
    email = f"invited-{uuid.uuid4().hex[:6]}@example.com"
    created = api.post(
        f"/v1/staff/tenants/{TENANT}/accounts",
        headers=staff,
        json={
            "email": email,
            "name": "Ivy Invited",
            "phone": "+41 44 668 18 00",
            "address": {
                "line1": "Bahnhofstrasse 1",
                "city": "Zurich",
                "postal_code": "8001",
                "country": "CH",
            },
        },
    )
    assert created.status_code == 201, created.text
    account_id = created.json()["account_id"]
    again = api.post(
        f"/v1/staff/tenants/{TENANT}/accounts", headers=staff, json={"email": email, "name": "Ivy"}
    )
    assert again.status_code == 409 and again.json()["code"] == "email_taken"

    link = wait_for_link(system, email, "set_password")
    assert link.event_type == "AccountClaimed" and link.url.startswith(
        f"{system.accounts.url}/set-password?token="
    )
    [claimed] = events(system, "AccountClaimed", account_id)
    assert claimed["claimed_by"] == "staff"
    page = api.get("/set-password", params={"token": link.token})
    assert page.status_code == 200 and 'type="password"' in page.text

    done = api.post("/set-password", data={"token": link.token, "password": "ivys-own-long-passphrase"})
    assert done.status_code == 200 and "saved" in done.text
    login = api.post(
        f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": "ivys-own-long-passphrase"}
    )
    assert login.status_code == 200
    [verified] = wait_for(lambda: events(system, "EmailVerified", account_id), what="EmailVerified")
    assert verified["first_time"] is True  # the invitation proved the address

    detail = api.get(f"/v1/staff/tenants/{TENANT}/accounts/{account_id}", headers=staff).json()
    assert (
        detail["verified"] and detail["address"]["city"] == "Zurich" and detail["phone"] == "+41 44 668 18 00"
    )
    steps = [(h["event"], h["actor"].split(":")[0]) for h in detail["history"]]
    assert steps == [("Claimed", "staff"), ("EmailVerified", "customer"), ("PasswordSet", "customer")]
    assert "hash" not in str(detail["history"]) and "sealed" not in str(detail["history"])


def test_the_directory_lists_filters_searches_and_edits(system, api):
    staff = staff_headers(system, TENANT)
    tag = uuid.uuid4().hex[:6]
    claimed = f"claimed-{tag}@example.com"
    verified_customer(system, None, TENANT, claimed, PASSWORD)
    pending = f"pending-{tag}@example.com"
    api.post(f"/v1/tenants/{TENANT}/accounts", json={"email": pending, "name": f"Pending {tag}"})
    archived = f"archived-{tag}@example.com"
    verified_customer(system, None, TENANT, archived, PASSWORD)

    def page(**params):
        response = api.get(f"/v1/staff/tenants/{TENANT}/accounts", headers=staff, params={"q": tag, **params})
        assert response.status_code == 200, response.text
        return response.json()

    wait_for(lambda: page()["total"] == 3, what="three accounts listed")
    archived_id = next(i["account_id"] for i in page()["items"] if i["email"] == archived)
    archive = api.post(f"/v1/staff/tenants/{TENANT}/accounts/{archived_id}/archive", headers=staff)
    assert archive.status_code == 200 and archive.json()["status"] == "archived"
    login = {"email": archived, "password": PASSWORD}
    assert api.post(f"/v1/tenants/{TENANT}/sessions", json=login).status_code == 401

    wait_for(lambda: page(status="archived")["total"] == 1, what="the archived filter")
    assert [i["email"] for i in page(status="claimed")["items"]] == [claimed]
    assert [i["email"] for i in page(status="unclaimed")["items"]] == [pending]
    assert page(limit=1)["total"] == 3 and len(page(limit=1)["items"]) == 1
    assert (
        api.get(f"/v1/staff/tenants/{TENANT}/accounts", headers=staff, params={"status": "lost"}).status_code
        == 422
    )

    activated = api.post(f"/v1/staff/tenants/{TENANT}/accounts/{archived_id}/activation", headers=staff)
    assert activated.json()["status"] == "active"
    assert api.post(f"/v1/tenants/{TENANT}/sessions", json=login).status_code == 200
    kinds = [e["event_type"] for e in events(system, key=archived_id)]
    assert "AccountArchived" in kinds and "AccountActivated" in kinds
    assert [e["reason"] for e in events(system, "SessionsRevoked", archived_id)] == ["archived"]

    pending_id = next(i["account_id"] for i in page()["items"] if i["email"] == pending)
    edited = api.patch(
        f"/v1/staff/tenants/{TENANT}/accounts/{pending_id}",
        headers=staff,
        json={"name": "Renamed", "phone": "+1 555 0123"},
    )
    assert edited.status_code == 200 and edited.json()["name"] == "Renamed"
    [change] = wait_for(lambda: events(system, "ProfileChanged", pending_id), what="ProfileChanged")
    assert change["source"] == "staff" and change["changed_by"]["kind"] == "staff"

    first = wait_for_link(system, pending, "verify_email")
    resent = api.post(
        f"/v1/staff/tenants/{TENANT}/accounts/{pending_id}/verification-requests", headers=staff
    )
    assert resent.status_code == 200
    second = wait_for_link(system, pending, "verify_email", after=1)
    assert api.post("/v1/email-verifications", json={"token": first.token}).status_code == 400
    assert api.post("/v1/email-verifications", json={"token": second.token}).status_code == 200
    nothing = api.post(
        f"/v1/staff/tenants/{TENANT}/accounts/{pending_id}/verification-requests", headers=staff
    )
    assert nothing.status_code == 409 and nothing.json()["code"] == "nothing_to_verify"


def test_a_blocklisted_address_cannot_claim(system, api):
    staff = staff_headers(system, TENANT)
    email = f"blocked-{uuid.uuid4().hex[:6]}@example.com"
    blocked = api.post(f"/v1/staff/tenants/{TENANT}/blocklist", headers=staff, json={"email": email})
    assert blocked.status_code == 201 and blocked.json()["hint"] == "b***@example.com"
    entry_id = blocked.json()["entry_id"]

    claim = api.post(
        f"/v1/tenants/{TENANT}/accounts", json={"email": email, "name": "B", "password": PASSWORD}
    )
    assert claim.status_code == 202  # the same answer as for any address
    created = api.post(
        f"/v1/staff/tenants/{TENANT}/accounts", headers=staff, json={"email": email, "name": "B"}
    )
    assert created.status_code == 409 and created.json()["code"] == "email_blocked"
    listed = wait_for(
        lambda: api.get(f"/v1/staff/tenants/{TENANT}/blocklist", headers=staff).json(), what="the blocklist"
    )
    assert entry_id in [e["entry_id"] for e in listed] and email not in str(listed)

    assert api.delete(f"/v1/staff/tenants/{TENANT}/blocklist/{entry_id}", headers=staff).status_code == 204
    assert (
        api.delete(f"/v1/staff/tenants/{OTHER_TENANT}/blocklist/{entry_id}", headers=staff).status_code == 403
    )
    created = api.post(
        f"/v1/staff/tenants/{TENANT}/accounts", headers=staff, json={"email": email, "name": "B"}
    )
    assert created.status_code == 201
